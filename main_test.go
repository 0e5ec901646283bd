package kiln

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testenv.BenchMain(m)) }

// waitLimit bounds every wait for something that should happen promptly; it
// guards against hanging tests and is never a measurement.
const waitLimit = testenv.WaitLimit

// TestStore is a kind of store the client and worker tests run on, as
// forEachStore runs them. Package kiln's own tests cannot import kilntest
// (it imports kiln), so stores_test.go, in package kiln_test, fills
// TestStores from kilntest before any test runs.
type TestStore struct {
	Name string
	// Open opens a fresh store for t on clock (nil: the wall clock); it is
	// closed when t ends.
	Open func(t *testing.T, clock store.Clock) store.Store
}

// TestStores are the stores of forEachStore: the embedded store, Redis, and
// a kiln server reached over HTTP.
var TestStores []TestStore

type bundle struct {
	raw    store.Store // the store of the test's kind
	store  store.Store // what the client and worker use (raw, maybe wrapped)
	clock  *storetest.FakeClock
	client *Client
	events *eventLog
}

type setupOpts struct {
	fakeClock bool
	wrap      func(store.Store) store.Store
}

// setup opens a fresh embedded store in a temporary folder, with a client.
func setup(t *testing.T, o *setupOpts) *bundle {
	t.Helper()
	return setupOn(t, func(t *testing.T, clock store.Clock) store.Store {
		t.Helper()
		s, err := embedded.Open(t.TempDir(), &embedded.Config{Clock: clock})
		if err != nil {
			t.Fatalf("embedded.Open: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}, o)
}

// forEachStore runs test on every kind of TestStores, each in a parallel
// subtest of its own with a fresh store and client.
func forEachStore(t *testing.T, o *setupOpts, test func(t *testing.T, b *bundle)) {
	t.Helper()
	if len(TestStores) == 0 {
		t.Fatal("TestStores is empty: stores_test.go (package kiln_test) fills it")
	}
	for _, ts := range TestStores {
		t.Run(ts.Name, func(t *testing.T) {
			t.Parallel()
			test(t, setupOn(t, ts.Open, o))
		})
	}
}

// setupOn opens a store with open, with a client.
func setupOn(t *testing.T, open func(t *testing.T, clock store.Clock) store.Store, o *setupOpts) *bundle {
	t.Helper()
	if o == nil {
		o = &setupOpts{}
	}
	b := &bundle{events: &eventLog{}}
	var clock store.Clock
	if o.fakeClock {
		b.clock = storetest.NewFakeClock(storetest.Epoch)
		clock = b.clock
	}
	b.raw = open(t, clock)
	b.store = b.raw
	if o.wrap != nil {
		b.store = o.wrap(b.raw)
	}
	var err error
	b.client, err = NewClient(b.store, &ClientConfig{EventFunc: b.events.add})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return b
}

// startWorker makes a worker on b's store with cfg (Concurrency, lease and
// sweep tuned for fast tests unless set), lets register add handlers, runs
// it, and stops it at the end of the test.
func (b *bundle) startWorker(t *testing.T, cfg *WorkerConfig, register func(w *Worker)) *Worker {
	t.Helper()
	w := b.newWorker(t, cfg)
	register(w)
	b.run(t, w)
	return w
}

func (b *bundle) newWorker(t *testing.T, cfg *WorkerConfig) *Worker {
	t.Helper()
	var c WorkerConfig
	if cfg != nil {
		c = *cfg
	}
	if c.LeaseWait == 0 {
		c.LeaseWait = 50 * time.Millisecond
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 20 * time.Millisecond
	}
	if c.EventFunc == nil {
		c.EventFunc = b.events.add
	}
	w, err := NewWorker(b.store, &c)
	if err != nil {
		t.Fatalf("NewWorker: %v", err)
	}
	return w
}

// run runs w in the background and shuts it down (gracefully, bounded) at
// the end of the test, checking that Run returned.
func (b *bundle) run(t *testing.T, w *Worker) {
	t.Helper()
	testenv.RunBackground(t, w)
}

// storeTask reads the raw record of a task.
func (b *bundle) storeTask(t *testing.T, id string) *store.Task {
	t.Helper()
	res, err := b.raw.Get(t.Context(), store.GetParams{Namespace: store.DefaultNamespace, IDs: []string{id}})
	if err != nil || len(res.Tasks) != 1 || res.Tasks[0] == nil {
		t.Fatalf("Get(%s) = %v, %v", id, res.Tasks, err)
	}
	return res.Tasks[0]
}

// waitFor polls cond until it is true, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, what, cond)
}

// waitState waits until the task is in state want and returns its record.
func (b *bundle) waitState(t *testing.T, id string, want State) *store.Task {
	t.Helper()
	var last *store.Task
	waitFor(t, "task "+id+" to be "+want.String(), func() bool {
		last = b.storeTask(t, id)
		return last.State == want
	})
	return last
}

// recv waits for a value on c.
func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	return testenv.Recv(t, c, what)
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	return testenv.Context(t)
}

// eventLog records events; safe for concurrent use.
type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// kinds returns the kinds of the events of one task, in order.
func (l *eventLog) kinds(id string) []EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []EventKind
	for _, e := range l.events {
		if e.TaskID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

// workerKinds is kinds without EventEnqueued, which the client raises
// after the store answered, possibly after the worker's first events.
func (l *eventLog) workerKinds(id string) []EventKind {
	var out []EventKind
	for _, k := range l.kinds(id) {
		if k != EventEnqueued {
			out = append(out, k)
		}
	}
	return out
}

func (l *eventLog) find(id string, k EventKind) (Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.TaskID == id && e.Kind == k {
			return e, true
		}
	}
	return Event{}, false
}

// hookStore wraps a store and lets a test replace some methods. The hooks
// are set before the store is used.
type hookStore struct {
	store.Store
	lease  func(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error)
	extend func(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error)
	report func(ctx context.Context, p store.ReportParams) (store.ReportResult, error)
}

func (h *hookStore) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	if h.lease != nil {
		return h.lease(ctx, p)
	}
	return h.Store.Lease(ctx, p)
}

func (h *hookStore) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	if h.extend != nil {
		return h.extend(ctx, p)
	}
	return h.Store.Extend(ctx, p)
}

func (h *hookStore) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	if h.report != nil {
		return h.report(ctx, p)
	}
	return h.Store.Report(ctx, p)
}

var errBoom = errors.New("boom")
