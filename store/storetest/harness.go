package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kilnhq/kiln/store"
)

// Harness opens stores for the suite.
type Harness struct {
	// New opens a store over fresh, empty data using clock, and returns it
	// with a function that closes it and opens it again over the same data
	// (reopen is nil when the store is not durable). The store must use the
	// default store.Limits. The harness registers cleanup with t for whatever
	// it opened, including the stores that reopen returns; that cleanup may
	// find a store the test already closed.
	New func(t testing.TB, clock store.Clock) (s store.Store, reopen func() store.Store)
}

// Epoch is the time at which every test's FakeClock starts.
var Epoch = time.Date(2031, time.March, 14, 15, 9, 26, 0, time.UTC)

// waitLimit bounds every wait for something that should happen promptly; it
// is a guard against hanging tests, never a measurement.
const waitLimit = 30 * time.Second

// runToken makes names unique across processes that share a backend.
var runToken = func() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}()

var nameSeq atomic.Uint64

// newName returns a name that no other call in any process returns: prefix,
// a random token of this run, and a sequence number.
func newName(prefix string) string {
	return fmt.Sprintf("%s-%s-%d", prefix, runToken, nameSeq.Add(1))
}

// newID returns a unique task id.
func newID() string { return newName("task") }

// cmpOpts compare tasks: times by instant, nil and empty byte slices alike.
var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
	cmpopts.EquateEmpty(),
}

// fixture is one test's store, clock and namespace, with helpers that fail
// the test when the store itself errors.
type fixture struct {
	t      testing.TB
	s      store.Store
	reopen func() store.Store
	clock  *FakeClock
	ns     string
}

// setup opens a fresh store on a fresh fake clock for t.
func (h Harness) setup(t testing.TB) *fixture {
	t.Helper()
	clock := NewFakeClock(Epoch)
	s, reopen := h.New(t, clock)
	if s == nil {
		t.Fatal("Harness.New returned a nil store")
	}
	return &fixture{t: t, s: s, reopen: reopen, clock: clock, ns: newName("ns")}
}

// in returns a fresh session on the same store and clock in namespace ns,
// for a subtest t.
func (f *fixture) in(t testing.TB, ns string) *fixture {
	t.Helper()
	g := *f
	g.t, g.ns = t, ns
	return &g
}

// ctx is the test's context, done when the test ends.
func (f *fixture) ctx() context.Context { return f.t.Context() }

// now is the store's current time.
func (f *fixture) now() time.Time { return f.clock.Now() }

// input returns a valid task input with a unique id.
func input(typ, queue string) store.TaskInput {
	return store.TaskInput{ID: newID(), Type: typ, Queue: queue}
}

// enqueue enqueues ins and returns the items, failing the test if the store
// errors or the item count is wrong.
func (f *fixture) enqueue(ins ...store.TaskInput) []store.EnqueueItem {
	f.t.Helper()
	res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: ins})
	if err != nil {
		f.t.Fatalf("Enqueue(%d tasks): %v", len(ins), err)
	}
	if got, want := len(res.Items), len(ins); got != want {
		f.t.Fatalf("Enqueue: got %d items, want %d", got, want)
	}
	return res.Items
}

// add enqueues ins, requires every item to succeed, and returns the ids.
func (f *fixture) add(ins ...store.TaskInput) []string {
	f.t.Helper()
	items := f.enqueue(ins...)
	ids := make([]string, 0, len(items))
	for i, in := range ins {
		it := items[i]
		if it.Err != nil {
			f.t.Fatalf("Enqueue item %d (%s): %v", i, in.ID, it.Err)
		}
		if it.ID != in.ID {
			f.t.Fatalf("Enqueue item %d: got ID %q, want %q", i, it.ID, in.ID)
		}
		ids = append(ids, it.ID)
	}
	return ids
}

// addN enqueues n tasks of type typ into queue in one batch and returns
// their ids in order.
func (f *fixture) addN(n int, typ, queue string) []string {
	f.t.Helper()
	ins := make([]store.TaskInput, n)
	for i := range ins {
		ins[i] = input(typ, queue)
	}
	return f.add(ins...)
}

// lease calls Lease with p in the fixture's namespace. Zero Max means 1 and
// zero Duration one minute.
func (f *fixture) lease(p store.LeaseParams) []*store.Task {
	f.t.Helper()
	p.Namespace = f.ns
	if p.Max == 0 {
		p.Max = 1
	}
	if p.Duration == 0 {
		p.Duration = time.Minute
	}
	res, err := f.s.Lease(f.ctx(), p)
	if err != nil {
		f.t.Fatalf("Lease(%v): %v", p.Queues, err)
	}
	if len(res.Tasks) > p.Max {
		f.t.Fatalf("Lease(Max %d): got %d tasks", p.Max, len(res.Tasks))
	}
	for _, tk := range res.Tasks {
		if tk == nil {
			f.t.Fatal("Lease returned a nil task")
		}
	}
	return res.Tasks
}

// leaseOne leases exactly one task from queues, or fails the test.
func (f *fixture) leaseOne(queues ...string) *store.Task {
	f.t.Helper()
	got := f.lease(store.LeaseParams{Queues: queues})
	if len(got) != 1 {
		f.t.Fatalf("Lease(%v): got %d tasks, want 1", queues, len(got))
	}
	return got[0]
}

// leaseNone requires that nothing can be leased from queues.
func (f *fixture) leaseNone(queues ...string) {
	f.t.Helper()
	if got := f.lease(store.LeaseParams{Queues: queues, Max: 100}); len(got) != 0 {
		f.t.Fatalf("Lease(%v): got %d tasks (first %s), want none", queues, len(got), got[0].ID)
	}
}

// report reports outcomes and returns the per-outcome errors.
func (f *fixture) report(os ...store.Outcome) []error {
	f.t.Helper()
	res, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: os})
	if err != nil {
		f.t.Fatalf("Report: %v", err)
	}
	if got, want := len(res.Errs), len(os); got != want {
		f.t.Fatalf("Report: got %d errors, want %d", got, want)
	}
	return res.Errs
}

// mustReport reports outcomes that must all be accepted.
func (f *fixture) mustReport(os ...store.Outcome) {
	f.t.Helper()
	errs := f.report(os...)
	for i, o := range os {
		if errs[i] != nil {
			f.t.Fatalf("Report(%s %s): %v", o.Kind, o.ID, errs[i])
		}
	}
}

// extend renews leases for d and returns the items.
func (f *fixture) extend(d time.Duration, ls ...store.ExtendLease) []store.ExtendItem {
	f.t.Helper()
	res, err := f.s.Extend(f.ctx(), store.ExtendParams{Namespace: f.ns, Leases: ls, Duration: d})
	if err != nil {
		f.t.Fatalf("Extend: %v", err)
	}
	if got, want := len(res.Items), len(ls); got != want {
		f.t.Fatalf("Extend: got %d items, want %d", got, want)
	}
	return res.Items
}

// gets returns the tasks with ids (nil where missing).
func (f *fixture) gets(ids ...string) []*store.Task {
	f.t.Helper()
	res, err := f.s.Get(f.ctx(), store.GetParams{Namespace: f.ns, IDs: ids})
	if err != nil {
		f.t.Fatalf("Get: %v", err)
	}
	if got, want := len(res.Tasks), len(ids); got != want {
		f.t.Fatalf("Get: got %d tasks, want %d", got, want)
	}
	return res.Tasks
}

// get returns the task with id, or nil.
func (f *fixture) get(id string) *store.Task {
	f.t.Helper()
	return f.gets(id)[0]
}

// mustGet returns the task with id, failing the test when it is missing.
func (f *fixture) mustGet(id string) *store.Task {
	f.t.Helper()
	tk := f.get(id)
	if tk == nil {
		f.t.Fatalf("Get(%s): not found", id)
	}
	return tk
}

// wantState requires the task with id to be in state want.
func (f *fixture) wantState(id string, want store.State) *store.Task {
	f.t.Helper()
	tk := f.mustGet(id)
	if tk.State != want {
		f.t.Fatalf("Get(%s).State = %s, want %s", id, tk.State, want)
	}
	return tk
}

// sweep runs one Sweep.
func (f *fixture) sweep() store.SweepResult {
	f.t.Helper()
	res, err := f.s.Sweep(f.ctx(), store.SweepParams{})
	if err != nil {
		f.t.Fatalf("Sweep: %v", err)
	}
	return res
}

// admin runs an admin call and returns its items.
func (f *fixture) admin(name string, fn func(context.Context, store.IDsParams) (store.AdminResult, error), ids ...string) []store.AdminItem {
	f.t.Helper()
	res, err := fn(f.ctx(), store.IDsParams{Namespace: f.ns, IDs: ids})
	if err != nil {
		f.t.Fatalf("%s: %v", name, err)
	}
	if got, want := len(res.Items), len(ids); got != want {
		f.t.Fatalf("%s: got %d items, want %d", name, got, want)
	}
	return res.Items
}

func (f *fixture) cancel(ids ...string) []store.AdminItem {
	f.t.Helper()
	return f.admin("Cancel", f.s.Cancel, ids...)
}

func (f *fixture) retry(ids ...string) []store.AdminItem {
	f.t.Helper()
	return f.admin("Retry", f.s.Retry, ids...)
}

func (f *fixture) del(ids ...string) []store.AdminItem {
	f.t.Helper()
	return f.admin("Delete", f.s.Delete, ids...)
}

// pause pauses or resumes queue.
func (f *fixture) pause(queue string, paused bool) {
	f.t.Helper()
	if err := f.s.SetQueuePaused(f.ctx(), store.QueuePauseParams{Namespace: f.ns, Queue: queue, Paused: paused}); err != nil {
		f.t.Fatalf("SetQueuePaused(%s, %v): %v", queue, paused, err)
	}
}

// list returns one page.
func (f *fixture) list(p store.ListParams) store.ListResult {
	f.t.Helper()
	p.Namespace = f.ns
	res, err := f.s.List(f.ctx(), p)
	if err != nil {
		f.t.Fatalf("List: %v", err)
	}
	return res
}

// listAll walks every page of p and returns the tasks.
func (f *fixture) listAll(p store.ListParams) []*store.Task {
	f.t.Helper()
	return listAll(f.ctx(), f.t, f.s, f.ns, p)
}

func listAll(ctx context.Context, t testing.TB, s store.Store, ns string, p store.ListParams) []*store.Task {
	t.Helper()
	p.Namespace = ns
	var all []*store.Task
	for page := 0; ; page++ {
		if page > 100000 {
			t.Fatal("List: cursor never ends")
		}
		res, err := s.List(ctx, p)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		all = append(all, res.Tasks...)
		if res.NextCursor == "" {
			return all
		}
		if res.NextCursor == p.Cursor {
			t.Fatalf("List: NextCursor %q repeats the cursor", res.NextCursor)
		}
		p.Cursor = res.NextCursor
	}
}

// stats returns the stats of the namespace.
func (f *fixture) stats(queues ...string) []store.QueueStats {
	f.t.Helper()
	res, err := f.s.Stats(f.ctx(), store.StatsParams{Namespace: f.ns, Queues: queues})
	if err != nil {
		f.t.Fatalf("Stats: %v", err)
	}
	return res.Queues
}

// wantEmpty requires the namespace to hold no task.
func (f *fixture) wantEmpty() {
	f.t.Helper()
	if got := f.listAll(store.ListParams{}); len(got) != 0 {
		f.t.Errorf("List: got %d tasks (first %s), want none", len(got), got[0].ID)
	}
	for _, q := range f.stats() {
		if q.Total() != 0 {
			f.t.Errorf("Stats: queue %s has %d tasks, want none", q.Queue, q.Total())
		}
	}
}

// check runs CheckInvariants on the fixture's namespace.
func (f *fixture) check() {
	f.t.Helper()
	CheckInvariants(f.t, f.s, f.ns)
}

// ids returns the ids of tasks.
func ids(tasks []*store.Task) []string {
	out := make([]string, len(tasks))
	for i, tk := range tasks {
		out[i] = tk.ID
	}
	return out
}

// sorted returns a sorted copy of s.
func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// makeTask puts a new task made from in into state st and returns it as Get
// shows it (as Lease returned it for StateActive). Each task gets a type of
// its own unless in names one, so leasing it never takes another task.
// Scheduled and retry tasks are due one hour after the call.
func (f *fixture) makeTask(st store.State, in store.TaskInput) *store.Task {
	f.t.Helper()
	if in.ID == "" {
		in.ID = newID()
	}
	if in.Type == "" {
		in.Type = newName("type")
	}
	if st == store.StateScheduled {
		in.RunAt = f.now().Add(time.Hour)
	}
	f.add(in)
	var leased *store.Task
	if st == store.StateActive || st == store.StateRetry || st.Terminal() && st != store.StateCancelled {
		queue := in.Queue
		if queue == "" {
			queue = store.DefaultQueue
		}
		got := f.lease(store.LeaseParams{Queues: []string{queue}, Types: []string{in.Type}, WorkerID: "w1"})
		if len(got) != 1 || got[0].ID != in.ID {
			f.t.Fatalf("makeTask(%s): Lease got %v, want [%s]", st, ids(got), in.ID)
		}
		leased = got[0]
	}
	switch st {
	case store.StateScheduled, store.StatePending:
	case store.StateActive:
		return leased
	case store.StateRetry:
		f.mustReport(store.Outcome{ID: in.ID, LeaseID: leased.LeaseID, Kind: store.OutcomeRetry, Error: "boom", RetryAt: f.now().Add(time.Hour)})
	case store.StateSucceeded:
		f.mustReport(store.Outcome{ID: in.ID, LeaseID: leased.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("ok")})
	case store.StateDead:
		f.mustReport(store.Outcome{ID: in.ID, LeaseID: leased.LeaseID, Kind: store.OutcomeDead, Error: "fatal"})
	case store.StateCancelled:
		if it := f.cancel(in.ID)[0]; it.Err != nil {
			f.t.Fatalf("makeTask(cancelled): Cancel: %v", it.Err)
		}
	default:
		f.t.Fatalf("makeTask: bad state %v", st)
	}
	return f.wantState(in.ID, st)
}

// Run runs the whole conformance suite against the stores h opens. Subtests
// run in parallel, each on a fresh store.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storetest: Harness.New is nil")
	}
	t.Run("Transitions", func(t *testing.T) { testTransitions(t, h) })
	t.Run("Enqueue", func(t *testing.T) { testEnqueue(t, h) })
	t.Run("Unique", func(t *testing.T) { testUnique(t, h) })
	t.Run("UniqueUntilSuccess", func(t *testing.T) { testUniqueUntilSuccess(t, h) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, h) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, h) })
	t.Run("Lease", func(t *testing.T) { testLease(t, h) })
	t.Run("LeaseExpiry", func(t *testing.T) { testLeaseExpiry(t, h) })
	t.Run("Extend", func(t *testing.T) { testExtend(t, h) })
	t.Run("Priority", func(t *testing.T) { testPriority(t, h) })
	t.Run("Pause", func(t *testing.T) { testPause(t, h) })
	t.Run("Delayed", func(t *testing.T) { testDelayed(t, h) })
	t.Run("Wait", func(t *testing.T) { testWait(t, h) })
	t.Run("WaitCancels", func(t *testing.T) { testWaitCancels(t, h) })
	t.Run("Concurrency", func(t *testing.T) { testConcurrency(t, h) })
	t.Run("List", func(t *testing.T) { testList(t, h) })
	t.Run("ListBounded", func(t *testing.T) { testListBounded(t, h) })
	t.Run("GetOutcomes", func(t *testing.T) { testGetOutcomes(t, h) })
	t.Run("Stats", func(t *testing.T) { testStats(t, h) })
	t.Run("StatsBatches", func(t *testing.T) { testStatsBatches(t, h) })
	t.Run("Namespaces", func(t *testing.T) { testNamespaces(t, h) })
	t.Run("Retention", func(t *testing.T) { testRetention(t, h) })
	t.Run("Durability", func(t *testing.T) { testDurability(t, h) })
	t.Run("Meta", func(t *testing.T) { testMeta(t, h) })
	t.Run("MetaCAS", func(t *testing.T) { testMetaCAS(t, h) })
	t.Run("Close", func(t *testing.T) { testClose(t, h) })
	t.Run("Limits", func(t *testing.T) { testLimits(t, h) })
	t.Run("Races", func(t *testing.T) { testRaces(t, h) })
	t.Run("Random", func(t *testing.T) { testRandom(t, h) })
	t.Run("Flows", func(t *testing.T) { testFlows(t, h) })
	t.Run("Changes", func(t *testing.T) { testChanges(t, h) })
	t.Run("ErrorHistory", func(t *testing.T) { testErrorHistory(t, h) })
}
