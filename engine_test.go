package kiln_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// engineWaitLimit bounds every wait for something that should happen
// promptly; it guards against hanging tests and is never a measurement.
const engineWaitLimit = 20 * time.Second

// lockedBuffer is a bytes.Buffer safe for concurrent writes (logs).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refuseReports is a store whose Report always fails, as a store does
// whose writes cannot be confirmed (Redis with WaitReplicas and a replica
// down).
type refuseReports struct{ store.Store }

func (refuseReports) Report(context.Context, store.ReportParams) (store.ReportResult, error) {
	return store.ReportResult{}, fmt.Errorf("refused by the test: %w", store.ErrUnavailable)
}

// eventually polls cond until it holds, failing the test after
// engineWaitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(engineWaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", engineWaitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShutdownKeepsDeadline: when the store refuses every report, finished
// handlers fill the outcome buffer and the reporter retries; Shutdown still
// returns by its context's deadline, says in the log how many outcomes it
// could not report, and loses no task (they stay in the store, to run again
// when their leases expire). Before the fix, Shutdown never returned.
func TestShutdownKeepsDeadline(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		shutdownRefusingStore(t, s, refuseReports{s})
	})
}

// TestShutdownKeepsDeadlineRedisNoReplica: the same store refusal for
// real, a Redis store that waits for one replica where there is none. Lease
// waits for the replicas too (a task runs only once the replicas have it),
// so here no task runs at all: every lease is refused and its tasks given
// back untouched, and Shutdown returns at once with nothing to report.
func TestShutdownKeepsDeadlineRedisNoReplica(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t, "redis")
	s := ts.open(t)
	waiting := ts.openRedis(t, func(c *redisstore.Config) {
		c.WaitReplicas, c.WaitTimeout = 1, 20*time.Millisecond
	})
	const total = 50
	enqueueQuick(t, s, total)
	refused := &countLeaseErrors{Store: waiting}
	w, err := kiln.NewWorker(refused, &kiln.WorkerConfig{
		Concurrency: 4, LeaseWait: 50 * time.Millisecond, SweepInterval: -1,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int64
	w.Handle("quick", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		ran.Add(1)
		return nil
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	eventually(t, "three refused leases", func() bool { return refused.n.Load() >= 3 })
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), engineWaitLimit)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v, want nil (nothing to report)", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("%d handlers ran although no lease was confirmed by a replica", n)
	}
	got, err := s.List(t.Context(), store.ListParams{Namespace: store.DefaultNamespace, Limit: total + 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Tasks) != total {
		t.Fatalf("%d tasks in the store, want %d", len(got.Tasks), total)
	}
	for _, tk := range got.Tasks {
		if tk.State != store.StatePending || tk.Attempt != 0 {
			t.Errorf("task %s: state %v, attempt %d; want pending, attempt 0 (given back untouched)", tk.ID, tk.State, tk.Attempt)
		}
	}
}

// countLeaseErrors is a store that counts its failed Lease calls.
type countLeaseErrors struct {
	store.Store
	n atomic.Int64
}

func (c *countLeaseErrors) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	r, err := c.Store.Lease(ctx, p)
	if err != nil && errors.Is(err, store.ErrUnavailable) {
		c.n.Add(1)
	}
	return r, err
}

// enqueueQuick enqueues n tasks of type "quick" through s.
func enqueueQuick(t *testing.T, s store.Store, n int) {
	t.Helper()
	c, err := kiln.NewClient(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]kiln.TaskRequest, n)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "quick"}
	}
	if _, err := c.EnqueueMany(t.Context(), reqs); err != nil {
		t.Fatal(err)
	}
}

// shutdownRefusingStore enqueues through s and runs a worker on refusing,
// a store that refuses reports and does not record them.
func shutdownRefusingStore(t *testing.T, s, refusing store.Store) {
	t.Helper()
	const total = 600
	enqueueQuick(t, s, total)
	logs := &lockedBuffer{}
	w, err := kiln.NewWorker(refusing, &kiln.WorkerConfig{
		Concurrency: 4, LeaseWait: 50 * time.Millisecond, SweepInterval: -1,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int64
	w.Handle("quick", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		ran.Add(1)
		return nil
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	// More outcomes than the buffer holds: handlers now block on it.
	eventually(t, "the outcome buffer (256) to fill", func() bool { return ran.Load() >= 260 })

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 300*time.Millisecond)
		defer cancel()
		shut <- w.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(engineWaitLimit):
		t.Fatalf("Shutdown with a 300 ms deadline did not return within %s", engineWaitLimit)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(engineWaitLimit):
		t.Fatalf("Run did not return within %s after Shutdown", engineWaitLimit)
	}
	if l := logs.String(); !strings.Contains(l, "unreported=") || strings.Contains(l, "unreported=0 ") {
		t.Errorf("the log does not say how many outcomes were not reported:\n%s", l)
	}
	// Nothing lost: every task is still in the store, none finished.
	st, err := s.Stats(t.Context(), store.StatsParams{Namespace: store.DefaultNamespace})
	if err != nil {
		t.Fatal(err)
	}
	var n, done int64
	for _, q := range st.Queues {
		n += q.Total()
		done += q.Counts[store.StateSucceeded]
	}
	if n != total || done != 0 {
		t.Errorf("after the stop: %d tasks, %d succeeded; want %d, none succeeded", n, done, total)
	}
}

// leaseEntered is a store that signals each Lease call as it starts.
type leaseEntered struct {
	store.Store
	entered chan struct{}
}

func (l leaseEntered) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	select {
	case l.entered <- struct{}{}:
	default:
	}
	return l.Store.Lease(ctx, p)
}

// idleWorker runs a worker that waits in the store up to an hour per lease
// and never sweeps, so that only the store's wake-up at the due time can
// start a delayed task or a retry. It returns once the worker waits in a
// lease.
func idleWorker(t *testing.T, s store.Store, h kiln.HandlerFunc) {
	t.Helper()
	le := leaseEntered{Store: s, entered: make(chan struct{}, 1)}
	w, err := kiln.NewWorker(le, &kiln.WorkerConfig{
		Concurrency: 1, LeaseWait: time.Hour, SweepInterval: -1,
		RetryDelayFunc: func(int, error, *kiln.Task) time.Duration { return 100 * time.Millisecond },
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("t", h)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), engineWaitLimit)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-le.entered:
	case <-time.After(engineWaitLimit):
		t.Fatal("the worker did not lease")
	}
	// Let the lease reach its wait (had the enqueue come first, the lease
	// would see the due time anyway, and the test would prove less).
	time.Sleep(50 * time.Millisecond)
}

// TestDelayedTaskWakesIdleWorker: a worker waiting in an idle lease starts
// a task enqueued with ProcessIn when it is due, with no sweep to promote
// it. Before the fix, the embedded store and the server slept until the end
// of the lease's wait (here an hour), Redis until its next check (1 s).
func TestDelayedTaskWakesIdleWorker(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		started := make(chan struct{}, 1)
		idleWorker(t, s, func(context.Context, *kiln.Task) error {
			started <- struct{}{}
			return nil
		})
		c, err := kiln.NewClient(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Enqueue(t.Context(), "t", nil, &kiln.TaskOptions{ProcessIn: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(engineWaitLimit):
			t.Fatalf("a task due in 100 ms did not start within %s on an idle worker that waits an hour per lease", engineWaitLimit)
		}
	})
}

// TestRetryWakesIdleWorker: the retry of a failed task (100 ms later)
// starts on the now idle worker when due, with no sweep.
func TestRetryWakesIdleWorker(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		attempts := make(chan int, 2)
		idleWorker(t, s, func(_ context.Context, tk *kiln.Task) error {
			attempts <- tk.Attempt
			if tk.Attempt == 1 {
				return errors.New("first attempt fails")
			}
			return nil
		})
		c, err := kiln.NewClient(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Enqueue(t.Context(), "t", nil, &kiln.TaskOptions{MaxRetries: new(1)}); err != nil {
			t.Fatal(err)
		}
		for want := 1; want <= 2; want++ {
			select {
			case a := <-attempts:
				if a != want {
					t.Fatalf("attempt %d, want %d", a, want)
				}
			case <-time.After(engineWaitLimit):
				t.Fatalf("attempt %d did not start within %s on an idle worker that waits an hour per lease", want, engineWaitLimit)
			}
		}
	})
}

// runTestWorker runs a worker on s with handlers set by register, and stops
// it at the end of the test.
func runTestWorker(t *testing.T, s store.Store, cfg *kiln.WorkerConfig, register func(w *kiln.Worker)) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w, err := kiln.NewWorker(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	register(w)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), engineWaitLimit)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestCancelPushedToHandler: cancelling an active task cancels its
// handler's context at once, not at the next heartbeat (here, with an hour
// long lease, 20 minutes away). Before the fix, the handler ran on.
func TestCancelPushedToHandler(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		started := make(chan struct{}, 1)
		cause := make(chan error, 1)
		runTestWorker(t, s, &kiln.WorkerConfig{LeaseDuration: time.Hour, LeaseWait: 100 * time.Millisecond, SweepInterval: -1}, func(w *kiln.Worker) {
			w.Handle("long", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
				started <- struct{}{}
				<-ctx.Done()
				cause <- context.Cause(ctx)
				return ctx.Err()
			}))
		})
		c, err := kiln.NewClient(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Enqueue(t.Context(), "long", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-started:
		case <-time.After(engineWaitLimit):
			t.Fatal("the task did not start")
		}
		if err := res.Cancel(t.Context()); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		select {
		case c := <-cause:
			if !errors.Is(c, kiln.ErrTaskCancelled) {
				t.Fatalf("cause = %v, want ErrTaskCancelled", c)
			}
		case <-time.After(engineWaitLimit):
			t.Fatalf("the handler's context was not cancelled within %s of Cancel (the next heartbeat is 20 minutes away)", engineWaitLimit)
		}
		ctx, cancel := context.WithTimeout(t.Context(), engineWaitLimit)
		defer cancel()
		if _, err := res.Wait(ctx); !errors.Is(err, kiln.ErrTaskCancelled) {
			t.Fatalf("Wait = %v, want ErrTaskCancelled", err)
		}
	})
}

// TestCancelTooLate: a cancel of a task that already succeeded (or died)
// tells the caller it came too late; a cancel that reaches a handler which
// then returns success anyway leaves the task succeeded, with
// CancelRequested set (done is done).
func TestCancelTooLate(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		cancelled := make(chan struct{})
		started := make(chan struct{}, 1)
		runTestWorker(t, s, &kiln.WorkerConfig{LeaseDuration: time.Hour, LeaseWait: 100 * time.Millisecond, SweepInterval: -1}, func(w *kiln.Worker) {
			w.Handle("quick", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
			w.Handle("fail", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return fmt.Errorf("no: %w", kiln.SkipRetry) }))
			w.Handle("stubborn", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
				started <- struct{}{}
				<-ctx.Done() // sees the cancel, and finishes its work anyway
				close(cancelled)
				return nil
			}))
		})
		c, err := kiln.NewClient(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), engineWaitLimit)
		defer cancel()
		for _, typ := range []string{"quick", "fail"} {
			res, err := c.Enqueue(ctx, typ, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			info, _ := res.Wait(ctx)
			if info == nil || !info.State.Terminal() {
				t.Fatalf("%s: Wait = %+v", typ, info)
			}
			err = res.Cancel(ctx)
			if !errors.Is(err, kiln.ErrTaskFinished) || !errors.Is(err, kiln.ErrInvalidState) || !strings.Contains(err.Error(), "too late") || !strings.Contains(err.Error(), info.State.String()) {
				t.Errorf("Cancel of a %s task = %v; want ErrTaskFinished, saying it ended %s and the cancel came too late", info.State, err, info.State)
			}
		}

		res, err := c.Enqueue(ctx, "stubborn", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The handler must be running: a cancel that reaches the worker
		// before the task's lease answer keeps the handler from starting.
		select {
		case <-started:
		case <-time.After(engineWaitLimit):
			t.Fatal("the handler did not start")
		}
		if err := res.Cancel(ctx); err != nil {
			t.Fatalf("Cancel(active) = %v", err)
		}
		select {
		case <-cancelled:
		case <-time.After(engineWaitLimit):
			t.Fatal("the handler did not see the cancel")
		}
		info, err := res.Wait(ctx)
		if err != nil || info.State != kiln.StateSucceeded || !info.CancelRequested {
			t.Fatalf("a handler that returned success after the cancel: Wait = %+v, %v; want succeeded with CancelRequested", info, err)
		}
		if err := res.Cancel(ctx); !errors.Is(err, kiln.ErrTaskFinished) {
			t.Errorf("Cancel after it succeeded = %v, want ErrTaskFinished", err)
		}
	})
}
