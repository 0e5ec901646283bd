package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// flows returns the store's store.Flows, or skips the test.
func (f *fixture) flows() store.Flows {
	f.t.Helper()
	fl, ok := f.s.(store.Flows)
	if !ok {
		f.t.Skip("the store does not implement store.Flows")
	}
	return fl
}

func (f *fixture) enqueueFlow(p store.FlowParams) error {
	f.t.Helper()
	p.Namespace = f.ns
	if p.ID == "" {
		p.ID = newName("flow")
	}
	return f.flows().EnqueueFlow(f.ctx(), p)
}

func (f *fixture) mustFlow(p store.FlowParams) {
	f.t.Helper()
	if err := f.enqueueFlow(p); err != nil {
		f.t.Fatalf("EnqueueFlow: %v", err)
	}
}

func (f *fixture) getFlow(id string) *store.Flow {
	f.t.Helper()
	fl, err := f.flows().GetFlow(f.ctx(), store.FlowGetParams{Namespace: f.ns, ID: id})
	if err != nil {
		f.t.Fatalf("GetFlow(%s): %v", id, err)
	}
	return fl
}

// wantFlowGone requires GetFlow(id) to fail with ErrNotFound.
func (f *fixture) wantFlowGone(id string) {
	f.t.Helper()
	fl, err := f.flows().GetFlow(f.ctx(), store.FlowGetParams{Namespace: f.ns, ID: id})
	if !errors.Is(err, store.ErrNotFound) {
		f.t.Fatalf("GetFlow(%s) = %+v, %v; want ErrNotFound", id, fl, err)
	}
}

// wantFlows requires ListFlows to return exactly the flows ids.
func (f *fixture) wantFlows(ids ...string) {
	f.t.Helper()
	res, err := f.flows().ListFlows(f.ctx(), store.FlowListParams{Namespace: f.ns})
	if err != nil {
		f.t.Fatalf("ListFlows: %v", err)
	}
	got := make([]string, 0, len(res.Flows))
	for _, fl := range res.Flows {
		got = append(got, fl.ID)
	}
	if want := sorted(ids); !slices.Equal(got, want) {
		f.t.Fatalf("ListFlows = %v, want %v", got, want)
	}
}

// succeed leases the task id (which must be the only ready one in queue q)
// and reports it succeeded with result r.
func (f *fixture) succeed(q, id, r string) {
	f.t.Helper()
	tk := f.leaseOne(q)
	if tk.ID != id {
		f.t.Fatalf("leased %s, want %s", tk.ID, id)
	}
	f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte(r)})
}

// held returns a held task input waiting for after.
func held(typ, queue string, after ...string) store.HeldTask {
	return store.HeldTask{Task: input(typ, queue), After: after}
}

// pendingCount returns the number of pending tasks of queue q.
func (f *fixture) pendingCount(q string) int64 {
	f.t.Helper()
	for _, qs := range f.stats(q) {
		if qs.Queue == q {
			return qs.Counts[store.StatePending]
		}
	}
	return 0
}

func testFlows(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("ChainOrder", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "q")
		b := held("b", "q", a.ID)
		c := held("c", "q", b.Task.ID)
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Spec: []byte("spec"), Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b, c}})
		if got := f.get(b.Task.ID); got != nil {
			t.Fatalf("held task %s exists before its turn: %s", b.Task.ID, got.State)
		}
		fl := f.getFlow(fid)
		if string(fl.Spec) != "spec" || !slices.Equal(fl.Held, []string{b.Task.ID, c.Task.ID}) {
			t.Fatalf("GetFlow = spec %q held %v, want spec %q held [b c]", fl.Spec, fl.Held, "spec")
		}
		f.succeed("q", a.ID, "ra")
		bare, err := f.flows().GetFlow(f.ctx(), store.FlowGetParams{Namespace: f.ns, ID: fid, WithoutSpec: true})
		if err != nil || bare.Spec != nil || !slices.Equal(bare.Held, []string{c.Task.ID}) {
			t.Fatalf("GetFlow(WithoutSpec) = %+v, %v; want no spec and held [c]", bare, err)
		}
		f.leaseNone("other")
		if got := f.wantState(b.Task.ID, store.StatePending); string(got.Payload) != string(b.Task.Payload) {
			t.Errorf("released task payload = %q, want %q", got.Payload, b.Task.Payload)
		}
		if got := f.get(c.Task.ID); got != nil {
			t.Fatalf("c released before b finished: %s", got.State)
		}
		if fl := f.getFlow(fid); !slices.Equal(fl.Held, []string{c.Task.ID}) {
			t.Fatalf("GetFlow.Held after a = %v, want [c]", fl.Held)
		}
		f.succeed("q", b.Task.ID, "rb")
		f.succeed("q", c.Task.ID, "rc")
		if fl := f.getFlow(fid); len(fl.Held) != 0 {
			t.Fatalf("GetFlow.Held at the end = %v, want none", fl.Held)
		}
		if got := f.wantState(a.ID, store.StateSucceeded); string(got.Result) != "ra" {
			t.Errorf("a result = %q", got.Result)
		}
		f.leaseNone("q")
		f.check()
	})

	t.Run("HeldOptions", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "q")
		b := held("b", "q2", a.ID)
		b.Task.Payload = []byte("payload of b")
		b.Task.Priority = 7
		b.Task.MaxRetries = 3
		b.Task.Timeout = 5 * time.Second
		b.Task.Retention = time.Hour
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b}})
		f.succeed("q", a.ID, "")
		f.clock.Advance(time.Second)
		got := f.wantState(b.Task.ID, store.StatePending)
		if got.Queue != "q2" || got.Type != "b" || string(got.Payload) != "payload of b" || got.Priority != 7 ||
			got.MaxRetries != 3 || got.Timeout != 5*time.Second || got.Retention != time.Hour || got.Attempt != 0 {
			t.Errorf("released task = %+v, want the held input's options", got)
		}
		if !got.CreatedAt.Equal(Epoch) {
			t.Errorf("released task CreatedAt = %v, want the release time %v", got.CreatedAt, Epoch)
		}
		tk := f.leaseOne("q2")
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("x")})
		f.check()
	})

	t.Run("ScheduledFirstTask", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, now := input("a", "q"), input("n", "q")
		a.RunAt = f.now().Add(time.Hour)
		b := held("b", "q", a.ID)
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{a, now}, Held: []store.HeldTask{b}})
		f.wantState(a.ID, store.StateScheduled)
		f.succeed("q", now.ID, "")
		f.leaseNone("q")
		f.clock.Advance(2 * time.Hour)
		f.sweep()
		f.succeed("q", a.ID, "")
		f.succeed("q", b.Task.ID, "")
		f.check()
	})

	t.Run("ChordOnceUnderConcurrentCompletion", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 64
		members := make([]store.TaskInput, n)
		after := make([]string, n)
		for i := range members {
			members[i] = input("m", "q")
			after[i] = members[i].ID
		}
		cb := held("cb", "cbq", after...)
		f.mustFlow(store.FlowParams{Tasks: members, Held: []store.HeldTask{cb}})
		leased := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: n})
		if len(leased) != n {
			t.Fatalf("leased %d members, want %d", len(leased), n)
		}
		// All but one finish: the callback waits.
		last := leased[n-1]
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, tk := range leased[:n-1] {
			wg.Go(func() {
				res, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte(tk.ID)}}})
				if err == nil {
					err = res.Errs[0]
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Report: %v", err)
			}
		}
		if got := f.get(cb.Task.ID); got != nil {
			t.Fatalf("callback released with a member still running: %s", got.State)
		}
		// The last one and stale or repeated reports race: one release.
		var wg2 sync.WaitGroup
		for range 8 {
			wg2.Go(func() {
				_, _ = f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: last.ID, LeaseID: last.LeaseID, Kind: store.OutcomeSucceeded}}})
			})
			wg2.Go(func() {
				tk := leased[0]
				_, _ = f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}})
			})
		}
		wg2.Wait()
		f.wantState(cb.Task.ID, store.StatePending)
		if got := f.pendingCount("cbq"); got != 1 {
			t.Fatalf("pending callbacks = %d, want 1", got)
		}
		tk := f.leaseOne("cbq")
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		f.leaseNone("cbq")
		f.check()
	})

	t.Run("ManyChordsConcurrently", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const chords, size = 8, 8
		var all []*store.Task
		cbs := make([]string, chords)
		for c := range chords {
			ms := make([]store.TaskInput, size)
			after := make([]string, size)
			for i := range ms {
				ms[i] = input("m", "q")
				after[i] = ms[i].ID
			}
			cb := held("cb", "cbq", after...)
			cbs[c] = cb.Task.ID
			f.mustFlow(store.FlowParams{Tasks: ms, Held: []store.HeldTask{cb}})
		}
		all = f.lease(store.LeaseParams{Queues: []string{"q"}, Max: chords * size})
		if len(all) != chords*size {
			t.Fatalf("leased %d, want %d", len(all), chords*size)
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := w; i < len(all); i += 4 {
					tk := all[i]
					kind := store.OutcomeSucceeded
					if i%5 == 0 {
						kind = store.OutcomeDead
					}
					if _, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: kind, Error: "boom"}}}); err != nil {
						t.Errorf("Report: %v", err)
					}
				}
			})
		}
		wg.Wait()
		for _, id := range cbs {
			f.wantState(id, store.StatePending)
		}
		if got := f.pendingCount("cbq"); got != chords {
			t.Fatalf("pending callbacks = %d, want %d", got, chords)
		}
		f.check()
	})

	t.Run("EveryWayToFinishReleases", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		dead, cancelled, sweptDead, sweptCancelled, deleted, ok := input("m", "q"), input("m", "q"), input("m", "q"), input("m", "q"), input("m", "q2"), input("m", "q")
		cb := held("cb", "cbq", dead.ID, cancelled.ID, sweptDead.ID, sweptCancelled.ID, deleted.ID, ok.ID)
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{dead, cancelled, sweptDead, sweptCancelled, deleted, ok}, Held: []store.HeldTask{cb}})
		byID := map[string]*store.Task{}
		for _, tk := range f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 10}) {
			byID[tk.ID] = tk
		}
		if len(byID) != 5 {
			t.Fatalf("leased %d, want 5", len(byID))
		}
		step := func(what string, fn func()) {
			t.Helper()
			if got := f.get(cb.Task.ID); got != nil {
				t.Fatalf("before %s: callback already released (%s)", what, got.State)
			}
			fn()
		}
		step("dead", func() {
			f.mustReport(store.Outcome{ID: dead.ID, LeaseID: byID[dead.ID].LeaseID, Kind: store.OutcomeDead, Error: "x"})
		})
		step("cancelled", func() {
			f.mustReport(store.Outcome{ID: cancelled.ID, LeaseID: byID[cancelled.ID].LeaseID, Kind: store.OutcomeCancelled})
		})
		step("delete", func() {
			if it := f.del(deleted.ID); it[0].Err != nil {
				t.Fatalf("Delete: %v", it[0].Err)
			}
		})
		step("sweep", func() {
			f.cancel(sweptCancelled.ID) // active: asked to cancel
			f.extend(time.Hour, store.ExtendLease{LeaseRef: store.LeaseRef{ID: ok.ID, LeaseID: byID[ok.ID].LeaseID}})
			f.clock.Advance(2 * time.Minute)
			if r := f.sweep(); r.Dead != 1 || r.Cancelled != 1 {
				t.Fatalf("Sweep = %+v, want 1 dead and 1 cancelled", r)
			}
		})
		f.wantState(sweptDead.ID, store.StateDead)
		f.wantState(sweptCancelled.ID, store.StateCancelled)
		step("success", func() {
			f.mustReport(store.Outcome{ID: ok.ID, LeaseID: byID[ok.ID].LeaseID, Kind: store.OutcomeSucceeded})
		})
		f.wantState(cb.Task.ID, store.StatePending)
		// A member retried and finished again counts nothing again.
		if it := f.retry(dead.ID); it[0].Err != nil {
			t.Fatalf("Retry: %v", it[0].Err)
		}
		tk := f.leaseOne("q")
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		if got := f.pendingCount("cbq"); got != 1 {
			t.Fatalf("pending callbacks = %d, want 1", got)
		}
		// A store that counts what the callback waited for counted the one
		// success only (store.Task.Upstream).
		if u := f.leaseOne("cbq").Upstream; u != nil && *u != (store.Upstream{OK: 1, NoResult: 1}) {
			t.Errorf("callback leased with Upstream %+v, want {OK:1 NoResult:1} (or none)", *u)
		}
		f.check()
	})

	// A store that gives a released task the counts of the tasks it waited
	// for (store.Task.Upstream) counts the successes, and those without a
	// result.
	t.Run("Upstream", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, b, c := input("m", "q"), input("m", "q"), input("m", "q")
		cb := held("cb", "cbq", a.ID, b.ID, c.ID)
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{a, b, c}, Held: []store.HeldTask{cb}})
		var outs []store.Outcome
		for _, tk := range f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 3}) {
			o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
			if tk.ID == b.ID {
				o.Result = []byte("1")
			}
			outs = append(outs, o)
		}
		f.mustReport(outs...)
		if u := f.leaseOne("cbq").Upstream; u != nil && *u != (store.Upstream{OK: 3, NoResult: 2}) {
			t.Errorf("callback leased with Upstream %+v, want {OK:3 NoResult:2} (or none)", *u)
		}
	})

	t.Run("CancelPendingMember", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, b := input("m", "q"), input("m", "q")
		cb := held("cb", "cbq", a.ID, b.ID)
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{a, b}, Held: []store.HeldTask{cb}})
		if it := f.cancel(a.ID, b.ID); it[0].State != store.StateCancelled || it[1].State != store.StateCancelled {
			t.Fatalf("Cancel = %+v", it)
		}
		f.wantState(cb.Task.ID, store.StatePending)
		f.check()
	})

	t.Run("LeaseLostMidMember", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, b := input("m", "q"), input("m", "q")
		a.MaxRetries = 2
		cb := held("cb", "cbq", a.ID, b.ID)
		next := held("next", "cbq", cb.Task.ID)
		f.mustFlow(store.FlowParams{Tasks: []store.TaskInput{b, a}, Held: []store.HeldTask{cb, next}})
		f.succeed("q", b.ID, "rb")
		first := f.leaseOne("q")
		// The worker running a is lost: its lease expires, a runs again.
		f.clock.Advance(2 * time.Minute)
		if r := f.sweep(); r.Recovered != 1 {
			t.Fatalf("Sweep = %+v, want 1 recovered", r)
		}
		if got := f.get(cb.Task.ID); got != nil {
			t.Fatalf("callback released by a lost lease: %s", got.State)
		}
		second := f.leaseOne("q")
		if second.ID != a.ID || second.Attempt != 2 {
			t.Fatalf("leased %s attempt %d, want %s attempt 2", second.ID, second.Attempt, a.ID)
		}
		// The first run's late report is refused and releases nothing.
		if errs := f.report(store.Outcome{ID: a.ID, LeaseID: first.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("stale")}); !errors.Is(errs[0], store.ErrLeaseLost) {
			t.Fatalf("stale report: %v, want ErrLeaseLost", errs[0])
		}
		if got := f.get(cb.Task.ID); got != nil {
			t.Fatalf("callback released by a stale report: %s", got.State)
		}
		f.mustReport(store.Outcome{ID: a.ID, LeaseID: second.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("ra")})
		if got := f.wantState(a.ID, store.StateSucceeded); string(got.Result) != "ra" {
			t.Fatalf("a result = %q, want the second run's", got.Result)
		}
		f.succeed("cbq", cb.Task.ID, "rcb")
		f.succeed("cbq", next.Task.ID, "")
		f.leaseNone("cbq")
		f.check()
	})

	t.Run("Durable", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		if f.reopen == nil {
			t.Skip("the store is not durable")
		}
		a, b := input("m", "q"), input("m", "q")
		cb := held("cb", "cbq", a.ID, b.ID)
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Spec: []byte("s"), Tasks: []store.TaskInput{a, b}, Held: []store.HeldTask{cb}})
		ta := f.leaseOne("q")
		f.mustReport(store.Outcome{ID: ta.ID, LeaseID: ta.LeaseID, Kind: store.OutcomeSucceeded})
		if err := f.s.Close(); err != nil {
			t.Fatal(err)
		}
		f.s = f.reopen()
		if fl := f.getFlow(fid); !slices.Equal(fl.Held, []string{cb.Task.ID}) || string(fl.Spec) != "s" {
			t.Fatalf("GetFlow after reopen = %+v", fl)
		}
		tb := f.leaseOne("q")
		f.mustReport(store.Outcome{ID: tb.ID, LeaseID: tb.LeaseID, Kind: store.OutcomeSucceeded})
		f.wantState(cb.Task.ID, store.StatePending)
		if err := f.s.Close(); err != nil {
			t.Fatal(err)
		}
		f.s = f.reopen()
		f.wantState(cb.Task.ID, store.StatePending)
		if fl := f.getFlow(fid); len(fl.Held) != 0 {
			t.Fatalf("GetFlow.Held after release and reopen = %v", fl.Held)
		}
		f.check()
	})

	t.Run("Retention", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "qa")
		a.Retention = time.Hour
		b := held("b", "qb", a.ID)
		b.Task.Retention = time.Hour
		x := input("x", "qx")
		x.Retention = time.Hour
		fid, open := newName("flow"), newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Spec: []byte("s"), Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b}})
		f.mustFlow(store.FlowParams{ID: open, Tasks: []store.TaskInput{x}})
		f.clock.Advance(3 * time.Hour)
		f.sweep() // nothing finished: nothing goes
		f.wantFlows(fid, open)
		f.succeed("qa", a.ID, "ra")
		f.clock.Advance(30 * time.Minute)
		f.succeed("qb", b.Task.ID, "rb")
		// The flow finished with b: a, which finished first, is kept as
		// long as b, an hour after the flow's end.
		f.clock.Advance(59 * time.Minute)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep before the flow's retention: Deleted %d, want 0", res.Deleted)
		}
		if got := f.wantState(a.ID, store.StateSucceeded); string(got.Result) != "ra" {
			t.Fatalf("a result = %q, want ra", got.Result)
		}
		if got := f.wantState(b.Task.ID, store.StateSucceeded); string(got.Result) != "rb" {
			t.Fatalf("b result = %q, want rb", got.Result)
		}
		if fl := f.getFlow(fid); string(fl.Spec) != "s" {
			t.Fatalf("GetFlow with b stored = %+v", fl)
		}
		f.wantFlows(fid, open)
		// An hour after b, the flow goes as a whole.
		f.clock.Advance(time.Minute)
		if res := f.sweep(); res.Deleted != 2 {
			t.Errorf("Sweep after the flow's retention: Deleted %d, want 2", res.Deleted)
		}
		if got := f.get(a.ID); got != nil {
			t.Fatalf("a still there after its flow's retention: %s", got.State)
		}
		if got := f.get(b.Task.ID); got != nil {
			t.Fatalf("b still there after its retention: %s", got.State)
		}
		f.wantFlowGone(fid)
		f.wantFlows(open)
		f.wantState(x.ID, store.StatePending)
		if f.reopen != nil {
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			f.s = f.reopen()
			f.wantFlowGone(fid)
			f.wantFlows(open)
		}
		// The open flow goes once its one task finished and expired.
		f.succeed("qx", x.ID, "rx")
		f.clock.Advance(59 * time.Minute)
		f.sweep()
		f.wantFlows(open)
		f.clock.Advance(time.Minute)
		f.sweep()
		f.wantFlowGone(open)
		f.wantFlows()
		f.check()
	})

	t.Run("KeptTogether", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "qa")
		a.Retention = time.Hour
		b := held("b", "qb", a.ID)
		b.Task.Retention = time.Hour
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b}})
		f.succeed("qa", a.ID, "ra")
		// a's own retention passes while b has not finished: a is kept.
		f.clock.Advance(90 * time.Minute)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep with the flow unfinished: Deleted %d, want 0", res.Deleted)
		}
		if got := f.wantState(a.ID, store.StateSucceeded); string(got.Result) != "ra" {
			t.Fatalf("a result = %q, want ra", got.Result)
		}
		if f.reopen != nil {
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			f.s = f.reopen()
			f.sweep()
			f.wantState(a.ID, store.StateSucceeded)
		}
		f.clock.Advance(30 * time.Minute)
		f.succeed("qb", b.Task.ID, "rb")
		// The flow finished at t0+2h: both stay an hour after that, and
		// a's record says so.
		gotB := f.wantState(b.Task.ID, store.StateSucceeded)
		if gotA := f.wantState(a.ID, store.StateSucceeded); !gotA.ExpiresAt.Equal(gotB.ExpiresAt) {
			t.Errorf("a expires at %v after the flow's end, want b's %v", gotA.ExpiresAt, gotB.ExpiresAt)
		}
		if l := f.list(store.ListParams{Namespace: f.ns, Queue: "qa"}).Tasks; len(l) != 1 || !l[0].ExpiresAt.Equal(gotB.ExpiresAt) {
			t.Errorf("List(qa) after the flow's end = %v, want a expiring at %v", l, gotB.ExpiresAt)
		}
		f.clock.Advance(59 * time.Minute)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep within the flow's retention: Deleted %d, want 0", res.Deleted)
		}
		if got := f.wantState(a.ID, store.StateSucceeded); string(got.Result) != "ra" {
			t.Fatalf("a result = %q, want ra", got.Result)
		}
		f.wantState(b.Task.ID, store.StateSucceeded)
		f.wantFlows(fid)
		f.clock.Advance(time.Minute + time.Second)
		if res := f.sweep(); res.Deleted != 2 {
			t.Errorf("Sweep after the flow's retention: Deleted %d, want 2", res.Deleted)
		}
		if got := f.get(a.ID); got != nil {
			t.Fatalf("a still there after its flow's retention: %s", got.State)
		}
		if got := f.get(b.Task.ID); got != nil {
			t.Fatalf("b still there after its retention: %s", got.State)
		}
		f.wantFlowGone(fid)
		f.wantFlows()
		f.check()
	})

	t.Run("KeptTogetherRetryDelete", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, c := input("a", "qa"), input("c", "qc")
		a.Retention, c.Retention = time.Hour, time.Hour
		b := held("b", "qb", a.ID)
		b.Task.Retention = time.Hour
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a, c}, Held: []store.HeldTask{b}})
		if it := f.cancel(a.ID)[0]; it.Err != nil {
			t.Fatalf("Cancel(a): %v", it.Err)
		}
		f.succeed("qc", c.ID, "rc")
		f.wantState(b.Task.ID, store.StatePending)
		f.clock.Advance(2 * time.Hour)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep with b open: Deleted %d, want 0", res.Deleted)
		}
		// Deleting b, the last open task, ends the flow: a and c expire an
		// hour later (b's retention).
		if it := f.del(b.Task.ID)[0]; it.Err != nil {
			t.Fatalf("Delete(b): %v", it.Err)
		}
		f.clock.Advance(30 * time.Minute)
		// Retrying a opens the flow again: c is kept past that hour.
		if it := f.retry(a.ID)[0]; it.Err != nil {
			t.Fatalf("Retry(a): %v", it.Err)
		}
		f.clock.Advance(time.Hour)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep with a retried: Deleted %d, want 0", res.Deleted)
		}
		if got := f.wantState(c.ID, store.StateSucceeded); string(got.Result) != "rc" {
			t.Fatalf("c result = %q, want rc", got.Result)
		}
		f.succeed("qa", a.ID, "ra")
		f.clock.Advance(59 * time.Minute)
		if res := f.sweep(); res.Deleted != 0 {
			t.Errorf("Sweep within the flow's retention: Deleted %d, want 0", res.Deleted)
		}
		f.wantState(c.ID, store.StateSucceeded)
		f.wantFlows(fid)
		f.clock.Advance(time.Minute)
		if res := f.sweep(); res.Deleted != 2 {
			t.Errorf("Sweep after the flow's retention: Deleted %d, want 2", res.Deleted)
		}
		f.wantFlowGone(fid)
		f.wantFlows()
		f.check()
	})

	t.Run("DeleteMembers", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a, b := input("a", "q"), input("b", "q")
		c := held("c", "cq", a.ID, b.ID)
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a, b}, Held: []store.HeldTask{c}})
		for _, id := range []string{a.ID, b.ID} {
			if it := f.del(id)[0]; it.Err != nil {
				t.Fatalf("Delete(%s): %v", id, it.Err)
			}
			f.wantFlows(fid)
		}
		// Deleting a and b released c: the flow is kept while c is.
		f.wantState(c.Task.ID, store.StatePending)
		if fl := f.getFlow(fid); len(fl.Held) != 0 {
			t.Fatalf("GetFlow.Held after release = %v", fl.Held)
		}
		if it := f.del(c.Task.ID)[0]; it.Err != nil {
			t.Fatalf("Delete(%s): %v", c.Task.ID, it.Err)
		}
		f.wantFlowGone(fid)
		f.wantFlows()
		f.check()
	})

	t.Run("AllOrNothing", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		taken := f.addN(1, "x", "q")[0]
		a := input("a", "q")
		b := held("b", "q", a.ID)
		b.Task.ID = taken
		fid := newName("flow")
		if err := f.enqueueFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b}}); !errors.Is(err, store.ErrTaskExists) {
			t.Fatalf("EnqueueFlow with a taken id: %v, want ErrTaskExists", err)
		}
		if got := f.get(a.ID); got != nil {
			t.Fatalf("a failed flow left task %s behind", a.ID)
		}
		if _, err := f.flows().GetFlow(f.ctx(), store.FlowGetParams{Namespace: f.ns, ID: fid}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetFlow of a failed flow: %v, want ErrNotFound", err)
		}
		a2 := input("a", "q")
		f.mustFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a2}})
		if err := f.enqueueFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{input("a", "q")}}); !errors.Is(err, store.ErrTaskExists) {
			t.Fatalf("EnqueueFlow with a taken flow id: %v, want ErrTaskExists", err)
		}
		if _, err := f.flows().GetFlow(f.ctx(), store.FlowGetParams{Namespace: f.ns, ID: newName("flow")}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetFlow of no flow: %v, want ErrNotFound", err)
		}
		f.check()
	})

	// HeldIDTaken: a held task's id is taken from the moment its flow is
	// written, as a live task's is: a plain Enqueue of it fails for that
	// item with ErrTaskExists (the other tasks of the batch are enqueued),
	// and so does a flow that names it, as a ready or a held task, leaving
	// nothing behind. The held task is released as its flow wrote it.
	t.Run("HeldIDTaken", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "qa")
		b := held("b", "qb", a.ID)
		b.Task.Payload = []byte("held b")
		fid := newName("flow")
		f.mustFlow(store.FlowParams{ID: fid, Tasks: []store.TaskInput{a}, Held: []store.HeldTask{b}})
		plain := store.TaskInput{ID: b.Task.ID, Type: "plain", Queue: "qo", Payload: []byte("plain")}
		other := input("o", "qo")
		items := f.enqueue(other, plain)
		if items[0].Err != nil || !errors.Is(items[1].Err, store.ErrTaskExists) {
			t.Fatalf("Enqueue of (a new id, a held task's id): got errors (%v, %v), want (nil, %v)", items[0].Err, items[1].Err, store.ErrTaskExists)
		}
		// A larger batch (a store may look at all its ids at once).
		o2, o3, o4 := input("o", "qo"), input("o", "qo"), input("o", "qo")
		items = f.enqueue(o2, o3, plain, o4)
		for i, want := range []error{nil, nil, store.ErrTaskExists, nil} {
			if !errors.Is(items[i].Err, want) {
				t.Fatalf("Enqueue of four tasks, the third a held task's id: item %d error %v, want %v", i, items[i].Err, want)
			}
		}
		if it := f.enqueue(plain)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
			t.Fatalf("Enqueue of a held task's id: got error %v, want %v", it.Err, store.ErrTaskExists)
		}
		if got := f.get(b.Task.ID); got != nil {
			t.Fatalf("after the refused enqueues, %s reads as a task in state %s; want it still held", b.Task.ID, got.State)
		}
		c := input("c", "qo")
		asReady := store.FlowParams{ID: newName("flow"), Tasks: []store.TaskInput{c, plain}}
		asHeld := store.FlowParams{ID: newName("flow"), Tasks: []store.TaskInput{c}, Held: []store.HeldTask{{Task: plain, After: []string{c.ID}}}}
		for _, p := range []store.FlowParams{asReady, asHeld} {
			if err := f.enqueueFlow(p); !errors.Is(err, store.ErrTaskExists) {
				t.Fatalf("EnqueueFlow naming another flow's held task %s: %v, want %v", b.Task.ID, err, store.ErrTaskExists)
			}
			f.wantFlowGone(p.ID)
		}
		if got := f.get(c.ID); got != nil {
			t.Fatalf("a refused flow left task %s behind", c.ID)
		}
		if fl := f.getFlow(fid); !slices.Equal(fl.Held, []string{b.Task.ID}) {
			t.Fatalf("GetFlow.Held = %v, want [%s]", fl.Held, b.Task.ID)
		}
		f.succeed("qa", a.ID, "")
		got := f.wantState(b.Task.ID, store.StatePending)
		if got.Type != "b" || got.Queue != "qb" || string(got.Payload) != "held b" {
			t.Errorf("released task = type %q queue %q payload %q, want the flow's (b, qb, %q)", got.Type, got.Queue, got.Payload, "held b")
		}
		if it := f.enqueue(plain)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
			t.Errorf("Enqueue of the released task's id: got error %v, want %v", it.Err, store.ErrTaskExists)
		}
		f.succeed("qb", b.Task.ID, "")
		for _, id := range []string{other.ID, o2.ID, o3.ID, o4.ID} {
			f.succeed("qo", id, "")
		}
		f.leaseNone("qa", "qb", "qo")
		f.check()
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a := input("a", "q")
		uniq := input("a", "q")
		uniq.UniqueKey, uniq.UniqueTTL = "k", time.Minute
		later := held("b", "q", a.ID)
		later.Task.RunAt = f.now().Add(time.Hour)
		fwd := held("b", "q", "nope")
		cases := []struct {
			name string
			p    store.FlowParams
		}{
			{"no tasks", store.FlowParams{}},
			{"only held", store.FlowParams{Held: []store.HeldTask{held("b", "q", a.ID)}}},
			{"unknown after", store.FlowParams{Tasks: []store.TaskInput{a}, Held: []store.HeldTask{fwd}}},
			{"no after", store.FlowParams{Tasks: []store.TaskInput{a}, Held: []store.HeldTask{{Task: input("b", "q")}}}},
			{"unique key", store.FlowParams{Tasks: []store.TaskInput{uniq}}},
			{"held run_at", store.FlowParams{Tasks: []store.TaskInput{a}, Held: []store.HeldTask{later}}},
			{"same id twice", store.FlowParams{Tasks: []store.TaskInput{a, a}}},
			{"bad flow id", store.FlowParams{ID: "no spaces", Tasks: []store.TaskInput{a}}},
		}
		for _, c := range cases {
			err := f.enqueueFlow(c.p)
			if !errors.Is(err, store.ErrInvalidOption) && !errors.Is(err, store.ErrInvalidName) {
				t.Errorf("%s: %v, want a validation error", c.name, err)
			}
		}
		if got := f.get(a.ID); got != nil {
			t.Errorf("a refused flow left %s behind", a.ID)
		}
		f.wantEmpty()
	})

	t.Run("List", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		fl := f.flows()
		var want []string
		for i := range 7 {
			id := fmt.Sprintf("flow-%s-%02d", runToken, i)
			a := input("a", "q")
			f.mustFlow(store.FlowParams{ID: id, Spec: []byte{byte(i)}, Tasks: []store.TaskInput{a}, Held: []store.HeldTask{held("b", "q", a.ID)}})
			want = append(want, id)
		}
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			res, err := fl.ListFlows(f.ctx(), store.FlowListParams{Namespace: f.ns, After: after, Limit: 3})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Flows) > 3 || pages > 5 {
				t.Fatalf("page of %d flows (page %d)", len(res.Flows), pages)
			}
			for _, fw := range res.Flows {
				got = append(got, fw.ID)
				if len(fw.Held) != 1 || len(fw.Spec) != 1 || fw.CreatedAt.IsZero() {
					t.Fatalf("listed flow %+v", fw)
				}
			}
			if res.NextCursor == "" {
				break
			}
			after = res.NextCursor
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListFlows = %v, want %v", got, want)
		}
		if _, err := fl.ListFlows(f.ctx(), store.FlowListParams{Namespace: f.ns, Limit: -1}); !errors.Is(err, store.ErrInvalidOption) {
			t.Fatalf("ListFlows(Limit -1): %v", err)
		}
		res, err := fl.ListFlows(f.ctx(), store.FlowListParams{Namespace: newName("ns")})
		if err != nil || len(res.Flows) != 0 || res.NextCursor != "" {
			t.Fatalf("ListFlows of an empty namespace = %+v, %v", res, err)
		}
	})

	t.Run("Big", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 2000
		ms := make([]store.TaskInput, n)
		after := make([]string, n)
		for i := range ms {
			ms[i] = input("m", "q")
			after[i] = ms[i].ID
		}
		cb := held("cb", "cbq", after...)
		f.mustFlow(store.FlowParams{Tasks: ms, Held: []store.HeldTask{cb}})
		for done := 0; done < n; {
			tks := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 500})
			os := make([]store.Outcome, len(tks))
			for i, tk := range tks {
				os[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte(fmt.Sprint(i))}
			}
			if done+len(tks) < n {
				f.mustReport(os...)
				if got := f.get(cb.Task.ID); got != nil {
					t.Fatalf("callback released after %d of %d", done+len(tks), n)
				}
			} else {
				f.mustReport(os...)
			}
			done += len(tks)
		}
		f.wantState(cb.Task.ID, store.StatePending)
	})
}
