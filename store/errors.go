package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Stores wrap them with %w; compare with errors.Is. Package
// kiln re-exports them, and the remote store maps HTTP errors back to them.
var (
	// ErrNotFound: no task (or queue) with that name in the namespace.
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost: the lease named is not the task's current lease; it
	// expired and was taken back, or the task was changed by someone else.
	ErrLeaseLost = errors.New("lease lost")
	// ErrDuplicate: another task holds the unique key within its window.
	ErrDuplicate = errors.New("duplicate unique key")
	// ErrTaskExists: a task with that id already exists.
	ErrTaskExists = errors.New("task id already exists")
	// ErrInvalidState: the operation is not allowed in the task's state.
	ErrInvalidState = errors.New("invalid state for operation")
	// ErrTaskFinished: the task already finished (succeeded or dead), so a
	// cancel came too late and changed nothing. It matches ErrInvalidState
	// too.
	ErrTaskFinished = fmt.Errorf("task already finished: %w", ErrInvalidState)
	// ErrInvalidName: a type, queue, namespace or id is empty or has
	// characters outside [A-Za-z0-9._:-], or is too long.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidOption: an option is out of range.
	ErrInvalidOption = errors.New("invalid option")
	// ErrPayloadTooLarge: the payload is larger than the configured cap.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrUnavailable: the store's backend cannot serve the call now: it
	// refused the connection, did not answer in time, dropped the
	// connection, or said it is loading, failing over or read-only. The
	// call may succeed when retried later. A write that failed this way may
	// or may not have been applied (retry with the same task id or lease to
	// stay exactly-once where that matters). The error also wraps the
	// backend's own error, for logs.
	ErrUnavailable = errors.New("store unavailable")
	// ErrStorageFull: the store's disk is full (or below the free space the
	// store keeps), so it refuses writes; reads keep working, and writes
	// are accepted again, without a restart, once space is freed. A write
	// that fails with it was not made, except one caught by the disk
	// filling up while it was being written, which may or may not have
	// been; an enqueue that fails with it never runs.
	ErrStorageFull = errors.New("storage full")
)

// ValidationError says which field of an input is wrong and why. It matches
// its sentinel (ErrInvalidName, ErrInvalidOption or ErrPayloadTooLarge) with
// errors.Is.
type ValidationError struct {
	Field  string
	Reason string
	Err    error
}

// Error returns "field: reason".
func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s (%v)", e.Field, e.Reason, e.Err)
}

// Unwrap returns the sentinel.
func (e *ValidationError) Unwrap() error { return e.Err }

func invalid(sentinel error, field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}
