package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// gate holds the store's next commit: the commit waits in apply until the
// test lets it go, with an error to report or nil.
type gate struct {
	held    atomic.Bool
	entered chan struct{}
	release chan error
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1), release: make(chan error, 1)}
}

// gatedEngine applies batches through g: while g is held, the next batch
// waits for g.release, then reaches the engine whole and its commit
// reports the error it was released with (a sync that failed after the
// write, the worst case for an enqueue), or, released with errUnwritten,
// fails without reaching the engine.
type gatedEngine struct {
	engine
	g *gate
}

// errUnwritten fails a held commit before it writes anything.
var errUnwritten = fmt.Errorf("write: %w", errNoSpace)

func (e gatedEngine) apply(ops []op, sync bool) error {
	if !e.g.held.CompareAndSwap(true, false) {
		return e.engine.apply(ops, sync)
	}
	e.g.entered <- struct{}{}
	injected := <-e.g.release
	if injected == errUnwritten { //nolint:errorlint // the sentinel itself, as sent
		return injected
	}
	if err := e.engine.apply(ops, sync); err != nil {
		return err
	}
	return injected
}

// gatedStore opens a store whose commits go through a gate, on a fake
// clock.
func gatedStore(t *testing.T) (*Store, *gate, *storetest.FakeClock) {
	t.Helper()
	g := newGate()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s := mustOpen(t, t.TempDir(), &Config{Clock: clock, ReserveBytes: 1 << 20, retryEvery: time.Hour, wrapEngine: func(e engine) engine {
		return gatedEngine{engine: e, g: g}
	}})
	t.Cleanup(func() { _ = s.Close() })
	// A test that failed with a commit held lets it go (before Close,
	// which waits for it).
	t.Cleanup(func() {
		g.held.Store(false)
		select {
		case g.release <- nil:
		default:
		}
	})
	return s, g, clock
}

// hold makes the store's next commit wait, after every write queued so far
// is durable (so that the commit held is the next call's).
func (g *gate) hold(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	b := s.barrier()
	s.mu.Unlock()
	if err := b.wait(); err != nil {
		t.Fatal(err)
	}
	g.held.Store(true)
}

// inCommit runs call in a goroutine and returns once the commit of its
// writes is held by g; the channel gets call's error when it returns.
func inCommit(t *testing.T, g *gate, call func() error) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- call() }()
	select {
	case <-g.entered:
	case err := <-errc:
		t.Fatalf("the call returned (%v) without committing", err)
	}
	return errc
}

const durableNS = "durable"

func leaseNow(t *testing.T, s *Store) []*store.Task {
	t.Helper()
	r, err := s.Lease(t.Context(), store.LeaseParams{Namespace: durableNS, Queues: []string{"q"}, Max: 10, Duration: time.Minute, WorkerID: "w"})
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return r.Tasks
}

// longPoll starts a Lease that waits up to a minute for a task.
func longPoll(t *testing.T, s *Store) <-chan store.LeaseResult {
	t.Helper()
	out := make(chan store.LeaseResult, 1)
	go func() {
		r, err := s.Lease(context.Background(), store.LeaseParams{Namespace: durableNS, Queues: []string{"q"}, Max: 10, Duration: time.Minute, Wait: time.Minute})
		if err != nil {
			r.Tasks = []*store.Task{{ID: "error: " + err.Error()}}
		}
		out <- r
	}()
	return out
}

func ids(ts []*store.Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

func mustEnqueue(t *testing.T, s *Store, ins ...store.TaskInput) {
	t.Helper()
	r, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: durableNS, Tasks: ins})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	for _, it := range r.Items {
		if it.Err != nil {
			t.Fatalf("Enqueue %s: %v", it.ID, it.Err)
		}
	}
}

// TestEnqueueLeasableOnceDurable holds the commit of an enqueue: the task is
// in memory (Get sees it) but no leaser gets it, not even one already
// waiting, until the commit is durable; then the waiting leaser is woken
// with it, before the enqueue returns.
func TestEnqueueLeasableOnceDurable(t *testing.T) {
	t.Parallel()
	s, g, _ := gatedStore(t)
	g.hold(t, s)
	enq := inCommit(t, g, func() error {
		_, err := s.Enqueue(context.Background(), store.EnqueueParams{Namespace: durableNS, Tasks: []store.TaskInput{
			{ID: "a", Type: "t", Queue: "q"},
			{ID: "b", Type: "t", Queue: "q", NewID: true},
		}})
		return err
	})
	if got := getAll(t, s, durableNS, []string{"a", "b"}); len(got) != 2 {
		t.Fatalf("Get during the commit finds %d tasks; want both (in memory)", len(got))
	}
	if got := leaseNow(t, s); len(got) != 0 {
		t.Fatalf("Lease during the enqueue's commit got %v", ids(got))
	}
	waiting := longPoll(t, s)
	select {
	case r := <-waiting:
		t.Fatalf("a waiting Lease got %v during the enqueue's commit", ids(r.Tasks))
	case <-time.After(20 * time.Millisecond):
	}
	g.release <- nil
	if err := <-enq; err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	r := <-waiting
	if len(r.Tasks) != 2 {
		t.Fatalf("the waiting Lease got %v after the commit; want a and b", ids(r.Tasks))
	}
}

// TestFailedEnqueueNeverLeased fails the commit of an enqueue (after its
// batch reached the disk): Enqueue fails, and no leaser, waiting or not,
// gets the task then or after the store can write again.
func TestFailedEnqueueNeverLeased(t *testing.T) {
	t.Parallel()
	s, g, _ := gatedStore(t)
	mustEnqueue(t, s, store.TaskInput{ID: "ok", Type: "t", Queue: "other"})
	g.hold(t, s)
	enq := inCommit(t, g, func() error {
		_, err := s.Enqueue(context.Background(), store.EnqueueParams{Namespace: durableNS, Tasks: []store.TaskInput{{ID: "lost", Type: "t", Queue: "q"}}})
		return err
	})
	if got := leaseNow(t, s); len(got) != 0 {
		t.Fatalf("Lease during the enqueue's commit got %v", ids(got))
	}
	waiting := longPoll(t, s)
	g.release <- fmt.Errorf("sync: %w", errNoSpace)
	if err := <-enq; !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Enqueue whose commit failed: %v, want ErrStorageFull", err)
	}
	// The waiting Lease ends with the store's refusal of writes.
	for _, tk := range (<-waiting).Tasks {
		if tk.ID == "lost" {
			t.Fatal("the waiting Lease got the task of the failed enqueue")
		}
	}
	s.retry() // writable again: the failed enqueue is deleted from disk
	if got := leaseNow(t, s); len(got) != 0 {
		t.Fatalf("Lease after the store recovered got %v", ids(got))
	}
	if got := getAll(t, s, durableNS, []string{"lost", "ok"}); got["lost"] != nil || got["ok"] == nil {
		t.Fatalf("after the failed commit Get finds %v; want ok alone", got)
	}
	storetest.CheckInvariants(t, s, durableNS)
}

// TestTransitionsLeasableOnceDurable holds the commit of every change that
// makes a task pending: the task is leasable only once that commit is
// durable, and, when the commit fails without reaching the disk, never (the
// task keeps the state the disk has).
func TestTransitionsLeasableOnceDurable(t *testing.T) {
	t.Parallel()
	type setup struct {
		s     *Store
		clock *storetest.FakeClock
	}
	leaseOne := func(t *testing.T, s *Store) *store.Task {
		t.Helper()
		got := leaseNow(t, s)
		if len(got) != 1 {
			t.Fatalf("leased %v, want one task", ids(got))
		}
		return got[0]
	}
	report := func(s *Store, o store.Outcome) error {
		r, err := s.Report(context.Background(), store.ReportParams{Namespace: durableNS, Outcomes: []store.Outcome{o}})
		if err == nil {
			err = r.Errs[0]
		}
		return err
	}
	cases := []struct {
		name string
		// prepare makes the durable state before the change; change makes
		// the task pending, and want is the task then leasable.
		prepare func(t *testing.T, u setup) func() error
		want    string
	}{
		{"retry now", func(t *testing.T, u setup) func() error {
			t.Helper()
			mustEnqueue(t, u.s, store.TaskInput{ID: "r", Type: "t", Queue: "q", MaxRetries: 3})
			tk := leaseOne(t, u.s)
			return func() error {
				return report(u.s, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "again"})
			}
		}, "r"},
		{"release", func(t *testing.T, u setup) func() error {
			t.Helper()
			mustEnqueue(t, u.s, store.TaskInput{ID: "h", Type: "t", Queue: "q"})
			tk := leaseOne(t, u.s)
			return func() error {
				return report(u.s, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRelease, NotStarted: true})
			}
		}, "h"},
		{"expired lease", func(t *testing.T, u setup) func() error {
			t.Helper()
			mustEnqueue(t, u.s, store.TaskInput{ID: "x", Type: "t", Queue: "q", MaxRetries: 3})
			leaseOne(t, u.s)
			u.clock.Advance(2 * time.Minute)
			return func() error {
				_, err := u.s.Sweep(context.Background(), store.SweepParams{})
				return err
			}
		}, "x"},
		{"admin retry", func(t *testing.T, u setup) func() error {
			t.Helper()
			mustEnqueue(t, u.s, store.TaskInput{ID: "d", Type: "t", Queue: "q"})
			tk := leaseOne(t, u.s)
			if err := report(u.s, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "no"}); err != nil {
				t.Fatal(err)
			}
			return func() error {
				r, err := u.s.Retry(context.Background(), store.IDsParams{Namespace: durableNS, IDs: []string{"d"}})
				if err == nil {
					err = r.Items[0].Err
				}
				return err
			}
		}, "d"},
		{"workflow step", func(t *testing.T, u setup) func() error {
			t.Helper()
			if err := u.s.EnqueueFlow(t.Context(), store.FlowParams{Namespace: durableNS, ID: "f", Spec: []byte("{}"),
				Tasks: []store.TaskInput{{ID: "f.a", Type: "t", Queue: "q"}},
				Held:  []store.HeldTask{{Task: store.TaskInput{ID: "f.b", Type: "t", Queue: "q"}, After: []string{"f.a"}}},
			}); err != nil {
				t.Fatal(err)
			}
			tk := leaseOne(t, u.s)
			return func() error {
				return report(u.s, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
			}
		}, "f.b"},
		{"scheduled, enqueue not durable", func(_ *testing.T, u setup) func() error {
			return func() error {
				_, err := u.s.Enqueue(context.Background(), store.EnqueueParams{Namespace: durableNS, Tasks: []store.TaskInput{
					{ID: "s", Type: "t", Queue: "q", RunAt: u.clock.Now().Add(time.Second)},
				}})
				return err
			}
		}, "s"},
	}
	for _, c := range cases {
		for _, fail := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fail=%t", c.name, fail), func(t *testing.T) {
				t.Parallel()
				s, g, clock := gatedStore(t)
				change := c.prepare(t, setup{s: s, clock: clock})
				g.hold(t, s)
				errc := inCommit(t, g, change)
				// Past any due time: a scheduled task is due now.
				clock.Advance(time.Minute)
				if got := leaseNow(t, s); len(got) != 0 {
					t.Fatalf("Lease during the change's commit got %v", ids(got))
				}
				if fail {
					g.release <- errUnwritten
					if err := <-errc; err == nil {
						t.Fatal("the change succeeded; its commit failed")
					}
					if _, err := s.Lease(t.Context(), store.LeaseParams{Namespace: durableNS, Queues: []string{"q"}, Max: 10, Duration: time.Minute}); !errors.Is(err, store.ErrStorageFull) {
						t.Fatalf("Lease after the failed commit: %v, want ErrStorageFull", err)
					}
					s.retry()
					// The disk has the state before the change: a
					// pending task there is one the change did not make.
					for _, tk := range leaseNow(t, s) {
						if tk.ID == c.want {
							t.Fatalf("leased %s, made pending by a change whose commit failed", tk.ID)
						}
					}
					storetest.CheckInvariants(t, s, durableNS)
					return
				}
				g.release <- nil
				if err := <-errc; err != nil {
					t.Fatalf("the change: %v", err)
				}
				got := leaseNow(t, s)
				if len(got) != 1 || got[0].ID != c.want {
					t.Fatalf("Lease after the commit got %v, want %s", ids(got), c.want)
				}
			})
		}
	}
}

// countingEngine counts the engine's point reads.
type countingEngine struct {
	engine
	reads *atomic.Int64
}

func (c countingEngine) get(key []byte) ([]byte, error) {
	c.reads.Add(1)
	return c.engine.get(key)
}

func (c countingEngine) getMany(keys [][]byte) ([][]byte, error) {
	c.reads.Add(1)
	return c.engine.getMany(keys)
}

// TestNewIDSkipsDiskRead checks the id check of Enqueue: an id made for the
// call (NewID) is not looked up on disk, but is still refused while a task
// in memory has it; a caller's id is looked up (one read for a batch), and
// refused when a finished task, on disk only, has it.
func TestNewIDSkipsDiskRead(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	s := mustOpen(t, t.TempDir(), &Config{wrapEngine: func(e engine) engine { return countingEngine{engine: e, reads: &reads} }})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	enqueue := func(ins ...store.TaskInput) []store.EnqueueItem {
		t.Helper()
		r, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: durableNS, Tasks: ins})
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		return r.Items
	}
	mustEnqueue(t, s, store.TaskInput{ID: "done", Type: "t", Queue: "q"})
	tk := leaseNow(t, s)[0]
	if _, err := s.Report(ctx, store.ReportParams{Namespace: durableNS, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	inMemory := s.nss[durableNS].tasks["done"] != nil
	s.mu.Unlock()
	if inMemory {
		t.Fatal("the finished task is still in memory: the test needs it on disk only")
	}

	before := reads.Load()
	if it := enqueue(store.TaskInput{ID: "fresh", Type: "t", Queue: "q", NewID: true})[0]; it.Err != nil {
		t.Fatalf("Enqueue with NewID: %v", it.Err)
	}
	if n := reads.Load() - before; n != 0 {
		t.Fatalf("Enqueue with NewID read the engine %d times; want none", n)
	}
	if it := enqueue(store.TaskInput{ID: "fresh", Type: "t", Queue: "q", NewID: true})[0]; !errors.Is(it.Err, store.ErrTaskExists) {
		t.Fatalf("Enqueue with NewID of a live task's id: %v, want ErrTaskExists", it.Err)
	}
	before = reads.Load()
	items := enqueue(
		store.TaskInput{ID: "done", Type: "t", Queue: "q"},
		store.TaskInput{ID: "other", Type: "t", Queue: "q"},
		store.TaskInput{ID: "new2", Type: "t", Queue: "q", NewID: true},
	)
	if n := reads.Load() - before; n != 1 {
		t.Fatalf("a batch with two callers' ids read the engine %d times; want one batched read", n)
	}
	if !errors.Is(items[0].Err, store.ErrTaskExists) || items[1].Err != nil || items[2].Err != nil {
		t.Fatalf("items %+v: want the finished task's id refused, the others in", items)
	}
}

// TestEnqueueReadBeforeLockStale checks Enqueue's read of ids before the
// store's lock: when a task with the id was created, finished and left
// memory between that read and the lock, the read is stale and the id is
// read again (and refused).
func TestEnqueueReadBeforeLockStale(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir(), nil)
	t.Cleanup(func() { _ = s.Close() })
	in := []store.TaskInput{{ID: "x", Type: "t", Queue: "q"}}
	pre := s.readIDs(durableNS, in)
	if !pre.ok || pre.onDisk != nil {
		t.Fatalf("read before the task exists: %+v", pre)
	}
	mustEnqueue(t, s, in...)
	tk := leaseNow(t, s)[0]
	if _, err := s.Report(t.Context(), store.ReportParams{Namespace: durableNS, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	if s.nss[durableNS].tasks["x"] != nil {
		s.mu.Unlock()
		t.Fatal("the finished task is still in memory: the test needs it on disk only")
	}
	r, err := s.enqueueLocked(store.EnqueueParams{Namespace: durableNS, Tasks: in}, make([]store.EnqueueItem, 1), pre)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(r.Items[0].Err, store.ErrTaskExists) {
		t.Fatalf("Enqueue with a stale read of its id: %v, want ErrTaskExists", r.Items[0].Err)
	}
}

// TestFlowNewIDSkipsDiskRead checks EnqueueFlow's id check: ids made for
// the call (NewID, as a Client marks a workflow whose id it made) are not
// looked up on disk; other ids are, in one batched read.
func TestFlowNewIDSkipsDiskRead(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	s := mustOpen(t, t.TempDir(), &Config{wrapEngine: func(e engine) engine { return countingEngine{engine: e, reads: &reads} }})
	t.Cleanup(func() { _ = s.Close() })
	flow := func(id string, newID bool) store.FlowParams {
		p := store.FlowParams{Namespace: durableNS, ID: id, Spec: []byte("s")}
		var after []string
		for i := range 3 {
			in := store.TaskInput{ID: fmt.Sprintf("%s.%d", id, i), Type: "t", Queue: "q", NewID: newID}
			p.Tasks = append(p.Tasks, in)
			after = append(after, in.ID)
		}
		p.Held = []store.HeldTask{{Task: store.TaskInput{ID: id + ".3", Type: "t", Queue: "q", NewID: newID}, After: after}}
		return p
	}
	for _, c := range []struct {
		newID bool
		want  int64 // the flow's own key, then the ids unless NewID
	}{{true, 1}, {false, 2}} {
		before := reads.Load()
		id := fmt.Sprintf("f-%v", c.newID)
		if err := s.EnqueueFlow(t.Context(), flow(id, c.newID)); err != nil {
			t.Fatalf("EnqueueFlow(NewID %v): %v", c.newID, err)
		}
		if n := reads.Load() - before; n != c.want {
			t.Errorf("EnqueueFlow(NewID %v) read the engine %d times; want %d", c.newID, n, c.want)
		}
	}
}

// TestMetaListWaitsOnlyForMeta: MetaList waits for the meta writes queued
// before it (a MetaPut whose commit is held), not for a commit of other
// writes (an enqueue's, held): it returns while that commit is held, with
// the meta records committed before.
func TestMetaListWaitsOnlyForMeta(t *testing.T) {
	t.Parallel()
	s, g, _ := gatedStore(t)
	ctx := context.Background()
	list := func() <-chan []store.MetaItem {
		out := make(chan []store.MetaItem, 1)
		go func() {
			r, err := s.MetaList(ctx, store.MetaListParams{Namespace: durableNS, Prefix: "k"})
			if err != nil {
				r.Items = []store.MetaItem{{Key: "error: " + err.Error()}}
			}
			out <- r.Items
		}()
		return out
	}
	if _, err := s.MetaPut(ctx, store.MetaPutParams{Namespace: durableNS, Key: "k1", Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}

	g.hold(t, s)
	enq := inCommit(t, g, func() error {
		_, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: durableNS, Tasks: []store.TaskInput{{ID: "a", Type: "t", Queue: "q"}}})
		return err
	})
	select {
	case items := <-list():
		if len(items) != 1 || items[0].Key != "k1" || string(items[0].Value) != "1" {
			t.Errorf("MetaList during an enqueue's commit: %+v; want k1=1", items)
		}
	case <-time.After(10 * time.Second):
		t.Error("MetaList waited for the commit of an enqueue")
	}
	g.release <- nil
	if err := <-enq; err != nil {
		t.Fatal(err)
	}

	g.hold(t, s)
	put := inCommit(t, g, func() error {
		_, err := s.MetaPut(ctx, store.MetaPutParams{Namespace: durableNS, Key: "k2", Value: []byte("2")})
		return err
	})
	listed := list()
	select {
	case items := <-listed:
		t.Fatalf("MetaList returned %+v while a MetaPut queued before it was not committed", items)
	case <-time.After(20 * time.Millisecond):
	}
	g.release <- nil
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if items := <-listed; len(items) != 2 || items[1].Key != "k2" {
		t.Errorf("MetaList after the MetaPut's commit: %+v; want k1 and k2", items)
	}
}
