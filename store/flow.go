package store

import (
	"context"
	"fmt"
	"time"
)

// Flows is an optional ability of a store, found by type assertion: tasks
// held until other tasks finish. Workflows (chains, groups, chords and
// callbacks) are built on it.
//
// A flow is written in one atomic step: its record (an opaque Spec), its
// ready tasks, and its held tasks, each of which waits for a set of other
// tasks of the flow. The atomic step of the store that moves a task to a
// terminal state (succeeded, dead or cancelled, whether by Report, Cancel
// or Sweep), or deletes it before it finished, also counts it as finished
// for every held task that waits for it, and enqueues (as pending) each
// held task that no longer waits for anything. A held task is therefore
// released exactly once, after every task it waits for has its final
// outcome recorded, whatever the crashes, redeliveries and concurrent
// completions: a second terminal transition of the same task (after an
// admin Retry) counts nothing again.
//
// A flow's record is kept exactly as long as any of its tasks (ready or
// held) is stored: the atomic step that deletes the last of them, whether
// Delete or Sweep past the task's retention, also deletes the record and
// its indexes, after which GetFlow answers ErrNotFound and ListFlows omits
// it. A flow therefore never outlives all its tasks.
//
// The results of a flow's tasks are kept as long as the flow: while any
// task of the flow is not terminal (held ones included), Sweep deletes no
// task of the flow, whatever its ExpiresAt. The atomic step that moves the
// flow's last open task to a terminal state (or deletes it before it
// finished) sets the flow's expiry to at least that task's own (now plus
// its retention); every terminal task of the flow is kept until the later
// of its own ExpiresAt and the flow's expiry, and Get and List report that
// later time as its ExpiresAt, so all its tasks, and with the last of them
// the record, expire together. (The stores keep the flow's expiry once,
// in the flow, rather than rewriting every member.) An admin Retry of a
// terminal task of the flow makes the flow open again until it ends.
// Flows stored before their record listed their tasks keep the older
// rule: each task expires by its own retention, counted from its own end.
//
// The store applies no policy: a held task is released whether the tasks
// it waits for succeeded or not. The code that runs it reads their states
// and results (Get) and decides.
type Flows interface {
	// EnqueueFlow adds a flow atomically: either all of it is written or
	// none. It fails with ErrTaskExists when the flow id or any task id is
	// already taken, and with a ValidationError for a bad input.
	EnqueueFlow(ctx context.Context, p FlowParams) error
	// GetFlow returns a flow's record, or ErrNotFound.
	GetFlow(ctx context.Context, p FlowGetParams) (*Flow, error)
	// ListFlows returns the flows of a namespace in id order, a page at a
	// time.
	ListFlows(ctx context.Context, p FlowListParams) (FlowListResult, error)
}

// FlowListParams is the input of ListFlows.
type FlowListParams struct {
	Namespace string
	// After is the NextCursor of the previous page (the last id it
	// returned); empty starts at the first flow.
	After string
	// Limit is the page size: 0 means 100; at most 1000.
	Limit int
}

// FlowListResult is one page of ListFlows.
type FlowListResult struct {
	Flows []*Flow
	// NextCursor continues the listing; empty at the end.
	NextCursor string
}

// CheckFlowList validates p and returns its page size.
func CheckFlowList(p FlowListParams) (int, error) {
	if err := CheckNamespace(p.Namespace); err != nil {
		return 0, err
	}
	if p.After != "" {
		if err := CheckName("after", p.After); err != nil {
			return 0, err
		}
	}
	switch {
	case p.Limit < 0 || p.Limit > MaxListLimit:
		return 0, invalid(ErrInvalidOption, "limit", "%d is outside 0..%d", p.Limit, MaxListLimit)
	case p.Limit == 0:
		return 100, nil
	}
	return p.Limit, nil
}

// MaxFlowTasks is the most tasks (ready and held) of one flow.
const MaxFlowTasks = 100000

// MaxFlowSpecBytes caps FlowParams.Spec.
const MaxFlowSpecBytes = 16 << 20

// FlowParams is the input of EnqueueFlow.
type FlowParams struct {
	Namespace string
	// ID names the flow; unique in the namespace among flows.
	ID string
	// Spec is stored unchanged and returned by GetFlow.
	Spec []byte
	// Tasks are enqueued at once. They may not have a UniqueKey.
	Tasks []TaskInput
	// Held are enqueued later, each when every task it waits for has
	// finished. They may not have a UniqueKey or a RunAt.
	Held []HeldTask
}

// HeldTask is a task of a flow that waits for others.
type HeldTask struct {
	Task TaskInput
	// After lists the ids of the tasks it waits for: tasks of the same
	// flow, in Tasks or earlier in Held (so a flow has no cycle). At least
	// one; duplicates count once.
	After []string
}

// FlowGetParams is the input of GetFlow.
type FlowGetParams struct {
	Namespace string
	ID        string
	// WithoutSpec leaves Flow.Spec nil, for callers that poll Held.
	WithoutSpec bool
}

// Flow is the stored record of a flow.
type Flow struct {
	ID        string
	Spec      []byte
	CreatedAt time.Time
	// Held lists the ids of the flow's tasks not yet enqueued: the held
	// tasks not yet released, in the order they were given, then (a store
	// that writes a large flow in parts, while it does) the ready tasks
	// not yet written.
	Held []string
}

// Validate checks p against the limits: names, every task, the held tasks'
// dependencies, and the sizes. It returns the first problem found.
func (p *FlowParams) Validate(l Limits, now time.Time) error {
	if err := CheckNamespace(p.Namespace); err != nil {
		return err
	}
	if err := CheckName("flow id", p.ID); err != nil {
		return err
	}
	n := len(p.Tasks) + len(p.Held)
	if n == 0 {
		return invalid(ErrInvalidOption, "tasks", "a flow needs at least one task")
	}
	if len(p.Tasks) == 0 {
		return invalid(ErrInvalidOption, "tasks", "a flow needs at least one task that is not held")
	}
	if n > MaxFlowTasks {
		return invalid(ErrInvalidOption, "tasks", "a flow has at most %d tasks, not %d", MaxFlowTasks, n)
	}
	if len(p.Spec) > MaxFlowSpecBytes {
		return invalid(ErrPayloadTooLarge, "spec", "a flow's spec is at most %d bytes, not %d", MaxFlowSpecBytes, len(p.Spec))
	}
	seen := make(map[string]bool, n)
	for i := range p.Tasks {
		in := &p.Tasks[i]
		if err := in.Validate(l, now); err != nil {
			return fmt.Errorf("task %d: %w", i, err)
		}
		if in.UniqueKey != "" {
			return invalid(ErrInvalidOption, fmt.Sprintf("tasks[%d].unique_key", i), "tasks of a flow cannot have a unique key")
		}
		if seen[in.ID] {
			return invalid(ErrInvalidOption, fmt.Sprintf("tasks[%d].id", i), "id %q appears twice in the flow", in.ID)
		}
		seen[in.ID] = true
	}
	for i := range p.Held {
		h := &p.Held[i]
		in := &h.Task
		if err := in.Validate(l, now); err != nil {
			return fmt.Errorf("held task %d: %w", i, err)
		}
		if in.UniqueKey != "" {
			return invalid(ErrInvalidOption, fmt.Sprintf("held[%d].unique_key", i), "tasks of a flow cannot have a unique key")
		}
		if !in.RunAt.IsZero() {
			return invalid(ErrInvalidOption, fmt.Sprintf("held[%d].run_at", i), "a held task runs when released and cannot have a run_at")
		}
		if len(h.After) == 0 {
			return invalid(ErrInvalidOption, fmt.Sprintf("held[%d].after", i), "a held task waits for at least one task")
		}
		for _, a := range h.After {
			if !seen[a] {
				return invalid(ErrInvalidOption, fmt.Sprintf("held[%d].after", i), "%q is not a task given before it in the flow", a)
			}
		}
		if seen[in.ID] {
			return invalid(ErrInvalidOption, fmt.Sprintf("held[%d].id", i), "id %q appears twice in the flow", in.ID)
		}
		seen[in.ID] = true
	}
	return nil
}

// UniqueAfter returns h.After without duplicates, in first-seen order.
func (h *HeldTask) UniqueAfter() []string {
	out := make([]string, 0, len(h.After))
	seen := make(map[string]bool, len(h.After))
	for _, a := range h.After {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
