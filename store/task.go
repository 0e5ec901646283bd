package store

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// DefaultNamespace is the namespace library users get when they name none.
const DefaultNamespace = "default"

// DefaultQueue is the queue a task goes to when it names none.
const DefaultQueue = "default"

// State is the lifecycle state of a task. The zero value is not a valid state.
type State uint8

// The task states. See the package documentation for the transitions.
const (
	StateScheduled State = iota + 1 // waiting for RunAt
	StatePending                    // ready to be leased
	StateActive                     // leased by a worker
	StateRetry                      // failed, waiting for its backoff to pass
	StateSucceeded                  // finished with a result (terminal)
	StateDead                       // failed with no retries left (terminal)
	StateCancelled                  // cancelled (terminal)
)

// NumStates is the number of valid states; valid states are 1..NumStates.
const NumStates = 7

// AllStates lists every state in lifecycle order.
var AllStates = []State{StateScheduled, StatePending, StateActive, StateRetry, StateSucceeded, StateDead, StateCancelled}

var stateNames = [...]string{"", "scheduled", "pending", "active", "retry", "succeeded", "dead", "cancelled"}

// String returns the lower-case name of the state, as used in the APIs.
func (s State) String() string {
	if int(s) < len(stateNames) && s != 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// GoString returns the Go name of the state's constant (for %#v), or
// "store.State(n)".
func (s State) GoString() string {
	if s.Valid() {
		name := stateNames[s]
		return "store.State" + strings.ToUpper(name[:1]) + name[1:]
	}
	return fmt.Sprintf("store.State(%d)", uint8(s))
}

// LogValue implements slog.LogValuer: logs show the state's name, and an
// invalid state as "State(n)" rather than a marshalling error.
func (s State) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s >= StateScheduled && s <= StateCancelled }

// Terminal reports whether s is a final state (succeeded, dead or cancelled).
func (s State) Terminal() bool {
	return s == StateSucceeded || s == StateDead || s == StateCancelled
}

// ParseState returns the state named name.
func ParseState(name string) (State, error) {
	for i := 1; i < len(stateNames); i++ {
		if stateNames[i] == name {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("store: unknown state %q: %w", name, ErrInvalidOption)
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("store: invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// TaskInput describes a task to enqueue. It is plain data: it can be stored,
// sent as JSON and compared in tests.
type TaskInput struct {
	// ID is the task's id; required and unique in the namespace.
	ID string
	// Type is the handler name; required.
	Type string
	// Queue is the queue name; empty means DefaultQueue.
	Queue string
	// Payload is opaque bytes handed to the handler unchanged.
	Payload []byte
	// Priority orders tasks within a queue: higher runs first. 0..MaxPriority.
	Priority int
	// MaxRetries is how many times a failed task is retried; the task gets
	// MaxRetries+1 attempts in all.
	MaxRetries int
	// Timeout bounds one attempt; 0 means no per-attempt timeout.
	Timeout time.Duration
	// Deadline bounds every attempt; zero means none.
	Deadline time.Time
	// RunAt is when the task becomes ready; zero or past means now.
	RunAt time.Time
	// UniqueKey, when set, makes the enqueue fail with ErrDuplicate while
	// another task holds the key: for UniqueTTL after its enqueue, or, with
	// UniqueUntilSuccess, until it succeeds if that comes first.
	UniqueKey string
	// UniqueTTL is the deduplication window for UniqueKey.
	UniqueTTL time.Duration
	// UniqueUntilSuccess releases UniqueKey when the task succeeds (within
	// the same step that records the success) instead of holding it for the
	// whole UniqueTTL. Requires UniqueKey.
	UniqueUntilSuccess bool
	// Retention is how long the task is kept after it reaches a terminal
	// state; 0 means the store's default (RetentionDefault).
	Retention time.Duration
	// TraceParent is the W3C trace context (a traceparent header value,
	// "00-<trace id>-<span id>-<flags>") of the span that enqueued the
	// task, carried to the handler; empty means none.
	TraceParent string

	// NewID says that ID was made for this very call from fresh random bits
	// (internal/ids; kiln's Client and server set it when they make the id
	// because the caller gave none), so that no stored task can have it: a
	// store may skip the read that checks the id is free. A task in memory
	// with the id is still refused. Never set it on an id a caller
	// supplied, nor on an input sent again after a call that may have
	// stored it. It is neither stored nor sent over the wire.
	NewID bool `json:"-"`
}

// Task is the stored record of a task.
type Task struct {
	Namespace  string
	ID         string
	Type       string
	Queue      string
	Payload    []byte
	Priority   int
	MaxRetries int
	Timeout    time.Duration
	Deadline   time.Time
	UniqueKey  string
	UniqueTTL  time.Duration
	// UniqueUntilSuccess: the unique key is released when the task
	// succeeds (see TaskInput).
	UniqueUntilSuccess bool
	Retention          time.Duration
	// TraceParent is the trace context the task was enqueued with (see
	// TaskInput).
	TraceParent string

	// State is the task's current state.
	State State
	// Attempt counts the leases taken so far (1 during the first run).
	Attempt int
	// LeaseID identifies the current lease while State is StateActive.
	LeaseID uint64
	// LeaseExpiresAt is when the current lease runs out.
	LeaseExpiresAt time.Time
	// WorkerID names the worker that holds or last held the lease.
	WorkerID string
	// CancelRequested is set when an active task was asked to cancel.
	CancelRequested bool

	CreatedAt time.Time
	// RunAt is when the task is (or was) due; pending tasks with equal
	// priority are leased in RunAt order.
	RunAt time.Time
	// StartedAt is when the last lease was taken.
	StartedAt time.Time
	// FinishedAt is when the task reached a terminal state.
	FinishedAt time.Time
	// ExpiresAt is when a terminal task will be deleted.
	ExpiresAt time.Time

	// Result is the handler's result, set on success.
	Result []byte
	// LastError is the error of the last failed attempt.
	LastError string
	// Errors is the history of the failed attempts, oldest first: the last
	// MaxAttemptErrors of them, each error text cut to MaxAttemptErrorBytes.
	// It is nil for a task that never failed. Admin Retry keeps it.
	Errors []AttemptError
	// ErrorsDropped counts the older failed attempts that Errors no longer
	// holds.
	ErrorsDropped int
	// ProgressPercent (0..100) and ProgressMessage are the last progress
	// reported by the handler.
	ProgressPercent int
	ProgressMessage string

	// Upstream is, for a held task of a flow that a store released with
	// it, what the store counted of the tasks it waited for as each
	// finished (the embedded and Redis stores give it with a leased task;
	// Get and List do not); nil where the store did not count them (the
	// embedded store after a restart, a flow of an older version). A
	// worker that finds every task waited for counted as succeeded (and,
	// when it takes their results, without one) need not read them.
	Upstream *Upstream
}

// Upstream counts the tasks a held task of a flow waited for, as each
// finished: OK those that succeeded, NoResult those of them without a
// result (a store may count an empty result as one too; a callback takes
// either as null). A task is counted once, when it first reaches a
// terminal state.
type Upstream struct {
	OK, NoResult int
}

// Clone returns a deep copy of t.
func (t *Task) Clone() *Task {
	if t == nil {
		return nil
	}
	c := *t
	if t.Payload != nil {
		c.Payload = append([]byte(nil), t.Payload...)
	}
	if t.Result != nil {
		c.Result = append([]byte(nil), t.Result...)
	}
	if t.Errors != nil {
		c.Errors = append([]AttemptError(nil), t.Errors...)
	}
	if t.Upstream != nil {
		u := *t.Upstream
		c.Upstream = &u
	}
	return &c
}

// AttemptError is one failed attempt of a task, in Task.Errors.
type AttemptError struct {
	// Attempt is the attempt's number (Task.Attempt when it failed).
	Attempt int
	// At is when the store recorded the failure.
	At time.Time
	// Error is the attempt's error, cut to MaxAttemptErrorBytes.
	Error string
	// WorkerID names the worker that held the attempt's lease; empty when
	// the lease named none.
	WorkerID string
}

// Bounds of a task's error history (Task.Errors): a task that fails many
// times with long errors stays small.
const (
	// MaxAttemptErrors is the most failed attempts a task keeps; older ones
	// are dropped and counted in Task.ErrorsDropped.
	MaxAttemptErrors = 20
	// MaxAttemptErrorBytes caps the error text of one AttemptError (the
	// whole text of the last failure stays in Task.LastError).
	MaxAttemptErrorBytes = 1024
)

// TruncateAttemptError returns msg cut to at most MaxAttemptErrorBytes
// bytes, on a UTF-8 character boundary.
func TruncateAttemptError(msg string) string {
	if len(msg) <= MaxAttemptErrorBytes {
		return msg
	}
	n := MaxAttemptErrorBytes
	// Back off over continuation bytes (10xxxxxx) to the start of the
	// character that crosses the cap.
	for n > 0 && msg[n]&0xC0 == 0x80 {
		n--
	}
	return msg[:n]
}

// AddError appends the failure of the current attempt to t.Errors (its
// number, the worker that held it and msg, cut by TruncateAttemptError),
// dropping the oldest entry past MaxAttemptErrors.
func (t *Task) AddError(at time.Time, msg string) {
	e := AttemptError{Attempt: t.Attempt, At: at, Error: TruncateAttemptError(msg), WorkerID: t.WorkerID}
	if len(t.Errors) >= MaxAttemptErrors {
		drop := len(t.Errors) - MaxAttemptErrors + 1
		t.ErrorsDropped += drop
		// A new array: a shallow copy of t may still share the old one.
		t.Errors = append(make([]AttemptError, 0, MaxAttemptErrors), t.Errors[drop:]...)
	}
	t.Errors = append(t.Errors, e)
}

// OutcomeKind says how an attempt ended.
type OutcomeKind uint8

// The outcomes a worker reports.
const (
	// OutcomeSucceeded stores Result and makes the task succeeded.
	OutcomeSucceeded OutcomeKind = iota + 1
	// OutcomeRetry stores Error and makes the task retry until RetryAt.
	OutcomeRetry
	// OutcomeDead stores Error and makes the task dead.
	OutcomeDead
	// OutcomeCancelled makes the task cancelled.
	OutcomeCancelled
	// OutcomeRelease hands the task back to pending at once (graceful
	// shutdown). With NotStarted the attempt is taken back too.
	OutcomeRelease
)

var outcomeNames = [...]string{"", "succeeded", "retry", "dead", "cancelled", "release"}

// String returns the outcome's name.
func (k OutcomeKind) String() string {
	if k >= OutcomeSucceeded && k <= OutcomeRelease {
		return outcomeNames[k]
	}
	return fmt.Sprintf("OutcomeKind(%d)", uint8(k))
}

// Outcome is the end of one attempt, reported by the lease holder.
type Outcome struct {
	ID      string
	LeaseID uint64
	Kind    OutcomeKind
	// Result is stored with OutcomeSucceeded.
	Result []byte
	// Error is stored with OutcomeRetry, OutcomeDead and OutcomeCancelled.
	Error string
	// RetryAt is when a retried task becomes pending again; zero means now.
	RetryAt time.Time
	// NotStarted, with OutcomeRelease, takes the attempt back: the handler
	// never ran.
	NotStarted bool
}

// QueueStats counts the tasks of one queue by state.
type QueueStats struct {
	Queue  string
	Paused bool
	// Counts is indexed by State; index 0 is unused.
	Counts [NumStates + 1]int64
}

// Total returns the number of tasks in the queue in any state.
func (q QueueStats) Total() int64 {
	var n int64
	for _, c := range q.Counts {
		n += c
	}
	return n
}
