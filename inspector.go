package kiln

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Inspector lists, counts and changes the tasks and queues of its client's
// namespace: the everyday operations of an operator, from Go, without the
// store's parameter types. Get one with Client.Inspector. It is safe for
// concurrent use and holds no resources.
//
// Every method that names tasks takes a batch of ids and makes one call to
// the store (a few for more than store.MaxBatch ids). For one id the error
// is that id's error; for several it is a *BatchError with one entry per
// id, nil where the call succeeded, so errors.Is(err, ErrNotFound) tells
// whether any id was missing.
type Inspector struct {
	c *Client
}

// Inspector returns an inspector of the client's store and namespace.
func (c *Client) Inspector() *Inspector { return &Inspector{c: c} }

// QueueInfo counts the tasks of one queue, per state. It is plain data.
type QueueInfo struct {
	// Queue is the queue's name.
	Queue string `json:"queue"`
	// Paused is true while no task is leased from the queue.
	Paused bool `json:"paused"`
	// Scheduled, Pending, Active, Retry, Succeeded, Dead and Cancelled
	// count the queue's tasks in each state. Finished tasks (succeeded,
	// dead, cancelled) are counted until their retention runs out.
	Scheduled int64 `json:"scheduled"`
	Pending   int64 `json:"pending"`
	Active    int64 `json:"active"`
	Retry     int64 `json:"retry"`
	Succeeded int64 `json:"succeeded"`
	Dead      int64 `json:"dead"`
	Cancelled int64 `json:"cancelled"`
}

// Size returns the number of tasks that have not finished: scheduled,
// pending, active and retry.
func (q QueueInfo) Size() int64 { return q.Scheduled + q.Pending + q.Active + q.Retry }

// Count returns the number of tasks in state s (0 for a state that is not
// valid).
func (q QueueInfo) Count(s State) int64 {
	switch s {
	case StateScheduled:
		return q.Scheduled
	case StatePending:
		return q.Pending
	case StateActive:
		return q.Active
	case StateRetry:
		return q.Retry
	case StateSucceeded:
		return q.Succeeded
	case StateDead:
		return q.Dead
	case StateCancelled:
		return q.Cancelled
	}
	return 0
}

func queueInfoFromStore(qs store.QueueStats) QueueInfo {
	return QueueInfo{
		Queue: qs.Queue, Paused: qs.Paused,
		Scheduled: qs.Counts[StateScheduled], Pending: qs.Counts[StatePending], Active: qs.Counts[StateActive],
		Retry: qs.Counts[StateRetry], Succeeded: qs.Counts[StateSucceeded], Dead: qs.Counts[StateDead],
		Cancelled: qs.Counts[StateCancelled],
	}
}

// Queues returns every queue of the namespace that holds tasks or is
// paused, sorted by name, with its counts.
func (i *Inspector) Queues(ctx context.Context) ([]QueueInfo, error) {
	out, err := i.c.s.Stats(ctx, store.StatsParams{Namespace: i.c.ns})
	if err != nil {
		return nil, fmt.Errorf("kiln: queues: %w", err)
	}
	qs := make([]QueueInfo, len(out.Queues))
	for j, q := range out.Queues {
		qs[j] = queueInfoFromStore(q)
	}
	return qs, nil
}

// Queue returns the counts of one queue. A queue that holds no task and is
// not paused is not an error: its counts are zero.
func (i *Inspector) Queue(ctx context.Context, queue string) (QueueInfo, error) {
	out, err := i.c.s.Stats(ctx, store.StatsParams{Namespace: i.c.ns, Queues: []string{queue}})
	if err != nil {
		return QueueInfo{}, fmt.Errorf("kiln: queue %q: %w", queue, err)
	}
	if len(out.Queues) != 1 {
		return QueueInfo{}, fmt.Errorf("kiln: queue %q: store returned %d queues for 1", queue, len(out.Queues))
	}
	return queueInfoFromStore(out.Queues[0]), nil
}

// PauseQueue pauses a queue: it keeps accepting tasks, but workers lease
// none from it until ResumeQueue. Tasks already running go on.
func (i *Inspector) PauseQueue(ctx context.Context, queue string) error {
	return i.setPaused(ctx, queue, true)
}

// ResumeQueue lets workers lease from a paused queue again. Resuming a
// queue that is not paused does nothing.
func (i *Inspector) ResumeQueue(ctx context.Context, queue string) error {
	return i.setPaused(ctx, queue, false)
}

func (i *Inspector) setPaused(ctx context.Context, queue string, paused bool) error {
	if err := i.c.s.SetQueuePaused(ctx, store.QueuePauseParams{Namespace: i.c.ns, Queue: queue, Paused: paused}); err != nil {
		verb := "resume"
		if paused {
			verb = "pause"
		}
		return fmt.Errorf("kiln: %s queue %q: %w", verb, queue, err)
	}
	return nil
}

// ListOptions filters and pages Inspector.List. The zero value lists every
// task of the namespace, oldest first, 100 at a time. It is plain data.
type ListOptions struct {
	// Queue and Type, when set, keep only the tasks of that queue or type.
	Queue, Type string
	// States, when not empty, keeps only the tasks in one of these states.
	States []State
	// CreatedAfter and CreatedBefore, when set, bound the tasks' creation
	// time (both exclusive).
	CreatedAfter, CreatedBefore time.Time
	// Limit is the page size: 0 means 100; at most 1000.
	Limit int
	// Cursor continues a listing: the NextCursor of the previous page.
	// Empty starts at the first task.
	Cursor string
	// Newest lists the newest tasks first.
	Newest bool
	// WithPayload fills in the tasks' Payload and Result, which are left
	// out by default.
	WithPayload bool
}

// TaskPage is one page of Inspector.List.
type TaskPage struct {
	// Tasks are the page's tasks, in the order asked for.
	Tasks []*TaskInfo
	// NextCursor continues the listing (ListOptions.Cursor); it is empty
	// at the end and only there. A page may hold fewer tasks than the limit,
	// or none, and still have a NextCursor: each call examines a bounded
	// number of tasks, so a filter that matches few of many takes several
	// pages. Inspector.All follows the cursor for you.
	NextCursor string
}

func (o *ListOptions) params(ns string) store.ListParams {
	return store.ListParams{
		Namespace: ns, Queue: o.Queue, Type: o.Type, States: o.States,
		CreatedAfter: o.CreatedAfter, CreatedBefore: o.CreatedBefore,
		Limit: o.Limit, Cursor: o.Cursor, Newest: o.Newest, WithPayload: o.WithPayload,
	}
}

// List returns one page of the tasks that match opts; nil opts lists every
// task. See TaskPage for paging.
func (i *Inspector) List(ctx context.Context, opts *ListOptions) (TaskPage, error) {
	var o ListOptions
	if opts != nil {
		o = *opts
	}
	out, err := i.c.s.List(ctx, o.params(i.c.ns))
	if err != nil {
		return TaskPage{}, fmt.Errorf("kiln: list tasks: %w", err)
	}
	page := TaskPage{Tasks: make([]*TaskInfo, len(out.Tasks)), NextCursor: out.NextCursor}
	for j, t := range out.Tasks {
		page.Tasks[j] = infoFromStore(t)
	}
	return page, nil
}

// All returns every task that matches opts (nil: every task), page after
// page from opts.Cursor on, until the end or the first error, which it
// yields with a nil task and then stops. Tasks added or changed while it
// runs may or may not be seen.
//
//	for t, err := range insp.All(ctx, &kiln.ListOptions{States: []kiln.State{kiln.StateDead}}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(t.ID, t.LastError)
//	}
func (i *Inspector) All(ctx context.Context, opts *ListOptions) iter.Seq2[*TaskInfo, error] {
	var o ListOptions
	if opts != nil {
		o = *opts
	}
	return func(yield func(*TaskInfo, error) bool) {
		for {
			page, err := i.List(ctx, &o)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, t := range page.Tasks {
				if !yield(t, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			o.Cursor = page.NextCursor
		}
	}
}

// Task returns a snapshot of one task, with its payload and result (as
// Client.Info). A missing task gives an error that matches ErrNotFound.
func (i *Inspector) Task(ctx context.Context, id string) (*TaskInfo, error) {
	return i.c.Info(ctx, id)
}

// Cancel cancels tasks as Client.Cancel does: a waiting task (scheduled,
// pending, retry) at once, an active one by asking its worker to stop the
// handler. A finished task fails with ErrInvalidState, a missing one with
// ErrNotFound (see Inspector for the errors of a batch).
func (i *Inspector) Cancel(ctx context.Context, ids ...string) error {
	return i.admin(ctx, "cancel", i.c.s.Cancel, ids)
}

// Retry makes dead or cancelled tasks pending again, with a fresh count of
// attempts (asynq calls it running an archived task). A task in another
// state fails with ErrInvalidState, a missing one with ErrNotFound.
func (i *Inspector) Retry(ctx context.Context, ids ...string) error {
	return i.admin(ctx, "retry", i.c.s.Retry, ids)
}

// Delete removes tasks for good, whatever their state except active: an
// active task fails with ErrInvalidState (cancel it first), a missing one
// with ErrNotFound.
func (i *Inspector) Delete(ctx context.Context, ids ...string) error {
	return i.admin(ctx, "delete", i.c.s.Delete, ids)
}

// CancelAll cancels every task that matches opts and returns how many it
// cancelled. Tasks that ended or went away meanwhile are skipped; Limit
// and Cursor of opts are ignored.
func (i *Inspector) CancelAll(ctx context.Context, opts *ListOptions) (int, error) {
	return i.adminAll(ctx, "cancel", i.c.s.Cancel, opts)
}

// RetryAll makes every dead or cancelled task that matches opts pending
// again and returns how many. With nil opts it retries every dead and
// cancelled task of the namespace.
func (i *Inspector) RetryAll(ctx context.Context, opts *ListOptions) (int, error) {
	o := ListOptions{States: []State{StateDead, StateCancelled}}
	if opts != nil {
		o = *opts
	}
	return i.adminAll(ctx, "retry", i.c.s.Retry, &o)
}

// DeleteAll deletes every task that matches opts except active ones and
// returns how many it deleted. Nil opts matches every task: pass states
// (for example StateDead) to delete less.
func (i *Inspector) DeleteAll(ctx context.Context, opts *ListOptions) (int, error) {
	return i.adminAll(ctx, "delete", i.c.s.Delete, opts)
}

type adminFunc func(context.Context, store.IDsParams) (store.AdminResult, error)

// admin runs op on ids, in batches of at most store.MaxBatch.
func (i *Inspector) admin(ctx context.Context, verb string, op adminFunc, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	errs, failed := make([]error, len(ids)), false
	for start := 0; start < len(ids); start += store.MaxBatch {
		end := min(start+store.MaxBatch, len(ids))
		out, err := op(ctx, store.IDsParams{Namespace: i.c.ns, IDs: ids[start:end]})
		if err == nil && len(out.Items) != end-start {
			err = fmt.Errorf("store returned %d results for %d tasks", len(out.Items), end-start)
		}
		if err != nil {
			if len(ids) == 1 {
				return fmt.Errorf("kiln: %s task %s: %w", verb, ids[0], err)
			}
			for j := start; j < len(ids); j++ {
				errs[j] = fmt.Errorf("kiln: %s task %s: %w", verb, ids[j], err)
			}
			failed = true
			break
		}
		for j, it := range out.Items {
			if it.Err != nil {
				errs[start+j] = fmt.Errorf("kiln: %s task %s: %w", verb, ids[start+j], it.Err)
				failed = true
			}
		}
	}
	switch {
	case !failed:
		return nil
	case len(ids) == 1:
		return errs[0]
	}
	return &BatchError{Errs: errs}
}

// adminAll runs op on every task that matches opts, a page at a time, and
// counts the tasks it changed. ErrInvalidState and ErrNotFound (a task that
// changed or went away since it was listed) are skipped.
func (i *Inspector) adminAll(ctx context.Context, verb string, op adminFunc, opts *ListOptions) (int, error) {
	var o ListOptions
	if opts != nil {
		o = *opts
	}
	o.Limit, o.Cursor, o.WithPayload = 1000, "", false
	n := 0
	for {
		page, err := i.List(ctx, &o)
		if err != nil {
			return n, err
		}
		if len(page.Tasks) > 0 {
			ids := make([]string, len(page.Tasks))
			for j, t := range page.Tasks {
				ids[j] = t.ID
			}
			out, err := op(ctx, store.IDsParams{Namespace: i.c.ns, IDs: ids})
			if err != nil {
				return n, fmt.Errorf("kiln: %s tasks: %w", verb, err)
			}
			for _, it := range out.Items {
				switch {
				case it.Err == nil:
					n++
				case errors.Is(it.Err, store.ErrInvalidState), errors.Is(it.Err, store.ErrNotFound):
				default:
					return n, fmt.Errorf("kiln: %s tasks: %w", verb, it.Err)
				}
			}
		}
		if page.NextCursor == "" {
			return n, nil
		}
		o.Cursor = page.NextCursor
	}
}
