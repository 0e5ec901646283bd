package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

// listModel is what the suite knows about a task it listed.
type listModel struct {
	id, queue, typ string
	state          store.State
	created        time.Time
	payload        []byte
}

func testList(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	const n = 30
	var model []listModel
	for i := range n {
		in := input("B", "q2")
		if i%2 == 0 {
			in.Queue = "q1"
		}
		if i%3 == 0 {
			in.Type = "A"
		}
		in.Payload = fmt.Appendf(nil, "p%d", i)
		st := store.StatePending
		if i%5 == 4 {
			in.RunAt = f.now().Add(time.Hour)
			st = store.StateScheduled
		}
		f.add(in)
		if i%7 == 6 {
			if it := f.cancel(in.ID)[0]; it.Err != nil {
				t.Fatalf("Cancel: %v", it.Err)
			}
			st = store.StateCancelled
		}
		model = append(model, listModel{in.ID, in.Queue, in.Type, st, f.now(), in.Payload})
		f.clock.Advance(time.Second)
	}
	// One succeeded task with a result, last.
	done := f.makeTask(store.StateSucceeded, store.TaskInput{Type: "R", Queue: "q2", Payload: []byte("pR")})
	model = append(model, listModel{done.ID, "q2", "R", store.StateSucceeded, done.CreatedAt, done.Payload})

	filter := func(keep func(m listModel) bool) []string {
		var out []string
		for _, m := range model {
			if keep(m) {
				out = append(out, m.id)
			}
		}
		return out
	}
	reversed := func(s []string) []string {
		c := slices.Clone(s)
		slices.Reverse(c)
		return c
	}
	all := filter(func(listModel) bool { return true })
	q1 := filter(func(m listModel) bool { return m.queue == "q1" })

	for _, tc := range []struct {
		name string
		p    store.ListParams
		want []string
	}{
		{"All", store.ListParams{}, all},
		{"Queue", store.ListParams{Queue: "q1"}, q1},
		{"Type", store.ListParams{Type: "A"}, filter(func(m listModel) bool { return m.typ == "A" })},
		{"States", store.ListParams{States: []store.State{store.StateScheduled, store.StateCancelled}},
			filter(func(m listModel) bool { return m.state == store.StateScheduled || m.state == store.StateCancelled })},
		{"QueueTypeState", store.ListParams{Queue: "q2", Type: "B", States: []store.State{store.StatePending}},
			filter(func(m listModel) bool { return m.queue == "q2" && m.typ == "B" && m.state == store.StatePending })},
		{"CreatedAfter", store.ListParams{CreatedAfter: model[9].created}, all[10:]},
		{"CreatedBefore", store.ListParams{CreatedBefore: model[20].created}, all[:20]},
		{"CreatedBetween", store.ListParams{CreatedAfter: model[9].created, CreatedBefore: model[20].created}, all[10:20]},
		{"NoMatch", store.ListParams{Queue: "nope"}, nil},
		{"Newest", store.ListParams{Newest: true}, reversed(all)},
		{"NewestQueue", store.ListParams{Newest: true, Queue: "q1"}, reversed(q1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := f.in(t, f.ns)
			for _, limit := range []int{0, 1, 7, store.MaxListLimit} {
				p := tc.p
				p.Limit = limit
				if got := ids(g.listAll(p)); !cmp.Equal(got, tc.want, cmpOpts...) {
					t.Errorf("List(Limit %d) walked by cursor: got %v, want %v", limit, got, tc.want)
				}
			}
		})
	}

	t.Run("Limit", func(t *testing.T) {
		t.Parallel()
		g := f.in(t, f.ns)
		res := g.list(store.ListParams{Limit: 5})
		if !cmp.Equal(ids(res.Tasks), all[:5]) || res.NextCursor == "" {
			t.Errorf("List(Limit 5): got %v with cursor %q, want %v and a cursor", ids(res.Tasks), res.NextCursor, all[:5])
		}
		res = g.list(store.ListParams{Limit: 5, Cursor: res.NextCursor})
		if !cmp.Equal(ids(res.Tasks), all[5:10]) {
			t.Errorf("List(Limit 5), second page: got %v, want %v", ids(res.Tasks), all[5:10])
		}
	})

	t.Run("WithPayload", func(t *testing.T) {
		t.Parallel()
		g := f.in(t, f.ns)
		for _, tk := range g.listAll(store.ListParams{}) {
			if tk.Payload != nil || tk.Result != nil {
				t.Errorf("List without WithPayload: task %s has payload %q, result %q; want none", tk.ID, tk.Payload, tk.Result)
			}
		}
		got := g.listAll(store.ListParams{WithPayload: true, Limit: 7})
		if len(got) != len(model) {
			t.Fatalf("List(WithPayload): got %d tasks, want %d", len(got), len(model))
		}
		for i, tk := range got {
			if string(tk.Payload) != string(model[i].payload) {
				t.Errorf("List(WithPayload): task %s payload %q, want %q", tk.ID, tk.Payload, model[i].payload)
			}
		}
		if last := got[len(got)-1]; string(last.Result) != "ok" {
			t.Errorf("List(WithPayload): succeeded task result %q, want %q", last.Result, "ok")
		}
	})

	t.Run("ListedEqualsGet", func(t *testing.T) {
		t.Parallel()
		g := f.in(t, f.ns)
		listed := g.listAll(store.ListParams{WithPayload: true})
		if diff := cmp.Diff(g.gets(all...), listed, cmpOpts...); diff != "" {
			t.Errorf("List(WithPayload) differs from Get (-get +list):\n%s", diff)
		}
	})

	t.Run("DefaultLimit", func(t *testing.T) {
		t.Parallel()
		g := h.setup(t)
		g.addN(120, "t", "q")
		res := g.list(store.ListParams{})
		if len(res.Tasks) != 100 || res.NextCursor == "" {
			t.Errorf("List(Limit 0) over 120 tasks: got %d tasks, cursor %q; want 100 and a cursor", len(res.Tasks), res.NextCursor)
		}
	})

	t.Run("CursorWithInserts", func(t *testing.T) {
		t.Parallel()
		g := h.setup(t)
		want := g.addN(20, "t", "q")
		p := store.ListParams{Namespace: g.ns, Limit: 7}
		seen := map[string]int{}
		for page := 0; ; page++ {
			res := g.list(p)
			for _, tk := range res.Tasks {
				seen[tk.ID]++
			}
			if page == 0 {
				g.addN(5, "t", "q")
			}
			if res.NextCursor == "" || page > 100 {
				break
			}
			p.Cursor = res.NextCursor
		}
		for _, id := range want {
			if seen[id] != 1 {
				t.Errorf("cursor walk with inserts: task %s listed %d times, want once", id, seen[id])
			}
		}
		for id, n := range seen {
			if n > 1 {
				t.Errorf("cursor walk with inserts: task %s listed %d times", id, n)
			}
		}
	})
}

// testListBounded checks that one List call examines at most
// store.MaxListScan tasks: over twice that many tasks, a filter that
// matches nothing answers an empty page with a cursor instead of scanning
// everything, and walking the cursors yields exactly the matching tasks, in
// order, from either end. (A store that served this filter from an index
// could end sooner; every store here scans in enqueue order.)
func testListBounded(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	n := 2 * store.MaxListScan
	hits := map[int]bool{3: true, store.MaxListScan - 1: true, store.MaxListScan: true, store.MaxListScan + 7: true, n - 1: true}
	var want []string
	const batch = 5000
	for start := 0; start < n; start += batch {
		ins := make([]store.TaskInput, 0, batch)
		for i := start; i < start+batch && i < n; i++ {
			in := input("miss", "q")
			if hits[i] {
				in.Type = "hit"
				want = append(want, in.ID)
			}
			ins = append(ins, in)
		}
		f.add(ins...)
	}

	// Nothing matches: the first call stops at the bound.
	res := f.list(store.ListParams{Type: "nope", Limit: 10})
	if len(res.Tasks) != 0 || res.NextCursor == "" {
		t.Fatalf("List(Type nope) over %d tasks: %d tasks, cursor %q; want none and a cursor (at most %d tasks examined per call)",
			n, len(res.Tasks), res.NextCursor, store.MaxListScan)
	}
	// Walking on ends, with nothing found, after about n/MaxListScan calls.
	p := store.ListParams{Namespace: f.ns, Type: "nope", Limit: 10, Cursor: res.NextCursor}
	calls := 1
	for p.Cursor != "" {
		if calls > n/store.MaxListScan+1 {
			t.Fatalf("List(Type nope): still a cursor after %d calls over %d tasks", calls, n)
		}
		r := f.list(p)
		calls++
		if len(r.Tasks) != 0 {
			t.Fatalf("List(Type nope) page %d: %d tasks, want none", calls, len(r.Tasks))
		}
		p.Cursor = r.NextCursor
	}

	// A sparse filter: the first page holds only the hits among the first
	// MaxListScan tasks, and a cursor.
	res = f.list(store.ListParams{Type: "hit", Limit: store.MaxListLimit})
	if !cmp.Equal(ids(res.Tasks), want[:2]) || res.NextCursor == "" {
		t.Errorf("List(Type hit) first page: %v with cursor %q; want %v (the hits of the first %d tasks) and a cursor",
			ids(res.Tasks), res.NextCursor, want[:2], store.MaxListScan)
	}
	rev := slices.Clone(want)
	slices.Reverse(rev)
	for _, limit := range []int{1, 3, store.MaxListLimit} {
		if got := ids(f.listAll(store.ListParams{Type: "hit", Limit: limit})); !cmp.Equal(got, want) {
			t.Errorf("List(Type hit, Limit %d) walked by cursor: %v, want %v", limit, got, want)
		}
		if got := ids(f.listAll(store.ListParams{Type: "hit", Limit: limit, Newest: true})); !cmp.Equal(got, rev) {
			t.Errorf("List(Type hit, Limit %d, Newest) walked by cursor: %v, want %v", limit, got, rev)
		}
	}
	// Without a filter every task comes back once, a full page at a time.
	if got := f.listAll(store.ListParams{Limit: store.MaxListLimit}); len(got) != n {
		t.Errorf("List walked by cursor: %d tasks, want %d", len(got), n)
	}
}

// testStats counts a known mix of states per queue.
func testStats(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	if got := f.stats(); len(got) != 0 {
		t.Errorf("Stats of an empty namespace: got %+v, want none", got)
	}
	mix := map[string][]store.State{
		"q1": {store.StatePending, store.StatePending, store.StateScheduled, store.StateActive, store.StateSucceeded},
		"q2": {store.StateRetry, store.StateDead, store.StateCancelled, store.StateActive},
	}
	want := []store.QueueStats{{Queue: "q1"}, {Queue: "q2"}}
	for i, q := range []string{"q1", "q2"} {
		for _, st := range mix[q] {
			f.makeTask(st, store.TaskInput{Queue: q, MaxRetries: 1})
			want[i].Counts[st]++
		}
	}
	if diff := cmp.Diff(want, f.stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[1:], f.stats("q2")); diff != "" {
		t.Errorf("Stats(q2) (-want +got):\n%s", diff)
	}
	f.check()
}

// testStatsBatches checks the counts after calls that move tasks of several
// queues at once, their queues interleaved: one Enqueue (pending and
// scheduled tasks), one Lease and one Report of mixed outcomes.
func testStatsBatches(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	later := f.now().Add(time.Hour)
	var ins []store.TaskInput
	for _, x := range []struct {
		q     string
		runAt time.Time
	}{{"q1", time.Time{}}, {"q1", time.Time{}}, {"q2", time.Time{}}, {"q1", later}, {"q2", time.Time{}}, {"q2", later}, {"q1", time.Time{}}, {"q2", time.Time{}}} {
		in := input("t", x.q)
		in.RunAt, in.MaxRetries = x.runAt, 3
		ins = append(ins, in)
	}
	f.add(ins...)
	// counts returns the stats of queue q with n[k] tasks in state st[k].
	counts := func(q string, st []store.State, n ...int64) store.QueueStats {
		s := store.QueueStats{Queue: q}
		for k := range st {
			s.Counts[st[k]] = n[k]
		}
		return s
	}
	pendSched := []store.State{store.StatePending, store.StateScheduled}
	want := []store.QueueStats{counts("q1", pendSched, 3, 1), counts("q2", pendSched, 3, 1)}
	if diff := cmp.Diff(want, f.stats()); diff != "" {
		t.Errorf("Stats after one Enqueue of both queues (-want +got):\n%s", diff)
	}
	leased := map[string]*store.Task{}
	for _, tk := range f.lease(store.LeaseParams{Queues: []string{"q1", "q2"}, Max: 10}) {
		leased[tk.ID] = tk
	}
	if len(leased) != 6 {
		t.Fatalf("Lease: got %d tasks, want the 6 pending", len(leased))
	}
	out := func(in store.TaskInput, k store.OutcomeKind) store.Outcome {
		tk := leased[in.ID]
		if tk == nil {
			t.Fatalf("task %s (%s) was not leased", in.ID, in.Queue)
		}
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: k, Error: "e"}
		if k == store.OutcomeRetry {
			o.RetryAt = later
		}
		return o
	}
	// Queues q1, q1, q2, q1, q2, q2: successes of one queue in a row, then
	// of the other, with other outcomes between.
	f.mustReport(out(ins[0], store.OutcomeSucceeded), out(ins[1], store.OutcomeSucceeded), out(ins[2], store.OutcomeSucceeded),
		out(ins[6], store.OutcomeDead), out(ins[4], store.OutcomeRetry), out(ins[7], store.OutcomeSucceeded))
	want = []store.QueueStats{
		counts("q1", []store.State{store.StateSucceeded, store.StateDead, store.StateScheduled}, 2, 1, 1),
		counts("q2", []store.State{store.StateSucceeded, store.StateRetry, store.StateScheduled}, 2, 1, 1),
	}
	if diff := cmp.Diff(want, f.stats()); diff != "" {
		t.Errorf("Stats after one Report of both queues (-want +got):\n%s", diff)
	}
	f.check()
}

// testNamespaces checks that nothing in one namespace is visible or reachable
// from another.
func testNamespaces(t *testing.T, h Harness) {
	t.Parallel()
	a := h.setup(t)
	b := a.in(t, newName("ns"))

	shared := input("t", "q")
	a.add(shared)
	b.add(shared) // the same id in both
	onlyA := a.makeTask(store.StatePending, store.TaskInput{Queue: "q"})
	activeA := a.makeTask(store.StateActive, store.TaskInput{Queue: "q"})
	key := newName("key")
	uniq := func() store.TaskInput {
		in := input("t", "other")
		in.UniqueKey, in.UniqueTTL = key, time.Hour
		return in
	}
	a.add(uniq())
	b.add(uniq()) // a unique key in A does not block B

	if got := b.get(onlyA.ID); got != nil {
		t.Errorf("Get from B of a task of A: got %+v, want nil", got)
	}
	if got, want := ids(b.listAll(store.ListParams{})), 2; len(got) != want {
		t.Errorf("List of B: got %v, want %d tasks", got, want)
	}
	for _, tc := range []struct {
		name string
		fn   func(...string) []store.AdminItem
	}{{"Cancel", b.cancel}, {"Retry", b.retry}, {"Delete", b.del}} {
		if it := tc.fn(onlyA.ID)[0]; !errors.Is(it.Err, store.ErrNotFound) {
			t.Errorf("%s from B of a task of A: got %v, want %v", tc.name, it.Err, store.ErrNotFound)
		}
	}
	ext := b.extend(time.Minute, store.ExtendLease{LeaseRef: store.LeaseRef{ID: activeA.ID, LeaseID: activeA.LeaseID}})[0]
	if !errors.Is(ext.Err, store.ErrNotFound) && !errors.Is(ext.Err, store.ErrLeaseLost) {
		t.Errorf("Extend from B of a lease of A: got %v, want %v or %v", ext.Err, store.ErrNotFound, store.ErrLeaseLost)
	}
	err := b.report(store.Outcome{ID: activeA.ID, LeaseID: activeA.LeaseID, Kind: store.OutcomeSucceeded})[0]
	if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Report from B of a lease of A: got %v, want %v or %v", err, store.ErrNotFound, store.ErrLeaseLost)
	}
	a.wantState(onlyA.ID, store.StatePending)
	a.wantState(activeA.ID, store.StateActive)

	// Pausing q in A leaves q in B alone; leasing in B never returns A's tasks.
	a.pause("q", true)
	got := b.lease(store.LeaseParams{Queues: []string{"q", "other"}, Max: 100})
	if len(got) != 2 {
		t.Errorf("Lease from B: got %d tasks, want B's 2", len(got))
	}
	for _, tk := range got {
		if tk.Namespace != b.ns {
			t.Errorf("Lease from B: got task %s of namespace %q", tk.ID, tk.Namespace)
		}
	}
	wantB := []store.QueueStats{
		{Queue: "other", Counts: counts(store.StateActive, 1)},
		{Queue: "q", Counts: counts(store.StateActive, 1)},
	}
	if diff := cmp.Diff(wantB, b.stats()); diff != "" {
		t.Errorf("Stats of B (-want +got):\n%s", diff)
	}
	wantA := []store.QueueStats{
		{Queue: "other", Counts: counts(store.StatePending, 1)},
		{Queue: "q", Paused: true, Counts: counts(store.StatePending, 2, store.StateActive, 1)},
	}
	if diff := cmp.Diff(wantA, a.stats()); diff != "" {
		t.Errorf("Stats of A (-want +got):\n%s", diff)
	}
	if got := a.mustGet(shared.ID); got.State != store.StatePending || got.Namespace != a.ns {
		t.Errorf("A's copy of the shared id: got state %s in %q, want pending in %q", got.State, got.Namespace, a.ns)
	}
	a.check()
	b.check()
}

// testRetention checks that Sweep deletes terminal tasks when their retention
// runs out, and nothing else.
func testRetention(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	def := f.makeTask(store.StateSucceeded, store.TaskInput{})
	short := f.makeTask(store.StateDead, store.TaskInput{Retention: time.Hour})
	cancelled := f.makeTask(store.StateCancelled, store.TaskInput{Retention: 2 * time.Hour})
	pending := f.makeTask(store.StatePending, store.TaskInput{})
	scheduled := f.makeTask(store.StateScheduled, store.TaskInput{})
	// A dead task retried is live again: its old expiry must not delete it.
	revived := f.makeTask(store.StateDead, store.TaskInput{Retention: time.Hour})
	if it := f.retry(revived.ID)[0]; it.Err != nil {
		t.Fatalf("Retry: %v", it.Err)
	}
	for _, tc := range []struct {
		tk        *store.Task
		retention time.Duration
	}{{def, store.RetentionDefault}, {short, time.Hour}, {cancelled, 2 * time.Hour}} {
		if want := tc.tk.FinishedAt.Add(tc.retention); !tc.tk.ExpiresAt.Equal(want) {
			t.Errorf("task %s (%s): ExpiresAt = %v, want FinishedAt+%s = %v", tc.tk.ID, tc.tk.State, tc.tk.ExpiresAt, tc.retention, want)
		}
	}
	step := func(at time.Time, wantDeleted int, gone ...string) {
		t.Helper()
		f.clock.Set(at)
		res := f.sweep()
		if res.Deleted != wantDeleted {
			t.Errorf("Sweep at %v: got Deleted %d, want %d", at, res.Deleted, wantDeleted)
		}
		for _, id := range gone {
			if got := f.get(id); got != nil {
				t.Errorf("Sweep at %v: task %s (%s) still there, want deleted", at, id, got.State)
			}
		}
	}
	step(short.ExpiresAt.Add(-time.Second), 0)
	f.mustGet(short.ID)
	step(short.ExpiresAt.Add(time.Nanosecond), 1, short.ID)
	step(cancelled.ExpiresAt.Add(time.Nanosecond), 1, cancelled.ID)
	step(def.ExpiresAt.Add(-time.Second), 0)
	f.mustGet(def.ID)
	step(def.ExpiresAt.Add(time.Nanosecond), 1, def.ID)
	if it := f.cancel(def.ID)[0]; !errors.Is(it.Err, store.ErrNotFound) {
		t.Errorf("Cancel of a deleted task: got %v, want %v", it.Err, store.ErrNotFound)
	}
	// Non-terminal tasks stay, however old.
	f.clock.Advance(10 * store.RetentionDefault)
	f.sweep()
	f.mustGet(pending.ID)
	f.mustGet(scheduled.ID)
	f.wantState(revived.ID, store.StatePending)
	f.check()
}

// testGetOutcomes checks Get with GetParams.Outcomes: for every task, in
// every state and after a reopen (durable stores), the outcome fields are
// those a full Get gives; the payload is either left out or the task's.
func testGetOutcomes(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	var ids []string
	for _, st := range []store.State{store.StatePending, store.StateActive, store.StateRetry, store.StateSucceeded, store.StateDead, store.StateCancelled} {
		tk := f.makeTask(st, store.TaskInput{Queue: "q", Priority: 2, Payload: []byte(`"p-` + st.String() + `"`), MaxRetries: 1})
		ids = append(ids, tk.ID)
	}
	ids = append(ids, newID()) // none
	check := func(when string) {
		full := f.gets(ids...)
		res, err := f.s.Get(f.ctx(), store.GetParams{Namespace: f.ns, IDs: ids, Outcomes: true})
		if err != nil || len(res.Tasks) != len(ids) {
			t.Fatalf("%s: Get with Outcomes: %d tasks, %v; want %d", when, len(res.Tasks), err, len(ids))
		}
		for i, g := range res.Tasks {
			w := full[i]
			if (g == nil) != (w == nil) {
				t.Fatalf("%s: %s: Get with Outcomes %+v, full Get %+v", when, ids[i], g, w)
			}
			if g == nil {
				continue
			}
			if g.ID != w.ID || g.Type != w.Type || g.Queue != w.Queue || g.Priority != w.Priority || g.State != w.State ||
				g.LastError != w.LastError || string(g.Result) != string(w.Result) {
				t.Errorf("%s: %s: outcome %+v, want that of %+v", when, ids[i], g, w)
			}
			if g.Payload != nil && string(g.Payload) != string(w.Payload) {
				t.Errorf("%s: %s: payload %q with Outcomes, want none or %q", when, ids[i], g.Payload, w.Payload)
			}
		}
	}
	check("open")
	if f.reopen != nil {
		f.s = f.reopen()
		check("reopened")
	}
}
