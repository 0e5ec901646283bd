package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/store"
)

// MS returns d in whole milliseconds (the unit of the *_ms fields).
func MS(d time.Duration) int64 { return d.Milliseconds() }

// MaxMS is the largest magnitude of a *_ms value: the milliseconds a
// time.Duration holds (about 292 years). Larger values are refused
// (DurField), never wrapped around.
const MaxMS = int64(math.MaxInt64 / time.Millisecond)

// Dur returns ms milliseconds as a duration, saturated at the largest
// (smallest) duration beyond ±MaxMS instead of overflowing. Requests check
// their values with DurField first.
func Dur(ms int64) time.Duration {
	switch {
	case ms > MaxMS:
		return math.MaxInt64
	case ms < -MaxMS:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// DurField returns ms milliseconds as a duration, or an invalid_option
// error naming field when the value is beyond ±MaxMS (it would overflow a
// duration: 2^62 ms once became 0, "no timeout"). The ranges each field
// allows are checked where the value is used.
func DurField(field string, ms int64) (time.Duration, error) {
	if ms > MaxMS || ms < -MaxMS {
		return 0, &Error{Code: CodeInvalidOption, Field: field, Message: fmt.Sprintf("%d is beyond ±%d milliseconds (about 292 years)", ms, MaxMS)}
	}
	return Dur(ms), nil
}

// CheckDurations checks every *_ms option of o with DurField; nil o is
// valid.
func (o *TaskOptions) CheckDurations() error {
	if o == nil {
		return nil
	}
	type field struct {
		name string
		ms   int64
	}
	fields := []field{{"process_in_ms", o.ProcessInMS}, {"unique_ttl_ms", o.UniqueTTLMS}, {"retention_ms", o.RetentionMS}}
	if o.TimeoutMS != nil {
		fields = append(fields, field{"timeout_ms", *o.TimeoutMS})
	}
	for _, f := range fields {
		if _, err := DurField(f.name, f.ms); err != nil {
			return err
		}
	}
	return nil
}

// TimePtr returns nil for the zero time, else a pointer to t in UTC.
func TimePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// TimeVal returns *p, or the zero time for nil.
func TimeVal(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return p.UTC()
}

// FromTask converts a stored task; nil gives nil.
func FromTask(t *store.Task) *Task {
	if t == nil {
		return nil
	}
	w := &Task{
		ID: t.ID, Type: t.Type, Queue: t.Queue, State: t.State.String(),
		Priority: t.Priority, Attempt: t.Attempt, MaxRetries: t.MaxRetries,
		TimeoutMS: MS(t.Timeout), Deadline: TimePtr(t.Deadline), UniqueKey: t.UniqueKey,
		UniqueTTLMS: MS(t.UniqueTTL), UniqueUntilSuccess: t.UniqueUntilSuccess, RetentionMS: MS(t.Retention),
		CreatedAt: TimePtr(t.CreatedAt), RunAt: TimePtr(t.RunAt), StartedAt: TimePtr(t.StartedAt),
		FinishedAt: TimePtr(t.FinishedAt), ExpiresAt: TimePtr(t.ExpiresAt),
		LeaseID: t.LeaseID, LeaseExpiresAt: TimePtr(t.LeaseExpiresAt), WorkerID: t.WorkerID,
		CancelRequested: t.CancelRequested, Payload: t.Payload, Result: t.Result, LastError: t.LastError,
		TraceParent: t.TraceParent,
	}
	if t.ProgressPercent != 0 || t.ProgressMessage != "" {
		w.Progress = &Progress{Percent: t.ProgressPercent, Message: t.ProgressMessage}
	}
	if len(t.Errors) > 0 {
		w.Errors = make([]AttemptError, len(t.Errors))
		for i, e := range t.Errors {
			w.Errors[i] = AttemptError{Attempt: e.Attempt, At: e.At, Error: e.Error, WorkerID: e.WorkerID}
		}
	}
	w.ErrorsDropped = t.ErrorsDropped
	return w
}

// FromTasks converts a list of stored tasks, keeping nils.
func FromTasks(ts []*store.Task) []*Task {
	out := make([]*Task, len(ts))
	for i, t := range ts {
		out[i] = FromTask(t)
	}
	return out
}

// ToTask converts a task received from the API into the store's record in
// namespace ns (the project); nil gives nil. It fails on an unknown state.
func (w *Task) ToTask(ns string) (*store.Task, error) {
	if w == nil {
		return nil, nil
	}
	st, err := store.ParseState(w.State)
	if err != nil {
		return nil, err
	}
	t := &store.Task{
		Namespace: ns, ID: w.ID, Type: w.Type, Queue: w.Queue, Payload: w.Payload,
		Priority: w.Priority, MaxRetries: w.MaxRetries, Timeout: Dur(w.TimeoutMS),
		Deadline: TimeVal(w.Deadline), UniqueKey: w.UniqueKey, UniqueTTL: Dur(w.UniqueTTLMS),
		UniqueUntilSuccess: w.UniqueUntilSuccess, Retention: Dur(w.RetentionMS), State: st, Attempt: w.Attempt, LeaseID: w.LeaseID,
		LeaseExpiresAt: TimeVal(w.LeaseExpiresAt), WorkerID: w.WorkerID, CancelRequested: w.CancelRequested,
		CreatedAt: TimeVal(w.CreatedAt), RunAt: TimeVal(w.RunAt), StartedAt: TimeVal(w.StartedAt),
		FinishedAt: TimeVal(w.FinishedAt), ExpiresAt: TimeVal(w.ExpiresAt),
		Result: w.Result, LastError: w.LastError, TraceParent: w.TraceParent,
	}
	if w.Progress != nil {
		t.ProgressPercent, t.ProgressMessage = w.Progress.Percent, w.Progress.Message
	}
	if len(w.Errors) > 0 {
		t.Errors = make([]store.AttemptError, len(w.Errors))
		for i, e := range w.Errors {
			t.Errors[i] = store.AttemptError{Attempt: e.Attempt, At: e.At, Error: e.Error, WorkerID: e.WorkerID}
		}
	}
	t.ErrorsDropped = w.ErrorsDropped
	return t, nil
}

// OptionsFromInput returns the request that enqueues in exactly, with
// every option present so that the server applies no default: what
// store/remote sends for store.Enqueue.
func OptionsFromInput(in store.TaskInput) TaskRequest {
	retries := in.MaxRetries
	timeout := MS(in.Timeout)
	return TaskRequest{
		Type:    in.Type,
		Payload: in.Payload,
		Options: &TaskOptions{
			ID: in.ID, Queue: in.Queue, Priority: in.Priority, ProcessAt: TimePtr(in.RunAt),
			MaxRetries: &retries, TimeoutMS: &timeout, Deadline: TimePtr(in.Deadline),
			UniqueKey: in.UniqueKey, UniqueTTLMS: MS(in.UniqueTTL), UniqueUntilSuccess: in.UniqueUntilSuccess,
			RetentionMS: MS(in.Retention), TraceParent: in.TraceParent,
		},
	}
}

// outcomeKinds are the names of store.OutcomeKind on the wire.
var outcomeKinds = map[string]store.OutcomeKind{
	"succeeded": store.OutcomeSucceeded,
	"retry":     store.OutcomeRetry,
	"dead":      store.OutcomeDead,
	"cancelled": store.OutcomeCancelled,
	"release":   store.OutcomeRelease,
}

// FromOutcome converts an outcome to send.
func FromOutcome(o store.Outcome) Outcome {
	return Outcome{
		ID: o.ID, LeaseID: o.LeaseID, Kind: o.Kind.String(), Result: o.Result,
		Error: o.Error, RetryAt: TimePtr(o.RetryAt), NotStarted: o.NotStarted,
	}
}

// ToOutcome converts a received outcome; an unknown kind is an
// invalid_option error.
func (o *Outcome) ToOutcome() (store.Outcome, error) {
	k, ok := outcomeKinds[o.Kind]
	if !ok {
		return store.Outcome{}, &Error{Code: CodeInvalidOption, Field: "kind",
			Message: fmt.Sprintf("%q is not one of succeeded, retry, dead, cancelled, release", o.Kind)}
	}
	return store.Outcome{
		ID: o.ID, LeaseID: o.LeaseID, Kind: k, Result: o.Result, Error: o.Error,
		RetryAt: TimeVal(o.RetryAt), NotStarted: o.NotStarted,
	}, nil
}

// FromQueueStats converts the counts of one queue; every state is present
// in Counts.
func FromQueueStats(q store.QueueStats) Queue {
	c := make(map[string]int64, store.NumStates)
	for _, s := range store.AllStates {
		c[s.String()] = q.Counts[s]
	}
	return Queue{Queue: q.Queue, Paused: q.Paused, Counts: c, Total: q.Total()}
}

// ToQueueStats converts a received queue; unknown state names are an error.
func (q *Queue) ToQueueStats() (store.QueueStats, error) {
	out := store.QueueStats{Queue: q.Queue, Paused: q.Paused}
	for name, n := range q.Counts {
		s, err := store.ParseState(name)
		if err != nil {
			return store.QueueStats{}, err
		}
		out.Counts[s] = n
	}
	return out, nil
}

// Proof returns the answer to a worker challenge: the hex HMAC-SHA256 of
// the challenge's bytes (base64-decoded) under the worker secret. It fails
// when the challenge is not base64.
func Proof(secret, challenge string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(challenge)
	if err != nil {
		return "", fmt.Errorf("wire: challenge is not base64: %w", err)
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(raw) // a hash never fails to write
	return hex.EncodeToString(m.Sum(nil)), nil
}
