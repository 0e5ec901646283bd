package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/store"
)

// The states of a remote worker.
const (
	workerRegistered = "registered"
	workerVerified   = "verified"
	workerRevoked    = "revoked"
)

type workerRecord struct {
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	State            string     `json:"state"`
	CreatedAt        time.Time  `json:"created_at"`
	LastSeenAt       *time.Time `json:"last_seen_at"`
	SessionExpiresAt *time.Time `json:"session_expires_at"`
}

type challengeRecord struct {
	Challenge string    `json:"challenge"` // base64 of 32 random bytes
	ExpiresAt time.Time `json:"expires_at"`
}

func (w *workerRecord) wire() wire.Worker {
	return wire.Worker{ID: w.ID, Name: w.Name, State: w.State, CreatedAt: w.CreatedAt, LastSeenAt: w.LastSeenAt, SessionExpiresAt: w.SessionExpiresAt}
}

func (a *API) register(c *call) error {
	var req wire.RegisterRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if err := store.CheckName("name", req.Name); err != nil {
		return err
	}
	now := a.clock.Now().UTC()
	w := workerRecord{ID: randomID("wrk_"), Name: req.Name, State: workerRegistered, CreatedAt: now}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	ch := challengeRecord{Challenge: base64.StdEncoding.EncodeToString(raw), ExpiresAt: now.Add(a.cfg.HandshakeTimeout)}
	if _, err := a.putRecord(c.ctx(), c.ns(), keyWorker+w.ID, w, true); err != nil {
		return err
	}
	if _, err := a.putRecord(c.ctx(), c.ns(), keyChallenge+w.ID, ch, true); err != nil {
		return err
	}
	a.publish(wire.Event{Kind: "worker.registered", Project: c.ns(), WorkerID: w.ID, Message: w.Name})
	return c.json(http.StatusOK, wire.RegisterResponse{WorkerID: w.ID, Challenge: ch.Challenge, ExpiresAt: ch.ExpiresAt})
}

// verifyFailed raises worker.verify_failed and returns the error.
func (a *API) verifyFailed(c *call, workerID, msg string) error {
	a.publish(wire.Event{Kind: "worker.verify_failed", Project: c.ns(), WorkerID: workerID, Error: msg})
	return wire.Errorf(wire.CodeVerifyFailed, "%s", msg)
}

func (a *API) verify(c *call) error {
	var req wire.VerifyRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if !store.ValidName(req.WorkerID) {
		return a.verifyFailed(c, "", "unknown worker")
	}
	ctx := c.ctx()
	res, err := a.meta.MetaGet(ctx, store.MetaGetParams{Namespace: c.ns(), Key: keyChallenge + req.WorkerID})
	if err != nil {
		return err
	}
	if !res.Found {
		return a.verifyFailed(c, req.WorkerID, "no open challenge: unknown worker, or its challenge was already used")
	}
	// Consume the challenge before anything else: compare-and-delete, so
	// that of two servers (or two attempts) only one can use it, right or
	// wrong.
	del, err := a.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: c.ns(), Key: keyChallenge + req.WorkerID, IfValue: res.Value})
	if err != nil {
		return err
	}
	if !del.Deleted {
		return a.verifyFailed(c, req.WorkerID, "the challenge was already used")
	}
	// From here on a failure leaves a worker that can never verify:
	// forget it unless it had verified before (a revoked one is kept).
	verified := false
	defer func() {
		if !verified {
			a.forgetUnverified(ctx, c.ns(), req.WorkerID)
		}
	}()
	var ch challengeRecord
	if err := json.Unmarshal(res.Value, &ch); err != nil {
		return err
	}
	now := a.clock.Now().UTC()
	if !now.Before(ch.ExpiresAt) {
		return a.verifyFailed(c, req.WorkerID, "the handshake deadline passed; register again")
	}
	var w workerRecord
	found, err := a.getRecord(ctx, c.ns(), keyWorker+req.WorkerID, &w)
	if err != nil {
		return err
	}
	if !found || w.State == workerRevoked {
		return a.verifyFailed(c, req.WorkerID, "the worker was revoked")
	}
	// Read the project afresh: its worker secret may have been rotated by
	// another server.
	var p projectRecord
	if found, err := a.getRecord(ctx, SystemNamespace, keyProject+c.ns(), &p); err != nil || !found {
		if err != nil {
			return err
		}
		return notFoundProject(c.ns())
	}
	raw, err := base64.StdEncoding.DecodeString(ch.Challenge)
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, []byte(p.WorkerSecret))
	m.Write(raw) // a hash never fails to write
	got, err := hex.DecodeString(req.Response)
	if err != nil || !hmac.Equal(got, m.Sum(nil)) {
		return a.verifyFailed(c, req.WorkerID, "wrong response to the challenge")
	}
	sess, err := a.newSession(ctx, c.ns(), &w, now)
	if err != nil {
		return err
	}
	verified = true
	a.publish(wire.Event{Kind: "worker.verified", Project: c.ns(), WorkerID: w.ID, Message: w.Name})
	return c.json(http.StatusOK, sess)
}

// forgetUnverified deletes the record of a worker that never verified.
func (a *API) forgetUnverified(ctx context.Context, project, id string) {
	var w workerRecord
	found, err := a.getRecord(ctx, project, keyWorker+id, &w)
	if err == nil && found && w.State == workerRegistered {
		err = a.deleteRecord(ctx, project, keyWorker+id)
	}
	if err != nil {
		a.log.WarnContext(ctx, "forgetting an unverified worker", "worker", id, "err", err)
	}
}

// newSession makes a session key for w and records it.
func (a *API) newSession(ctx context.Context, project string, w *workerRecord, now time.Time) (wire.Session, error) {
	key := SessionKeyPrefix + randomText(32)
	hash := hashSecret(key)
	exp := now.Add(a.cfg.SessionTTL)
	if _, err := a.putRecord(ctx, SystemNamespace, keySession+hash, sessionRecord{Project: project, WorkerID: w.ID, Hash: hash, ExpiresAt: exp}, false); err != nil {
		return wire.Session{}, err
	}
	w.State, w.SessionExpiresAt, w.LastSeenAt = workerVerified, &exp, &now
	if _, err := a.putRecord(ctx, project, keyWorker+w.ID, w, false); err != nil {
		return wire.Session{}, err
	}
	return wire.Session{SessionKey: key, ExpiresAt: exp}, nil
}

func (a *API) refresh(c *call) error {
	if err := c.noBody(); err != nil {
		return err
	}
	if !c.who.session {
		return wire.Errorf(wire.CodeForbidden, "only a worker session key can be refreshed")
	}
	var w workerRecord
	found, err := a.getRecord(c.ctx(), c.ns(), keyWorker+c.who.workerID, &w)
	if err != nil {
		return err
	}
	if !found {
		return wire.Errorf(wire.CodeUnauthorized, "unknown worker")
	}
	sess, err := a.newSession(c.ctx(), c.ns(), &w, a.clock.Now().UTC())
	if err != nil {
		return err
	}
	if err := a.deleteRecord(c.ctx(), SystemNamespace, keySession+c.who.sessionHash); err != nil {
		return err
	}
	return c.json(http.StatusOK, sess)
}

func (a *API) listWorkers(c *call) error {
	out := wire.WorkerList{Workers: []wire.Worker{}}
	err := a.listRecords(c.ctx(), c.ns(), keyWorker, func(_ string, v []byte) error {
		var w workerRecord
		if err := json.Unmarshal(v, &w); err != nil {
			return err
		}
		out.Workers = append(out.Workers, w.wire())
		return nil
	})
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, out)
}

func (a *API) revokeWorker(c *call) error {
	if err := c.noBody(); err != nil {
		return err
	}
	id := c.r.PathValue("id")
	var w workerRecord
	found := false
	if store.ValidName(id) {
		var err error
		if found, err = a.getRecord(c.ctx(), c.ns(), keyWorker+id, &w); err != nil {
			return err
		}
	}
	if !found {
		return errf(wire.CodeNotFound, "id", "worker %q not found", id)
	}
	w.State = workerRevoked
	if _, err := a.putRecord(c.ctx(), c.ns(), keyWorker+id, w, false); err != nil {
		return err
	}
	if err := a.deleteRecord(c.ctx(), c.ns(), keyChallenge+id); err != nil {
		return err
	}
	a.publish(wire.Event{Kind: "worker.revoked", Project: c.ns(), WorkerID: id})
	return c.json(http.StatusOK, w.wire())
}

// touch records that a session's worker was seen, at most every 10 s.
func (a *API) touch(c *call) {
	if !c.who.session {
		return
	}
	now := a.clock.Now().UTC()
	a.seenMu.Lock()
	last, ok := a.seen[c.who.workerID]
	if ok && now.Sub(last) < 10*time.Second && !now.Before(last) {
		a.seenMu.Unlock()
		return
	}
	a.seen[c.who.workerID] = now
	a.seenMu.Unlock()
	var w workerRecord
	if found, err := a.getRecord(c.ctx(), c.ns(), keyWorker+c.who.workerID, &w); err != nil || !found {
		return
	}
	w.LastSeenAt = &now
	if _, err := a.putRecord(c.ctx(), c.ns(), keyWorker+w.ID, w, false); err != nil {
		a.log.WarnContext(c.ctx(), "recording last_seen_at", "worker", w.ID, "err", err)
	}
}

func (a *API) lease(c *call) error {
	var req wire.LeaseRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if req.WaitMS < 0 {
		return errf(wire.CodeInvalidOption, "wait_ms", "%d is negative", req.WaitMS)
	}
	if req.DurationMS < 0 {
		return errf(wire.CodeInvalidOption, "duration_ms", "%d is negative", req.DurationMS)
	}
	duration, err := wire.DurField("duration_ms", req.DurationMS)
	if err != nil {
		return err
	}
	wait, err := wire.DurField("wait_ms", req.WaitMS)
	if err != nil {
		return err
	}
	p := store.LeaseParams{
		Namespace: c.ns(), Queues: req.Queues, Weights: req.Weights, Types: req.Types,
		Max: req.Max, Duration: duration, Wait: min(wait, MaxLeaseWait), WorkerID: req.WorkerID,
	}
	if c.who.session {
		p.WorkerID = c.who.workerID
	}
	a.touch(c)
	// A shutdown ends the wait early: the answer is then empty.
	ctx, cancel := context.WithCancel(c.ctx())
	defer cancel()
	go func() {
		select {
		case <-a.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := a.st.Lease(ctx, p)
	if err != nil {
		if ctx.Err() != nil && c.ctx().Err() == nil {
			res, err = store.LeaseResult{}, nil // stopping
		} else {
			return err
		}
	}
	for _, t := range res.Tasks {
		a.publish(wire.Event{Kind: "task.started", Project: c.ns(), TaskID: t.ID, Type: t.Type, Queue: t.Queue, State: t.State.String(), Attempt: t.Attempt, WorkerID: p.WorkerID})
	}
	if len(res.Tasks) > 0 {
		a.publish(wire.Event{Kind: "worker.work_taken", Project: c.ns(), WorkerID: p.WorkerID, Count: len(res.Tasks)})
	} else {
		a.publish(wire.Event{Kind: "worker.no_work", Project: c.ns(), WorkerID: p.WorkerID})
	}
	if accepts(c.r, wirebin.TasksType) && wirebin.Encodable(res.Tasks) {
		c.binary(wirebin.TasksType, wirebin.AppendTasks(make([]byte, 0, 256*len(res.Tasks)+16), res.Tasks))
		return nil
	}
	tasks := wire.FromTasks(res.Tasks)
	if tasks == nil {
		tasks = []*wire.Task{}
	}
	return c.json(http.StatusOK, wire.LeaseResponse{Tasks: tasks})
}

func (a *API) extend(c *call) error {
	var req wire.ExtendRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if req.DurationMS < 0 {
		return errf(wire.CodeInvalidOption, "duration_ms", "%d is negative", req.DurationMS)
	}
	duration, err := wire.DurField("duration_ms", req.DurationMS)
	if err != nil {
		return err
	}
	p := store.ExtendParams{Namespace: c.ns(), Duration: duration, Leases: make([]store.ExtendLease, len(req.Leases))}
	for i, l := range req.Leases {
		p.Leases[i] = store.ExtendLease{LeaseRef: store.LeaseRef{ID: l.ID, LeaseID: l.LeaseID}}
		if l.Progress != nil {
			p.Leases[i].Progress = &store.Progress{Percent: l.Progress.Percent, Message: l.Progress.Message}
		}
	}
	a.touch(c)
	res, err := a.st.Extend(c.ctx(), p)
	if err != nil {
		return err
	}
	out := wire.ExtendResponse{Items: make([]wire.ExtendItem, len(res.Items))}
	for i, it := range res.Items {
		out.Items[i] = wire.ExtendItem{ExpiresAt: wire.TimePtr(it.ExpiresAt), CancelRequested: it.CancelRequested, Error: wire.Object(it.Err)}
		id := p.Leases[i].ID
		switch {
		case it.Err != nil:
			a.leaseLost(c, id, it.Err)
		case p.Leases[i].Progress != nil:
			a.publish(wire.Event{Kind: "task.progress", Project: c.ns(), TaskID: id, Percent: p.Leases[i].Progress.Percent, Message: p.Leases[i].Progress.Message})
		}
	}
	return c.json(http.StatusOK, out)
}

// leaseLost raises the events of a lease that was taken back.
func (a *API) leaseLost(c *call, id string, err error) {
	if o := wire.Object(err); o.Code != wire.CodeLeaseLost {
		return
	}
	a.publish(wire.Event{Kind: "task.lease_lost", Project: c.ns(), TaskID: id, Error: err.Error()})
	a.publish(wire.Event{Kind: "worker.work_timed_out", Project: c.ns(), TaskID: id, WorkerID: c.who.workerID})
}

// outcomeEvents are the task events of each outcome kind.
var outcomeEvents = map[store.OutcomeKind][]string{
	store.OutcomeSucceeded: {"task.succeeded"},
	store.OutcomeRetry:     {"task.failed", "task.retrying"},
	store.OutcomeDead:      {"task.failed", "task.dead"},
	store.OutcomeCancelled: {"task.cancelled"},
	store.OutcomeRelease:   nil,
}

func (a *API) report(c *call) error {
	p := store.ReportParams{Namespace: c.ns()}
	if isContentType(c.r, wirebin.OutcomesType) {
		b, err := readBody(c.w, c.r, a.cfg.MaxBodyBytes)
		if err != nil {
			return err
		}
		if p.Outcomes, err = wirebin.DecodeOutcomes(b); err != nil {
			return wire.Errorf(wire.CodeBadRequest, "%v", err)
		}
	} else {
		var req wire.ReportRequest
		if err := c.decode(&req, false); err != nil {
			return err
		}
		p.Outcomes = make([]store.Outcome, len(req.Outcomes))
		for i := range req.Outcomes {
			o, err := req.Outcomes[i].ToOutcome()
			if err != nil {
				return err
			}
			p.Outcomes[i] = o
		}
	}
	a.touch(c)
	res, err := a.st.Report(c.ctx(), p)
	if err != nil {
		return err
	}
	out := wire.ReportResponse{Errors: make([]*wire.Error, len(res.Errs))}
	for i, e := range res.Errs {
		out.Errors[i] = wire.Object(e)
		o := p.Outcomes[i]
		if e != nil {
			a.leaseLost(c, o.ID, e)
			continue
		}
		for _, kind := range outcomeEvents[o.Kind] {
			a.publish(wire.Event{Kind: kind, Project: c.ns(), TaskID: o.ID, Error: o.Error, WorkerID: c.who.workerID})
		}
		a.publish(wire.Event{Kind: "worker.work_complete", Project: c.ns(), TaskID: o.ID, WorkerID: c.who.workerID, State: o.Kind.String()})
	}
	return c.json(http.StatusOK, out)
}

// CollectHandshakes deletes the challenges whose deadline passed, and the
// never-verified workers they belonged to, in every project. The server's
// sweeper calls it now and then, so that half-open handshakes do not pile
// up. It returns how many it deleted.
func (a *API) CollectHandshakes(ctx context.Context) (int, error) {
	var projects []string
	if err := a.listRecords(ctx, SystemNamespace, keyProject, func(k string, _ []byte) error {
		projects = append(projects, k[len(keyProject):])
		return nil
	}); err != nil {
		return 0, err
	}
	now := a.clock.Now()
	n := 0
	for _, p := range projects {
		res, err := a.meta.MetaList(ctx, store.MetaListParams{Namespace: p, Prefix: keyChallenge})
		if err != nil {
			return n, err
		}
		for _, it := range res.Items {
			var ch challengeRecord
			if json.Unmarshal(it.Value, &ch) == nil && now.Before(ch.ExpiresAt) {
				continue
			}
			del, err := a.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: p, Key: it.Key, IfValue: it.Value})
			if err != nil {
				return n, err
			}
			if !del.Deleted {
				continue
			}
			n++
			id := it.Key[len(keyChallenge):]
			var w workerRecord
			if found, err := a.getRecord(ctx, p, keyWorker+id, &w); err == nil && found && w.State == workerRegistered {
				if err := a.deleteRecord(ctx, p, keyWorker+id); err != nil {
					return n, err
				}
			}
		}
	}
	return n, nil
}
