package kiln

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/store"
)

// Defaults of per-task options and of the configurations.
const (
	// MaxRetriesDefault is how many times a failed task is retried when
	// its options name no MaxRetries: it gets 26 attempts in all.
	MaxRetriesDefault = 25
	// TimeoutDefault bounds one attempt of a task whose options name
	// neither a Timeout nor a Deadline.
	TimeoutDefault = 30 * time.Minute
	// ConcurrencyDefault is how many handlers a worker runs at once.
	ConcurrencyDefault = 10
	// LeaseDurationDefault is how long a worker's lease on a task lasts
	// without a heartbeat. Heartbeats are sent every third of it.
	LeaseDurationDefault = 30 * time.Second
	// LeaseWaitDefault is how long an idle worker waits in the store for a
	// task before asking again.
	LeaseWaitDefault = 5 * time.Second
	// SweepIntervalDefault is how often the sweeper among the workers of a
	// store calls the store's Sweep.
	SweepIntervalDefault = time.Second
	// ShutdownTimeoutDefault bounds the graceful stop that starts when the
	// context passed to Worker.Run is done.
	ShutdownTimeoutDefault = 30 * time.Second
	// LeaseDurationMin is the shortest lease a worker accepts.
	LeaseDurationMin = 100 * time.Millisecond
	// ConcurrencyMax is the most handlers one worker runs at once.
	ConcurrencyMax = store.MaxBatch
)

// NoRetries gives a task a single attempt when *TaskOptions.MaxRetries is
// set to it, as new(0) does.
//
// Deprecated: write MaxRetries: new(0). NoRetries is kept so that options
// written before MaxRetries became a pointer (and schedules stored then)
// keep their meaning.
const NoRetries = -1

// TaskOptions are the per-task options of an enqueue. They are plain data:
// they can be stored and sent as JSON. The zero value means every default.
//
// One rule holds for every option, here as over HTTP and in the command
// line (docs/decisions/005-option-defaults.md): an option left out takes
// its default, and an option given takes the value given, zero included. So
// the options whose zero is a setting of its own, different from the
// default, are pointers: MaxRetries: nil means MaxRetriesDefault (25) and
// new(0) means no retries; Timeout: nil means TimeoutDefault (30 min) and
// new(time.Duration(0)) means no timeout. For the others the zero value is
// the default (Priority, ProcessAt, ProcessIn, Deadline) or no setting at
// all (Retention, UniqueTTL), and means "not given".
type TaskOptions struct {
	// ID is the task's id; empty means a new time-sortable id. Enqueueing
	// an id that exists fails with ErrTaskExists.
	ID string `json:"id,omitempty"`
	// Queue is the queue; empty means "default".
	Queue string `json:"queue,omitempty"`
	// Priority orders tasks within a queue, higher first: 0..9, default 0.
	Priority int `json:"priority,omitempty"`
	// ProcessAt delays the task until that time; zero or past means now.
	// At most a year ahead (store.Limits.MaxScheduleAhead).
	ProcessAt time.Time `json:"process_at,omitzero"`
	// ProcessIn delays the task by that long from the enqueue; it cannot be
	// combined with ProcessAt.
	ProcessIn time.Duration `json:"process_in,omitempty"`
	// MaxRetries is how many times a failed task is retried before it goes
	// dead: nil means MaxRetriesDefault (25), new(0) means none (a single
	// attempt), new(n) means n. A negative count is refused (but see
	// NoRetries).
	MaxRetries *int `json:"max_retries,omitempty"`
	// Timeout bounds each attempt; the handler's context is cancelled with
	// cause ErrTaskTimeout when it passes. Nil means TimeoutDefault (30 min)
	// unless a Deadline is set, in which case only the deadline applies;
	// new(time.Duration(0)) means no timeout; a negative one is refused.
	Timeout *time.Duration `json:"timeout,omitempty"`
	// Deadline bounds every attempt: no attempt runs past it, and a task
	// that reaches it goes dead instead of retrying. Zero means none.
	Deadline time.Time `json:"deadline,omitzero"`
	// UniqueKey, when set, makes the enqueue fail with ErrDuplicate while
	// another task holds the key: see UniqueTTL and UniqueUntilSuccess.
	UniqueKey string `json:"unique_key,omitempty"`
	// UniqueTTL is how long the task holds UniqueKey, 1s to 30 days;
	// required with UniqueKey.
	UniqueTTL time.Duration `json:"unique_ttl,omitempty"`
	// UniqueUntilSuccess releases UniqueKey as soon as the task succeeds,
	// as asynq's Unique option does: the key is then held while the task is
	// waiting, running or retrying, and at most UniqueTTL. Without it the
	// key is held for the whole UniqueTTL window, whatever becomes of the
	// task (a fixed deduplication window). It requires UniqueKey.
	UniqueUntilSuccess bool `json:"unique_until_success,omitempty"`
	// Retention is how long the task and its result are kept once it has
	// finished; 0 means the store's default (24 h). There is no zero
	// retention: a negative one is refused.
	Retention time.Duration `json:"retention,omitempty"`
}

// The server and the scheduler turn options into store inputs as
// Client.Enqueue does, through internal/hook.
func init() { hook.SetTaskInput((*TaskOptions).taskInput) }

// taskInput turns a request into a store input, checking what the store does
// not check itself, and validates the result against l at time now (the
// client's clock). It returns every problem at once.
func (o *TaskOptions) taskInput(typ string, payload []byte, l store.Limits, now time.Time) (store.TaskInput, error) {
	in := store.TaskInput{
		ID: o.ID, Type: typ, Queue: o.Queue, Payload: payload, Priority: o.Priority,
		MaxRetries: MaxRetriesDefault, Deadline: o.Deadline, RunAt: o.ProcessAt,
		UniqueKey: o.UniqueKey, UniqueTTL: o.UniqueTTL, UniqueUntilSuccess: o.UniqueUntilSuccess, Retention: o.Retention,
	}
	var errs []error
	if in.ID == "" {
		in.ID = ids.New()
		in.NewID = true // never seen: the store need not look for it
	}
	if in.Queue == "" {
		in.Queue = store.DefaultQueue
	}
	if o.MaxRetries != nil {
		switch n := *o.MaxRetries; {
		case n == NoRetries:
			in.MaxRetries = 0
		case n < 0:
			errs = append(errs, &ValidationError{Field: "max_retries", Reason: fmt.Sprintf("%d is negative (0 means no retries)", n), Err: ErrInvalidOption})
			in.MaxRetries = 0
		default:
			in.MaxRetries = n
		}
	}
	switch {
	case o.Timeout != nil:
		in.Timeout = *o.Timeout
	case o.Deadline.IsZero():
		in.Timeout = TimeoutDefault
	}
	if o.ProcessIn != 0 {
		switch {
		case o.ProcessIn < 0:
			errs = append(errs, &ValidationError{Field: "process_in", Reason: fmt.Sprintf("%s is negative", o.ProcessIn), Err: ErrInvalidOption})
		case !o.ProcessAt.IsZero():
			errs = append(errs, &ValidationError{Field: "process_in", Reason: "set together with process_at", Err: ErrInvalidOption})
		default:
			in.RunAt = now.Add(o.ProcessIn)
		}
	}
	if err := in.Validate(l, now); err != nil {
		errs = append(errs, err)
	}
	return in, errors.Join(errs...)
}

// ClientConfig configures a Client. The zero value (or a nil pointer) means
// every default.
type ClientConfig struct {
	// Namespace scopes every task the client touches; empty means
	// store.DefaultNamespace ("default"), or the project of a store that
	// reaches one project only (store.Scoped: a remote store with a worker
	// secret), which refuses another namespace.
	Namespace string
	// Limits bound what the client accepts before it calls the store; the
	// zero value means store defaults (payloads up to 1 MiB, and so on).
	// Set them to the store's limits when those differ.
	Limits store.Limits
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// EventFunc, when set, is called with an EventEnqueued event for every
	// task the client enqueues. It must be fast and safe for concurrent use.
	EventFunc func(Event)
	// Metrics, when set, counts the tasks the client enqueues and its
	// failed store calls (see Metrics). Nil records nothing.
	Metrics *Metrics
	// TracerProvider, when set, turns tracing on: each enqueue gets a
	// span (kiln.enqueue) and its tasks carry that span's W3C trace
	// context in their record, so that the worker's spans join the
	// trace. Nil (the default) traces nothing and stores no context.
	TracerProvider trace.TracerProvider
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Namespace == "" {
		c.Namespace = store.DefaultNamespace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *ClientConfig) validate() error {
	var errs []error
	if err := store.CheckNamespace(c.Namespace); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validateLimits(c.Limits)...)
	return errors.Join(errs...)
}

func validateLimits(l store.Limits) []error {
	var errs []error
	bad := func(field string, v any) {
		errs = append(errs, &ValidationError{Field: field, Reason: fmt.Sprintf("%v is negative", v), Err: ErrInvalidOption})
	}
	if l.MaxPayloadBytes < 0 {
		bad("limits.max_payload_bytes", l.MaxPayloadBytes)
	}
	if l.MaxRetries < 0 {
		bad("limits.max_retries", l.MaxRetries)
	}
	if l.MaxTimeout < 0 {
		bad("limits.max_timeout", l.MaxTimeout)
	}
	if l.MaxScheduleAhead < 0 {
		bad("limits.max_schedule_ahead", l.MaxScheduleAhead)
	}
	if l.MaxRetention < 0 {
		bad("limits.max_retention", l.MaxRetention)
	}
	return errs
}

// WorkerConfig configures a Worker. The zero value (or a nil pointer) means
// every default.
type WorkerConfig struct {
	// Namespace scopes the tasks the worker takes; empty means
	// store.DefaultNamespace ("default"), or the project of a store that
	// reaches one project only (store.Scoped: a remote store with a worker
	// secret), which refuses another namespace.
	Namespace string
	// ID names the worker in the store, for operators; empty means
	// "hostname-pid-random".
	ID string
	// Queues maps each queue the worker takes tasks from to its weight (a
	// positive integer). Nil means {"default": 1}. By default the priority
	// is weighted: on each lease a queue of weight 3 is tried first three
	// times as often as a queue of weight 1.
	Queues map[string]int
	// StrictPriority tries the queues in order of decreasing weight (ties
	// by name) on every lease instead of a weighted draw, so that a lower
	// queue is served only while the higher ones are empty.
	StrictPriority bool
	// Concurrency is how many handlers run at once; 0 means
	// ConcurrencyDefault (10), at most ConcurrencyMax.
	Concurrency int
	// LeaseDuration is how long a lease on a task lasts without a
	// heartbeat; 0 means LeaseDurationDefault (30 s), at least
	// LeaseDurationMin. Heartbeats renew every held lease every third of it.
	LeaseDuration time.Duration
	// LeaseWait is how long an idle worker waits inside the store for a
	// task before asking again; 0 means LeaseWaitDefault (5 s).
	LeaseWait time.Duration
	// RetryDelayFunc returns how long to wait before retrying a task whose
	// attempt (1-based) failed with err. Nil means RetryDelayDefault:
	// exponential backoff from 1 s, doubling, capped at 1 h, with ±25 %
	// jitter. It is called from many goroutines at once.
	RetryDelayFunc func(attempt int, err error, t *Task) time.Duration
	// SweepInterval is how often the store's Sweep runs (it recovers
	// expired leases, expires unique keys and finished tasks, and records
	// due tasks as pending; a lease does not wait for it: an idle worker
	// wakes at the earliest due time of its queues); 0 means SweepIntervalDefault (1 s)
	// and a negative value keeps this worker out of sweeping (another
	// process must then sweep). Workers that share a store sweep once per
	// interval between them, not once each: through a lease in the store's
	// meta records they elect one sweeper, and another takes over when it
	// stops (at once when it stops gracefully, after five intervals when it
	// crashes). On a store without meta records every worker sweeps.
	SweepInterval time.Duration
	// ShutdownTimeout bounds the graceful stop that starts when the context
	// given to Run is done; 0 means ShutdownTimeoutDefault (30 s). It does
	// not apply to Shutdown, which its own context bounds.
	ShutdownTimeout time.Duration
	// Limits bound results; the zero value means store defaults.
	Limits store.Limits
	// Logger receives the worker's logs; nil discards them.
	Logger *slog.Logger
	// EventFunc, when set, is called for every event of the worker's tasks
	// (see EventKind). It is called from many goroutines at once, on the
	// worker's hot path: it must be fast and must not block.
	EventFunc func(Event)
	// Metrics, when set, records the worker's attempts, its failed store
	// calls, the lease expiries its sweeps find and the depth of its queues
	// (see Metrics). Nil records nothing.
	Metrics *Metrics
	// TracerProvider, when set, turns tracing on: each task leased gets a
	// kiln.lease span and each attempt a kiln.handle span, both children
	// of the span that enqueued the task when its record carries a trace
	// context; the handler's context carries the kiln.handle span. Nil
	// (the default) traces nothing.
	TracerProvider trace.TracerProvider
}

func (c WorkerConfig) withDefaults() WorkerConfig {
	if c.Namespace == "" {
		c.Namespace = store.DefaultNamespace
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		c.ID = host + "-" + strconv.Itoa(os.Getpid()) + "-" + ids.New()[20:]
	}
	if c.Queues == nil {
		c.Queues = map[string]int{store.DefaultQueue: 1}
	}
	if c.Concurrency == 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = LeaseDurationDefault
	}
	if c.LeaseWait == 0 {
		c.LeaseWait = LeaseWaitDefault
	}
	if c.RetryDelayFunc == nil {
		c.RetryDelayFunc = RetryDelayDefault
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = SweepIntervalDefault
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *WorkerConfig) validate() error {
	var errs []error
	opt := func(field, format string, args ...any) {
		errs = append(errs, &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...), Err: ErrInvalidOption})
	}
	if err := store.CheckNamespace(c.Namespace); err != nil {
		errs = append(errs, err)
	}
	if len(c.Queues) == 0 {
		opt("queues", "at least one queue is required")
	}
	for q, w := range c.Queues {
		if err := store.CheckName("queues", q); err != nil {
			errs = append(errs, err)
		}
		if w <= 0 {
			opt("queues", "queue %q has weight %d; weights must be positive", q, w)
		}
	}
	if c.Concurrency < 1 || c.Concurrency > ConcurrencyMax {
		opt("concurrency", "%d is outside 1..%d", c.Concurrency, ConcurrencyMax)
	}
	if c.LeaseDuration < LeaseDurationMin {
		opt("lease_duration", "%s is shorter than %s", c.LeaseDuration, LeaseDurationMin)
	}
	if c.LeaseWait < 0 {
		opt("lease_wait", "%s is negative", c.LeaseWait)
	}
	if c.ShutdownTimeout < 0 {
		opt("shutdown_timeout", "%s is negative", c.ShutdownTimeout)
	}
	errs = append(errs, validateLimits(c.Limits)...)
	return errors.Join(errs...)
}
