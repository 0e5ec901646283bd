package api

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	// workerExpired is not stored: GET .../workers shows a verified worker
	// whose session expired so.
	workerExpired = "expired"
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
	if err := a.admitHandshake(c.ctx(), c.ns(), now); err != nil {
		return err
	}
	w := workerRecord{ID: randomID("wrk_"), Name: req.Name, State: workerRegistered, CreatedAt: now}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read never fails
	ch := challengeRecord{Challenge: base64.StdEncoding.EncodeToString(raw), ExpiresAt: now.Add(a.cfg.HandshakeTimeout)}
	// The challenge first: if the worker's record then fails, the
	// challenge expires and is collected (CollectHandshakes), and nothing
	// is left behind.
	if _, err := a.putRecord(c.ctx(), c.ns(), keyChallenge+w.ID, ch, true); err != nil {
		return err
	}
	if _, err := a.putRecord(c.ctx(), c.ns(), keyWorker+w.ID, w, true); err != nil {
		return err
	}
	a.publish(wire.Event{Kind: wire.EventWorkerRegistered, Project: c.ns(), WorkerID: w.ID, Message: w.Name})
	return c.json(http.StatusOK, wire.RegisterResponse{WorkerID: w.ID, Challenge: ch.Challenge, ExpiresAt: ch.ExpiresAt})
}

// verifyFailed raises worker.verify_failed and returns the error.
func (a *API) verifyFailed(c *call, workerID, msg string) error {
	a.publish(wire.Event{Kind: wire.EventWorkerVerifyFailed, Project: c.ns(), WorkerID: workerID, Error: msg})
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
	sess, err := a.newSession(ctx, c.ns(), w.ID, now)
	if errors.Is(err, errWorkerRevoked) {
		// Revoked between the read above and the session's start: the
		// revoke wins (the session is deleted, the record kept).
		return a.verifyFailed(c, req.WorkerID, "the worker was revoked")
	}
	if err != nil {
		return err
	}
	verified = true
	a.publish(wire.Event{Kind: wire.EventWorkerVerified, Project: c.ns(), WorkerID: w.ID, Message: w.Name})
	return c.json(http.StatusOK, sess)
}

// forgetUnverified deletes the record of a worker that never verified.
func (a *API) forgetUnverified(ctx context.Context, project, id string) {
	if _, err := a.deleteUnverified(ctx, project, id); err != nil {
		a.log.WarnContext(ctx, "forgetting an unverified worker", "worker", id, "err", err)
	}
}

// deleteUnverified deletes the record of worker id if it is (still) in
// state registered: compare-and-delete, so that a record another server
// changed meanwhile (verified, revoked) is kept.
func (a *API) deleteUnverified(ctx context.Context, project, id string) (bool, error) {
	res, err := a.meta.MetaGet(ctx, store.MetaGetParams{Namespace: project, Key: keyWorker + id})
	if err != nil || !res.Found {
		return false, err
	}
	var w workerRecord
	if err := json.Unmarshal(res.Value, &w); err != nil {
		return false, fmt.Errorf("api: record %s/%s%s: %w", project, keyWorker, id, err)
	}
	if w.State != workerRegistered {
		return false, nil
	}
	del, err := a.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: project, Key: keyWorker + id, IfValue: res.Value})
	return del.Deleted, err
}

// errWorkerRevoked: the worker was revoked (or its record is gone).
var errWorkerRevoked = errors.New("api: the worker was revoked")

// updateWorker is every write of a worker record: it reads the record,
// lets change edit it and writes it back with compare-and-set, from a fresh
// read each time another write came between, until its own write wins.
// change returns false to write nothing. A revoked record is never written
// again, so no racing write can undo a revoke: change is not called for it.
// updateWorker returns the record as it is now and whether it was found.
func (a *API) updateWorker(ctx context.Context, project, id string, change func(w *workerRecord) bool) (workerRecord, bool, error) {
	key := keyWorker + id
	for {
		res, err := a.meta.MetaGet(ctx, store.MetaGetParams{Namespace: project, Key: key})
		if err != nil || !res.Found {
			return workerRecord{}, false, err
		}
		var w workerRecord
		if err := json.Unmarshal(res.Value, &w); err != nil {
			return workerRecord{}, false, fmt.Errorf("api: record %s/%s: %w", project, key, err)
		}
		if w.State == workerRevoked || !change(&w) {
			return w, true, nil
		}
		b, err := json.Marshal(w)
		if err != nil {
			return workerRecord{}, false, err
		}
		put, err := a.meta.MetaPut(ctx, store.MetaPutParams{Namespace: project, Key: key, Value: b, IfValue: res.Value})
		if err != nil {
			return workerRecord{}, false, err
		}
		if put.Stored {
			return w, true, nil
		}
		if err := ctx.Err(); err != nil {
			return workerRecord{}, false, err
		}
	}
}

// newSession makes a session key for worker id, records it, and marks the
// worker verified. The session record is written first and the worker
// record after it, by compare-and-set: when a revoke wins that race the
// session just made is deleted and the error is errWorkerRevoked. A session
// authenticates only while its worker's record says verified (authenticate
// reads it on every request), so it is never usable after the revoke.
func (a *API) newSession(ctx context.Context, project, id string, now time.Time) (wire.Session, error) {
	key := SessionKeyPrefix + randomText(32)
	hash := hashSecret(key)
	exp := now.Add(a.cfg.SessionTTL)
	if _, err := a.putRecord(ctx, SystemNamespace, keySession+hash, sessionRecord{Project: project, WorkerID: id, Hash: hash, ExpiresAt: exp}, false); err != nil {
		return wire.Session{}, err
	}
	w, found, err := a.updateWorker(ctx, project, id, func(w *workerRecord) bool {
		w.State, w.SessionExpiresAt, w.LastSeenAt = workerVerified, &exp, &now
		return true
	})
	if err == nil && (!found || w.State != workerVerified) {
		err = errWorkerRevoked
	}
	if err != nil {
		if derr := a.deleteRecord(context.WithoutCancel(ctx), SystemNamespace, keySession+hash); derr != nil {
			a.log.WarnContext(ctx, "deleting the session of a revoked worker", "worker", id, "err", derr)
		}
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
	ctx, id := c.ctx(), c.who.workerID
	sess, err := a.newSession(ctx, c.ns(), id, a.clock.Now().UTC())
	if errors.Is(err, errWorkerRevoked) {
		return wire.Errorf(wire.CodeUnauthorized, "the worker %s was revoked", id)
	}
	if err != nil {
		return err
	}
	// The old key is single-use: of two refreshes with it only the one
	// that deletes it keeps its new key.
	del, err := a.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: SystemNamespace, Key: keySession + c.who.sessionHash})
	if err == nil && !del.Deleted {
		err = wire.Errorf(wire.CodeUnauthorized, "the session key was already refreshed")
	}
	if err != nil {
		if derr := a.deleteRecord(context.WithoutCancel(ctx), SystemNamespace, keySession+hashSecret(sess.SessionKey)); derr != nil {
			a.log.WarnContext(ctx, "deleting an unused session", "worker", id, "err", derr)
		}
		return err
	}
	return c.json(http.StatusOK, sess)
}

func (a *API) listWorkers(c *call) error {
	out := wire.WorkerList{Workers: []wire.Worker{}}
	now := a.clock.Now()
	err := a.listRecords(c.ctx(), c.ns(), keyWorker, func(_ string, v []byte) error {
		var w workerRecord
		if err := json.Unmarshal(v, &w); err != nil {
			return err
		}
		ww := w.wire()
		if ww.State == workerVerified && ww.SessionExpiresAt != nil && !now.Before(*ww.SessionExpiresAt) {
			// The worker's session ended and it did not refresh it: it
			// stopped (or lost the server). Verified would claim a worker
			// that can still take work.
			ww.State = workerExpired
		}
		out.Workers = append(out.Workers, ww)
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
		// Compare-and-set: a refresh, verify or last-seen write racing
		// this one cannot write the old state back, and none may change a
		// revoked record (updateWorker).
		var err error
		if w, found, err = a.updateWorker(c.ctx(), c.ns(), id, func(w *workerRecord) bool {
			w.State = workerRevoked
			return true
		}); err != nil {
			return err
		}
	}
	if !found {
		return errf(wire.CodeNotFound, "id", "worker %q not found", id)
	}
	if err := a.deleteRecord(c.ctx(), c.ns(), keyChallenge+id); err != nil {
		return err
	}
	a.publish(wire.Event{Kind: wire.EventWorkerRevoked, Project: c.ns(), WorkerID: id})
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
	_, _, err := a.updateWorker(c.ctx(), c.ns(), c.who.workerID, func(w *workerRecord) bool {
		if w.State != workerVerified {
			return false
		}
		w.LastSeenAt = &now
		return true
	})
	if err != nil {
		a.log.WarnContext(c.ctx(), "recording last_seen_at", "worker", c.who.workerID, "err", err)
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
	// A stopping server leases nothing: the answer is empty.
	select {
	case <-a.stopping:
		return a.answerLease(c, p, nil)
	default:
	}
	// A shutdown ends the wait early: the answer is then empty.
	ctx, cancel := a.untilStopping(c)
	defer cancel()
	res, err := a.st.Lease(ctx, p)
	if err != nil {
		if !stoppedEarly(ctx, c) {
			return err
		}
		res = store.LeaseResult{} // stopping
	}
	if c.who.session && len(res.Tasks) > 0 {
		if err := a.stillVerified(c, res.Tasks); err != nil {
			return err
		}
	}
	return a.answerLease(c, p, res.Tasks)
}

// Bounds of the delivery of a lease answer and of the hand-back of an
// answer that was not delivered.
const (
	// leaseWriteTimeout, plus a second per MiB of answer, bounds writing
	// the answer: a client that stops reading does not hold its tasks.
	leaseWriteTimeout   = 30 * time.Second
	leaseReleaseTimeout = 10 * time.Second
)

// answerLease writes the answer of a lease. Tasks whose answer cannot be
// delivered (the client left before it was written, or writing it failed)
// are handed back at once, their attempt not counted: a lease nobody
// received is not a failed attempt. An answer that reached the kernel's
// buffers before the client died cannot be told from a delivered one; the
// lease's expiry recovers those tasks.
func (a *API) answerLease(c *call, p store.LeaseParams, tasks []*store.Task) error {
	if len(tasks) > 0 && c.ctx().Err() != nil {
		a.abandonLease(c, p, tasks, "the client left before the answer was written", c.ctx().Err(), slog.LevelInfo)
		return nil
	}
	for _, t := range tasks {
		a.publish(wire.Event{Kind: wire.EventTaskStarted, Project: c.ns(), TaskID: t.ID, Type: t.Type, Queue: t.Queue, State: t.State.String(), Attempt: t.Attempt, WorkerID: p.WorkerID})
	}
	if len(tasks) > 0 {
		a.publish(wire.Event{Kind: wire.EventWorkerWorkTaken, Project: c.ns(), WorkerID: p.WorkerID, Count: len(tasks)})
	} else {
		a.publish(wire.Event{Kind: wire.EventWorkerNoWork, Project: c.ns(), WorkerID: p.WorkerID})
	}
	var contentType string
	var body []byte
	// Tasks with a trace context go in binary only to a client that reads
	// it (wirebin.TasksTraceParam); older ones get them in JSON. Error
	// histories go only to a client that reads them
	// (wirebin.TasksErrorsParam); older ones get the tasks without.
	if accepts(c.r, wirebin.TasksType) && wirebin.Encodable(tasks) &&
		(!wirebin.HasTrace(tasks) || acceptsWith(c.r, wirebin.TasksType, wirebin.TasksTraceParam)) {
		bin := tasks
		if wirebin.HasErrors(tasks) && !acceptsWith(c.r, wirebin.TasksType, wirebin.TasksErrorsParam) {
			bin = wirebin.WithoutErrors(tasks)
		}
		contentType, body = wirebin.TasksType, wirebin.AppendTasks(make([]byte, 0, 256*len(tasks)+16), bin)
	} else {
		ws := wire.FromTasks(tasks)
		if ws == nil {
			ws = []*wire.Task{}
		}
		b, err := json.Marshal(wire.LeaseResponse{Tasks: ws})
		if err != nil {
			a.abandonLease(c, p, tasks, "the answer could not be encoded", err, slog.LevelError)
			return err
		}
		contentType, body = "application/json", append(b, '\n')
	}
	if err := c.deliver(contentType, body, leaseWriteTimeout+time.Duration(len(body)>>20)*time.Second); err != nil && len(tasks) > 0 {
		a.abandonLease(c, p, tasks, "writing the answer failed", err, slog.LevelWarn)
	}
	return nil
}

// abandonLease hands back the tasks of a lease whose answer was not
// delivered, as not started, and raises task.released for each task and
// worker.lease_abandoned. It runs detached from the request, whose client
// is gone, within leaseReleaseTimeout.
func (a *API) abandonLease(c *call, p store.LeaseParams, tasks []*store.Task, why string, cause error, level slog.Level) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx()), leaseReleaseTimeout)
	defer cancel()
	outs := make([]store.Outcome, len(tasks))
	for i, t := range tasks {
		outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeRelease, NotStarted: true}
	}
	res, err := a.st.Report(ctx, store.ReportParams{Namespace: c.ns(), Outcomes: outs})
	if err != nil {
		a.log.ErrorContext(ctx, "lease answer not delivered, and handing its tasks back failed; they run again when their lease expires",
			"project", c.ns(), "worker", p.WorkerID, "tasks", len(tasks), "reason", why, "cause", cause, "err", err)
		return
	}
	released := 0
	for i, t := range tasks {
		if i < len(res.Errs) && res.Errs[i] != nil {
			continue // the lease is no longer this one: nothing to hand back
		}
		released++
		a.publish(wire.Event{Kind: wire.EventTaskReleased, Project: c.ns(), TaskID: t.ID, Type: t.Type, Queue: t.Queue, State: store.StatePending.String(), Attempt: t.Attempt - 1, WorkerID: p.WorkerID})
	}
	a.publish(wire.Event{Kind: wire.EventWorkerLeaseAbandoned, Project: c.ns(), WorkerID: p.WorkerID, Count: released, Error: why})
	a.log.Log(ctx, level, "lease answer not delivered; its tasks were handed back, their attempt not counted",
		"project", c.ns(), "worker", p.WorkerID, "tasks", len(tasks), "released", released, "reason", why, "cause", cause)
}

// stillVerified checks, after a session's lease took tasks, that its worker
// was not revoked while the lease waited (a long poll outlives the check of
// authenticate): if it was, the tasks go back to pending, attempt not
// counted, and the answer is unauthorized.
func (a *API) stillVerified(c *call, tasks []*store.Task) error {
	var w workerRecord
	found, err := a.getRecord(c.ctx(), c.ns(), keyWorker+c.who.workerID, &w)
	if err == nil && found && w.State == workerVerified {
		return nil
	}
	p := store.ReportParams{Namespace: c.ns(), Outcomes: make([]store.Outcome, len(tasks))}
	for i, t := range tasks {
		p.Outcomes[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeRelease, NotStarted: true}
	}
	if _, rerr := a.st.Report(context.WithoutCancel(c.ctx()), p); rerr != nil {
		// The leases expire on their own and the sweeper takes the tasks
		// back.
		a.log.WarnContext(c.ctx(), "releasing the tasks of a revoked worker", "worker", c.who.workerID, "err", rerr)
	}
	if err != nil {
		return err
	}
	return wire.Errorf(wire.CodeUnauthorized, "the worker %s was revoked", c.who.workerID)
}

// waitCancels answers the leases of the project asked to cancel after the
// request's cursor, waiting up to wait_ms (at most MaxLeaseWait) for one:
// the push of cancels to remote workers.
func (a *API) waitCancels(c *call) error {
	var req wire.CancelsRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if req.WaitMS < 0 {
		return errf(wire.CodeInvalidOption, "wait_ms", "%d is negative", req.WaitMS)
	}
	wait, err := wire.DurField("wait_ms", req.WaitMS)
	if err != nil {
		return err
	}
	p := store.WaitCancelsParams{Namespace: c.ns(), Cursor: req.Cursor, Wait: min(wait, MaxLeaseWait)}
	a.touch(c)
	// A shutdown ends the wait early, like a lease's.
	ctx, cancel := a.untilStopping(c)
	defer cancel()
	res, err := a.st.WaitCancels(ctx, p)
	if err != nil {
		if !stoppedEarly(ctx, c) {
			return err
		}
		res = store.WaitCancelsResult{Cursor: req.Cursor} // stopping: nothing new
	}
	out := wire.CancelsResponse{Leases: make([]wire.LeaseRef, len(res.Leases)), Cursor: res.Cursor, Missed: res.Missed}
	for i, l := range res.Leases {
		out.Leases[i] = wire.LeaseRef{ID: l.ID, LeaseID: l.LeaseID}
	}
	return c.json(http.StatusOK, out)
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
			a.publish(wire.Event{Kind: wire.EventTaskProgress, Project: c.ns(), TaskID: id, Percent: p.Leases[i].Progress.Percent, Message: p.Leases[i].Progress.Message})
		}
	}
	return c.json(http.StatusOK, out)
}

// leaseLost raises the events of a lease that was taken back.
func (a *API) leaseLost(c *call, id string, err error) {
	if o := wire.Object(err); o.Code != wire.CodeLeaseLost {
		return
	}
	a.publish(wire.Event{Kind: wire.EventTaskLeaseLost, Project: c.ns(), TaskID: id, Error: err.Error()})
	a.publish(wire.Event{Kind: wire.EventWorkerWorkTimedOut, Project: c.ns(), TaskID: id, WorkerID: c.who.workerID})
}

// outcomeEvents are the task events of each outcome kind.
var outcomeEvents = map[store.OutcomeKind][]string{
	store.OutcomeSucceeded: {wire.EventTaskSucceeded},
	store.OutcomeRetry:     {wire.EventTaskFailed, wire.EventTaskRetrying},
	store.OutcomeDead:      {wire.EventTaskFailed, wire.EventTaskDead},
	store.OutcomeCancelled: {wire.EventTaskCancelled},
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
		a.publish(wire.Event{Kind: wire.EventWorkerWorkComplete, Project: c.ns(), TaskID: o.ID, WorkerID: c.who.workerID, State: o.Kind.String()})
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
			if _, err := a.deleteUnverified(ctx, p, it.Key[len(keyChallenge):]); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// untilStopping returns a context for a long poll of c (a lease, a wait for
// cancels or changes) that a shutdown of the server ends early, as well as
// the request's end; the caller calls cancel when the wait is over.
func (a *API) untilStopping(c *call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(c.ctx())
	go func() {
		select {
		case <-a.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// stoppedEarly says whether a long poll's error came from the server's
// shutdown ending ctx (see untilStopping) rather than from the store or
// the request: the wait then answers that nothing is new.
func stoppedEarly(ctx context.Context, c *call) bool {
	return ctx.Err() != nil && c.ctx().Err() == nil
}
