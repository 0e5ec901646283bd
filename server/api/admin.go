package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

func (a *API) healthz(c *call) error {
	return c.json(http.StatusOK, wire.Health{Status: "ok"})
}

// probe pings the store for /readyz before anything else reads it. When
// the store does not answer it answers 503 (with Retry-After) and reports
// false; the store's error goes to the log, not to the caller.
func (a *API) probe(c *call) bool {
	err := a.st.Ping(c.ctx())
	if err == nil {
		return true
	}
	if errors.Is(err, store.ErrStorageFull) {
		// Not ready to take work, but up: reads are served, and the store
		// accepts writes again by itself once space is freed. The store
		// logs the change itself, once.
		writeJSON(c.w, http.StatusServiceUnavailable, wire.Health{Status: wire.CodeStorageFull, Code: wire.CodeStorageFull, Error: wire.StorageFullMessage})
		return false
	}
	a.log.WarnContext(c.ctx(), "store not ready", "err", err)
	code := wire.CodeStoreUnavailable
	if errors.Is(err, store.ErrClosed) {
		code = wire.CodeUnavailable
	}
	setRetryAfter(c.w, code)
	writeJSON(c.w, http.StatusServiceUnavailable, wire.Health{Status: "unavailable", Code: code, Error: wire.StoreUnavailableMessage})
	return false
}

// readyz answers 200 once probe found the store answering and the
// caller's credential valid, unless the server is stopping.
func (a *API) readyz(c *call) error {
	select {
	case <-a.stopping:
		setRetryAfter(c.w, wire.CodeUnavailable)
		return c.json(http.StatusServiceUnavailable, wire.Health{Status: "stopping", Code: wire.CodeUnavailable, Error: "the server is shutting down"})
	default:
	}
	return c.json(http.StatusOK, wire.Health{Status: "ok"})
}

// visibleProjects lists the projects the caller may see.
func (a *API) visibleProjects(c *call) ([]wire.Project, error) {
	var out []wire.Project
	err := a.listRecords(c.ctx(), SystemNamespace, keyProject, func(_ string, v []byte) error {
		var p projectRecord
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		if c.who.admin || c.who.project == p.ID {
			out = append(out, wire.Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt})
		}
		return nil
	})
	return out, err
}

// whoami tells what the request's token is: an admin token, or a project
// token and its project (the CLI's project when only a token is given).
func (a *API) whoami(c *call) error {
	if err := c.noBody(); err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.Whoami{Admin: c.who.admin, Project: c.who.project, TokenID: c.who.tokenID})
}

func (a *API) stats(c *call) error {
	if err := c.noBody(); err != nil {
		return err
	}
	ps, err := a.visibleProjects(c)
	if err != nil {
		return err
	}
	out := wire.ServerStats{Projects: []wire.ProjectStats{}, EventsDropped: a.hub.dropped.Load(), EventStreams: a.hub.streamCount()}
	for _, p := range ps {
		res, err := a.st.Stats(c.ctx(), store.StatsParams{Namespace: p.ID})
		if err != nil {
			return err
		}
		out.Projects = append(out.Projects, wire.ProjectStats{Project: p.ID, Queues: queues(res.Queues)})
	}
	return c.json(http.StatusOK, out)
}

func queues(qs []store.QueueStats) []wire.Queue {
	out := make([]wire.Queue, len(qs))
	for i, q := range qs {
		out[i] = wire.FromQueueStats(q)
	}
	return out
}

func (a *API) sweep(c *call) error {
	var req wire.SweepRequest
	if err := c.decode(&req, true); err != nil {
		return err
	}
	if req.Limit < 0 {
		return errf(wire.CodeInvalidOption, "limit", "%d is negative", req.Limit)
	}
	res, err := a.st.Sweep(c.ctx(), store.SweepParams{Limit: req.Limit})
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.SweepResponse{Promoted: res.Promoted, Recovered: res.Recovered, Dead: res.Dead, Cancelled: res.Cancelled, Deleted: res.Deleted})
}

func (a *API) createProject(c *call) error {
	var req wire.CreateProjectRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if len(req.Name) > 200 {
		return errf(wire.CodeInvalidOption, "name", "longer than 200 bytes")
	}
	p, secret, err := a.CreateProject(c.ctx(), req.ID, req.Name)
	if err != nil {
		return err
	}
	return c.json(http.StatusCreated, wire.CreateProjectResponse{Project: p, WorkerSecret: secret})
}

func (a *API) listProjects(c *call) error {
	ps, err := a.visibleProjects(c)
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []wire.Project{}
	}
	return c.json(http.StatusOK, wire.ProjectList{Projects: ps})
}

func checkTokenName(name string) error {
	if name != "" {
		return store.CheckName("name", name)
	}
	return nil
}

func (a *API) createAdminToken(c *call) error {
	var req wire.TokenRequest
	if err := c.decode(&req, true); err != nil {
		return err
	}
	if err := checkTokenName(req.Name); err != nil {
		return err
	}
	t, err := a.CreateToken(c.ctx(), "", req.Name)
	if err != nil {
		return err
	}
	return c.json(http.StatusCreated, t)
}

func (a *API) createToken(c *call) error {
	var req wire.TokenRequest
	if err := c.decode(&req, true); err != nil {
		return err
	}
	if err := checkTokenName(req.Name); err != nil {
		return err
	}
	t, err := a.CreateToken(c.ctx(), c.ns(), req.Name)
	if err != nil {
		return err
	}
	return c.json(http.StatusCreated, t)
}

// projectTokens returns the tokens of the route's project with their keys.
func (a *API) projectTokens(c *call) (keys []string, recs []tokenRecord, err error) {
	err = a.listRecords(c.ctx(), SystemNamespace, keyToken, func(k string, v []byte) error {
		var t tokenRecord
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		if !t.Admin && t.Project == c.ns() {
			keys, recs = append(keys, k), append(recs, t)
		}
		return nil
	})
	return keys, recs, err
}

func (a *API) listTokens(c *call) error {
	_, recs, err := a.projectTokens(c)
	if err != nil {
		return err
	}
	out := wire.TokenList{Tokens: []wire.Token{}}
	for _, t := range recs {
		out.Tokens = append(out.Tokens, wire.Token{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt})
	}
	return c.json(http.StatusOK, out)
}

func (a *API) deleteToken(c *call) error {
	id := c.r.PathValue("id")
	keys, recs, err := a.projectTokens(c)
	if err != nil {
		return err
	}
	for i, t := range recs {
		if t.ID == id {
			if err := a.deleteRecord(c.ctx(), SystemNamespace, keys[i]); err != nil {
				return err
			}
			c.w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return errf(wire.CodeNotFound, "id", "token %q not found", strings.TrimSpace(id))
}

func (a *API) rotateWorkerSecret(c *call) error {
	if err := c.noBody(); err != nil {
		return err
	}
	p := *c.project
	p.WorkerSecret = randomText(32)
	if _, err := a.putRecord(c.ctx(), SystemNamespace, keyProject+p.ID, p, false); err != nil {
		return err
	}
	a.projects.Store(p.ID, &p)
	return c.json(http.StatusOK, wire.WorkerSecret{WorkerSecret: p.WorkerSecret})
}
