package api

import (
	"net/http"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// FlowView, when set, reads a workflow's spec and answers each member's
// state for GET /v1/projects/{p}/workflows/{id}. Package kiln sets it (it
// knows the spec's format); without it the answer has the raw record only.
var FlowView func(c interface {
	Get(ns string, ids []string) ([]*store.Task, error)
}, ns string, f *store.Flow, out *wire.Flow) error

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
	if err := fl.EnqueueFlow(c.ctx(), p); err != nil {
		return err
	}
	return c.json(http.StatusCreated, wire.Flow{ID: p.ID, CreatedAt: a.clock.Now().UTC(), Held: []string{}})
}

type flowGetter struct {
	c *call
}

func (g flowGetter) Get(ns string, ids []string) ([]*store.Task, error) {
	res, err := g.c.a.st.Get(g.c.ctx(), store.GetParams{Namespace: ns, IDs: ids})
	return res.Tasks, err
}

// getFlow answers a workflow's record and, where the spec can be read, the
// state of each of its members.
func (a *API) getFlow(c *call) error {
	fl, err := a.flows()
	if err != nil {
		return err
	}
	if _, err := query(c.r); err != nil {
		return err
	}
	id := c.r.PathValue("id")
	if err := store.CheckName("id", id); err != nil {
		return err
	}
	f, err := fl.GetFlow(c.ctx(), store.FlowGetParams{Namespace: c.ns(), ID: id})
	if err != nil {
		return err
	}
	out := wire.Flow{ID: f.ID, Spec: f.Spec, CreatedAt: f.CreatedAt, Held: f.Held}
	if FlowView != nil {
		if err := FlowView(flowGetter{c}, c.ns(), f, &out); err != nil {
			return err
		}
	}
	return c.json(http.StatusOK, out)
}
