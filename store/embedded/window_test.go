package embedded

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// The conformance suite with windows of two tasks: every lease that goes
// past a window reads the disk.
func TestConformanceSmallWindow(t *testing.T) {
	t.Parallel()
	storetest.Run(t, storetest.Harness{New: func(t testing.TB, clock store.Clock) (store.Store, func() store.Store) {
		t.Helper()
		dir := t.TempDir()
		cfg := &Config{Clock: clock, window: 2}
		cur := mustOpen(t, dir, cfg)
		t.Cleanup(func() { _ = cur.Close() })
		return cur, func() store.Store {
			if err := cur.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			cur = mustOpen(t, dir, cfg)
			return cur
		}
	}})
}

// memTasks counts the tasks of namespace ns held in memory.
func memTasks(s *Store, ns string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nss[ns]; n != nil {
		return len(n.tasks)
	}
	return 0
}

// model is the pending tasks a test expects, to check lease order.
type model struct {
	pending map[string]modelTask
}

type modelTask struct {
	prio  int
	runAt time.Time
	n     int // enqueue order
}

func (m *model) first() string {
	best := ""
	var b modelTask
	for id, t := range m.pending {
		if best == "" || t.prio > b.prio || (t.prio == b.prio && (t.runAt.Before(b.runAt) || (t.runAt.Equal(b.runAt) && t.n < b.n))) {
			best, b = id, t
		}
	}
	return best
}

// TestWindowOrderAndBound enqueues many more pending tasks than the window
// holds, with mixed priorities and run times, and more (of higher priority
// too) while they are leased: memory never holds more than the windows
// allow, and every task is leased once, in lease order (priority, RunAt,
// enqueue order), across the window's edge.
func TestWindowOrderAndBound(t *testing.T) {
	t.Parallel()
	const w = 16
	clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s := mustOpen(t, t.TempDir(), &Config{Clock: clock, window: w, ReserveBytes: -1})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	m := &model{pending: make(map[string]modelTask)}
	n := 0
	enqueue := func(k int, prio func() int) {
		var in []store.TaskInput
		for range k {
			id := fmt.Sprintf("t%05d", n)
			p := prio()
			at := clock.Now().Add(-time.Duration(rng.IntN(1000)) * time.Second).Round(0).UTC()
			in = append(in, store.TaskInput{ID: id, Type: "x", Priority: p, RunAt: at})
			m.pending[id] = modelTask{prio: p, runAt: at, n: n}
			n++
		}
		res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "w", Tasks: in})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range res.Items {
			if it.Err != nil {
				t.Fatal(it.Err)
			}
		}
	}
	bound := 2*w + 1 // the window and its slack, and the task being leased
	for range 20 {
		enqueue(50, func() int { return rng.IntN(3) })
		if got := memTasks(s, "w"); got > bound {
			t.Fatalf("%d tasks in memory with %d queued; want at most %d", got, len(m.pending), bound)
		}
	}
	leased := 0
	for len(m.pending) > 0 {
		if leased%37 == 5 {
			// Newcomers of every priority, the highest among them.
			enqueue(7, func() int { return rng.IntN(store.MaxPriority + 1) })
		}
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "w", Queues: []string{store.DefaultQueue}, WorkerID: "w1", Max: 1, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) != 1 {
			t.Fatalf("lease %d: got %d tasks with %d pending", leased, len(res.Tasks), len(m.pending))
		}
		got := res.Tasks[0]
		if want := m.first(); got.ID != want {
			t.Fatalf("lease %d: got %s (priority %d, run at %s), want %s (%+v)", leased, got.ID, got.Priority, got.RunAt, want, m.pending[want])
		}
		delete(m.pending, got.ID)
		leased++
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "w", Outcomes: []store.Outcome{{ID: got.ID, LeaseID: got.LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
			t.Fatal(err)
		}
		if got := memTasks(s, "w"); got > bound {
			t.Fatalf("%d tasks in memory with %d queued; want at most %d", got, len(m.pending), bound)
		}
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: "w", Queues: []string{store.DefaultQueue}, WorkerID: "w1", Max: 10, Duration: time.Minute})
	if err != nil || len(res.Tasks) != 0 {
		t.Fatalf("after all: %d tasks, %v", len(res.Tasks), err)
	}
	// Finished tasks left memory once durable, the heap of leases too.
	if got := memTasks(s, "w"); got != 0 {
		t.Fatalf("%d finished tasks still in memory", got)
	}
	s.mu.Lock()
	leases := s.leases.Len()
	s.mu.Unlock()
	if leases != 0 {
		t.Fatalf("%d finished tasks still in the heap of leases", leases)
	}
	st, err := s.Stats(ctx, store.StatsParams{Namespace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Queues[0].Counts; c[store.StateSucceeded] != int64(n) || c[store.StatePending] != 0 {
		t.Fatalf("stats %v, want %d succeeded", c, n)
	}
}

// TestRestartLoadsWindow: after a restart with a backlog far larger than
// the window, memory holds the window only, the counts are right, and the
// tasks are leased in order; Get and Cancel reach the tasks on disk.
func TestRestartLoadsWindow(t *testing.T) {
	t.Parallel()
	const w, total = 8, 3000
	dir := t.TempDir()
	cfg := &Config{window: w, ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	for i := 0; i < total; i += store.MaxBatch {
		var in []store.TaskInput
		for j := i; j < min(total, i+store.MaxBatch); j++ {
			in = append(in, store.TaskInput{ID: fmt.Sprintf("r%05d", j), Type: fmt.Sprintf("t%d", j%2), Payload: []byte(fmt.Sprint(j))})
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "r", Tasks: in}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	if got := memTasks(s, "r"); got > 2*w {
		t.Fatalf("Open loaded %d tasks; want the windows only (%d)", got, 2*w)
	}
	st, err := s.Stats(ctx, store.StatsParams{Namespace: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Queues[0].Counts; c[store.StatePending] != total {
		t.Fatalf("pending %d, want %d", c[store.StatePending], total)
	}
	// A task far behind the window: Get reads it, Cancel changes it.
	g, err := s.Get(ctx, store.GetParams{Namespace: "r", IDs: []string{"r02000"}})
	if err != nil || g.Tasks[0] == nil || string(g.Tasks[0].Payload) != "2000" || g.Tasks[0].State != store.StatePending {
		t.Fatalf("Get of a task on disk: %+v, %v", g.Tasks, err)
	}
	c, err := s.Cancel(ctx, store.IDsParams{Namespace: "r", IDs: []string{"r02000"}})
	if err != nil || c.Items[0].Err != nil || c.Items[0].State != store.StateCancelled {
		t.Fatalf("Cancel of a task on disk: %+v, %v", c.Items, err)
	}
	d, err := s.Delete(ctx, store.IDsParams{Namespace: "r", IDs: []string{"r02001"}})
	if err != nil || d.Items[0].Err != nil {
		t.Fatalf("Delete of a task on disk: %+v, %v", d.Items, err)
	}
	var ids []string
	for {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "r", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 100, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			break
		}
		var out []store.Outcome
		for _, task := range res.Tasks {
			ids = append(ids, task.ID)
			out = append(out, store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded})
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "r", Outcomes: out}); err != nil {
			t.Fatal(err)
		}
		if got := memTasks(s, "r"); got > 2*2*w+100 {
			t.Fatalf("%d tasks in memory while leasing", got)
		}
	}
	if len(ids) != total-2 {
		t.Fatalf("leased %d tasks, want %d", len(ids), total-2)
	}
	// Same priority and enqueue time: enqueue order.
	if !slices.IsSorted(ids) {
		t.Fatal("tasks not leased in enqueue order")
	}
	if slices.Contains(ids, "r02000") || slices.Contains(ids, "r02001") {
		t.Fatal("a cancelled or deleted task was leased")
	}
	rep, err := checkOpen(s)
	if err != nil || !rep.OK() {
		t.Fatalf("Check: %v %v", rep, err)
	}
}

// checkOpen runs Check's reading of the store's engine.
func checkOpen(s *Store) (*Report, error) {
	if err := s.barrier().wait(); err != nil {
		return nil, err
	}
	rep := newReport()
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	readAll(s.d.eng, rep, nil)
	return rep, nil
}

// TestSweepExpiryIndex: finished tasks leave memory once durable, and
// Sweep deletes them from the disk by the expiry index once their
// retention ends, after a restart too.
func TestSweepExpiryIndex(t *testing.T) {
	t.Parallel()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	dir := t.TempDir()
	cfg := &Config{Clock: clock, window: 4, ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	var in []store.TaskInput
	for i := range 60 {
		ret := time.Hour
		if i%2 == 0 {
			ret = 2 * time.Hour
		}
		in = append(in, store.TaskInput{ID: fmt.Sprintf("s%03d", i), Type: "x", Retention: ret})
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "s", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	for {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "s", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 7, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			break
		}
		var out []store.Outcome
		for _, task := range res.Tasks {
			out = append(out, store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded})
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "s", Outcomes: out}); err != nil {
			t.Fatal(err)
		}
	}
	if got := memTasks(s, "s"); got != 0 {
		t.Fatalf("%d finished tasks in memory", got)
	}
	countIndex := func() int {
		n := 0
		s.d.mu.RLock()
		defer s.d.mu.RUnlock()
		_ = s.d.eng.scan(nsPrefix(kExpiry, "s"), nil, false, func(_, _ []byte) bool { n++; return true })
		return n
	}
	if got := countIndex(); got != 60 {
		t.Fatalf("expiry index holds %d keys, want 60", got)
	}
	clock.Advance(90 * time.Minute)
	r, err := s.Sweep(ctx, store.SweepParams{})
	if err != nil || r.Deleted != 30 {
		t.Fatalf("first sweep deleted %d (%v), want 30", r.Deleted, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	clock.Advance(time.Hour)
	r, err = s.Sweep(ctx, store.SweepParams{Limit: 20})
	if err != nil || r.Deleted != 20 {
		t.Fatalf("second sweep deleted %d (%v), want 20", r.Deleted, err)
	}
	r, err = s.Sweep(ctx, store.SweepParams{})
	if err != nil || r.Deleted != 10 {
		t.Fatalf("third sweep deleted %d (%v), want 10", r.Deleted, err)
	}
	if got := countIndex(); got != 0 {
		t.Fatalf("expiry index holds %d keys after the sweeps", got)
	}
	st, err := s.Stats(ctx, store.StatsParams{Namespace: "s"})
	if err != nil || len(st.Queues) != 0 {
		t.Fatalf("stats after the sweeps: %+v, %v", st.Queues, err)
	}
}

// TestMigrateOldFolder: a data folder written before the indexes (no
// index keys, counts or version) gets them at Open, once.
func TestMigrateOldFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &Config{window: 4, ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	var in []store.TaskInput
	for i := range 50 {
		in = append(in, store.TaskInput{ID: fmt.Sprintf("m%03d", i), Type: "x", Priority: i % 3})
	}
	in = append(in, store.TaskInput{ID: "later", Type: "x", RunAt: time.Now().Add(time.Hour)})
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "m", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: "m", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 5, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Outcome
	for _, task := range res.Tasks[:3] {
		out = append(out, store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded})
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "m", Outcomes: out}); err != nil {
		t.Fatal(err)
	}
	// Strip what the old format did not have.
	if err := s.barrier().wait(); err != nil {
		t.Fatal(err)
	}
	var strip []op
	s.d.mu.RLock()
	for _, kind := range append([]byte{kCounts, kVersion}, indexKinds...) {
		_ = s.d.eng.scan([]byte{kind}, nil, false, func(k, _ []byte) bool {
			strip = append(strip, op{key: append([]byte(nil), k...)})
			return true
		})
	}
	s.d.mu.RUnlock()
	if len(strip) < 52 {
		t.Fatalf("only %d index keys to strip", len(strip))
	}
	if err := s.d.eng.apply(strip, true); err != nil {
		t.Fatal(err)
	}
	// The store is closed without its committer writing the counts again.
	s.mu.Lock()
	for _, q := range s.nss["m"].queues {
		q.saved = q.counts
	}
	s.mu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(dir); err != nil || rep.OK() {
		t.Fatalf("Check of the stripped folder finds nothing: %v %v", rep, err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	st, err := s.Stats(ctx, store.StatsParams{Namespace: "m"})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Queues[0].Counts
	if c[store.StatePending] != 45 || c[store.StateActive] != 2 || c[store.StateSucceeded] != 3 || c[store.StateScheduled] != 1 {
		t.Fatalf("counts after migration %v", c)
	}
	if got := memTasks(s, "m"); got > 2*4+3 {
		t.Fatalf("%d tasks in memory after migration", got)
	}
	rep, err := checkOpen(s)
	if err != nil || !rep.OK() {
		t.Fatalf("Check after migration: %v %v", rep, err)
	}
	n := 0
	for {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "m", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 10, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			break
		}
		n += len(res.Tasks)
	}
	if n != 45 {
		t.Fatalf("leased %d after migration, want 45", n)
	}
}

// TestDelayedWindow: many scheduled tasks, far more than the window, stay
// on disk until they are nearly due; they are promoted and leased in due
// order, after a restart too.
func TestDelayedWindow(t *testing.T) {
	t.Parallel()
	const w, total = 8, 500
	clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	dir := t.TempDir()
	cfg := &Config{Clock: clock, window: w, ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(3, 4))
	due := make(map[string]time.Time)
	for range 10 {
		var in []store.TaskInput
		for range total / 10 {
			id := fmt.Sprintf("d%04d", len(due))
			at := clock.Now().Add(time.Duration(1+rng.IntN(3600)) * time.Second).Round(0).UTC()
			in = append(in, store.TaskInput{ID: id, Type: "x", RunAt: at})
			due[id] = at
		}
		res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "d", Tasks: in})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range res.Items {
			if it.Err != nil {
				t.Fatal(it.Err)
			}
		}
		if got := memTasks(s, "d"); got > 2*w {
			t.Fatalf("%d scheduled tasks in memory; want at most %d", got, 2*w)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	if got := memTasks(s, "d"); got > 2*w {
		t.Fatalf("Open loaded %d scheduled tasks; want at most %d", got, 2*w)
	}
	var last time.Time
	leased := 0
	for leased < total {
		clock.Advance(7 * time.Second)
		for {
			res, err := s.Lease(ctx, store.LeaseParams{Namespace: "d", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 3, Duration: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Tasks) == 0 {
				break
			}
			var out []store.Outcome
			for _, task := range res.Tasks {
				at, ok := due[task.ID]
				if !ok {
					t.Fatalf("task %s leased twice", task.ID)
				}
				if at.After(clock.Now()) {
					t.Fatalf("task %s leased before it is due", task.ID)
				}
				delete(due, task.ID)
				if at.Before(last.Add(-7 * time.Second)) {
					t.Fatalf("task %s (due %s) leased after one due %s", task.ID, at, last)
				}
				if at.After(last) {
					last = at
				}
				leased++
				out = append(out, store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded})
			}
			if _, err := s.Report(ctx, store.ReportParams{Namespace: "d", Outcomes: out}); err != nil {
				t.Fatal(err)
			}
			if got := memTasks(s, "d"); got > 4*w+3 {
				t.Fatalf("%d tasks in memory while leasing", got)
			}
		}
		if clock.Now().After(time.Date(2026, 1, 2, 5, 0, 0, 0, time.UTC)) {
			t.Fatalf("%d tasks never leased", len(due))
		}
	}
	rep, err := checkOpen(s)
	if err != nil || !rep.OK() {
		t.Fatalf("Check: %v %v", rep, err)
	}
}

// TestRecycledEntries: the entries of a backlog's new tasks, dropped from
// memory once durable, are filled again by the refills that read the
// backlog back; every task is leased once, with its own id, type, payload
// and priority, whatever entry it came back in.
func TestRecycledEntries(t *testing.T) {
	t.Parallel()
	const w, n = 8, 400
	s := mustOpen(t, t.TempDir(), &Config{window: w, ReserveBytes: -1})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	for b := range n / 50 {
		in := make([]store.TaskInput, 50)
		for i := range in {
			k := b*50 + i
			in[i] = store.TaskInput{ID: fmt.Sprintf("t%04d", k), Type: fmt.Sprintf("x%d", k%2), Priority: k % 3, Payload: fmt.Appendf(nil, "p%04d", k)}
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "w", Tasks: in}); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	free := len(s.freeEntries)
	s.mu.Unlock()
	if free == 0 {
		t.Fatalf("no entry kept for reuse after a backlog of %d with a window of %d", n, w)
	}
	seen := make(map[string]bool)
	for len(seen) < n {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "w", Queues: []string{store.DefaultQueue}, WorkerID: "w1", Max: 5, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			t.Fatalf("Lease found nothing after %d of %d", len(seen), n)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, task := range res.Tasks {
			var k int
			if _, err := fmt.Sscanf(task.ID, "t%04d", &k); err != nil {
				t.Fatal(err)
			}
			if seen[task.ID] || string(task.Payload) != fmt.Sprintf("p%04d", k) || task.Type != fmt.Sprintf("x%d", k%2) || task.Priority != k%3 || task.State != store.StateActive {
				t.Fatalf("leased %+v (seen before: %v)", task, seen[task.ID])
			}
			seen[task.ID] = true
			outs[i] = store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "w", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	if got := memTasks(s, "w"); got != 0 {
		t.Fatalf("%d tasks still in memory", got)
	}
}
