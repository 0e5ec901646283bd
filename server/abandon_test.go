package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
	"github.com/kilnhq/kiln/store/storetest"
)

// The tests of this file check that a lease whose answer does not reach
// its client costs no attempt: the server hands its tasks back at once.

// metaStore is a store that can also keep the server's records.
type metaStore interface {
	store.Store
	store.Meta
}

// holdStore passes every call to the store under it; when hold is set, a
// Lease that leased tasks calls it before it returns them (with the
// lease's context), so that a test can make the client go away between the
// store's lease and the server's answer.
type holdStore struct {
	metaStore
	hold atomic.Pointer[func(context.Context, []*store.Task)]
}

func (h *holdStore) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	res, err := h.metaStore.Lease(ctx, p)
	if f := h.hold.Load(); f != nil && err == nil && len(res.Tasks) > 0 {
		(*f)(ctx, res.Tasks)
	}
	return res, err
}

// backend opens a fresh store of one kind on clock.
type backend struct {
	name string
	open func(t *testing.T, clock store.Clock) metaStore
}

// backends returns the embedded store and, when KILN_TEST_REDIS_URL is
// set, Redis.
func backends(t *testing.T) []backend {
	t.Helper()
	bs := []backend{{"embedded", func(t *testing.T, clock store.Clock) metaStore {
		t.Helper()
		return kilntest.Embedded(t, &kilntest.StoreOptions{Clock: clock})
	}}}
	if os.Getenv(testenv.RedisEnv) == "" && !testenv.RequireAll() {
		t.Log(testenv.RedisEnv, "is not set: Redis is not tested")
		return bs
	}
	return append(bs, backend{"redis", func(t *testing.T, clock store.Clock) metaStore {
		t.Helper()
		return kilntest.Redis(t, &kilntest.StoreOptions{Clock: clock})
	}})
}

// abandonBundle is a server on a holdStore, served by httptest.
type abandonBundle struct {
	t      *testing.T
	st     *holdStore
	clock  *storetest.FakeClock // nil on the system clock
	srv    *server.Server
	ts     *httptest.Server
	events chan server.Event
	// abandons counts the worker.lease_abandoned events.
	abandons atomic.Int64
}

// startAbandon serves a server on a fresh store of kind be; wrap, when
// not nil, wraps its handler. A nil clock means the system clock.
func startAbandon(t *testing.T, be backend, clock *storetest.FakeClock, wrap func(http.Handler) http.Handler) *abandonBundle {
	t.Helper()
	var c store.Clock
	if clock != nil {
		c = clock
	}
	b := &abandonBundle{t: t, st: &holdStore{metaStore: be.open(t, c)}, clock: clock, events: make(chan server.Event, 4096)}
	cfg := &server.Config{
		Store: b.st, Clock: c, BootstrapToken: adminToken, SweepInterval: -1,
		EventFunc: func(ev server.Event) {
			if ev.Kind == "worker.lease_abandoned" {
				b.abandons.Add(1)
			}
			select {
			case b.events <- ev:
			default:
			}
		},
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = srv
	h := srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	b.ts = httptest.NewServer(h)
	t.Cleanup(func() {
		srv.API().Stop()
		b.ts.Close()
	})
	return b
}

// enqueue adds a task that may not be retried (max_retries 0) to queue q
// of project "default".
func (b *abandonBundle) enqueue(id, q string) {
	b.t.Helper()
	res, err := b.st.Enqueue(context.Background(), store.EnqueueParams{Namespace: "default", Tasks: []store.TaskInput{{ID: id, Type: "t", Queue: q}}})
	if err != nil || res.Items[0].Err != nil {
		b.t.Fatalf("enqueue %s: %v %+v", id, err, res.Items)
	}
}

func (b *abandonBundle) task(id string) *store.Task {
	b.t.Helper()
	res, err := b.st.Get(context.Background(), store.GetParams{Namespace: "default", IDs: []string{id}})
	if err != nil || res.Tasks[0] == nil {
		b.t.Fatalf("get %s: %v (found %v)", id, err, err == nil && res.Tasks[0] != nil)
	}
	return res.Tasks[0]
}

// waitNotActive waits until task id is no longer active and returns it.
// Only a hand-back can end its lease here: the lease lasts an hour, and
// nothing sweeps.
func (b *abandonBundle) waitNotActive(id string) *store.Task {
	b.t.Helper()
	var tk *store.Task
	kilntest.Eventually(b.t, "task "+id+" to be handed back after its lease's answer was abandoned", func() bool {
		tk = b.task(id)
		return tk.State != store.StateActive
	})
	return tk
}

// leaseRequest makes a lease request for one task of queue q, waiting up
// to 20 s, that asks for the binary answer when binary is set.
func (b *abandonBundle) leaseRequest(ctx context.Context, q string, binary bool) *http.Request {
	b.t.Helper()
	body, err := json.Marshal(wire.LeaseRequest{Queues: []string{q}, Max: 1, DurationMS: time.Hour.Milliseconds(), WaitMS: 20000, WorkerID: "w"})
	if err != nil {
		b.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.ts.URL+"/v1/projects/default/lease", bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	if binary {
		req.Header.Set("Accept", wirebin.TasksType)
	}
	return req
}

// checkNoneLost advances the fake clock past every lease, sweeps, and
// checks that each task is pending with no attempt counted.
func (b *abandonBundle) checkNoneLost(ids []string) {
	b.t.Helper()
	b.clock.Advance(2 * time.Hour)
	if _, err := b.st.Sweep(context.Background(), store.SweepParams{}); err != nil {
		b.t.Fatal(err)
	}
	for _, id := range ids {
		if tk := b.task(id); tk.State != store.StatePending || tk.Attempt != 0 {
			b.t.Errorf("task %s after its leases' time: %v attempt %d, want pending attempt 0", id, tk.State, tk.Attempt)
		}
	}
}

// abandoned waits for the worker.lease_abandoned event.
func (b *abandonBundle) abandoned() server.Event {
	b.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-b.events:
			if ev.Kind == "worker.lease_abandoned" {
				return ev
			}
		case <-timeout:
			b.t.Fatal("no worker.lease_abandoned event")
		}
	}
}

var encodings = []struct {
	name   string
	binary bool
}{{"json", false}, {"binary", true}}

// TestLeaseCancelledByClient: a client waits in a lease long poll and goes
// away (closes its connection) just as a task is enqueued, after the store
// leased the task but before the server answered. 20 times in a row, on
// each store and encoding: every task is pending again at once with no
// attempt counted, and once the leases' time is over none is dead (the
// tasks may not be retried).
func TestLeaseCancelledByClient(t *testing.T) {
	t.Parallel()
	for _, be := range backends(t) {
		for _, enc := range encodings {
			t.Run(be.name+"/"+enc.name, func(t *testing.T) {
				t.Parallel()
				b := startAbandon(t, be, storetest.NewFakeClock(storetest.Epoch), nil)
				var ids []string
				for i := range 20 {
					id := fmt.Sprintf("task-%d", i)
					q := fmt.Sprintf("q%d", i)
					ids = append(ids, id)
					ctx, cancel := context.WithCancel(t.Context())
					leased := make(chan struct{})
					hold := func(ctx context.Context, _ []*store.Task) {
						close(leased)
						// The client leaves now; the store already leased.
						select {
						case <-ctx.Done():
						case <-time.After(30 * time.Second):
						}
					}
					b.st.hold.Store(&hold)
					done := make(chan error, 1)
					go func() {
						resp, err := http.DefaultClient.Do(b.leaseRequest(ctx, q, enc.binary))
						if err == nil {
							_ = resp.Body.Close()
							err = fmt.Errorf("answered %s", resp.Status)
						}
						done <- err
					}()
					b.enqueue(id, q) // wakes the waiting lease
					recv(t, leased, "the store's lease")
					cancel()
					if err := recv(t, done, "the cancelled request"); !errors.Is(err, context.Canceled) {
						t.Fatalf("round %d: the cancelled request ended with %v", i, err)
					}
					if tk := b.waitNotActive(id); tk.State != store.StatePending || tk.Attempt != 0 {
						t.Fatalf("round %d: task %s is %v attempt %d after its lease was abandoned, want pending attempt 0", i, id, tk.State, tk.Attempt)
					}
					if ev := b.abandoned(); ev.Count != 1 || ev.WorkerID != "w" {
						t.Errorf("round %d: worker.lease_abandoned event %+v, want count 1 worker w", i, ev)
					}
					b.st.hold.Store(nil)
				}
				b.checkNoneLost(ids)
			})
		}
	}
}

// TestLeaseAfterStop: once the server is stopping, a lease answers at once
// with no task and leases nothing, whether it asks to wait or not.
func TestLeaseAfterStop(t *testing.T) {
	t.Parallel()
	for _, be := range backends(t) {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			b := startAbandon(t, be, storetest.NewFakeClock(storetest.Epoch), nil)
			ids := []string{"a", "b", "c"}
			for _, id := range ids {
				b.enqueue(id, "q")
			}
			b.srv.API().Stop()
			for _, enc := range encodings {
				for _, wait := range []int64{0, 20000} {
					body, err := json.Marshal(wire.LeaseRequest{Queues: []string{"q"}, Max: 10, DurationMS: time.Hour.Milliseconds(), WaitMS: wait})
					if err != nil {
						t.Fatal(err)
					}
					req := b.leaseRequest(t.Context(), "q", enc.binary)
					req.Body = io.NopCloser(bytes.NewReader(body))
					req.ContentLength = int64(len(body))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if err != nil {
						t.Fatal(err)
					}
					var n int
					if ct := resp.Header.Get("Content-Type"); ct == wirebin.TasksType {
						tasks, err := wirebin.DecodeTasks(got, "default")
						if err != nil {
							t.Fatal(err)
						}
						n = len(tasks)
					} else {
						var lr wire.LeaseResponse
						if err := json.Unmarshal(got, &lr); err != nil {
							t.Fatalf("%s wait %d: %d %q: %v", enc.name, wait, resp.StatusCode, got, err)
						}
						n = len(lr.Tasks)
					}
					if resp.StatusCode != http.StatusOK || n != 0 {
						t.Errorf("%s wait %d after Stop: %d with %d tasks, want 200 with none", enc.name, wait, resp.StatusCode, n)
					}
				}
			}
			for _, id := range ids {
				if tk := b.task(id); tk.State != store.StatePending || tk.Attempt != 0 {
					t.Errorf("task %s after leases on a stopped server: %v attempt %d, want pending attempt 0", id, tk.State, tk.Attempt)
				}
			}
		})
	}
}

// failingWriter is a ResponseWriter whose connection broke: writing the
// body (or flushing it, with failFlush) fails. Nothing reaches the client.
type failingWriter struct {
	header    http.Header
	failFlush bool
}

var errBroken = errors.New("connection reset by peer (test)")

func (f *failingWriter) Header() http.Header { return f.header }
func (f *failingWriter) WriteHeader(int)     {}
func (f *failingWriter) Write(b []byte) (int, error) {
	if f.failFlush {
		return len(b), nil
	}
	return 0, errBroken
}

// FlushError is what http.ResponseController.Flush calls.
func (f *failingWriter) FlushError() error { return errBroken }

// TestLeaseAnswerWriteFails: when writing a lease's answer fails (the
// write itself, or the flush to the connection), its tasks are handed back
// at once with no attempt counted, on each store and encoding.
func TestLeaseAnswerWriteFails(t *testing.T) {
	t.Parallel()
	for _, be := range backends(t) {
		for _, enc := range encodings {
			for _, failFlush := range []bool{false, true} {
				name := be.name + "/" + enc.name + "/write"
				if failFlush {
					name = be.name + "/" + enc.name + "/flush"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					wrap := func(h http.Handler) http.Handler {
						return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							if strings.HasSuffix(r.URL.Path, "/lease") {
								w = &failingWriter{header: http.Header{}, failFlush: failFlush}
							}
							h.ServeHTTP(w, r)
						})
					}
					b := startAbandon(t, be, storetest.NewFakeClock(storetest.Epoch), wrap)
					ids := []string{"a", "b", "c"}
					for _, id := range ids {
						b.enqueue(id, "q")
					}
					body, err := json.Marshal(wire.LeaseRequest{Queues: []string{"q"}, Max: 10, DurationMS: time.Hour.Milliseconds(), WorkerID: "w"})
					if err != nil {
						t.Fatal(err)
					}
					req := b.leaseRequest(t.Context(), "q", enc.binary)
					req.Body = io.NopCloser(bytes.NewReader(body))
					req.ContentLength = int64(len(body))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					got, _ := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if len(got) != 0 {
						t.Fatalf("the client got %q through a broken writer", got)
					}
					for _, id := range ids {
						if tk := b.waitNotActive(id); tk.State != store.StatePending || tk.Attempt != 0 {
							t.Errorf("task %s is %v attempt %d after writing its lease's answer failed, want pending attempt 0", id, tk.State, tk.Attempt)
						}
					}
					if ev := b.abandoned(); ev.Count != len(ids) {
						t.Errorf("worker.lease_abandoned event %+v, want count %d", ev, len(ids))
					}
					b.checkNoneLost(ids)
				})
			}
		}
	}
}

// TestRemoteWorkerStopsMidPoll: remote kiln.Workers (store/remote over
// HTTP, binary and JSON) are stopped gracefully in the middle of a lease
// long poll, just after the server's store leased a task for it, while
// tasks are enqueued in a loop. Once every task has run, none ran twice
// (attempt > 1) and none is dead, though none may be retried: the
// abandoned leases cost no attempt.
func TestRemoteWorkerStopsMidPoll(t *testing.T) {
	t.Parallel()
	for _, be := range backends(t) {
		for _, enc := range encodings {
			t.Run(be.name+"/"+enc.name, func(t *testing.T) {
				t.Parallel()
				testWorkerStopsMidPoll(t, be, !enc.binary)
			})
		}
	}
}

func testWorkerStopsMidPoll(t *testing.T, be backend, jsonOnly bool) {
	const rounds = 8
	b := startAbandon(t, be, nil, nil)
	var ran sync.Map // id -> runs
	var runs atomic.Int64
	newWorker := func() (*kiln.Worker, *remote.Store) {
		rs, err := remote.Open(t.Context(), b.ts.URL, &remote.Config{Token: adminToken, JSONOnly: jsonOnly})
		if err != nil {
			t.Fatal(err)
		}
		w, err := kiln.NewWorker(rs, &kiln.WorkerConfig{
			Namespace: "default", Queues: map[string]int{"q": 1}, Concurrency: 4,
			LeaseDuration: 10 * time.Second, LeaseWait: 10 * time.Second, SweepInterval: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		w.Handle("t", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
			n, _ := ran.LoadOrStore(tk.ID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			runs.Add(1)
			return nil
		}))
		return w, rs
	}

	// The producer enqueues a task every 2 ms or so until told to stop.
	var ids []string
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i++ {
			select {
			case <-stopProducing:
				return
			default:
			}
			id := fmt.Sprintf("task-%05d", i)
			if _, err := b.st.Enqueue(context.Background(), store.EnqueueParams{Namespace: "default", Tasks: []store.TaskInput{{ID: id, Type: "t", Queue: "q"}}}); err != nil {
				t.Errorf("enqueue %s: %v", id, err)
				return
			}
			ids = append(ids, id)
			time.Sleep(2 * time.Millisecond)
		}
	}()

	// Each round's worker runs 10 tasks, then is stopped in the middle of
	// a lease: the store has leased, and the server answers only once the
	// worker's request is gone (or after 30 s).
	for i := range rounds {
		w, rs := newWorker()
		stopped := make(chan error, 1)
		var once sync.Once
		armAt := runs.Load() + 10
		hold := func(ctx context.Context, _ []*store.Task) {
			if runs.Load() < armAt {
				return
			}
			once.Do(func() {
				go func() {
					sctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
					defer cancel()
					stopped <- w.Shutdown(sctx)
				}()
				select {
				case <-ctx.Done():
				case <-time.After(30 * time.Second):
				}
			})
		}
		b.st.hold.Store(&hold)
		runErr := make(chan error, 1)
		go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
		if err := recv(t, stopped, fmt.Sprintf("round %d: Shutdown", i)); err != nil {
			t.Fatalf("round %d: Shutdown: %v", i, err)
		}
		if err := recv(t, runErr, fmt.Sprintf("round %d: Run", i)); err != nil {
			t.Fatalf("round %d: Run: %v", i, err)
		}
		b.st.hold.Store(nil)
		_ = rs.Close()
	}
	close(stopProducing)
	recv(t, produced, "the producer")
	total := int64(len(ids))

	// A last worker runs what is left while the store is swept, so that a
	// task whose lease was lost comes back (or dies) when the lease ends.
	w, rs := newWorker()
	defer func() { _ = rs.Close() }()
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()
	var finished, all int64
	kilntest.Eventually(t, fmt.Sprintf("the %d tasks to finish", total), func() bool {
		if _, err := b.st.Sweep(context.Background(), store.SweepParams{}); err != nil {
			t.Fatal(err)
		}
		res, err := b.st.Stats(context.Background(), store.StatsParams{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		finished, all = 0, 0
		for _, q := range res.Queues {
			finished += q.Counts[store.StateSucceeded] + q.Counts[store.StateDead]
			all += q.Total()
		}
		return finished == total && all == total
	})
	stop()
	if err := recv(t, runErr, "the last worker's Run"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := b.abandons.Load(); n != rounds {
		t.Errorf("%d worker.lease_abandoned events, want one per stopped worker (%d)", n, rounds)
	}
	t.Logf("%d tasks, %d workers stopped mid-lease", total, rounds)
	for _, id := range ids {
		tk := b.task(id)
		runs := int32(0)
		if n, ok := ran.Load(id); ok {
			runs = n.(*atomic.Int32).Load()
		}
		if tk.State != store.StateSucceeded || tk.Attempt != 1 || runs != 1 {
			t.Errorf("task %s: %v attempt %d, ran %d times; want succeeded at attempt 1, run once", id, tk.State, tk.Attempt, runs)
		}
	}
}

// recv waits for a value on ch, failing the test after 30 s.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
