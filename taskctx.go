package kiln

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// taskCtx is the context of one attempt's handler: the values of the
// worker's base context plus the task (TaskFromContext), the attempt's
// deadline, and cancellation with a cause. It behaves as the contexts of
// context.WithCancelCause and context.WithDeadlineCause stacked on base
// would, without their cost per task: it lives in the job (no allocation),
// makes its done channel only when asked for it, and its deadline is kept
// by the run's deadlines (one timer for every running handler) instead of
// a timer of its own.
//
// What the standard contexts do that it does too:
//   - Err is context.DeadlineExceeded once the deadline passed and
//     context.Canceled after any other cancel; the first cancel wins.
//   - context.Cause gives the cause: the cancel's (ErrTaskTimeout for the
//     deadline), or Err when the cancel had none. Cause reaches it through
//     Value and a context.WithCancelCause context made at the cancel, the
//     one way the context package lets a context of another type carry a
//     cause.
//   - Contexts derived from it are cancelled with it, with its Err and
//     cause: context.WithCancel and the like find its AfterFunc method and
//     register there (no goroutine); context.AfterFunc works as for any
//     context. A cancelable context derived through a context.WithValue
//     of it (a middleware's) is cancelled as well, but the context
//     package then watches it with a goroutine, as it does for every
//     context type of its own; the worker itself never wraps it (the
//     task and the handler's span are in its values).
type taskCtx struct {
	base     context.Context //nolint:containedctx // a context is made of its parent: values only, never cancelled
	task     *Task
	deadline time.Time // zero: none
	index    int       // in the run's deadlines heap; -1 when not in it

	state  atomic.Uint32                   // live, or how it was cancelled (set once)
	causer atomic.Pointer[context.Context] // carries the cause; set before state

	mu    sync.Mutex
	done  chan struct{} // made on demand; closed at the cancel
	after []*func()     // AfterFunc's functions not run or stopped yet
}

// taskCtx states.
const (
	ctxLive      = iota
	ctxCancelled // Err is context.Canceled
	ctxTimedOut  // Err is context.DeadlineExceeded
)

// closedDone is the done channel of a context cancelled before anyone
// asked for its channel.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *taskCtx) init(base context.Context, t *Task, deadline time.Time) {
	c.base, c.task, c.deadline, c.index = base, t, deadline, -1
}

// setBase replaces the context whose values c gives (the worker adds the
// handler's span to them) before the handler is called.
func (c *taskCtx) setBase(base context.Context) {
	c.mu.Lock()
	c.base = base
	if cc := c.causer.Load(); cc != nil { // cancelled already: the cause's carrier takes the new values
		c.causer.Store(causeCarrier(base, context.Cause(*cc)))
	}
	c.mu.Unlock()
}

// causeCarrier returns a context with base's values, cancelled with cause,
// for context.Cause to find.
func causeCarrier(base context.Context, cause error) *context.Context {
	cc, set := context.WithCancelCause(base)
	set(cause)
	return &cc
}

// Deadline returns the attempt's deadline, if it has one.
func (c *taskCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

// Done returns a channel that is closed when the context is cancelled.
func (c *taskCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.state.Load() != ctxLive {
			c.done = closedDone
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

// Err returns nil until the context is cancelled, then
// context.DeadlineExceeded or context.Canceled.
func (c *taskCtx) Err() error {
	switch c.state.Load() {
	case ctxCancelled:
		return context.Canceled
	case ctxTimedOut:
		return context.DeadlineExceeded
	}
	return nil
}

// Value returns the running task for TaskFromContext's key, and otherwise
// what the base context holds (and, once cancelled with a cause, what the
// context package looks for to find the cause).
func (c *taskCtx) Value(key any) any {
	if _, ok := key.(taskKey); ok {
		return c.task
	}
	if cc := c.causer.Load(); cc != nil {
		return (*cc).Value(key)
	}
	return c.base.Value(key)
}

// String describes the context, for debugging.
func (c *taskCtx) String() string { return "kiln.taskCtx(" + c.task.ID + ")" }

// AfterFunc arranges to call f once the context is cancelled (at once, on
// a goroutine of its own, if it already is); stop undoes that and reports
// whether it did. The context package calls it for the contexts derived
// from this one (see context.AfterFunc and its afterFuncer).
func (c *taskCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.state.Load() != ctxLive {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	p := &f
	c.after = append(c.after, p)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, q := range c.after {
			if q == p {
				c.after = append(c.after[:i], c.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel cancels the context with err (context.Canceled or
// context.DeadlineExceeded) and cause (nil: err), unless it was cancelled
// already. The functions given to AfterFunc run before it returns, as the
// standard contexts cancel their children.
func (c *taskCtx) cancel(err, cause error) {
	state := uint32(ctxCancelled)
	if err == context.DeadlineExceeded { //nolint:errorlint // one of two values
		state = ctxTimedOut
	}
	c.mu.Lock()
	if c.state.Load() != ctxLive {
		c.mu.Unlock()
		return
	}
	if cause != nil && cause != err { //nolint:errorlint // the very value
		c.causer.Store(causeCarrier(c.base, cause))
	}
	c.state.Store(state)
	if c.done == nil {
		c.done = closedDone
	} else {
		close(c.done)
	}
	after := c.after
	c.after = nil
	c.mu.Unlock()
	for _, f := range after {
		(*f)()
	}
}

// cause returns the cancel's cause: nil while the context is not
// cancelled.
func (c *taskCtx) cause() error {
	if c.state.Load() == ctxLive {
		return nil
	}
	return context.Cause(c)
}

// deadlines cancels the contexts of running handlers when their deadlines
// pass, with one timer for all of them: a heap of the contexts by deadline
// and a timer set to the earliest. The timer is moved earlier when a
// context with an earlier deadline comes, never later: when it fires
// after that context is gone, it is set again to the earliest that is
// left (with attempts of one timeout, each deadline is later than the last,
// and the timer is set about once per timeout).
type deadlines struct {
	mu    sync.Mutex
	heap  deadlineHeap
	timer *time.Timer
	at    time.Time // when the timer fires; zero: it is not set
}

// add watches c's deadline (it must have one).
func (d *deadlines) add(c *taskCtx) {
	d.mu.Lock()
	heap.Push(&d.heap, c)
	if d.at.IsZero() || c.deadline.Before(d.at) {
		d.at = c.deadline
		if d.timer == nil {
			d.timer = time.AfterFunc(time.Until(c.deadline), d.fire)
		} else {
			d.timer.Reset(time.Until(c.deadline))
		}
	}
	d.mu.Unlock()
}

// remove stops watching c, if it is watched.
func (d *deadlines) remove(c *taskCtx) {
	d.mu.Lock()
	if c.index >= 0 {
		heap.Remove(&d.heap, c.index)
	}
	d.mu.Unlock()
}

// fire cancels the contexts whose deadline passed and sets the timer to
// the next deadline.
func (d *deadlines) fire() {
	var due []*taskCtx
	d.mu.Lock()
	now := time.Now()
	for len(d.heap) > 0 && !d.heap[0].deadline.After(now) {
		due = append(due, heap.Pop(&d.heap).(*taskCtx))
	}
	d.at = time.Time{}
	if len(d.heap) > 0 {
		d.at = d.heap[0].deadline
		d.timer.Reset(time.Until(d.at))
	}
	d.mu.Unlock()
	for _, c := range due {
		c.cancel(context.DeadlineExceeded, ErrTaskTimeout)
	}
}

// stop stops the timer when no context is watched (the handlers that still
// run keep theirs).
func (d *deadlines) stop() {
	d.mu.Lock()
	if d.timer != nil && len(d.heap) == 0 {
		d.timer.Stop()
		d.at = time.Time{}
	}
	d.mu.Unlock()
}

// deadlineHeap orders contexts by deadline (container/heap).
type deadlineHeap []*taskCtx

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *deadlineHeap) Push(x any) {
	c := x.(*taskCtx)
	c.index = len(*h)
	*h = append(*h, c)
}

func (h *deadlineHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.index = -1
	return c
}
