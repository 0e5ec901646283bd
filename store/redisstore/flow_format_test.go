package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// fanIn is a flow of n tasks of queue "m" and a held task f.cb of queue
// "cb" that waits for them all.
func fanIn(n int) store.FlowParams {
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s")}
	var after []string
	for i := range n {
		id := fmt.Sprintf("f.%d", i)
		p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "t", Queue: "m"})
		after = append(after, id)
	}
	p.Held = []store.HeldTask{{Task: store.TaskInput{ID: "f.cb", Type: "t", Queue: "cb"}, After: after}}
	return p
}

// succeedIn leases up to most tasks of queue q and succeeds them.
func succeedIn(t *testing.T, s *Store, q string, most int) []string {
	t.Helper()
	ctx := t.Context()
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{q}, Max: most, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var outs []store.Outcome
	var ids []string
	for _, tk := range l.Tasks {
		outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		ids = append(ids, tk.ID)
	}
	if len(outs) > 0 {
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func pendingIn(t *testing.T, s *Store, q string) int64 {
	t.Helper()
	st, err := s.Stats(t.Context(), store.StatsParams{Namespace: "ns", Queues: []string{q}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Queues) == 0 {
		return 0
	}
	return st.Queues[0].Counts[store.StatePending]
}

// TestFlowDependentsInRecord checks the format: a task's dependents are in
// its dp field (no set per task), and dp is emptied when it is counted, so
// a second terminal transition (after an admin Retry) counts nothing.
func TestFlowDependentsInRecord(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	if err := s.EnqueueFlow(ctx, fanIn(3)); err != nil {
		t.Fatal(err)
	}
	tag := s.tag("ns")
	if dp, _ := s.rdb.HGet(ctx, tag+":t:f.0", "dp").Result(); dp != " f.cb" {
		t.Fatalf("dp of f.0 = %q, want %q", dp, " f.cb")
	}
	if n, _ := s.rdb.Exists(ctx, tag+":dp:f.0", tag+":fm:f").Result(); n != 0 {
		t.Fatalf("%d keys of the old format written", n)
	}
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"m"}, Max: 3, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 3 {
		t.Fatalf("Lease: %v, %d", err, len(l.Tasks))
	}
	var first store.Outcome
	var rest []store.Outcome
	for _, tk := range l.Tasks {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "boom"}
		if tk.ID == "f.0" {
			first = o
		} else {
			rest = append(rest, o)
		}
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: []store.Outcome{first}}); err != nil {
		t.Fatal(err)
	}
	if dp, _ := s.rdb.HGet(ctx, tag+":t:f.0", "dp").Result(); dp != "" {
		t.Fatalf("dp of f.0 = %q once it was counted, want it empty", dp)
	}
	// Retried, f.0 ends again before the others: the callback still waits
	// for them.
	if _, err := s.Retry(ctx, store.IDsParams{Namespace: "ns", IDs: []string{"f.0"}}); err != nil {
		t.Fatal(err)
	}
	if got := succeedIn(t, s, "m", 10); !slices.Equal(got, []string{"f.0"}) {
		t.Fatalf("leased %v after the retry, want f.0", got)
	}
	if w, _ := s.rdb.HGet(ctx, tag+":h:f.cb", "w").Result(); w != "2" || pendingIn(t, s, "cb") != 0 {
		t.Fatalf("callback waits for %q tasks, %d pending; want 2 and none", w, pendingIn(t, s, "cb"))
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: rest}); err != nil {
		t.Fatal(err)
	}
	if n := pendingIn(t, s, "cb"); n != 1 {
		t.Fatalf("%d callbacks pending after the last task, want 1", n)
	}
}

// TestFlowOldRecords checks that a flow written in the format before
// (dp = "1" and a set T:dp:<id> of dependents per task, the set T:fm of
// its tasks) is finished: the held task is released once, after its last
// task, and the sets are deleted.
func TestFlowOldRecords(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	p := fanIn(5)
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	tag := s.tag("ns")
	pl := s.rdb.TxPipeline()
	for _, in := range p.Tasks {
		pl.HSet(ctx, tag+":t:"+in.ID, "dp", "1")
		pl.SAdd(ctx, tag+":dp:"+in.ID, "f.cb")
		pl.SAdd(ctx, tag+":fm:f", in.ID)
	}
	pl.SAdd(ctx, tag+":fm:f", "f.cb")
	if _, err := pl.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if got := succeedIn(t, s, "m", 4); len(got) != 4 || pendingIn(t, s, "cb") != 0 {
		t.Fatalf("succeeded %v, callback pending %d; want 4 and none", got, pendingIn(t, s, "cb"))
	}
	if got := succeedIn(t, s, "m", 10); len(got) != 1 || pendingIn(t, s, "cb") != 1 {
		t.Fatalf("succeeded %v, callback pending %d; want 1 and one", got, pendingIn(t, s, "cb"))
	}
	var sets []string
	for _, in := range p.Tasks {
		sets = append(sets, tag+":dp:"+in.ID)
	}
	if n, err := s.rdb.Exists(ctx, sets...).Result(); err != nil || n != 0 {
		t.Fatalf("%d dependents sets left, %v", n, err)
	}
	if got := succeedIn(t, s, "cb", 10); len(got) != 1 {
		t.Fatalf("callback %v", got)
	}
	// Deleting every task deletes the flow, and its old set.
	all := append(slices.Clone(p.Held[0].After), "f.cb")
	if _, err := s.Delete(ctx, store.IDsParams{Namespace: "ns", IDs: all}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.rdb.Exists(ctx, tag+":fm:f", tag+":f:f").Result(); n != 0 {
		t.Fatalf("%d flow keys left after its tasks were deleted", n)
	}
}

// TestFlowTakenIDsInLargeFlow: the flow script checks its ids in chunks;
// a taken id past the first chunk (a task's or a held task's) still fails
// the whole flow, names the first taken id in the flow's order, and
// writes nothing.
func TestFlowTakenIDsInLargeFlow(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	// f.1700 is a task record, f.cb a held task of another flow.
	other := store.FlowParams{Namespace: "ns", ID: "g", Spec: []byte("s"),
		Tasks: []store.TaskInput{{ID: "f.1700", Type: "t", Queue: "m"}},
		Held:  []store.HeldTask{{Task: store.TaskInput{ID: "f.cb", Type: "t", Queue: "cb"}, After: []string{"f.1700"}}}}
	if err := s.EnqueueFlow(ctx, other); err != nil {
		t.Fatal(err)
	}
	err := s.EnqueueFlow(ctx, fanIn(2000))
	if !errors.Is(err, store.ErrTaskExists) || !strings.Contains(err.Error(), `task "f.1700"`) {
		t.Fatalf("EnqueueFlow: %v, want ErrTaskExists naming f.1700", err)
	}
	tag := s.tag("ns")
	if n, _ := s.rdb.Exists(ctx, tag+":f:f", tag+":t:f.0", tag+":t:f.1999").Result(); n != 0 {
		t.Fatalf("%d keys of the failed flow written", n)
	}
	p := fanIn(1600) // only the held task's id is taken
	err = s.EnqueueFlow(ctx, p)
	if !errors.Is(err, store.ErrTaskExists) || !strings.Contains(err.Error(), `task "f.cb"`) {
		t.Fatalf("EnqueueFlow: %v, want ErrTaskExists naming f.cb", err)
	}
	p.Held[0].Task.ID = "f.cb2"
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	if n := pendingIn(t, s, "m"); n != 1601 {
		t.Fatalf("%d pending in m, want 1601", n)
	}
}

// TestFlowMemberWithOptionsCreatedAt checks that a member written with options (a
// retention, max retries) has no field ca unless it has its own RunAt: its
// creation time is then the RunAt in its member field m, and Get reports
// the flow's creation time as its CreatedAt and RunAt.
func TestFlowMemberWithOptionsCreatedAt(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	later := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s"), Tasks: []store.TaskInput{
		{ID: "f.0", Type: "t", Retention: time.Hour, MaxRetries: 2},
		{ID: "f.1", Type: "t", Retention: time.Hour, RunAt: later},
	}}
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	f, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "ns", ID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: []string{"f.0", "f.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if m := got.Tasks[0]; !m.CreatedAt.Equal(f.CreatedAt) || !m.RunAt.Equal(f.CreatedAt) || m.Retention != time.Hour || m.MaxRetries != 2 {
		t.Errorf("f.0: created %v, run at %v, retention %v, max retries %d; want created and run at %v", m.CreatedAt, m.RunAt, m.Retention, m.MaxRetries, f.CreatedAt)
	}
	if m := got.Tasks[1]; !m.CreatedAt.Equal(f.CreatedAt) || !m.RunAt.Equal(later) || m.State != store.StateScheduled {
		t.Errorf("f.1: created %v, run at %v, state %v; want created %v, run at %v, scheduled", m.CreatedAt, m.RunAt, m.State, f.CreatedAt, later)
	}
	for id, want := range map[string]bool{"f.0": false, "f.1": true} {
		if n, err := s.rdb.HExists(ctx, s.tag("ns")+":t:"+id, "ca").Result(); err != nil || n != want {
			t.Errorf("%s: field ca present %v (%v), want %v", id, n, err, want)
		}
	}
}

// TestFlowDependentsShared checks the dependents written in each task's
// field dp when held tasks share some of the tasks they wait for: a list
// of two does not leak into the tasks that have one.
func TestFlowDependentsShared(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s"),
		Tasks: []store.TaskInput{{ID: "a", Type: "t"}, {ID: "b", Type: "t"}, {ID: "c", Type: "t"}, {ID: "d", Type: "t"}},
		Held: []store.HeldTask{
			{Task: store.TaskInput{ID: "h1", Type: "t"}, After: []string{"a", "b", "d"}},
			{Task: store.TaskInput{ID: "h2", Type: "t"}, After: []string{"b", "c"}},
			{Task: store.TaskInput{ID: "h3", Type: "t"}, After: []string{"d"}},
		}}
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"a": " h1", "b": " h1 h2", "c": " h2", "d": " h1 h3"} {
		if dp, err := s.rdb.HGet(ctx, s.tag("ns")+":t:"+id, "dp").Result(); err != nil || dp != want {
			t.Errorf("dp of %s = %q (%v), want %q", id, dp, err, want)
		}
	}
}
