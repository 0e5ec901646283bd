package kiln

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

func Say(name string) (string, error) { return "Hello " + name + "!", nil }

func TestTypedRoundTrip(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testTypedRoundTrip)
}

func testTypedRoundTrip(t *testing.T, b *bundle) {
	b.startWorker(t, nil, func(w *Worker) { w.Handle("Say", Func(Say)) })

	res, err := b.client.EnqueueJSON(t.Context(), "Say", "kiln", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := res.Get(waitCtx(t), &got); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got != "Hello kiln!" {
		t.Fatalf("result = %q, want %q", got, "Hello kiln!")
	}
	st, err := res.State(t.Context())
	if err != nil || st != StateSucceeded {
		t.Fatalf("State = %v, %v; want succeeded", st, err)
	}
	want := []EventKind{EventStarted, EventSucceeded}
	waitFor(t, "events", func() bool { return len(b.events.kinds(res.ID())) == 3 })
	if _, ok := b.events.find(res.ID(), EventEnqueued); !ok {
		t.Fatal("no enqueued event")
	}
	if got := b.events.workerKinds(res.ID()); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if e, _ := b.events.find(res.ID(), EventSucceeded); e.Duration <= 0 || e.Attempt != 1 || e.Type != "Say" || e.Queue != "default" {
		t.Fatalf("succeeded event = %+v", e)
	}
}

func TestFuncCtxAndBadPayload(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testFuncCtxAndBadPayload)
}

func testFuncCtxAndBadPayload(t *testing.T, b *bundle) {
	type args struct{ A, B int }
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("add", FuncCtx(func(ctx context.Context, a args) (int, error) {
			if ctx == nil {
				return 0, errors.New("nil ctx")
			}
			return a.A + a.B, nil
		}))
	})
	res, err := b.client.EnqueueJSON(t.Context(), "add", args{2, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := res.Get(waitCtx(t), &sum); err != nil || sum != 5 {
		t.Fatalf("Get = %d, %v; want 5", sum, err)
	}

	// A payload that does not decode goes dead at once, whatever MaxRetries.
	bad, err := b.client.Enqueue(t.Context(), "add", []byte("not json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	info, err := bad.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) {
		t.Fatalf("Wait err = %v, want ErrTaskDead", err)
	}
	var te *TaskError
	if !errors.As(err, &te) || te.ID != bad.ID() || te.State != StateDead {
		t.Fatalf("err = %#v, want *TaskError for %s", err, bad.ID())
	}
	if info.Attempt != 1 || info.MaxRetries != MaxRetriesDefault || !strings.Contains(info.LastError, "decode add arguments") {
		t.Fatalf("info = attempt %d, max retries %d, last error %q", info.Attempt, info.MaxRetries, info.LastError)
	}
}

func TestRetryThenDead(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testRetryThenDead)
}

func testRetryThenDead(t *testing.T, b *bundle) {
	var calls atomic.Int32
	var attempts []int
	var mu sync.Mutex
	b.startWorker(t, &WorkerConfig{
		RetryDelayFunc: func(int, error, *Task) time.Duration { return 0 },
	}, func(w *Worker) {
		w.Handle("fail", HandlerFunc(func(_ context.Context, tk *Task) error {
			calls.Add(1)
			mu.Lock()
			attempts = append(attempts, tk.Attempt)
			mu.Unlock()
			return fmt.Errorf("attempt %d: %w", tk.Attempt, errBoom)
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "fail", nil, &TaskOptions{MaxRetries: new(2)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) {
		t.Fatalf("Wait err = %v, want ErrTaskDead", err)
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("handler calls = %d, want 3 (MaxRetries+1)", got)
	}
	mu.Lock()
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Errorf("attempts seen = %v, want [1 2 3]", attempts)
	}
	mu.Unlock()
	if info.Attempt != 3 || info.LastError != "attempt 3: boom" {
		t.Fatalf("info attempt %d last error %q", info.Attempt, info.LastError)
	}
	want := []EventKind{
		EventStarted, EventFailed, EventRetrying,
		EventStarted, EventFailed, EventRetrying,
		EventStarted, EventFailed, EventDead}
	waitFor(t, "events", func() bool { return len(b.events.workerKinds(res.ID())) == len(want) })
	if got := b.events.workerKinds(res.ID()); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if e, _ := b.events.find(res.ID(), EventDead); !errors.Is(e.Err, errBoom) || e.Attempt != 3 {
		t.Fatalf("dead event = %+v", e)
	}
}

func TestRetryBackoffHonoured(t *testing.T) {
	t.Parallel()
	forEachStore(t, &setupOpts{fakeClock: true}, testRetryBackoffHonoured)
}

func testRetryBackoffHonoured(t *testing.T, b *bundle) {
	var seen []int
	var mu sync.Mutex
	b.startWorker(t, &WorkerConfig{
		RetryDelayFunc: func(attempt int, err error, _ *Task) time.Duration {
			if !errors.Is(err, errBoom) {
				t.Errorf("RetryDelayFunc err = %v", err)
			}
			return time.Duration(attempt) * time.Hour
		},
	}, func(w *Worker) {
		w.Handle("flaky", HandlerFunc(func(_ context.Context, tk *Task) error {
			mu.Lock()
			seen = append(seen, tk.Attempt)
			mu.Unlock()
			switch tk.Attempt {
			case 1:
				return errBoom
			case 2:
				return RetryAfter(10*time.Hour, errBoom)
			}
			return nil
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "flaky", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := b.waitState(t, res.ID(), StateRetry)
	now := b.clock.Now()
	if st.RunAt.Before(now.Add(time.Hour)) || st.RunAt.After(now.Add(time.Hour+time.Minute)) {
		t.Fatalf("retry at %v, want about %v (1h after %v)", st.RunAt, now.Add(time.Hour), now)
	}
	// Just before the delay: still waiting.
	b.clock.Advance(59 * time.Minute)
	if _, err := b.raw.Sweep(t.Context(), store.SweepParams{}); err != nil {
		t.Fatal(err)
	}
	if got := b.storeTask(t, res.ID()); got.State != StateRetry || got.Attempt != 1 {
		t.Fatalf("before the delay: state %v attempt %d, want retry 1", got.State, got.Attempt)
	}
	b.clock.Advance(2 * time.Minute)
	waitFor(t, "second attempt", func() bool {
		tk := b.storeTask(t, res.ID())
		return tk.State == StateRetry && tk.Attempt == 2
	})
	st = b.storeTask(t, res.ID())
	now = b.clock.Now()
	if st.RunAt.Before(now.Add(10*time.Hour)) || st.RunAt.After(now.Add(10*time.Hour+time.Minute)) {
		t.Fatalf("RetryAfter: retry at %v, want about %v", st.RunAt, now.Add(10*time.Hour))
	}
	b.clock.Advance(10*time.Hour + time.Minute)
	b.waitState(t, res.ID(), StateSucceeded)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []int{1, 2, 3}) {
		t.Fatalf("attempts = %v, want [1 2 3]", seen)
	}
}

func TestRetryDelayDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {5, 16 * time.Second}, {12, 2048 * time.Second}, {13, time.Hour}, {1000, time.Hour}} {
		for range 50 {
			got := RetryDelayDefault(tc.attempt, errBoom, nil)
			lo, hi := time.Duration(float64(tc.want)*0.75), time.Duration(float64(tc.want)*1.25)
			if got < lo || got >= hi {
				t.Fatalf("RetryDelayDefault(%d) = %v, want in [%v, %v)", tc.attempt, got, lo, hi)
			}
		}
	}
}

func TestSkipRetry(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testSkipRetry)
}

func testSkipRetry(t *testing.T, b *bundle) {
	var calls atomic.Int32
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("skip", HandlerFunc(func(context.Context, *Task) error {
			calls.Add(1)
			return fmt.Errorf("no such user: %w", SkipRetry)
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "skip", nil, nil) // 25 retries allowed
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) || info.Attempt != 1 || calls.Load() != 1 {
		t.Fatalf("Wait = %v, attempt %d, calls %d; want dead after one attempt", err, info.Attempt, calls.Load())
	}
	if !strings.Contains(err.Error(), "no such user") {
		t.Fatalf("error %q does not carry the handler's message", err)
	}
}

func TestPanicRecovered(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testPanicRecovered)
}

func testPanicRecovered(t *testing.T, b *bundle) {
	b.startWorker(t, &WorkerConfig{Concurrency: 1}, func(w *Worker) {
		w.Handle("panic", HandlerFunc(func(context.Context, *Task) error { panic("kaboom") }))
		w.Handle("ok", HandlerFunc(func(context.Context, *Task) error { return nil }))
	})
	res, err := b.client.Enqueue(t.Context(), "panic", nil, &TaskOptions{MaxRetries: new(0)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) || info.LastError != "panic: kaboom" {
		t.Fatalf("Wait = %v, last error %q; want dead with panic: kaboom", err, info.LastError)
	}
	e, ok := b.events.find(res.ID(), EventFailed)
	var pe *PanicError
	if !ok || !errors.As(e.Err, &pe) || pe.Value != "kaboom" || !strings.Contains(string(pe.Stack), "worker_test.go") {
		t.Fatalf("failed event = %+v, want a *PanicError with a stack", e)
	}
	// The worker (with its single slot) is still alive.
	ok2, err := b.client.Enqueue(t.Context(), "ok", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ok2.Wait(waitCtx(t)); err != nil {
		t.Fatalf("task after a panic: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testTimeout)
}

func testTimeout(t *testing.T, b *bundle) {
	type seen struct {
		hasDeadline bool
		cause       error
	}
	got := make(chan seen, 1)
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("slow", HandlerFunc(func(ctx context.Context, _ *Task) error {
			_, ok := ctx.Deadline()
			<-ctx.Done()
			got <- seen{ok, context.Cause(ctx)}
			return ctx.Err()
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "slow", nil, &TaskOptions{Timeout: new(50 * time.Millisecond), MaxRetries: new(0)})
	if err != nil {
		t.Fatal(err)
	}
	s := recv(t, got, "handler")
	if !s.hasDeadline || !errors.Is(s.cause, ErrTaskTimeout) {
		t.Fatalf("handler saw deadline %v, cause %v; want a deadline and ErrTaskTimeout", s.hasDeadline, s.cause)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) || !strings.Contains(info.LastError, "timed out") {
		t.Fatalf("Wait = %v, last error %q", err, info.LastError)
	}
	e, ok := b.events.find(res.ID(), EventTimedOut)
	if !ok || !errors.Is(e.Err, ErrTaskTimeout) || !errors.Is(e.Err, context.DeadlineExceeded) {
		t.Fatalf("timed-out event = %+v, %v", e, ok)
	}
	want := []EventKind{EventStarted, EventTimedOut, EventFailed, EventDead}
	waitFor(t, "events", func() bool { return len(b.events.workerKinds(res.ID())) == len(want) })
	if got := b.events.workerKinds(res.ID()); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestTimeoutRetries(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testTimeoutRetries)
}

func testTimeoutRetries(t *testing.T, b *bundle) {
	b.startWorker(t, &WorkerConfig{RetryDelayFunc: func(int, error, *Task) time.Duration { return 0 }}, func(w *Worker) {
		w.Handle("slow-once", HandlerFunc(func(ctx context.Context, tk *Task) error {
			if tk.Attempt == 1 {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "slow-once", nil, &TaskOptions{Timeout: new(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if err != nil || info.Attempt != 2 {
		t.Fatalf("Wait = %v, attempt %d; want success on attempt 2", err, info.Attempt)
	}
}

func TestDeadlineGoesDead(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testDeadlineGoesDead)
}

func testDeadlineGoesDead(t *testing.T, b *bundle) {
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("slow", HandlerFunc(func(ctx context.Context, _ *Task) error {
			<-ctx.Done()
			if c := context.Cause(ctx); !errors.Is(c, ErrTaskTimeout) {
				return fmt.Errorf("cause %w", c)
			}
			return ctx.Err()
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "slow", nil, &TaskOptions{Deadline: time.Now().Add(100 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) || info.Attempt != 1 || !strings.Contains(info.LastError, "deadline reached") {
		t.Fatalf("Wait = %v, attempt %d, last error %q; want dead after 1 attempt", err, info.Attempt, info.LastError)
	}
	if info.Timeout != 0 {
		t.Fatalf("timeout = %v, want 0 when only a deadline is set", info.Timeout)
	}
}

func TestCancelActiveReachesHandler(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testCancelActiveReachesHandler)
}

func testCancelActiveReachesHandler(t *testing.T, b *bundle) {
	started := make(chan struct{})
	cause := make(chan error, 1)
	b.startWorker(t, &WorkerConfig{LeaseDuration: 300 * time.Millisecond}, func(w *Worker) {
		w.Handle("long", HandlerFunc(func(ctx context.Context, _ *Task) error {
			close(started)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "long", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "start")
	if err := res.Cancel(t.Context()); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if c := recv(t, cause, "handler's ctx"); !errors.Is(c, ErrTaskCancelled) {
		t.Fatalf("cause = %v, want ErrTaskCancelled", c)
	}
	if _, err := res.Wait(waitCtx(t)); !errors.Is(err, ErrTaskCancelled) {
		t.Fatalf("Wait = %v, want ErrTaskCancelled", err)
	}
	if _, ok := b.events.find(res.ID(), EventCancelled); !ok {
		t.Fatal("no cancelled event")
	}
	// A finished task cannot be cancelled.
	if err := res.Cancel(t.Context()); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("second Cancel = %v, want ErrInvalidState", err)
	}
	if err := b.client.Cancel(t.Context(), "no-such-task"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Cancel(missing) = %v, want ErrNotFound", err)
	}
}

func TestCancelWaiting(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testCancelWaiting)
}

func testCancelWaiting(t *testing.T, b *bundle) {
	res, err := b.client.Enqueue(t.Context(), "later", nil, &TaskOptions{ProcessIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := res.State(t.Context()); st != StateScheduled {
		t.Fatalf("state = %v, want scheduled", st)
	}
	if err := b.client.Cancel(t.Context(), res.ID()); err != nil {
		t.Fatal(err)
	}
	if err := res.Get(waitCtx(t), nil); !errors.Is(err, ErrTaskCancelled) {
		t.Fatalf("Get = %v, want ErrTaskCancelled", err)
	}
}

func TestHeartbeatKeepsLeaseAlive(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testHeartbeatKeepsLeaseAlive)
}

func testHeartbeatKeepsLeaseAlive(t *testing.T, b *bundle) {
	const lease = 300 * time.Millisecond
	started := make(chan struct{})
	release := make(chan struct{})
	b.startWorker(t, &WorkerConfig{LeaseDuration: lease}, func(w *Worker) {
		w.Handle("long", HandlerFunc(func(ctx context.Context, _ *Task) error {
			close(started)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "long", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "start")
	first := b.storeTask(t, res.ID())
	// Wait until the lease was renewed to well past its first expiry; the
	// sweeper runs every 20ms, so an unrenewed lease would have been taken
	// back meanwhile.
	waitFor(t, "lease renewed past three lease durations", func() bool {
		tk := b.storeTask(t, res.ID())
		return tk.State == StateActive && tk.LeaseExpiresAt.After(first.StartedAt.Add(3*lease))
	})
	close(release)
	info, err := res.Wait(waitCtx(t))
	if err != nil || info.Attempt != 1 {
		t.Fatalf("Wait = %v, attempt %d; want success on the first attempt", err, info.Attempt)
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testProgress)
}

func testProgress(t *testing.T, b *bundle) {
	release := make(chan struct{})
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("report", HandlerFunc(func(_ context.Context, tk *Task) error {
			tk.SetProgress(10, "start")
			tk.SetProgress(50, "half way")
			<-release
			tk.SetProgress(150, "done") // clamped
			if p := tk.Progress(); p.Percent != 100 {
				return fmt.Errorf("progress %v", p)
			}
			return nil
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "report", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress in the store", func() bool {
		info, err := res.Info(t.Context())
		return err == nil && info.Progress == Progress{Percent: 50, Message: "half way"}
	})
	close(release)
	if _, err := res.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestUnknownTypeLeftPending(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testUnknownTypeLeftPending)
}

func testUnknownTypeLeftPending(t *testing.T, b *bundle) {
	other, err := b.client.Enqueue(t.Context(), "not-mine", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("mine", HandlerFunc(func(context.Context, *Task) error { return nil }))
	})
	mine, err := b.client.Enqueue(t.Context(), "mine", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mine.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	tk := b.storeTask(t, other.ID())
	if tk.State != StatePending || tk.Attempt != 0 {
		t.Fatalf("unknown type: state %v attempt %d, want pending 0", tk.State, tk.Attempt)
	}
	if k := b.events.kinds(other.ID()); !slices.Equal(k, []EventKind{EventEnqueued}) {
		t.Fatalf("events of the unknown task = %v", k)
	}
}

func TestLeaseParamsPassedThrough(t *testing.T) {
	t.Parallel()
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			t.Parallel()
			got := make(chan store.LeaseParams, 1)
			b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
				h := &hookStore{Store: s}
				h.lease = func(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
					select {
					case got <- p:
					default:
					}
					return s.Lease(ctx, p)
				}
				return h
			}})
			w := b.startWorker(t, &WorkerConfig{
				Queues:         map[string]int{"low": 1, "high": 5, "mid": 3},
				StrictPriority: strict,
				Concurrency:    7,
				LeaseDuration:  2 * time.Second,
				LeaseWait:      40 * time.Millisecond,
			}, func(w *Worker) {
				w.Handle("b", HandlerFunc(func(context.Context, *Task) error { return nil }))
				w.Handle("a", HandlerFunc(func(context.Context, *Task) error { return nil }))
			})
			p := recv(t, got, "a lease")
			want := store.LeaseParams{
				Namespace: "default", Queues: []string{"high", "mid", "low"}, Weights: []int{5, 3, 1},
				Types: []string{"a", "b"}, Max: 7, Duration: 2 * time.Second, Wait: 40 * time.Millisecond, WorkerID: w.ID(),
			}
			if strict {
				want.Weights = nil
			}
			if diff := cmp.Diff(want, p); diff != "" {
				t.Fatalf("lease params (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStrictPriorityOrder(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testStrictPriorityOrder)
}

func testStrictPriorityOrder(t *testing.T, b *bundle) {
	var reqs []TaskRequest
	for i := range 5 {
		reqs = append(reqs,
			TaskRequest{Type: "job", Payload: []byte("low"), Options: TaskOptions{Queue: "low", ID: fmt.Sprintf("low-%d", i)}},
			TaskRequest{Type: "job", Payload: []byte("high"), Options: TaskOptions{Queue: "high", ID: fmt.Sprintf("high-%d", i)}})
	}
	if _, err := b.client.EnqueueMany(t.Context(), reqs); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	b.startWorker(t, &WorkerConfig{Queues: map[string]int{"high": 2, "low": 1}, StrictPriority: true, Concurrency: 1}, func(w *Worker) {
		w.Handle("job", HandlerFunc(func(_ context.Context, tk *Task) error {
			mu.Lock()
			order = append(order, string(tk.Payload))
			mu.Unlock()
			return nil
		}))
	})
	waitFor(t, "all tasks", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 10 })
	want := []string{"high", "high", "high", "high", "high", "low", "low", "low", "low", "low"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
}

func TestMiddlewareOrder(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testMiddlewareOrder)
}

func testMiddlewareOrder(t *testing.T, b *bundle) {
	var mu sync.Mutex
	var trace []string
	rec := func(s string) { mu.Lock(); trace = append(trace, s); mu.Unlock() }
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, tk *Task) error {
				rec(name + ">")
				err := next.ProcessTask(ctx, tk)
				rec("<" + name)
				return err
			})
		}
	}
	b.startWorker(t, nil, func(w *Worker) {
		w.Use(mw("m1"), mw("m2"))
		w.Use(mw("m3"))
		w.Handle("t", HandlerFunc(func(context.Context, *Task) error { rec("h"); return nil }))
	})
	res, err := b.client.Enqueue(t.Context(), "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"m1>", "m2>", "m3>", "h", "<m3", "<m2", "<m1"}
	if !slices.Equal(trace, want) {
		t.Fatalf("trace = %v, want %v", trace, want)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testRegister)
}

func testRegister(t *testing.T, b *bundle) {
	w := b.newWorker(t, nil)
	h := HandlerFunc(func(context.Context, *Task) error { return nil })
	if err := w.Register("a", h); err != nil {
		t.Fatal(err)
	}
	if err := w.Register("a", h); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("duplicate Register = %v", err)
	}
	if err := w.Register("bad name", h); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Register(bad name) = %v, want ErrInvalidName", err)
	}
	if err := w.Register("nil", nil); err == nil {
		t.Fatal("Register(nil handler) = nil")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("duplicate Handle did not panic")
			}
		}()
		w.Handle("a", h)
	}()

	empty := b.newWorker(t, nil)
	if err := empty.Run(t.Context()); !errors.Is(err, ErrNoHandlers) {
		t.Fatalf("Run without handlers = %v, want ErrNoHandlers", err)
	}

	b.run(t, w)
	waitFor(t, "worker started", func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.run != nil })
	if err := w.Register("b", h); !errors.Is(err, ErrWorkerStarted) {
		t.Fatalf("Register after Run = %v, want ErrWorkerStarted", err)
	}
	if err := w.Run(t.Context()); !errors.Is(err, ErrWorkerStarted) {
		t.Fatalf("second Run = %v, want ErrWorkerStarted", err)
	}
}

func TestWorkerConfigValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, err := NewWorker(b.store, &WorkerConfig{
		Namespace:     "bad ns",
		Queues:        map[string]int{"q": 0, "bad q": 1},
		Concurrency:   -1,
		LeaseDuration: time.Millisecond,
		LeaseWait:     -time.Second,
	})
	if err == nil {
		t.Fatal("NewWorker accepted a bad config")
	}
	for _, want := range []string{"namespace", "weight 0", "bad q", "concurrency", "lease_duration", "lease_wait"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if !errors.Is(err, ErrInvalidOption) || !errors.Is(err, ErrInvalidName) {
		t.Errorf("error %v does not match ErrInvalidOption and ErrInvalidName", err)
	}
	if _, err := NewWorker(nil, nil); err == nil {
		t.Error("NewWorker(nil store) = nil error")
	}
	w, err := NewWorker(b.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Concurrency != ConcurrencyDefault || w.cfg.LeaseDuration != LeaseDurationDefault || !slices.Equal(w.queues, []string{"default"}) || w.ID() == "" {
		t.Fatalf("defaults not applied: %+v", w.cfg)
	}
}
