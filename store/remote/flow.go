package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
	var out wire.Flow
	if err := s.call(ctx, "get flow", apiclient.Request{Method: http.MethodGet, Path: projectPath(p.Namespace, "workflows", p.ID)}, &out); err != nil {
		return nil, err
	}
	held := out.Held
	if held == nil {
		held = []string{}
	}
	return &store.Flow{ID: out.ID, Spec: out.Spec, CreatedAt: out.CreatedAt.UTC(), Held: held}, nil
}
