package store

import (
	"context"
	"time"
)

// Store is everything kiln needs from a backend. Implementations must be safe
// for concurrent use by many goroutines and, where the backend is shared, by
// many processes.
type Store interface {
	Enqueuer
	Leaser
	Reader
	Admin
	Maintainer
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources. Blocked calls return ErrClosed.
	Close() error
}

// Scoped is implemented by a store that reaches one namespace only: a
// store/remote store that authenticates as a remote worker reaches its
// project. ScopedNamespace returns that namespace, or "" when the store
// reaches any. kiln.NewWorker and kiln.NewClient take it as their
// namespace when their config names none, and refuse another.
type Scoped interface {
	ScopedNamespace() string
}

// Enqueuer adds tasks.
type Enqueuer interface {
	// Enqueue adds a batch of tasks. Each input is validated; an invalid or
	// conflicting input fails alone (its Err is set) and the others are added.
	// When Enqueue returns, every added task is durable as far as the store
	// promises durability, and no Lease gets a task before then
	// (docs/reliability.md says what durable means for each store, and
	// where Redis with Config.WaitReplicas falls short). A call that fails
	// may still have added tasks on a store over the network (retry with
	// the same ids); the embedded store's failed calls add none.
	Enqueue(ctx context.Context, p EnqueueParams) (EnqueueResult, error)
}

// Leaser hands tasks to workers and records how their attempts end.
type Leaser interface {
	// Lease takes up to p.Max ready tasks from p.Queues and marks them active
	// under a new lease each. With p.Wait > 0 it waits that long for a task
	// when none is ready, and returns as soon as one is.
	//
	// Lease never drops tasks it leased: an error means that this call
	// leased nothing (unless the backend's answer was lost on the way, a
	// broken connection, when the lease's expiry recovers the tasks). A
	// ctx that ends while Lease runs may still get tasks; the caller holds
	// them and runs them or hands them back (OutcomeRelease, NotStarted).
	Lease(ctx context.Context, p LeaseParams) (LeaseResult, error)
	// Extend renews leases (the heartbeat) and stores progress. It reports,
	// per lease, whether the task was asked to cancel.
	Extend(ctx context.Context, p ExtendParams) (ExtendResult, error)
	// Report records the outcomes of attempts. An outcome whose lease is no
	// longer the task's current lease fails with ErrLeaseLost.
	Report(ctx context.Context, p ReportParams) (ReportResult, error)
	// WaitCancels pushes cancel requests to workers: it returns the leases
	// of p.Namespace whose active task was asked to cancel (Admin.Cancel)
	// after p.Cursor, waiting up to p.Wait for one when there is none. An
	// empty cursor returns at once with the current cursor. It is a hint
	// for speed: Extend still reports CancelRequested, and a caller that
	// gets Missed checks its leases with Extend.
	WaitCancels(ctx context.Context, p WaitCancelsParams) (WaitCancelsResult, error)
}

// Reader reads tasks and counts.
type Reader interface {
	// Get returns the tasks with the given ids; a missing id gives nil.
	Get(ctx context.Context, p GetParams) (GetResult, error)
	// List returns tasks matching a filter in enqueue order, a page at a
	// time. One call examines at most MaxListScan tasks, so its cost is
	// bounded whatever the filter: a page may hold fewer than Limit tasks,
	// or none, and still have a NextCursor (see ListResult).
	List(ctx context.Context, p ListParams) (ListResult, error)
	// Stats counts tasks per queue and state.
	Stats(ctx context.Context, p StatsParams) (StatsResult, error)
}

// Admin changes tasks and queues on an operator's request.
type Admin interface {
	// Cancel cancels tasks: pending, scheduled and retry tasks at once, active
	// ones by marking them (see the package documentation).
	Cancel(ctx context.Context, p IDsParams) (AdminResult, error)
	// Retry makes dead or cancelled tasks pending again with a fresh count
	// of attempts.
	Retry(ctx context.Context, p IDsParams) (AdminResult, error)
	// Delete removes tasks that are not active.
	Delete(ctx context.Context, p IDsParams) (AdminResult, error)
	// SetQueuePaused pauses or resumes a queue. A paused queue accepts tasks
	// but none is leased from it.
	SetQueuePaused(ctx context.Context, p QueuePauseParams) error
}

// Maintainer runs the periodic reconciliation that keeps a store healthy.
type Maintainer interface {
	// Sweep makes due scheduled and retry tasks pending, recovers tasks whose
	// lease expired (back to pending, or dead when no attempts are left, or
	// cancelled when a cancel was requested), deletes terminal tasks whose
	// retention ran out and forgets expired unique keys. It is safe to call
	// from many processes at once; each change happens exactly once.
	Sweep(ctx context.Context, p SweepParams) (SweepResult, error)
}

// EnqueueParams is the input of Enqueue.
type EnqueueParams struct {
	Namespace string
	Tasks     []TaskInput
}

// EnqueueResult has one item per input task, in order.
type EnqueueResult struct {
	Items []EnqueueItem
}

// EnqueueItem is the result of one enqueued task.
type EnqueueItem struct {
	// ID is the new task's id, or with ErrDuplicate the id of the task that
	// holds the unique key.
	ID string
	// State is the new task's state (scheduled or pending).
	State State
	// Err is nil, or ErrDuplicate, ErrTaskExists, or a validation error.
	Err error
}

// LeaseParams is the input of Lease.
type LeaseParams struct {
	Namespace string
	// Queues lists the queues to lease from, highest priority first.
	Queues []string
	// Weights, when not nil, has one positive weight per queue and makes the
	// priority weighted: each call orders the queues by a weighted random
	// draw (see OrderQueues). Nil means strict priority in list order.
	Weights []int
	// Types, when not nil, restricts the lease to tasks of these types.
	Types []string
	// Max is the most tasks to return; at least 1.
	Max int
	// Duration is how long each lease lasts unless extended.
	Duration time.Duration
	// Wait is how long to wait for a ready task; 0 returns at once.
	Wait time.Duration
	// WorkerID names the lease holder, for operators.
	WorkerID string
}

// LeaseResult holds the leased tasks, each with State StateActive, its
// Attempt incremented and a new LeaseID.
type LeaseResult struct {
	Tasks []*Task
}

// LeaseRef names one lease.
type LeaseRef struct {
	ID      string
	LeaseID uint64
}

// ExtendParams is the input of Extend.
type ExtendParams struct {
	Namespace string
	Leases    []ExtendLease
	// Duration is the new lease length, counted from now.
	Duration time.Duration
}

// ExtendLease is one lease to renew, optionally with progress to store.
type ExtendLease struct {
	LeaseRef
	// Progress, when not nil, replaces the task's progress.
	Progress *Progress
}

// Progress is what a handler reports while it runs.
type Progress struct {
	Percent int // 0..100
	Message string
}

// ExtendResult has one item per lease, in order.
type ExtendResult struct {
	Items []ExtendItem
}

// ExtendItem is the result of one renewal.
type ExtendItem struct {
	ExpiresAt       time.Time
	CancelRequested bool
	// Err is nil, ErrLeaseLost or ErrNotFound.
	Err error
}

// ReportParams is the input of Report.
type ReportParams struct {
	Namespace string
	Outcomes  []Outcome
}

// ReportResult has one error per outcome, in order: nil, ErrLeaseLost,
// ErrNotFound or a validation error.
type ReportResult struct {
	Errs []error
}

// WaitCancelsParams is the input of WaitCancels.
type WaitCancelsParams struct {
	Namespace string
	// Cursor is the Cursor of the previous answer; empty starts now.
	Cursor string
	// Wait is how long to wait for a cancel request; 0 returns at once.
	Wait time.Duration
}

// WaitCancelsResult holds the cancel requests after the cursor, in the
// order they were made.
type WaitCancelsResult struct {
	// Leases are the leases asked to cancel; a lease may appear twice.
	Leases []LeaseRef
	// Cursor continues after Leases; pass it to the next call.
	Cursor string
	// Missed says that requests may have been missed since the cursor
	// given (it was too old, or came from another process or an earlier
	// run of the store): the caller checks its leases with Extend.
	Missed bool
}

// GetParams is the input of Get.
type GetParams struct {
	Namespace string
	IDs       []string
	// Outcomes says that the caller needs only each task's ID, Type,
	// Queue, Priority, State, LastError and Result: a store may then leave
	// the other fields zero, and read less (a chord's callback reads its
	// members so). Stores may ignore it.
	Outcomes bool
}

// GetResult has one task per id, in order; nil where no task has the id.
type GetResult struct {
	Tasks []*Task
}

// ListParams filters and pages List. Zero fields do not filter.
type ListParams struct {
	Namespace string
	Queue     string
	Type      string
	States    []State
	// CreatedAfter and CreatedBefore bound CreatedAt (exclusive).
	CreatedAfter, CreatedBefore time.Time
	// Limit is the page size: 0 means 100; at most 1000.
	Limit int
	// Cursor is NextCursor of the previous page; empty starts at the first.
	Cursor string
	// Newest lists the newest tasks first.
	Newest bool
	// WithPayload includes payloads and results in the returned tasks.
	WithPayload bool
}

// ListResult is one page of List.
type ListResult struct {
	Tasks []*Task
	// NextCursor continues the listing; empty at the end, and only there.
	// A call stops when the page is full or when it has examined
	// MaxListScan tasks, whichever comes first: a short or empty page with
	// a NextCursor means "keep going", not "no more".
	NextCursor string
}

// StatsParams is the input of Stats.
type StatsParams struct {
	Namespace string
	// Queues restricts the answer; nil means every queue that has tasks or
	// is paused.
	Queues []string
}

// StatsResult holds one entry per queue, sorted by name.
type StatsResult struct {
	Queues []QueueStats
}

// IDsParams names tasks for an admin call.
type IDsParams struct {
	Namespace string
	IDs       []string
}

// AdminResult has one item per id, in order.
type AdminResult struct {
	Items []AdminItem
}

// AdminItem is the result of an admin call on one task.
type AdminItem struct {
	// State is the task's state after the call.
	State State
	// Err is nil, ErrNotFound or ErrInvalidState.
	Err error
}

// QueuePauseParams is the input of SetQueuePaused.
type QueuePauseParams struct {
	Namespace string
	Queue     string
	Paused    bool
}

// SweepParams is the input of Sweep.
type SweepParams struct {
	// Limit bounds the changes of each kind in one call; 0 means 10000.
	Limit int
}

// SweepResult counts what Sweep changed.
type SweepResult struct {
	Promoted  int // scheduled or retry -> pending
	Recovered int // expired lease -> pending
	Dead      int // expired lease, no attempts left -> dead
	Cancelled int // expired lease of a task asked to cancel -> cancelled
	Deleted   int // terminal tasks past retention
}

// Total returns the number of changes.
func (r SweepResult) Total() int {
	return r.Promoted + r.Recovered + r.Dead + r.Cancelled + r.Deleted
}
