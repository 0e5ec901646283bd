package kiln

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// TestShutdownGraceful: tasks leased but not started go back at once (with
// their attempt taken back) while a running task is allowed to finish.
func TestShutdownGraceful(t *testing.T) {
	t.Parallel()
	var gateOn atomic.Bool
	leased := make(chan int, 1)
	gate := make(chan struct{})
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		h := &hookStore{Store: s}
		h.lease = func(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
			res, err := s.Lease(ctx, p)
			if err == nil && len(res.Tasks) > 0 && gateOn.Load() {
				// Hold the leased tasks, as if the answer were slow to
				// come back, until the test opens the gate.
				select {
				case leased <- len(res.Tasks):
				default:
				}
				<-gate
			}
			return res, err
		}
		return h
	}})
	slowStarted := make(chan struct{})
	slowRelease := make(chan struct{})
	var quickCalls atomic.Int32
	w := b.newWorker(t, &WorkerConfig{Concurrency: 5})
	w.Handle("slow", HandlerFunc(func(ctx context.Context, _ *Task) error {
		close(slowStarted)
		<-slowRelease
		return ctx.Err() // nil: a graceful stop does not cancel the handler
	}))
	w.Handle("quick", HandlerFunc(func(context.Context, *Task) error { quickCalls.Add(1); return nil }))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()

	slow, err := b.client.Enqueue(t.Context(), "slow", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, slowStarted, "slow task start")

	gateOn.Store(true)
	var quick []string
	for i := range 3 {
		r, err := b.client.Enqueue(t.Context(), "quick", nil, &TaskOptions{ID: fmt.Sprintf("quick-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		quick = append(quick, r.ID())
	}
	// The fetcher may take them in one lease or several; wait for the first.
	recv(t, leased, "lease of the quick tasks")

	shutErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), waitLimit)
		defer cancel()
		shutErr <- w.Shutdown(ctx)
	}()
	waitFor(t, "shutdown to begin", w.draining.Load)
	close(gate)

	// Handed back at once, while the slow task still runs.
	for _, id := range quick {
		waitFor(t, id+" handed back", func() bool {
			tk := b.storeTask(t, id)
			return tk.State == StatePending && tk.Attempt == 0
		})
	}
	if tk := b.storeTask(t, slow.ID()); tk.State != StateActive {
		t.Fatalf("slow task is %v while its handler runs", tk.State)
	}
	select {
	case err := <-shutErr:
		t.Fatalf("Shutdown returned %v before the running task finished", err)
	default:
	}

	close(slowRelease)
	if err := recv(t, shutErr, "Shutdown"); err != nil {
		t.Fatalf("Shutdown = %v, want nil", err)
	}
	if err := recv(t, runErr, "Run"); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if tk := b.storeTask(t, slow.ID()); tk.State != StateSucceeded || tk.Attempt != 1 {
		t.Fatalf("slow task: %v attempt %d, want succeeded 1", tk.State, tk.Attempt)
	}
	if n := quickCalls.Load(); n != 0 {
		t.Fatalf("quick handler ran %d times during shutdown, want 0", n)
	}
	if k := b.events.workerKinds(quick[0]); len(k) != 1 || k[0] != EventReleased {
		t.Fatalf("events of a handed-back task = %v, want [released]", k)
	}
}

// TestShutdownLeaseEndsWithTasks: the stop cancels a Lease that is waiting,
// and the store leases tasks all the same before it returns them (a store
// may: see store.Leaser). The worker hands them back at once, not started:
// pending again with no attempt counted, and no handler runs.
func TestShutdownLeaseEndsWithTasks(t *testing.T) {
	t.Parallel()
	waiting := make(chan struct{})
	var once sync.Once
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		h := &hookStore{Store: s}
		h.lease = func(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
			first := false
			once.Do(func() { first = true })
			if !first {
				return s.Lease(ctx, p)
			}
			close(waiting)
			select {
			case <-ctx.Done():
			case <-time.After(waitLimit):
			}
			p.Wait = 0
			return s.Lease(context.WithoutCancel(ctx), p)
		}
		return h
	}})
	var ids []string
	for i := range 3 {
		r, err := b.client.Enqueue(t.Context(), "t", nil, &TaskOptions{ID: fmt.Sprintf("t-%d", i), MaxRetries: new(0)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
	}
	var calls atomic.Int32
	w := b.newWorker(t, &WorkerConfig{Concurrency: 3})
	w.Handle("t", HandlerFunc(func(context.Context, *Task) error { calls.Add(1); return nil }))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	recv(t, waiting, "the first lease")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), waitLimit)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := recv(t, runErr, "Run"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	// Shutdown returned after the outcomes were sent: no polling needed.
	for _, id := range ids {
		if tk := b.storeTask(t, id); tk.State != StatePending || tk.Attempt != 0 {
			t.Errorf("task %s after the stop: %v attempt %d, want pending attempt 0", id, tk.State, tk.Attempt)
		}
		if k := b.events.workerKinds(id); len(k) != 1 || k[0] != EventReleased {
			t.Errorf("events of task %s = %v, want [released]", id, k)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times during the stop, want 0", n)
	}
}

// TestShutdownTimeout: when the shutdown context ends, running handlers are
// cancelled with ErrShutdown and their tasks handed back, attempt kept.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	started := make(chan struct{})
	cause := make(chan error, 1)
	w := b.newWorker(t, nil)
	w.Handle("stuck", HandlerFunc(func(ctx context.Context, _ *Task) error {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	res, err := b.client.Enqueue(t.Context(), "stuck", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "start")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := w.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if c := recv(t, cause, "handler's ctx"); !errors.Is(c, ErrShutdown) {
		t.Fatalf("cause = %v, want ErrShutdown", c)
	}
	if err := recv(t, runErr, "Run"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	// Shutdown returned after the outcome was sent: no polling needed.
	tk := b.storeTask(t, res.ID())
	if tk.State != StatePending || tk.Attempt != 1 {
		t.Fatalf("after a forced stop: %v attempt %d, want pending with attempt 1 kept", tk.State, tk.Attempt)
	}
	// Shutdown again is harmless.
	if err := w.Shutdown(t.Context()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Shutdown = %v, want the first one's result", err)
	}
}

// TestRunContextCancelStopsGracefully: cancelling Run's context is a
// graceful stop bounded by ShutdownTimeout.
func TestRunContextCancelStopsGracefully(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	started := make(chan struct{})
	release := make(chan struct{})
	w := b.newWorker(t, &WorkerConfig{ShutdownTimeout: waitLimit})
	w.Handle("t", HandlerFunc(func(ctx context.Context, _ *Task) error {
		close(started)
		<-release
		return ctx.Err()
	}))
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()
	res, err := b.client.Enqueue(t.Context(), "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "start")
	cancel()
	waitFor(t, "stop to begin", w.draining.Load)
	close(release)
	if err := recv(t, runErr, "Run"); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if tk := b.storeTask(t, res.ID()); tk.State != StateSucceeded {
		t.Fatalf("state %v, want succeeded", tk.State)
	}
}

func TestShutdownBeforeRun(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	w := b.newWorker(t, nil)
	w.Handle("t", HandlerFunc(func(context.Context, *Task) error { return nil }))
	if err := w.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Run(t.Context()); err != nil {
		t.Fatalf("Run after Shutdown = %v, want nil at once", err)
	}
}

// TestLeaseLost: a heartbeat that finds the lease gone cancels the handler
// with ErrLeaseLost, raises the event and reports nothing for the task.
func TestLeaseLost(t *testing.T) {
	t.Parallel()
	var lose atomic.Bool
	var reported atomic.Int32
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		h := &hookStore{Store: s}
		h.extend = func(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
			if !lose.Load() {
				return s.Extend(ctx, p)
			}
			items := make([]store.ExtendItem, len(p.Leases))
			for i := range items {
				items[i].Err = fmt.Errorf("test: %w", store.ErrLeaseLost)
			}
			return store.ExtendResult{Items: items}, nil
		}
		h.report = func(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
			reported.Add(int32(len(p.Outcomes)))
			return s.Report(ctx, p)
		}
		return h
	}})
	started := make(chan struct{})
	cause := make(chan error, 1)
	b.startWorker(t, &WorkerConfig{LeaseDuration: 300 * time.Millisecond}, func(w *Worker) {
		w.Handle("t", HandlerFunc(func(ctx context.Context, _ *Task) error {
			close(started)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return ctx.Err()
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "start")
	lose.Store(true)
	if c := recv(t, cause, "handler's ctx"); !errors.Is(c, ErrLeaseLost) {
		t.Fatalf("cause = %v, want ErrLeaseLost", c)
	}
	waitFor(t, "lease-lost event", func() bool { _, ok := b.events.find(res.ID(), EventLeaseLost); return ok })
	if n := reported.Load(); n != 0 {
		t.Fatalf("%d outcomes reported for a lost lease, want 0", n)
	}
	if tk := b.storeTask(t, res.ID()); tk.State != StateActive {
		t.Fatalf("state %v; the store should still hold the lease until it expires", tk.State)
	}
}

// TestOutcomesBatched: outcomes that pile up while a Report call is in
// flight go to the store together in the next call.
func TestOutcomesBatched(t *testing.T) {
	t.Parallel()
	const n = 100
	var calls atomic.Int32
	firstIn := make(chan struct{})
	firstGo := make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(firstGo) }) })
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		h := &hookStore{Store: s}
		h.report = func(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
			if calls.Add(1) == 1 {
				close(firstIn)
				<-firstGo
			}
			return s.Report(ctx, p)
		}
		return h
	}})
	var done atomic.Int32
	w := b.startWorker(t, &WorkerConfig{Concurrency: 8}, func(w *Worker) {
		w.Handle("noop", HandlerFunc(func(context.Context, *Task) error { done.Add(1); return nil }))
	})
	if _, err := b.client.Enqueue(t.Context(), "noop", nil, nil); err != nil {
		t.Fatal(err)
	}
	recv(t, firstIn, "first report")
	reqs := make([]TaskRequest, n-1)
	for i := range reqs {
		reqs[i] = TaskRequest{Type: "noop"}
	}
	if _, err := b.client.EnqueueMany(t.Context(), reqs); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	rs := w.run
	w.mu.Unlock()
	waitFor(t, "every other outcome queued", func() bool { return done.Load() == n && len(rs.outcomes) == n-1 })
	release.Do(func() { close(firstGo) })
	waitFor(t, "all succeeded", func() bool {
		st, err := b.store.Stats(t.Context(), store.StatsParams{Namespace: "default"})
		return err == nil && len(st.Queues) == 1 && st.Queues[0].Counts[StateSucceeded] == n
	})
	if c := calls.Load(); c != 2 {
		t.Fatalf("%d Report calls for %d outcomes, want 2", c, n)
	}
}

// TestStoreErrorsRetried: a failed Lease or Report call is retried, and no
// outcome is lost.
func TestStoreErrorsRetried(t *testing.T) {
	t.Parallel()
	var faulty *storetest.FaultyStore
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		faulty = storetest.Faulty(s)
		return faulty
	}})
	errDown := errors.New("store down")
	faulty.FailNext("Lease", errDown)
	faulty.FailNext("Report", errDown)
	faulty.FailNextAfter("Report", errDown) // done, but the answer is lost
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("t", HandlerFunc(func(context.Context, *Task) error { return nil }))
	})
	for range 3 {
		res, err := b.client.Enqueue(t.Context(), "t", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Wait(waitCtx(t)); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	if n := faulty.Calls("Report"); n < 3 {
		t.Fatalf("Report called %d times, want the failed calls retried", n)
	}
}
