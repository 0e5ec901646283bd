package store

import (
	"context"
	"time"
)

// Feed is implemented by the stores that record every state change of a
// task, in the order they applied them, in a change feed per namespace.
// The change is recorded in the same atomic step that applies it, so every
// process sharing the store reads the same changes in the same order.
//
// The feed is bounded: it keeps the most recent changes of each namespace
// (how many depends on the store); a reader whose cursor fell behind them
// gets Missed and continues from the oldest change kept.
type Feed interface {
	// Changes returns the changes of p.Namespace after p.Cursor, oldest
	// first, waiting up to p.Wait for one when there is none. An empty
	// cursor returns at once with the current cursor and no changes.
	Changes(ctx context.Context, p ChangesParams) (ChangesResult, error)
}

// ChangesParams is the input of Changes.
type ChangesParams struct {
	Namespace string
	// Cursor is the Cursor of the previous answer, or the Seq of the last
	// change seen in decimal; empty starts now.
	Cursor string
	// Wait is how long to wait for a change; 0 returns at once.
	Wait time.Duration
	// Max is the most changes to return; 0 means MaxBatch.
	Max int
}

// ChangesResult holds changes after the cursor in the order the store
// applied them.
type ChangesResult struct {
	Changes []Change
	// Cursor continues after Changes; pass it to the next call.
	Cursor string
	// Missed says that changes were lost between the cursor given and
	// Changes: the cursor was older than the oldest change kept, or came
	// from an earlier run of a store that keeps its feed in memory, or
	// the store recorded no changes for a while because no one read its
	// feed (the Redis store records them only while it is read).
	Missed bool
}

// ChangeKind says what happened to a task.
type ChangeKind uint8

// The kinds of change. A failed attempt is two changes, ChangeFailed then
// ChangeRetrying or ChangeDead, recorded in one step.
const (
	ChangeEnqueued  ChangeKind = iota + 1 // added (State: scheduled or pending)
	ChangeStarted                         // leased: an attempt started
	ChangeSucceeded                       // the attempt succeeded
	ChangeFailed                          // the attempt failed
	ChangeRetrying                        // the failed task will run again (State: retry or pending)
	ChangeDead                            // the failed task will not run again
	ChangeCancelled                       // cancelled (a waiting task, or an active one that ended so)
	ChangeLeaseLost                       // the lease expired before its worker reported (State: pending, dead or cancelled)
	ChangeReleased                        // handed back unstarted (State: pending)
	ChangeRetried                         // a dead or cancelled task made pending again by Admin.Retry
	ChangeDeleted                         // removed by Admin.Delete
)

var changeNames = [...]string{"", "enqueued", "started", "succeeded", "failed", "retrying", "dead", "cancelled", "lease_lost", "released", "retried", "deleted"}

// String returns the kind's name, as in the event kinds task.<name>.
func (k ChangeKind) String() string {
	if int(k) < len(changeNames) && k != 0 {
		return changeNames[k]
	}
	return "unknown"
}

// Change is one state change of a task.
type Change struct {
	// Seq orders the changes of a namespace: it grows with each change.
	Seq  uint64
	Kind ChangeKind
	// Time is when the store applied the change.
	Time  time.Time
	ID    string
	Queue string
	Type  string
	// State is the task's state after the change (zero after a delete).
	State State
	// Attempt is the task's attempt count after the change.
	Attempt int
	// WorkerID is the lease holder of ChangeStarted.
	WorkerID string
	// Error is the attempt's error of ChangeFailed.
	Error string
}

// ChangeFeedDefault is the number of changes per namespace that the
// embedded store keeps by default. (The Redis store bounds its feed by
// entries of bounded size instead: see docs/redis.md.)
const ChangeFeedDefault = 10000
