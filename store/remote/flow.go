package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

var _ store.Flows = (*Store)(nil)

// EnqueueFlow implements store.Flows with one POST: the server applies the
// whole workflow in one atomic step of its store.
func (s *Store) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	if err := checkNS("enqueue flow", p.Namespace); err != nil {
		return err
	}
	// What the wire cannot say exactly is refused here: durations travel
	// in whole milliseconds.
	check := func(in *store.TaskInput) error {
		return errors.Join(checkMS("timeout", in.Timeout), checkMS("retention", in.Retention))
	}
	for i := range p.Tasks {
		if err := check(&p.Tasks[i]); err != nil {
			return fmt.Errorf("remote: enqueue flow: task %d: %w", i, err)
		}
	}
	for i := range p.Held {
		if err := check(&p.Held[i].Task); err != nil {
			return fmt.Errorf("remote: enqueue flow: held task %d: %w", i, err)
		}
	}
	req := wire.FromFlowParams(&p)
	var out wire.Flow
	return s.call(ctx, "enqueue flow", apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "workflows"), Body: req}, &out)
}

// GetFlow implements store.Flows.
func (s *Store) GetFlow(ctx context.Context, p store.FlowGetParams) (*store.Flow, error) {
	if err := checkNS("get flow", p.Namespace); err != nil {
		return nil, err
	}
	if err := store.CheckName("flow id", p.ID); err != nil {
		return nil, fmt.Errorf("remote: get flow: %w", err)
	}
	path := projectPath(p.Namespace, "workflows", p.ID)
	if p.WithoutSpec {
		path += "?spec=0"
	}
	var out wire.Flow
	if err := s.call(ctx, "get flow", apiclient.Request{Method: http.MethodGet, Path: path}, &out); err != nil {
		return nil, err
	}
	held := out.Held
	if held == nil {
		held = []string{}
	}
	spec := out.Spec
	if p.WithoutSpec {
		spec = nil
	}
	return &store.Flow{ID: out.ID, Spec: spec, CreatedAt: out.CreatedAt.UTC(), Held: held}, nil
}

// ListFlows implements store.Flows.
func (s *Store) ListFlows(ctx context.Context, p store.FlowListParams) (store.FlowListResult, error) {
	if err := checkNS("list flows", p.Namespace); err != nil {
		return store.FlowListResult{}, err
	}
	if _, err := store.CheckFlowList(p); err != nil {
		return store.FlowListResult{}, fmt.Errorf("remote: list flows: %w", err)
	}
	q := url.Values{}
	if p.After != "" {
		q.Set("after", p.After)
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	path := projectPath(p.Namespace, "workflows")
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var resp wire.FlowList
	if err := s.call(ctx, "list flows", apiclient.Request{Method: http.MethodGet, Path: path}, &resp); err != nil {
		return store.FlowListResult{}, err
	}
	out := store.FlowListResult{Flows: make([]*store.Flow, len(resp.Workflows)), NextCursor: resp.NextCursor}
	for i, f := range resp.Workflows {
		held := f.Held
		if held == nil {
			held = []string{}
		}
		out.Flows[i] = &store.Flow{ID: f.ID, Spec: f.Spec, CreatedAt: f.CreatedAt.UTC(), Held: held}
	}
	return out, nil
}
