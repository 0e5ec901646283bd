package kiln

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait for something that should happen promptly; it
// guards against hanging tests and is never a measurement.
const waitLimit = 20 * time.Second

type bundle struct {
	emb    *embedded.Store
	store  store.Store // what the client and worker use (emb, maybe wrapped)
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
	if o == nil {
		o = &setupOpts{}
	}
	b := &bundle{events: &eventLog{}}
	cfg := &embedded.Config{}
	if o.fakeClock {
		b.clock = storetest.NewFakeClock(storetest.Epoch)
		cfg.Clock = b.clock
	}
	s, err := embedded.Open(t.TempDir(), cfg)
	if err != nil {
		t.Fatalf("embedded.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	b.emb, b.store = s, s
	if o.wrap != nil {
		b.store = o.wrap(s)
	}
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
func (b *bundle) run(t *testing.T, w *Worker) (runErr <-chan error) {
	t.Helper()
	errc := make(chan error, 1)
	ctx := t.Context()
	go func() { errc <- w.Run(ctx) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), waitLimit)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-ctx.Done():
			t.Errorf("Run did not return after Shutdown")
		}
	})
	return errc
}

// storeTask reads the raw record of a task.
func (b *bundle) storeTask(t *testing.T, id string) *store.Task {
	t.Helper()
	res, err := b.emb.Get(t.Context(), store.GetParams{Namespace: store.DefaultNamespace, IDs: []string{id}})
	if err != nil || len(res.Tasks) != 1 || res.Tasks[0] == nil {
		t.Fatalf("Get(%s) = %v, %v", id, res.Tasks, err)
	}
	return res.Tasks[0]
}

// waitFor polls cond until it is true, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	delay := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-t.Context().Done():
			timer.Stop()
			t.Fatalf("test ended while waiting for %s", what)
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
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
	select {
	case v := <-c:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	return ctx
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
