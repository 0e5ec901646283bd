package api

import (
	"net/http"
	"strconv"

	"github.com/kilnhq/kiln/internal/flowspec"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

func (a *API) flows() (store.Flows, error) {
	fl, ok := a.st.(store.Flows)
	if !ok {
		return nil, errf(wire.CodeBadRequest, "", "this server's store does not keep workflows")
	}
	return fl, nil
}

// createFlow writes a workflow: its record, its first tasks and the held
// ones, in one atomic step of the store.
func (a *API) createFlow(c *call) error {
	fl, err := a.flows()
	if err != nil {
		return err
	}
	var req wire.FlowRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	p := req.ToFlowParams(c.ns())
	// The request's W3C trace context, for the tasks that bring none of
	// their own (as for a batch of tasks); one that is not valid is ignored.
	if h := c.r.Header.Get("traceparent"); store.ValidTraceParent(h) {
		for i := range p.Tasks {
			if p.Tasks[i].TraceParent == "" {
				p.Tasks[i].TraceParent = h
			}
		}
		for i := range p.Held {
			if p.Held[i].Task.TraceParent == "" {
				p.Held[i].Task.TraceParent = h
			}
		}
	}
	if err := fl.EnqueueFlow(c.ctx(), p); err != nil {
		return err
	}
	return c.json(http.StatusCreated, wire.Flow{ID: p.ID, CreatedAt: a.clock.Now().UTC(), Held: []string{}})
}

// getFlow answers a workflow's record and, where the spec can be read, the
// state of each of its members.
func (a *API) getFlow(c *call) error {
	fl, err := a.flows()
	if err != nil {
		return err
	}
	q, err := query(c.r, "spec")
	if err != nil {
		return err
	}
	bare := false
	switch q.Get("spec") {
	case "", "1":
	case "0":
		bare = true
	default:
		return errf(wire.CodeInvalidOption, "spec", "%q is not 0 or 1", q.Get("spec"))
	}
	id := c.r.PathValue("id")
	if err := store.CheckName("id", id); err != nil {
		return err
	}
	f, err := fl.GetFlow(c.ctx(), store.FlowGetParams{Namespace: c.ns(), ID: id})
	if err != nil {
		return err
	}
	if bare {
		// The record only, for pollers: no spec, no member states.
		return c.json(http.StatusOK, wire.Flow{ID: f.ID, CreatedAt: f.CreatedAt, Held: f.Held})
	}
	out, err := a.flowView(c, f, true)
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, out)
}

// flowView answers a flow with its state and, with members, each
// member's, when the spec is one kiln can read.
func (a *API) flowView(c *call, f *store.Flow, members bool) (wire.Flow, error) {
	out := wire.Flow{ID: f.ID, Spec: f.Spec, CreatedAt: f.CreatedAt, Held: f.Held}
	spec, err := flowspec.DecodeSpec(f.ID, f.Spec)
	if err != nil {
		return out, nil //nolint:nilerr // a spec of another kind is answered as it is
	}
	ids := make([]string, len(spec.Members))
	for i, m := range spec.Members {
		ids[i] = m.ID
	}
	tasks := make(map[string]*store.Task, len(ids))
	for start := 0; start < len(ids); start += store.MaxBatch {
		res, err := a.st.Get(c.ctx(), store.GetParams{Namespace: c.ns(), IDs: ids[start:min(start+store.MaxBatch, len(ids))]})
		if err != nil {
			return out, err
		}
		for _, t := range res.Tasks {
			if t != nil {
				tasks[t.ID] = t
			}
		}
	}
	st, ms := flowspec.Summarize(spec, tasks, f.Held)
	out.State = st
	out.Size = len(ms)
	if members {
		out.Members = make([]wire.FlowMember, len(ms))
		for i, m := range ms {
			out.Members[i] = wire.FlowMember{ID: m.ID, Type: m.Type, State: m.State, Error: m.Error}
		}
	}
	return out, nil
}

// listFlows answers the project's workflows in id order (oldest first for
// generated ids), each with its state, 20 a page (limit: at most 100).
func (a *API) listFlows(c *call) error {
	fl, err := a.flows()
	if err != nil {
		return err
	}
	q, err := query(c.r, "after", "limit")
	if err != nil {
		return err
	}
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return errf(wire.CodeInvalidOption, "limit", "%q is not a number in 1..100", v)
		}
		limit = n
	}
	res, err := fl.ListFlows(c.ctx(), store.FlowListParams{Namespace: c.ns(), After: q.Get("after"), Limit: limit})
	if err != nil {
		return err
	}
	out := wire.FlowList{Workflows: make([]wire.Flow, 0, len(res.Flows)), NextCursor: res.NextCursor}
	for _, f := range res.Flows {
		v, err := a.flowView(c, f, false)
		if err != nil {
			return err
		}
		out.Workflows = append(out.Workflows, v)
	}
	return c.json(http.StatusOK, out)
}
