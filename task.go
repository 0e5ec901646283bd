package kiln

import (
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// State is the lifecycle state of a task; see the package documentation for
// the transitions. It prints and marshals as its lower-case name.
type State = store.State

// The task states.
const (
	StateScheduled = store.StateScheduled // waiting for its ProcessAt time
	StatePending   = store.StatePending   // ready to be leased
	StateActive    = store.StateActive    // leased by a worker
	StateRetry     = store.StateRetry     // failed, waiting for its backoff
	StateSucceeded = store.StateSucceeded // finished with a result (terminal)
	StateDead      = store.StateDead      // failed with no retries left (terminal)
	StateCancelled = store.StateCancelled // cancelled (terminal)
)

// TaskInfo is a snapshot of a task as the store holds it. It is plain data,
// safe to copy and to marshal as JSON.
type TaskInfo struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue"`
	State State  `json:"state"`
	// Payload is the task's input, unchanged.
	Payload []byte `json:"payload,omitempty"`
	// Result is the handler's result, set once the task succeeded.
	Result []byte `json:"result,omitempty"`
	// LastError is the error of the last failed attempt.
	LastError string `json:"last_error,omitempty"`
	// Errors are the task's failed attempts, oldest first: the last
	// store.MaxAttemptErrors of them, each error cut to
	// store.MaxAttemptErrorBytes. Nil for a task that never failed.
	Errors []AttemptError `json:"errors,omitempty"`
	// ErrorsDropped counts the older failed attempts not in Errors.
	ErrorsDropped int `json:"errors_dropped,omitempty"`

	Priority   int           `json:"priority"`
	MaxRetries int           `json:"max_retries"`
	Timeout    time.Duration `json:"timeout,omitempty"`
	Deadline   time.Time     `json:"deadline,omitzero"`
	UniqueKey  string        `json:"unique_key,omitempty"`
	Retention  time.Duration `json:"retention,omitempty"`

	// Attempt counts the attempts so far (1 while the first one runs).
	Attempt int `json:"attempt"`
	// WorkerID names the worker that runs or last ran the task.
	WorkerID string `json:"worker_id,omitempty"`
	// CancelRequested is set while an active task is being cancelled. On a
	// task that then ended succeeded (or dead) it says that the cancel came
	// too late: the handler returned before it noticed.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Progress is the last progress the handler reported.
	Progress Progress `json:"progress"`

	CreatedAt  time.Time `json:"created_at"`
	RunAt      time.Time `json:"run_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// ExpiresAt is when a finished task will be deleted.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// AttemptError is one failed attempt of a task (TaskInfo.Errors).
type AttemptError struct {
	// Attempt is the attempt's number (an operator's retry counts again
	// from 1).
	Attempt int `json:"attempt"`
	// At is when the store recorded the failure.
	At time.Time `json:"at"`
	// Error is the attempt's error: a retry, a dead or cancelled end, or
	// the lease that expired when its worker was lost.
	Error string `json:"error"`
	// WorkerID names the worker that ran the attempt, when it named one.
	WorkerID string `json:"worker_id,omitempty"`
}

// Progress is what a handler reports about a running task.
type Progress struct {
	// Percent is 0..100.
	Percent int `json:"percent"`
	// Message is free text.
	Message string `json:"message,omitempty"`
}

func infoFromStore(t *store.Task) *TaskInfo {
	var errs []AttemptError
	if len(t.Errors) > 0 {
		errs = make([]AttemptError, len(t.Errors))
		for i, e := range t.Errors {
			errs[i] = AttemptError{Attempt: e.Attempt, At: e.At, Error: e.Error, WorkerID: e.WorkerID}
		}
	}
	return &TaskInfo{
		Errors: errs, ErrorsDropped: t.ErrorsDropped,
		ID: t.ID, Type: t.Type, Queue: t.Queue, State: t.State,
		Payload: t.Payload, Result: t.Result, LastError: t.LastError,
		Priority: t.Priority, MaxRetries: t.MaxRetries, Timeout: t.Timeout, Deadline: t.Deadline,
		UniqueKey: t.UniqueKey, Retention: t.Retention,
		Attempt: t.Attempt, WorkerID: t.WorkerID, CancelRequested: t.CancelRequested,
		Progress:  Progress{Percent: t.ProgressPercent, Message: t.ProgressMessage},
		CreatedAt: t.CreatedAt, RunAt: t.RunAt, StartedAt: t.StartedAt, FinishedAt: t.FinishedAt, ExpiresAt: t.ExpiresAt,
	}
}

// Task is what a handler is given: one attempt of one task. The exported
// fields describe the task and must be treated as read-only. The methods are
// safe for concurrent use by the handler's goroutines while the attempt runs.
//
// A zero Task, filled in by hand, is a valid argument for a handler under
// test; its SetProgress calls are then only recorded on the Task.
type Task struct {
	// ID is the task's id.
	ID string
	// Type is the name the handler is registered under.
	Type string
	// Queue is the queue the task was leased from.
	Queue string
	// Payload is the task's input, unchanged. The handler must not modify it,
	// nor keep it after it returns.
	Payload []byte
	// Attempt is the number of this attempt, starting at 1. A handler may
	// be run more than once for one task (at-least-once delivery).
	Attempt int
	// MaxRetries is how many times a failed task is retried.
	MaxRetries int
	// Priority is the task's priority within its queue.
	Priority int

	mu       sync.Mutex
	result   []byte
	progress Progress
	dirty    bool // progress not yet sent to the store
	w        *Worker
	upstream *store.Upstream // of a held task of a workflow, when the store counted it
}

// SetResult stores b as the task's result if the attempt succeeds. The
// typed adapters (Func, FuncCtx) call it with the JSON encoding of the
// function's result. A result larger than the store's payload cap fails the
// attempt.
func (t *Task) SetResult(b []byte) {
	t.mu.Lock()
	t.result = b
	t.mu.Unlock()
}

// Result returns what SetResult stored.
func (t *Task) Result() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.result
}

// SetProgress records the task's progress (percent is clamped to 0..100).
// It does not block: the worker sends the latest progress to the store
// shortly after, coalescing frequent calls, and with every heartbeat.
func (t *Task) SetProgress(percent int, message string) {
	percent = min(max(percent, 0), 100)
	t.mu.Lock()
	t.progress = Progress{Percent: percent, Message: message}
	t.dirty = true
	w := t.w
	t.mu.Unlock()
	if w != nil {
		w.progressSignal()
	}
}

// Progress returns the last progress set with SetProgress.
func (t *Task) Progress() Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.progress
}

// takeProgress returns the progress to send, if any, and marks it sent.
func (t *Task) takeProgress() *store.Progress {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.dirty {
		return nil
	}
	t.dirty = false
	return &store.Progress{Percent: t.progress.Percent, Message: t.progress.Message}
}
