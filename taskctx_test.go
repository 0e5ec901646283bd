package kiln

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxTestKey struct{}

// stdTaskCtx is what taskCtx stands for: the handler's context as the
// standard library builds it.
func stdTaskCtx(base context.Context, tb testing.TB, t *Task, dl time.Time) (context.Context, func(error)) {
	tb.Helper()
	ctx, cancel := context.WithCancelCause(base)
	c := context.Context(ctx)
	if !dl.IsZero() {
		var stop context.CancelFunc
		c, stop = context.WithDeadlineCause(ctx, dl, ErrTaskTimeout)
		tb.Cleanup(stop)
	}
	return context.WithValue(c, taskKey{}, t), cancel
}

// ctxView is what a handler can see of a cancelled context and of the
// contexts it derives from it before and after the cancel.
type ctxView struct {
	err, cause                   error
	childErr, childCause         error // context.WithCancel before the cancel
	valueChildErr, valueChildCse error // WithValue then WithTimeout before the cancel
	lateErr, lateCause           error // context.WithCancel after the cancel
	afterFuncRan                 bool
	task                         *Task
	value                        any
	deadline                     time.Time
	hasDeadline                  bool
}

// observe derives contexts from ctx, runs cancel (which must cancel ctx,
// directly or by its deadline), waits for everything to be cancelled and
// returns what it saw. It returns false when ctx's deadline came before it
// derived the contexts (a busy machine): try again with a later one.
func observe(ctx context.Context, t *testing.T, cancel func()) (ctxView, bool) {
	t.Helper()
	child, stopChild := context.WithCancel(ctx)
	defer stopChild()
	valueChild, stopValueChild := context.WithTimeout(context.WithValue(ctx, ctxTestKey{}, 2), time.Hour)
	defer stopValueChild()
	ran := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ran) })
	if ctx.Err() != nil {
		return ctxView{}, false
	}
	cancel()
	<-ctx.Done()
	<-child.Done()
	<-valueChild.Done()
	<-ran
	late, stopLate := context.WithCancel(ctx)
	defer stopLate()
	<-late.Done()
	v := ctxView{
		err: ctx.Err(), cause: context.Cause(ctx),
		childErr: child.Err(), childCause: context.Cause(child),
		valueChildErr: valueChild.Err(), valueChildCse: context.Cause(valueChild),
		lateErr: late.Err(), lateCause: context.Cause(late),
		afterFuncRan: true,
		value:        ctx.Value(ctxTestKey{}),
	}
	v.task, _ = TaskFromContext(ctx)
	v.deadline, v.hasDeadline = ctx.Deadline()
	return v, true
}

// TestTaskCtxAsStandard: the handler's context behaves as the standard
// contexts it replaces, for a cancel with a cause, a cancel without one,
// and a deadline.
func TestTaskCtxAsStandard(t *testing.T) {
	t.Parallel()
	base := context.WithoutCancel(context.WithValue(context.Background(), ctxTestKey{}, 1))
	task := &Task{ID: "t1"}
	cases := map[string]struct {
		deadline bool
		cause    error // nil: cancelled without a cause
	}{
		"cancel with cause":    {cause: ErrTaskCancelled},
		"cancel without cause": {},
		"cancel before deadline": {
			deadline: true, cause: ErrLeaseLost,
		},
		"deadline": {deadline: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for wait := 50 * time.Millisecond; ; wait *= 4 {
				var dl time.Time
				if c.deadline {
					dl = time.Now().Add(wait)
					if c.cause != nil {
						dl = time.Now().Add(time.Hour)
					}
				}
				std, stdCancel := stdTaskCtx(base, t, task, dl)
				want, ok := observe(std, t, func() {
					if !c.deadline || c.cause != nil {
						stdCancel(c.cause)
					}
				})
				if !ok {
					continue
				}

				var d deadlines
				var tc taskCtx
				tc.init(base, task, dl)
				if !dl.IsZero() {
					d.add(&tc)
				}
				got, ok := observe(&tc, t, func() {
					if !c.deadline || c.cause != nil {
						tc.cancel(context.Canceled, c.cause)
					}
				})
				d.remove(&tc)
				d.stop()
				if !ok {
					continue
				}
				check(t, c.deadline && c.cause == nil, task, &tc, got, want)
				return
			}
		})
	}
}

func check(t *testing.T, deadline bool, task *Task, tc *taskCtx, got, want ctxView) {
	t.Helper()
	if got != want {
		t.Errorf("taskCtx:\n got %+v\nwant %+v", got, want)
	}
	if got.task != task || got.value != 1 {
		t.Errorf("values: task %v, base value %v", got.task, got.value)
	}
	if deadline && !errors.Is(got.err, context.DeadlineExceeded) {
		t.Errorf("deadline: err %v, want DeadlineExceeded", got.err)
	}
	if cause := tc.cause(); cause != got.cause { //nolint:errorlint // the very value
		t.Errorf("cause() = %v, context.Cause = %v", cause, got.cause)
	}
}

// TestTaskCtxFirstCancelWins: a later cancel changes neither the error
// nor the cause.
func TestTaskCtxFirstCancelWins(t *testing.T) {
	t.Parallel()
	var tc taskCtx
	tc.init(context.Background(), &Task{ID: "t"}, time.Time{})
	if tc.cause() != nil || tc.Err() != nil {
		t.Fatalf("fresh context: err %v, cause %v", tc.Err(), tc.cause())
	}
	done := tc.Done()
	tc.cancel(context.DeadlineExceeded, ErrTaskTimeout)
	tc.cancel(context.Canceled, ErrTaskCancelled)
	tc.cancel(context.Canceled, nil)
	<-done
	if tc.Err() != context.DeadlineExceeded || tc.cause() != ErrTaskTimeout { //nolint:errorlint // the very values
		t.Errorf("err %v, cause %v; want the first cancel's", tc.Err(), tc.cause())
	}
	if tc.Done() != done {
		t.Error("Done changed after the cancel")
	}
}

// TestTaskCtxAfterFuncStop: a stopped AfterFunc never runs, and stop
// reports whether it stopped it.
func TestTaskCtxAfterFuncStop(t *testing.T) {
	t.Parallel()
	var tc taskCtx
	tc.init(context.Background(), &Task{ID: "t"}, time.Time{})
	stop := tc.AfterFunc(func() { t.Error("stopped function ran") })
	ran := false
	tc.AfterFunc(func() { ran = true })
	if !stop() {
		t.Error("stop of a pending function = false")
	}
	if stop() {
		t.Error("second stop = true")
	}
	tc.cancel(context.Canceled, nil)
	if !ran {
		t.Error("function not run by the cancel")
	}
	late := make(chan struct{})
	if tc.AfterFunc(func() { close(late) })() {
		t.Error("stop after the cancel = true")
	}
	<-late
}

// TestDeadlinesFire: fire cancels the contexts whose deadline passed,
// leaves the others and those removed, and sets the timer to the next
// deadline.
func TestDeadlinesFire(t *testing.T) {
	t.Parallel()
	var d deadlines
	defer func() {
		d.mu.Lock()
		d.heap = nil
		d.mu.Unlock()
		d.stop()
	}()
	now := time.Now()
	mk := func(dl time.Time) *taskCtx {
		c := &taskCtx{}
		c.init(context.Background(), &Task{ID: "t"}, dl)
		return c
	}
	later, soon, removed, latest := mk(now.Add(time.Hour)), mk(now.Add(time.Minute)), mk(now.Add(time.Minute)), mk(now.Add(2*time.Hour))
	for _, c := range []*taskCtx{later, soon, removed, latest} {
		d.add(c)
	}
	if !d.at.Equal(soon.deadline) {
		t.Fatalf("timer at %v, want the earliest deadline %v", d.at, soon.deadline)
	}
	d.remove(removed)
	d.remove(removed) // twice is harmless
	if removed.index != -1 || len(d.heap) != 3 {
		t.Fatalf("after remove: index %d, %d watched", removed.index, len(d.heap))
	}
	// Make two deadlines pass without waiting.
	d.mu.Lock()
	soon.deadline, later.deadline = now.Add(-time.Second), now.Add(-time.Millisecond)
	d.mu.Unlock()
	d.fire()
	for name, c := range map[string]*taskCtx{"soon": soon, "later": later} {
		if c.Err() != context.DeadlineExceeded || c.cause() != ErrTaskTimeout { //nolint:errorlint // the very values
			t.Errorf("%s: err %v, cause %v; want the deadline's", name, c.Err(), c.cause())
		}
	}
	if removed.Err() != nil || latest.Err() != nil {
		t.Errorf("cancelled what it should not: removed %v, latest %v", removed.Err(), latest.Err())
	}
	if len(d.heap) != 1 || !d.at.Equal(latest.deadline) {
		t.Errorf("after fire: %d watched, timer at %v; want 1 at %v", len(d.heap), d.at, latest.deadline)
	}
}

// TestTaskCtxSetBase: values set after a cancel are seen, and the cause
// stays.
func TestTaskCtxSetBase(t *testing.T) {
	t.Parallel()
	var tc taskCtx
	tc.init(context.Background(), &Task{ID: "t"}, time.Time{})
	tc.cancel(context.Canceled, ErrTaskCancelled)
	tc.setBase(context.WithValue(context.Background(), ctxTestKey{}, 3))
	if v := tc.Value(ctxTestKey{}); v != 3 {
		t.Errorf("value after setBase = %v, want 3", v)
	}
	if cause := context.Cause(&tc); cause != ErrTaskCancelled { //nolint:errorlint // the very value
		t.Errorf("cause after setBase = %v, want ErrTaskCancelled", cause)
	}
}
