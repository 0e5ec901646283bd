package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/store"
)

var _ store.Store = (*Store)(nil)

// ms returns d in milliseconds, rounded up so that a positive duration
// never becomes zero.
func ms(d time.Duration) int64 {
	if d <= 0 {
		return d.Milliseconds()
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// checkMS refuses a duration the API cannot carry exactly: durations travel
// in whole milliseconds.
func checkMS(field string, d time.Duration) error {
	if d%time.Millisecond != 0 {
		return &store.ValidationError{Field: field, Reason: fmt.Sprintf("%s is not a whole number of milliseconds (the API's unit)", d), Err: store.ErrInvalidOption}
	}
	return nil
}

func checkNS(op, ns string) error {
	if err := store.CheckNamespace(ns); err != nil {
		return fmt.Errorf("remote: %s: %w", op, err)
	}
	return nil
}

// itemErr converts a per-item error object.
func itemErr(e *wire.Error) error { return e.Err() }

// Enqueue implements store.Enqueuer: one POST of the whole batch, with every
// option present so the server applies no default of its own.
func (s *Store) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	if err := checkNS("enqueue", p.Namespace); err != nil {
		return store.EnqueueResult{}, err
	}
	if len(p.Tasks) == 0 {
		if s.isClosed() {
			return store.EnqueueResult{}, errClosed
		}
		return store.EnqueueResult{Items: []store.EnqueueItem{}}, nil
	}
	items := make([]store.EnqueueItem, len(p.Tasks))
	req := wire.EnqueueRequest{Tasks: make([]wire.TaskRequest, 0, len(p.Tasks))}
	sent := make([]int, 0, len(p.Tasks)) // index in p.Tasks of each task sent
	for i, in := range p.Tasks {
		// What the wire cannot say is checked here: an empty id would get a
		// new one from the server (kiln.Client's default), and durations
		// travel in whole milliseconds.
		if err := errors.Join(store.CheckName("id", in.ID), checkMS("timeout", in.Timeout), checkMS("unique_ttl", in.UniqueTTL), checkMS("retention", in.Retention)); err != nil {
			items[i].Err = err
			continue
		}
		req.Tasks = append(req.Tasks, wire.OptionsFromInput(in))
		sent = append(sent, i)
	}
	if len(req.Tasks) == 0 {
		return store.EnqueueResult{Items: items}, nil
	}
	r := apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "tasks"), Body: req}
	if !s.cfg.JSONOnly && s.binEnqueue.Load() && wirebin.EnqueueEncodable(req.Tasks) {
		r.Body, r.RawBody, r.ContentType = nil, wirebin.AppendEnqueue(nil, req.Tasks), wirebin.EnqueueType
	}
	var raw apiclient.Raw
	if err := s.call(ctx, "enqueue", r, &raw); err != nil {
		return store.EnqueueResult{}, err
	}
	if !s.cfg.JSONOnly && strings.Contains(raw.Header.Get("Accept-Post"), wirebin.EnqueueType) {
		s.binEnqueue.Store(true)
	}
	var resp wire.EnqueueResponse
	if err := json.Unmarshal(raw.Body, &resp); err != nil {
		return store.EnqueueResult{}, fmt.Errorf("remote: enqueue: decode answer: %w", err)
	}
	if len(resp.Tasks) != len(req.Tasks) {
		return store.EnqueueResult{}, fmt.Errorf("remote: enqueue: server answered %d items for %d tasks", len(resp.Tasks), len(req.Tasks))
	}
	for j, it := range resp.Tasks {
		out := &items[sent[j]]
		out.ID, out.Err = it.ID, itemErr(it.Error)
		if it.State != "" {
			st, err := store.ParseState(it.State)
			if err != nil {
				return store.EnqueueResult{}, fmt.Errorf("remote: enqueue: %w", err)
			}
			out.State = st
		}
	}
	return store.EnqueueResult{Items: items}, nil
}

// Lease implements store.Leaser with the long-poll route. A Wait longer than
// the API's cap per request (MaxWaitPerRequest) is served by asking again
// until the wait is over.
//
// When ctx ends, a request in flight is given apiclient.AnswerGrace
// (250 ms) for its answer to start arriving, and is cancelled only if none
// does; an answer that started to arrive is read to its end and its tasks
// returned although ctx ended, so that tasks the server leased to this call
// are not dropped (the caller runs them or hands them back). A request that
// is cancelled makes the server hand back whatever it leased for it (see
// docs/api.md).
func (s *Store) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	if err := p.Validate(); err != nil {
		return store.LeaseResult{}, fmt.Errorf("remote: lease: %w", err)
	}
	end := time.Now().Add(p.Wait)
	req := wire.LeaseRequest{
		Queues: p.Queues, Weights: p.Weights, Types: p.Types, Max: p.Max,
		DurationMS: ms(p.Duration), WorkerID: p.WorkerID,
	}
	path := projectPath(p.Namespace, "lease")
	for {
		wait := time.Duration(0)
		if p.Wait > 0 {
			wait = min(time.Until(end), MaxWaitPerRequest)
			if wait < time.Millisecond {
				wait = time.Millisecond
			}
		}
		req.WaitMS = ms(wait)
		tasks, err := s.lease(ctx, p.Namespace, apiclient.Request{Method: http.MethodPost, Path: path, Body: req, Wait: wait, KeepAnswer: true})
		if err != nil {
			return store.LeaseResult{}, err
		}
		if len(tasks) > 0 || p.Wait <= 0 || !time.Now().Before(end) {
			return store.LeaseResult{Tasks: tasks}, nil
		}
		if ctx.Err() != nil {
			return store.LeaseResult{}, fmt.Errorf("remote: lease: %w", context.Cause(ctx))
		}
	}
}

// lease sends one lease request and decodes its answer: the binary
// encoding unless Config.JSONOnly, or JSON when the server answers JSON.
func (s *Store) lease(ctx context.Context, ns string, r apiclient.Request) ([]*store.Task, error) {
	var ws []*wire.Task
	if s.cfg.JSONOnly {
		var resp wire.LeaseResponse
		if err := s.call(ctx, "lease", r, &resp); err != nil {
			return nil, err
		}
		ws = resp.Tasks
	} else {
		r.Accept = wirebin.TasksType + ";" + wirebin.TasksTraceParam + "=1;" + wirebin.TasksErrorsParam + "=1, application/json;q=0.5"
		var raw apiclient.Raw
		if err := s.call(ctx, "lease", r, &raw); err != nil {
			return nil, err
		}
		if raw.ContentType == wirebin.TasksType {
			s.binReport.Store(true)
			tasks, err := wirebin.DecodeTasks(raw.Body, ns)
			if err != nil {
				return nil, fmt.Errorf("remote: lease: %w", err)
			}
			return tasks, nil
		}
		var resp wire.LeaseResponse
		if err := json.Unmarshal(raw.Body, &resp); err != nil {
			return nil, fmt.Errorf("remote: lease: decode answer: %w", err)
		}
		ws = resp.Tasks
	}
	tasks, err := toTasks(ns, ws)
	if err != nil {
		return nil, fmt.Errorf("remote: lease: %w", err)
	}
	return tasks, nil
}

func toTasks(ns string, ws []*wire.Task) ([]*store.Task, error) {
	out := make([]*store.Task, len(ws))
	for i, w := range ws {
		t, err := w.ToTask(ns)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

// Extend implements store.Leaser.
func (s *Store) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	if err := checkNS("extend", p.Namespace); err != nil {
		return store.ExtendResult{}, err
	}
	if len(p.Leases) == 0 {
		if s.isClosed() {
			return store.ExtendResult{}, errClosed
		}
		return store.ExtendResult{Items: []store.ExtendItem{}}, nil
	}
	req := wire.ExtendRequest{Leases: make([]wire.ExtendLease, len(p.Leases)), DurationMS: ms(p.Duration)}
	for i, l := range p.Leases {
		req.Leases[i] = wire.ExtendLease{ID: l.ID, LeaseID: l.LeaseID}
		if l.Progress != nil {
			req.Leases[i].Progress = &wire.Progress{Percent: l.Progress.Percent, Message: l.Progress.Message}
		}
	}
	var resp wire.ExtendResponse
	if err := s.call(ctx, "extend", apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "extend"), Body: req}, &resp); err != nil {
		return store.ExtendResult{}, err
	}
	if len(resp.Items) != len(p.Leases) {
		return store.ExtendResult{}, fmt.Errorf("remote: extend: server answered %d items for %d leases", len(resp.Items), len(p.Leases))
	}
	out := make([]store.ExtendItem, len(resp.Items))
	for i, it := range resp.Items {
		out[i] = store.ExtendItem{ExpiresAt: wire.TimeVal(it.ExpiresAt), CancelRequested: it.CancelRequested, Err: itemErr(it.Error)}
	}
	return store.ExtendResult{Items: out}, nil
}

// Report implements store.Leaser.
func (s *Store) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	if err := checkNS("report", p.Namespace); err != nil {
		return store.ReportResult{}, err
	}
	if len(p.Outcomes) == 0 {
		if s.isClosed() {
			return store.ReportResult{}, errClosed
		}
		return store.ReportResult{Errs: []error{}}, nil
	}
	errs := make([]error, len(p.Outcomes))
	outs := make([]store.Outcome, 0, len(p.Outcomes))
	sent := make([]int, 0, len(p.Outcomes))
	for i, o := range p.Outcomes {
		// An unknown kind has no name on the wire: it fails alone, here.
		if o.Kind < store.OutcomeSucceeded || o.Kind > store.OutcomeRelease {
			errs[i] = &store.ValidationError{Field: "kind", Reason: fmt.Sprintf("unknown outcome %d", o.Kind), Err: store.ErrInvalidOption}
			continue
		}
		outs = append(outs, o)
		sent = append(sent, i)
	}
	if len(outs) == 0 {
		return store.ReportResult{Errs: errs}, nil
	}
	r := apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "report")}
	if !s.cfg.JSONOnly && s.binReport.Load() && wirebin.OutcomesEncodable(outs) {
		r.RawBody, r.ContentType = wirebin.AppendOutcomes(nil, outs), wirebin.OutcomesType
	} else {
		req := wire.ReportRequest{Outcomes: make([]wire.Outcome, len(outs))}
		for i, o := range outs {
			req.Outcomes[i] = wire.FromOutcome(o)
		}
		r.Body = req
	}
	var resp wire.ReportResponse
	if err := s.call(ctx, "report", r, &resp); err != nil {
		return store.ReportResult{}, err
	}
	if len(resp.Errors) != len(outs) {
		return store.ReportResult{}, fmt.Errorf("remote: report: server answered %d items for %d outcomes", len(resp.Errors), len(outs))
	}
	for j, e := range resp.Errors {
		errs[sent[j]] = itemErr(e)
	}
	return store.ReportResult{Errs: errs}, nil
}

// WaitCancels implements store.Leaser with cancels:wait, a long poll: the
// server answers as soon as an active task of the project is asked to
// cancel (see Lease for waits longer than MaxWaitPerRequest: here one
// request waits at most that long and the caller asks again).
func (s *Store) WaitCancels(ctx context.Context, p store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	if err := checkNS("wait cancels", p.Namespace); err != nil {
		return store.WaitCancelsResult{}, err
	}
	if p.Wait < 0 {
		return store.WaitCancelsResult{}, fmt.Errorf("remote: wait cancels: wait %s: %w", p.Wait, store.ErrInvalidOption)
	}
	wait := min(p.Wait, MaxWaitPerRequest)
	req := wire.CancelsRequest{Cursor: p.Cursor, WaitMS: ms(wait)}
	var resp wire.CancelsResponse
	if err := s.call(ctx, "wait cancels", apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "cancels:wait"), Body: req, Wait: wait}, &resp); err != nil {
		return store.WaitCancelsResult{}, err
	}
	out := store.WaitCancelsResult{Cursor: resp.Cursor, Missed: resp.Missed, Leases: make([]store.LeaseRef, len(resp.Leases))}
	for i, l := range resp.Leases {
		out.Leases[i] = store.LeaseRef{ID: l.ID, LeaseID: l.LeaseID}
	}
	return out, nil
}

// Get implements store.Reader with tasks:batchGet.
func (s *Store) Get(ctx context.Context, p store.GetParams) (store.GetResult, error) {
	if err := checkNS("get", p.Namespace); err != nil {
		return store.GetResult{}, err
	}
	if len(p.IDs) == 0 {
		if s.isClosed() {
			return store.GetResult{}, errClosed
		}
		return store.GetResult{Tasks: []*store.Task{}}, nil
	}
	var resp wire.BatchGetResponse
	if err := s.call(ctx, "get", apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "tasks:batchGet"), Body: wire.IDsRequest{IDs: p.IDs}}, &resp); err != nil {
		return store.GetResult{}, err
	}
	if len(resp.Tasks) != len(p.IDs) {
		return store.GetResult{}, fmt.Errorf("remote: get: server answered %d tasks for %d ids", len(resp.Tasks), len(p.IDs))
	}
	tasks, err := toTasks(p.Namespace, resp.Tasks)
	if err != nil {
		return store.GetResult{}, fmt.Errorf("remote: get: %w", err)
	}
	return store.GetResult{Tasks: tasks}, nil
}

// List implements store.Reader.
func (s *Store) List(ctx context.Context, p store.ListParams) (store.ListResult, error) {
	if err := checkNS("list", p.Namespace); err != nil {
		return store.ListResult{}, err
	}
	q := url.Values{}
	if p.Queue != "" {
		q.Set("queue", p.Queue)
	}
	if p.Type != "" {
		q.Set("type", p.Type)
	}
	if len(p.States) > 0 {
		names := make([]string, len(p.States))
		for i, st := range p.States {
			if !st.Valid() {
				return store.ListResult{}, fmt.Errorf("remote: list: state %d: %w", uint8(st), store.ErrInvalidOption)
			}
			names[i] = st.String()
		}
		q.Set("state", strings.Join(names, ","))
	}
	if !p.CreatedAfter.IsZero() {
		q.Set("created_after", p.CreatedAfter.UTC().Format(time.RFC3339Nano))
	}
	if !p.CreatedBefore.IsZero() {
		q.Set("created_before", p.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	if p.Newest {
		q.Set("order", "newest")
	}
	if p.WithPayload {
		q.Set("payload", "true")
	}
	var resp wire.TaskList
	if err := s.call(ctx, "list", apiclient.Request{Method: http.MethodGet, Path: projectPath(p.Namespace, "tasks"), Query: q}, &resp); err != nil {
		return store.ListResult{}, err
	}
	tasks, err := toTasks(p.Namespace, resp.Tasks)
	if err != nil {
		return store.ListResult{}, fmt.Errorf("remote: list: %w", err)
	}
	return store.ListResult{Tasks: tasks, NextCursor: resp.NextCursor}, nil
}

// Stats implements store.Reader with the queue list of the project.
func (s *Store) Stats(ctx context.Context, p store.StatsParams) (store.StatsResult, error) {
	if err := checkNS("stats", p.Namespace); err != nil {
		return store.StatsResult{}, err
	}
	var resp wire.QueueList
	if err := s.call(ctx, "stats", apiclient.Request{Method: http.MethodGet, Path: projectPath(p.Namespace, "queues")}, &resp); err != nil {
		return store.StatsResult{}, err
	}
	all := make(map[string]store.QueueStats, len(resp.Queues))
	out := make([]store.QueueStats, 0, len(resp.Queues))
	for i := range resp.Queues {
		qs, err := resp.Queues[i].ToQueueStats()
		if err != nil {
			return store.StatsResult{}, fmt.Errorf("remote: stats: %w", err)
		}
		all[qs.Queue] = qs
		if p.Queues == nil && (qs.Paused || qs.Total() > 0) {
			out = append(out, qs)
		}
	}
	if p.Queues != nil {
		// One entry per queue asked for, as the other stores answer.
		for _, name := range p.Queues {
			qs, ok := all[name]
			if !ok {
				qs = store.QueueStats{Queue: name}
			}
			out = append(out, qs)
		}
	}
	slices.SortStableFunc(out, func(a, b store.QueueStats) int { return strings.Compare(a.Queue, b.Queue) })
	return store.StatsResult{Queues: out}, nil
}

// Cancel implements store.Admin with tasks:cancel.
func (s *Store) Cancel(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "cancel", "tasks:cancel", p)
}

// Retry implements store.Admin with tasks:retry.
func (s *Store) Retry(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "retry", "tasks:retry", p)
}

// Delete implements store.Admin with tasks:delete.
func (s *Store) Delete(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "delete", "tasks:delete", p)
}

func (s *Store) admin(ctx context.Context, op, route string, p store.IDsParams) (store.AdminResult, error) {
	if err := checkNS(op, p.Namespace); err != nil {
		return store.AdminResult{}, err
	}
	if len(p.IDs) == 0 {
		if s.isClosed() {
			return store.AdminResult{}, errClosed
		}
		return store.AdminResult{Items: []store.AdminItem{}}, nil
	}
	var resp wire.AdminResponse
	if err := s.call(ctx, op, apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, route), Body: wire.IDsRequest{IDs: p.IDs}}, &resp); err != nil {
		return store.AdminResult{}, err
	}
	if len(resp.Items) != len(p.IDs) {
		return store.AdminResult{}, fmt.Errorf("remote: %s: server answered %d items for %d ids", op, len(resp.Items), len(p.IDs))
	}
	out := make([]store.AdminItem, len(resp.Items))
	for i, it := range resp.Items {
		out[i].Err = itemErr(it.Error)
		if it.State != "" {
			st, err := store.ParseState(it.State)
			if err != nil {
				return store.AdminResult{}, fmt.Errorf("remote: %s: %w", op, err)
			}
			out[i].State = st
		}
	}
	return store.AdminResult{Items: out}, nil
}

// SetQueuePaused implements store.Admin.
func (s *Store) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	if err := checkNS("pause", p.Namespace); err != nil {
		return err
	}
	if err := store.CheckName("queue", p.Queue); err != nil {
		return fmt.Errorf("remote: pause: %w", err)
	}
	verb := "resume"
	if p.Paused {
		verb = "pause"
	}
	// create=true: a store pauses any queue, also one without tasks yet
	// (the server refuses that without it, as a likely typo).
	q := url.Values{"create": {"true"}}
	return s.call(ctx, verb, apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "queues", p.Queue, verb), Query: q}, nil)
}

// Sweep implements store.Maintainer with POST /v1/admin/sweep, which needs
// an admin token. The server sweeps on its own every second, so a store
// that may not sweep (a worker session, a project token) does nothing and
// returns zero counts.
func (s *Store) Sweep(ctx context.Context, p store.SweepParams) (store.SweepResult, error) {
	if s.cfg.WorkerSecret != "" || s.noSweep.Load() {
		if s.isClosed() {
			return store.SweepResult{}, errClosed
		}
		return store.SweepResult{}, nil
	}
	var resp wire.SweepResponse
	err := s.call(ctx, "sweep", apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "admin", "sweep"), Body: wire.SweepRequest{Limit: p.Limit}}, &resp)
	if err != nil {
		switch apiclient.CodeOf(err) {
		case wire.CodeForbidden, wire.CodeUnauthorized:
			s.noSweep.Store(true)
			s.log.Info("remote: the token may not sweep; leaving it to the server", "err", err)
			return store.SweepResult{}, nil
		}
		return store.SweepResult{}, err
	}
	return store.SweepResult{Promoted: resp.Promoted, Recovered: resp.Recovered, Dead: resp.Dead, Cancelled: resp.Cancelled, Deleted: resp.Deleted}, nil
}

// Ping implements store.Store: the server's readiness (GET /readyz), which
// answers only when the server's own store does.
func (s *Store) Ping(ctx context.Context) error {
	var h wire.Health
	return s.call(ctx, "ping", apiclient.Request{Method: http.MethodGet, Path: "/readyz"}, &h)
}

var _ store.Feed = (*Store)(nil)

// Changes implements store.Feed with changes:wait, a long poll on the
// server's store's feed (see WaitCancels for the waits). A server whose
// store keeps no feed answers not_found.
func (s *Store) Changes(ctx context.Context, p store.ChangesParams) (store.ChangesResult, error) {
	if err := checkNS("changes", p.Namespace); err != nil {
		return store.ChangesResult{}, err
	}
	if p.Wait < 0 || p.Max < 0 || p.Max > store.MaxBatch {
		return store.ChangesResult{}, fmt.Errorf("remote: changes: wait %s, max %d: %w", p.Wait, p.Max, store.ErrInvalidOption)
	}
	wait := min(p.Wait, MaxWaitPerRequest)
	req := wire.ChangesRequest{Cursor: p.Cursor, WaitMS: ms(wait), Max: p.Max}
	var resp wire.ChangesResponse
	if err := s.call(ctx, "changes", apiclient.Request{Method: http.MethodPost, Path: projectPath(p.Namespace, "changes:wait"), Body: req, Wait: wait}, &resp); err != nil {
		return store.ChangesResult{}, err
	}
	out := store.ChangesResult{Cursor: resp.Cursor, Missed: resp.Missed, Changes: make([]store.Change, len(resp.Events))}
	for i := range resp.Events {
		c, err := changeFromEvent(&resp.Events[i])
		if err != nil {
			return store.ChangesResult{}, fmt.Errorf("remote: changes: %w", err)
		}
		out.Changes[i] = c
	}
	return out, nil
}

// changeKinds maps event kinds to the kinds of change.
var changeKinds = func() map[string]store.ChangeKind {
	m := map[string]store.ChangeKind{}
	for k := store.ChangeEnqueued; k <= store.ChangeDeleted; k++ {
		m["task."+k.String()] = k
	}
	return m
}()

// changeFromEvent reads a change from its event.
func changeFromEvent(ev *wire.Event) (store.Change, error) {
	k, ok := changeKinds[ev.Kind]
	if !ok {
		return store.Change{}, fmt.Errorf("server answered an event of kind %q", ev.Kind)
	}
	c := store.Change{Seq: ev.Seq, Kind: k, Time: ev.Time, ID: ev.TaskID, Queue: ev.Queue, Type: ev.Type,
		Attempt: ev.Attempt, WorkerID: ev.WorkerID, Error: ev.Error}
	if ev.State != "" {
		st, err := store.ParseState(ev.State)
		if err != nil {
			return store.Change{}, err
		}
		c.State = st
	}
	return c, nil
}
