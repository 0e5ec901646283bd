package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// fanIn is a flow of n tasks of queue "m" (f.0 ... f.n-1) and a held task
// f.cb of queue "cb" that waits for them all.
func fanIn(n int) (store.FlowParams, []string) {
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s")}
	var after []string
	for i := range n {
		id := fmt.Sprintf("f.%d", i)
		p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "t", Queue: "m"})
		after = append(after, id)
	}
	p.Held = []store.HeldTask{{Task: store.TaskInput{ID: "f.cb", Type: "t", Queue: "cb"}, After: after}}
	return p, after
}

// succeed leases up to most pending tasks of queue q and succeeds those
// whose id keep accepts (nil: all); it returns the ids it succeeded.
func succeed(t *testing.T, s *Store, q string, most int, keep func(string) bool) (done []string) {
	t.Helper()
	ctx := context.Background()
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{q}, Max: most, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var outs []store.Outcome
	for _, tk := range l.Tasks {
		if keep == nil || keep(tk.ID) {
			outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
			done = append(done, tk.ID)
		}
	}
	if len(outs) > 0 {
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	return done
}

// pendingIn returns the number of pending tasks of queue q.
func pendingIn(t *testing.T, s *Store, q string) int64 {
	t.Helper()
	st, err := s.Stats(context.Background(), store.StatsParams{Namespace: "ns", Queues: []string{q}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Queues) == 0 {
		return 0
	}
	return st.Queues[0].Counts[store.StatePending]
}

// heldNow returns the held ids of flow f.
func heldNow(t *testing.T, s *Store) []string {
	t.Helper()
	f, err := s.GetFlow(context.Background(), store.FlowGetParams{Namespace: "ns", ID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	return f.Held
}

// TestFlowCountsAfterReopen checks that a held task counts the tasks it
// waits for again when the store opens (none are written out), through
// restarts between its members' ends: it is released once, with the last.
func TestFlowCountsAfterReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	p, _ := fanIn(6)
	if err := s.EnqueueFlow(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		if got := succeed(t, s, "m", 2, nil); len(got) != 2 {
			t.Fatalf("round %d: succeeded %v, want 2 tasks", round, got)
		}
		released := pendingIn(t, s, "cb")
		if round < 2 && (released != 0 || len(heldNow(t, s)) != 1) {
			t.Fatalf("round %d: callback released (%d pending, held %v) before its last task ended", round, released, heldNow(t, s))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = mustOpen(t, dir, nil)
	}
	defer func() { _ = s.Close() }()
	if n := pendingIn(t, s, "cb"); n != 1 || len(heldNow(t, s)) != 0 {
		t.Fatalf("after the last task: %d callbacks pending, held %v; want 1 and none", n, heldNow(t, s))
	}
	if got := succeed(t, s, "cb", 10, nil); len(got) != 1 {
		t.Fatalf("callback leased %v, want one", got)
	}
}

// TestFlowRetriedMemberNotWaitedAgain checks that a member that ended,
// was counted, and was retried by an admin is not waited for again, even
// across a restart (its c key), and that the key goes with the task.
func TestFlowRetriedMemberNotWaitedAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	ctx := context.Background()
	p, _ := fanIn(3)
	p.Tasks[0].Queue = "a"
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	// f.0 fails for good, and is retried: it is pending again.
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"a"}, Max: 3, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 1 {
		t.Fatalf("Lease: %v, %d tasks", err, len(l.Tasks))
	}
	outs := []store.Outcome{{ID: "f.0", LeaseID: l.Tasks[0].LeaseID, Kind: store.OutcomeDead, Error: "boom"}}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Retry(ctx, store.IDsParams{Namespace: "ns", IDs: []string{"f.0"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, nil)
	defer func() { _ = s.Close() }()
	if pendingIn(t, s, "a") != 1 {
		t.Fatalf("f.0 not pending after its retry")
	}
	done := succeed(t, s, "m", 10, nil)
	slices.Sort(done)
	if !slices.Equal(done, []string{"f.1", "f.2"}) {
		t.Fatalf("succeeded %v, want f.1 and f.2", done)
	}
	if n := pendingIn(t, s, "cb"); n != 1 {
		t.Fatalf("%d callbacks pending once f.1 and f.2 ended, want 1 (f.0 counted before its retry)", n)
	}
	if _, err := s.Delete(ctx, store.IDsParams{Namespace: "ns", IDs: []string{"f.cb"}}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	counted := s.flows["ns"].counted["f.0"]
	s.mu.Unlock()
	if !counted {
		t.Fatalf("f.0 has no c key in memory")
	}
}

// TestFlowOldRecords checks that a flow written in the format before the
// lists were packed and the waits were counted at open (flow record with
// plain lists, held record without After, one edge key per wait) is
// finished by this store: the held task is released once, after its last
// task, and the edge keys are gone.
func TestFlowOldRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	p, after := fanIn(5)
	if err := s.EnqueueFlow(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := succeed(t, s, "m", 2, nil); len(got) != 2 {
		t.Fatalf("succeeded %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the flow in the old format: the edges of the three tasks
	// not finished.
	eng, err := openEngine(enginePebble, dir, false, engineHooks{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := eng.get(nameKey(kFlow, "ns", "f"))
	if err != nil || v == nil {
		t.Fatalf("flow record: %q, %v", v, err)
	}
	var rec flowRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		t.Fatal(err)
	}
	rec.Tasks, _ = unpackIDs(rec.TasksP)
	rec.Held, _ = unpackIDs(rec.HeldP)
	rec.TasksP, rec.HeldP = "", ""
	old, _ := json.Marshal(rec)
	if !json.Valid(old) || len(rec.Tasks) != 6 || len(rec.Held) != 1 {
		t.Fatalf("old record %s", old)
	}
	ops := []op{{key: nameKey(kFlow, "ns", "f"), val: old}}
	v, err = eng.get(nameKey(kHeld, "ns", "f.cb"))
	if err != nil || v == nil {
		t.Fatalf("held record: %q, %v", v, err)
	}
	var hr heldRecord
	if err := json.Unmarshal(v, &hr); err != nil {
		t.Fatal(err)
	}
	hr.After = ""
	oldHeld, _ := json.Marshal(hr)
	ops = append(ops, op{key: nameKey(kHeld, "ns", "f.cb"), val: oldHeld})
	for _, a := range after[2:] {
		ops = append(ops, op{key: edgeKey("ns", a, "f.cb"), val: []byte{}})
	}
	if err := eng.apply(ops, true); err != nil {
		t.Fatal(err)
	}
	if err := eng.close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, nil)
	defer func() { _ = s.Close() }()
	s.mu.Lock()
	h := s.flows["ns"].held["f.cb"]
	s.mu.Unlock()
	if h == nil || !h.edges || h.waiting != 3 {
		t.Fatalf("held task after open: %+v, want waiting 3 by its edges", h)
	}
	if got := succeed(t, s, "m", 2, nil); len(got) != 2 || pendingIn(t, s, "cb") != 0 {
		t.Fatalf("succeeded %v, callback pending %d; want 2 and none", got, pendingIn(t, s, "cb"))
	}
	if got := succeed(t, s, "m", 10, nil); len(got) != 1 || pendingIn(t, s, "cb") != 1 {
		t.Fatalf("succeeded %v, callback pending %d; want 1 and one", got, pendingIn(t, s, "cb"))
	}
	if got := succeed(t, s, "cb", 10, nil); len(got) != 1 {
		t.Fatalf("callback %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir)
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("Check: %v, %+v", err, rep.Problems)
	}
	s = mustOpen(t, dir, nil)
	n := 0
	s.d.mu.RLock()
	_ = s.d.eng.scan([]byte{kEdge}, nil, false, func(_, _ []byte) bool { n++; return true })
	s.d.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d edge keys left after the flow ended", n)
	}
	if f, err := s.GetFlow(context.Background(), store.FlowGetParams{Namespace: "ns", ID: "f"}); err != nil || len(f.Held) != 0 {
		t.Fatalf("GetFlow: %+v, %v", f, err)
	}
}

// TestFlowCountsDiskOnlyMembers checks that a held task counts, when the
// store opens, the tasks it waits for that are pending on disk only
// (beyond their queue's window in memory): it is released with the last of
// them, not once the few in memory have ended.
func TestFlowCountsDiskOnlyMembers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &Config{window: 2, ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	p, _ := fanIn(12)
	if err := s.EnqueueFlow(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	for round := range 6 {
		if len(heldNow(t, s)) != 1 || pendingIn(t, s, "cb") != 0 {
			t.Fatalf("round %d: callback released (held %v) before its last task ended", round, heldNow(t, s))
		}
		if got := succeed(t, s, "m", 2, nil); len(got) != 2 {
			t.Fatalf("round %d: succeeded %v, want 2 tasks", round, got)
		}
	}
	if n := pendingIn(t, s, "cb"); n != 1 || len(heldNow(t, s)) != 0 {
		t.Fatalf("after the last task: %d callbacks pending, held %v; want 1 and none", n, heldNow(t, s))
	}
}
