package kiln

import (
	"fmt"
	"time"
)

// EventKind says what happened to a task.
type EventKind uint8

// The events. For one failed attempt a worker raises, in order,
// EventTimedOut (when the timeout or deadline passed), EventFailed, and then
// EventRetrying or EventDead.
const (
	// EventEnqueued: a client added the task.
	EventEnqueued EventKind = iota + 1
	// EventStarted: a handler started an attempt.
	EventStarted
	// EventSucceeded: the attempt succeeded.
	EventSucceeded
	// EventFailed: the attempt failed (error, panic or timeout).
	EventFailed
	// EventRetrying: the failed task will be retried at Event.RetryAt.
	EventRetrying
	// EventDead: the failed task will not be retried.
	EventDead
	// EventTimedOut: the attempt ran past its timeout or deadline.
	EventTimedOut
	// EventCancelled: the task was cancelled while the worker held it.
	EventCancelled
	// EventLeaseLost: the worker lost its lease on the task; another
	// worker may run it again.
	EventLeaseLost
	// EventReleased: a shutting-down worker handed the task back.
	EventReleased
)

var eventNames = [...]string{"", "enqueued", "started", "succeeded", "failed", "retrying", "dead", "timed_out", "cancelled", "lease_lost", "released"}

// String returns the event's lower-case name.
func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event tells a hook (ClientConfig.EventFunc, WorkerConfig.EventFunc) what
// happened to a task. It is plain data.
type Event struct {
	Kind   EventKind
	TaskID string
	Type   string
	Queue  string
	// Attempt is the attempt concerned (0 for EventEnqueued).
	Attempt int
	// Err is the attempt's error (EventFailed, EventRetrying, EventDead,
	// EventTimedOut, EventLeaseLost).
	Err error
	// Duration is how long the attempt ran, for events that end one.
	Duration time.Duration
	// RetryAt is when a retried task runs again (EventRetrying), as judged
	// by the store's clock.
	RetryAt time.Time
}
