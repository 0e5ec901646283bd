package kiln

import (
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Sentinel errors of the store, re-exported so that users of package kiln
// can compare with errors.Is without importing package store.
var (
	// ErrNotFound: no task with that id in the namespace.
	ErrNotFound = store.ErrNotFound
	// ErrLeaseLost: a worker's lease on a task ended before the worker
	// finished with it. It is also the cause of a handler's context when
	// the worker lost the task's lease.
	ErrLeaseLost = store.ErrLeaseLost
	// ErrDuplicate: another task holds the unique key within its window.
	ErrDuplicate = store.ErrDuplicate
	// ErrTaskExists: a task with the given explicit id already exists.
	ErrTaskExists = store.ErrTaskExists
	// ErrInvalidState: the operation is not allowed in the task's state.
	ErrInvalidState = store.ErrInvalidState
	// ErrTaskFinished: Cancel came too late, the task already finished
	// (succeeded or dead) and was not changed. It matches ErrInvalidState
	// too.
	ErrTaskFinished = store.ErrTaskFinished
	// ErrInvalidName: a type, queue, namespace or id is malformed.
	ErrInvalidName = store.ErrInvalidName
	// ErrInvalidOption: an option or configuration value is out of range.
	ErrInvalidOption = store.ErrInvalidOption
	// ErrPayloadTooLarge: a payload or result is larger than the cap.
	ErrPayloadTooLarge = store.ErrPayloadTooLarge
	// ErrClosed: the store was closed.
	ErrClosed = store.ErrClosed
	// ErrUnavailable: the store's backend (Redis, a kiln server) cannot be
	// reached or cannot serve now; the call may succeed when retried.
	ErrUnavailable = store.ErrUnavailable
	// ErrStorageFull: the store's disk is full; it refuses writes until
	// space is freed, and reads keep working.
	ErrStorageFull = store.ErrStorageFull
)

// ValidationError says which field of an input is wrong and why; it matches
// ErrInvalidName, ErrInvalidOption or ErrPayloadTooLarge with errors.Is.
type ValidationError = store.ValidationError

// Errors of package kiln.
var (
	// ErrTaskDead is matched (errors.Is) by the *TaskError a result handle
	// returns for a task that failed for good.
	ErrTaskDead = errors.New("kiln: task dead")
	// ErrTaskCancelled is matched by the *TaskError a result handle returns
	// for a cancelled task. It is also the cause (context.Cause) of a
	// handler's context when the task was cancelled while it ran.
	ErrTaskCancelled = errors.New("kiln: task cancelled")
	// ErrTaskTimeout is the cause of a handler's context when the task's
	// timeout or deadline passed.
	ErrTaskTimeout = errors.New("kiln: task timed out")
	// ErrShutdown is the cause of a handler's context when the worker's
	// Shutdown ran out of time and stopped the handler.
	ErrShutdown = errors.New("kiln: worker shut down")
	// ErrWorkerStarted is returned when a Worker is run twice, or a handler
	// is registered after Run was called.
	ErrWorkerStarted = errors.New("kiln: worker already started")
	// ErrNoHandlers is returned by Run when no handler is registered.
	ErrNoHandlers = errors.New("kiln: no handlers registered")
)

// SkipRetry tells the worker not to retry a task: a handler error that wraps
// it (errors.Is) makes the task dead at once.
//
//	return fmt.Errorf("bad address %q: %w", addr, kiln.SkipRetry)
var SkipRetry = errors.New("kiln: skip retry") //nolint:errname,revive,staticcheck // error-naming, ST1012, ErrXxx: SkipRetry is the name machinery and asynq users know

// RetryAfter returns an error that fails the attempt with err and retries the
// task after d instead of the delay from WorkerConfig.RetryDelayFunc. It does
// not add attempts: a task on its last attempt still goes dead. A nil err is
// replaced by a generic error, since a handler that returns it failed.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	if d < 0 {
		d = 0
	}
	return &retryAfterError{delay: d, err: err}
}

type retryAfterError struct {
	delay time.Duration
	err   error
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.err, e.delay)
}

func (e *retryAfterError) Unwrap() error { return e.err }

// PanicError is the error of an attempt whose handler panicked. The worker
// recovers the panic, records a failed attempt and keeps running.
type PanicError struct {
	// Value is the value passed to panic.
	Value any
	// Stack is the goroutine's stack trace at the panic.
	Stack []byte
}

// Error returns "panic: " and the panic value; the stack is left out.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value when it is an error, so that errors.Is sees
// through a panic(err).
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// TaskError is the error a result handle returns for a task that ended badly
// (dead or cancelled). It matches ErrTaskDead or ErrTaskCancelled with
// errors.Is.
type TaskError struct {
	// ID and Type name the task.
	ID, Type string
	// State is StateDead or StateCancelled.
	State State
	// Attempt is the number of attempts the task had.
	Attempt int
	// Message is the error of the last failed attempt, as stored.
	Message string
}

// Error describes the task and its last error.
func (e *TaskError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("kiln: task %s (%s) %s after %d attempts", e.ID, e.Type, e.State, e.Attempt)
	}
	return fmt.Sprintf("kiln: task %s (%s) %s after %d attempts: %s", e.ID, e.Type, e.State, e.Attempt, e.Message)
}

// Is matches ErrTaskDead for a dead task and ErrTaskCancelled for a
// cancelled one.
func (e *TaskError) Is(target error) bool {
	switch target {
	case ErrTaskDead:
		return e.State == StateDead
	case ErrTaskCancelled:
		return e.State == StateCancelled
	}
	return false
}
