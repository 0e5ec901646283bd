package redisstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// drainIn succeeds the tasks of queue q until none is ready, and returns
// how many it succeeded.
func drainIn(t *testing.T, s *Store, q string) int {
	t.Helper()
	n := 0
	for {
		ids := succeedIn(t, s, q, 1000)
		if len(ids) == 0 {
			return n
		}
		n += len(ids)
	}
}

// partsLeft returns what is left of the bookkeeping of flow f's parts: the
// keys T:rv, T:rb and T:rvq that exist, and the fields rv, rb and rbn of
// its record.
func partsLeft(t *testing.T, s *Store) []string {
	t.Helper()
	ctx := t.Context()
	tag := s.tag("ns")
	var left []string
	for _, k := range []string{"rv", "rb", "rvq"} {
		if n, err := s.rdb.Exists(ctx, tag+":"+k).Result(); err != nil || n != 0 {
			left = append(left, "T:"+k)
		}
	}
	for _, f := range []string{"rv", "rb", "rbn"} {
		if has, err := s.rdb.HExists(ctx, tag+":f:f", f).Result(); err != nil || has {
			left = append(left, "field "+f)
		}
	}
	return left
}

// TestFlowInParts checks a flow written in parts: every task is written
// before EnqueueFlow returns, with the flow's creation time, and nothing of
// the parts' bookkeeping is left.
func TestFlowInParts(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	var parts []int
	s.flowPartsHook = func(off int) bool { parts = append(parts, off); return true }
	if err := s.EnqueueFlow(ctx, fanIn(2600)); err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1000, 2000}; !slices.Equal(parts, want) {
		t.Fatalf("parts at %v, want %v", parts, want)
	}
	if n := pendingIn(t, s, "m"); n != 2600 {
		t.Fatalf("%d pending in m, want 2600", n)
	}
	tag := s.tag("ns")
	if left := partsLeft(t, s); len(left) != 0 {
		t.Fatalf("left of the parts: %v", left)
	}
	fl, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "ns", ID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"f.0", "f.499", "f.500", "f.2599"}
	got, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if tk := got.Tasks[i]; tk == nil || !tk.CreatedAt.Equal(fl.CreatedAt) || tk.State != store.StatePending {
			t.Fatalf("%s: %+v, want pending, created at the flow's %v", id, tk, fl.CreatedAt)
		}
		if g, _ := s.rdb.HMGet(ctx, tag+":t:"+id, "fl", "dp").Result(); len(g) != 2 || g[0] != "f" || g[1] != " f.cb" {
			t.Fatalf("%s: fl, dp = %v, want f, \" f.cb\"", id, g)
		}
	}
	if n := drainIn(t, s, "m"); n != 2600 {
		t.Fatalf("succeeded %d in m, want 2600", n)
	}
	if ids := succeedIn(t, s, "cb", 10); len(ids) != 1 || ids[0] != "f.cb" {
		t.Fatalf("callback leased %v, want [f.cb]", ids)
	}
}

// stoppedFlow opens a store on a fake clock and enqueues fanIn(2600) as a
// client that stops after the flow's first script would. With listed, the
// reserved tasks are stored in the listed format (T:rv): task 499 is
// moved to the end, so that the reserved ids are not in order.
func stoppedFlow(t *testing.T, listed bool) (*Store, *storetest.FakeClock) {
	t.Helper()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix(), Clock: clock})
	t.Cleanup(func() { _ = s.Close() })
	s.flowPartsHook = func(int) bool { return false }
	p := fanIn(2600)
	if listed {
		t499 := p.Tasks[499]
		p.Tasks = append(slices.Delete(p.Tasks, 499, 500), t499)
	}
	if err := s.EnqueueFlow(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	tag := s.tag("ns")
	if n, _ := s.rdb.Exists(t.Context(), tag+":rv").Result(); (n == 1) != listed {
		t.Fatalf("T:rv exists %v, want %v", n == 1, listed)
	}
	if rb, _ := s.rdb.HGet(t.Context(), tag+":f:f", "rb").Result(); (rb == "500 2100") == listed {
		t.Fatalf("field rb %q (listed %v)", rb, listed)
	}
	if n := pendingIn(t, s, "m"); n != flowFirstPart {
		t.Fatalf("%d pending in m, want %d", n, flowFirstPart)
	}
	return s, clock
}

// TestFlowPartsRecovered stops a flow's parts after the first script, as a
// client that stops there would: the tasks not written stay reserved (no
// task may take their ids), Sweep writes them once the flow is
// flowRecoverAfter old, each once, and the flow then runs to its end with
// its callback released once.
func TestFlowPartsRecovered(t *testing.T) {
	t.Parallel()
	for _, listed := range []bool{false, true} {
		t.Run(map[bool]string{false: "compact", true: "listed"}[listed], func(t *testing.T) {
			t.Parallel()
			testFlowPartsRecovered(t, listed)
		})
	}
}

func testFlowPartsRecovered(t *testing.T, listed bool) {
	s, clock := stoppedFlow(t, listed)
	ctx := t.Context()
	// The reserved ids are taken, for a task and for a flow.
	res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: "f.1234", Type: "t"}, {ID: "free", Type: "t"}}})
	if err != nil || len(res.Items) != 2 || !errors.Is(res.Items[0].Err, store.ErrTaskExists) || res.Items[1].Err != nil {
		t.Fatalf("Enqueue of a reserved id and a free one: %+v, %v; want ErrTaskExists, nil", res, err)
	}
	other := store.FlowParams{Namespace: "ns", ID: "g", Spec: []byte("s"), Tasks: []store.TaskInput{{ID: "f.2599", Type: "t"}}}
	if err := s.EnqueueFlow(ctx, other); !errors.Is(err, store.ErrTaskExists) {
		t.Fatalf("EnqueueFlow of a reserved id: %v, want ErrTaskExists", err)
	}
	if r, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: []string{"f.2599"}}); err != nil || r.Tasks[0] != nil {
		t.Fatalf("Get of a reserved task: %+v, %v; want none", r.Tasks, err)
	}
	// Not yet: the client may still be writing them.
	if _, err := s.Sweep(ctx, store.SweepParams{}); err != nil {
		t.Fatal(err)
	}
	if n := pendingIn(t, s, "m"); n != flowFirstPart {
		t.Fatalf("%d pending in m before flowRecoverAfter, want %d", n, flowFirstPart)
	}
	clock.Advance(flowRecoverAfter)
	// At most the sweep's limit per call: 1000, 1000, then the last 100.
	tag := s.tag("ns")
	for i, want := range []int64{1500, 2500, 2600, 2600} {
		if _, err := s.Sweep(ctx, store.SweepParams{Limit: 1000}); err != nil {
			t.Fatal(err)
		}
		if n := pendingIn(t, s, "m"); n != want {
			t.Fatalf("%d pending in m after sweep %d, want %d", n, i+1, want)
		}
		if n, _ := s.rdb.ZCard(ctx, tag+":rvq").Result(); (n == 1) != (i < 2) {
			t.Fatalf("after sweep %d: %d flows still being written, want %d", i+1, n, map[bool]int{true: 1}[i < 2])
		}
	}
	if fl, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "ns", ID: "f"}); err != nil || !slices.Equal(fl.Held, []string{"f.cb"}) {
		t.Fatalf("GetFlow after Sweep: %+v, %v; want held [f.cb]", fl, err)
	}
	// A part that comes late writes nothing.
	for _, late := range [][]any{{"1", "f.600", "f.2599"}, {"P", 0, 1, 2}} {
		v, err := s.run(ctx, "enqueue flow", flowPartScript, "ns", true, append([]any{s.nowArg(), s.wakeChannel("ns"), "f"}, late...))
		if err != nil || v != int64(0) {
			t.Fatalf("late part %v: %v, %v; want 0", late, v, err)
		}
	}
	if left := partsLeft(t, s); len(left) != 0 {
		t.Fatalf("left of the parts: %v", left)
	}
	if n, _ := s.rdb.ZCard(ctx, tag+":all").Result(); n != 2600+1 {
		t.Fatalf("%d tasks listed, want 2601 (the flow's and free)", n)
	}
	if n := drainIn(t, s, "m"); n != 2600 {
		t.Fatalf("succeeded %d in m, want 2600", n)
	}
	if ids := succeedIn(t, s, "cb", 10); len(ids) != 1 || ids[0] != "f.cb" {
		t.Fatalf("callback leased %v, want [f.cb]", ids)
	}
	if ids := succeedIn(t, s, "cb", 10); len(ids) != 0 {
		t.Fatalf("leased %v after the callback", ids)
	}
}

// TestFlowPartsWrittenByReader stops a flow's parts after the first
// script, then reads the flow as WorkflowResult.Cancel and State do: the
// read writes the tasks left, so that a Cancel of the members pending
// reaches every one of them, and none runs later (a cancel that saw only
// the written ones would let Sweep write the others afterwards, and they
// would run).
func TestFlowPartsWrittenByReader(t *testing.T) {
	t.Parallel()
	for _, listed := range []bool{false, true} {
		t.Run(map[bool]string{false: "compact", true: "listed"}[listed], func(t *testing.T) {
			t.Parallel()
			testFlowPartsWrittenByReader(t, listed)
		})
	}
}

func testFlowPartsWrittenByReader(t *testing.T, listed bool) {
	s, clock := stoppedFlow(t, listed)
	ctx := t.Context()
	fl, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "ns", ID: "f"})
	if err != nil || !slices.Equal(fl.Held, []string{"f.cb"}) {
		t.Fatalf("GetFlow: %+v, %v; want held [f.cb]", fl, err)
	}
	if n := pendingIn(t, s, "m"); n != 2600 {
		t.Fatalf("%d pending in m after GetFlow, want 2600", n)
	}
	if left := partsLeft(t, s); len(left) != 0 {
		t.Fatalf("left of the parts: %v", left)
	}
	var ids []string
	for i := range 2600 {
		ids = append(ids, fmt.Sprintf("f.%d", i))
	}
	for off := 0; off < len(ids); off += store.MaxBatch {
		r, err := s.Cancel(ctx, store.IDsParams{Namespace: "ns", IDs: ids[off:min(off+store.MaxBatch, len(ids))]})
		if err != nil {
			t.Fatal(err)
		}
		for i, it := range r.Items {
			if it.Err != nil || it.State != store.StateCancelled {
				t.Fatalf("Cancel %s: %v, %v; want cancelled", ids[off+i], it.State, it.Err)
			}
		}
	}
	clock.Advance(flowRecoverAfter)
	if _, err := s.Sweep(ctx, store.SweepParams{}); err != nil {
		t.Fatal(err)
	}
	if n := pendingIn(t, s, "m"); n != 0 {
		t.Fatalf("%d pending in m after the cancel and a sweep, want 0", n)
	}
	if got := succeedIn(t, s, "m", 10); len(got) != 0 {
		t.Fatalf("leased %v after the cancel", got)
	}
}

// TestFlowPartsRaceRecovery runs Sweep's recovery while the client is
// still writing the parts: each task is written once.
func TestFlowPartsRaceRecovery(t *testing.T) {
	t.Parallel()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix(), Clock: clock})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	s.flowPartsHook = func(off int) bool {
		if off == flowPart {
			clock.Advance(flowRecoverAfter)
			if _, err := s.Sweep(ctx, store.SweepParams{}); err != nil {
				t.Error(err)
			}
		}
		return true
	}
	if err := s.EnqueueFlow(ctx, fanIn(3600)); err != nil {
		t.Fatal(err)
	}
	tag := s.tag("ns")
	if n, _ := s.rdb.ZCard(ctx, tag+":all").Result(); n != 3600 {
		t.Fatalf("%d tasks listed, want 3600", n)
	}
	if n := pendingIn(t, s, "m"); n != 3600 {
		t.Fatalf("%d pending in m, want 3600", n)
	}
	if n := drainIn(t, s, "m"); n != 3600 {
		t.Fatalf("succeeded %d in m, want 3600", n)
	}
	if ids := succeedIn(t, s, "cb", 10); len(ids) != 1 {
		t.Fatalf("callback leased %v, want [f.cb]", ids)
	}
}

// TestFlowMemberCreatedAt: a member enqueued at once has no field ca (its
// creation time, the flow's, is in its ready-set member, as a plain
// task's), keeps it when a retry changes its member, and a member of the
// format before, with the field ca, is read from it.
func TestFlowMemberCreatedAt(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := storetest.NewFakeClock(created)
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix(), Clock: clock})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	if err := s.EnqueueFlow(ctx, fanIn(2)); err != nil {
		t.Fatal(err)
	}
	tag := s.tag("ns")
	if n, _ := s.rdb.Exists(ctx, tag+":t:f.0").Result(); n != 1 {
		t.Fatal("f.0 not written")
	}
	if has, _ := s.rdb.HExists(ctx, tag+":t:f.0", "ca").Result(); has {
		t.Fatal("f.0 has a field ca")
	}
	// f.1 as the format before wrote it: with ca.
	old := created.Add(-time.Hour)
	if err := s.rdb.HSet(ctx, tag+":t:f.1", "ca", old.UnixMicro()).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"m"}, Max: 2, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 2 {
		t.Fatalf("Lease: %d, %v", len(l.Tasks), err)
	}
	var outs []store.Outcome
	for _, tk := range l.Tasks {
		outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "again", RetryAt: clock.Now().Add(time.Hour)})
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: []string{"f.0", "f.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Tasks[0]; got == nil || !got.CreatedAt.Equal(created) || got.State != store.StateRetry {
		t.Fatalf("f.0: %+v, want retry, created %v", got, created)
	}
	if got := r.Tasks[1]; got == nil || !got.CreatedAt.Equal(old) {
		t.Fatalf("f.1: %+v, want created %v (its field ca)", got, old)
	}
}

// TestFlowCompactReservedIDs checks which ids the reserved tasks of a
// flow in the compact format take while it is written: exactly
// <flow>.<index> for the indexes reserved (written or not), for a task and
// for another flow's task.
func TestFlowCompactReservedIDs(t *testing.T) {
	t.Parallel()
	s, _ := stoppedFlow(t, false)
	ctx := t.Context()
	for id, taken := range map[string]bool{
		"f.500": true, "f.1234": true, "f.2599": true, // reserved
		"f.499": true, "f.cb": true, // written, held
		"f.01234": false, "f.2600": false, "f.-1": false, "f.1234x": false, "g.1234": false, "f": false, "f.": false,
	} {
		res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: id, Type: "t"}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := errors.Is(res.Items[0].Err, store.ErrTaskExists); got != taken || (!taken && res.Items[0].Err != nil) {
			t.Errorf("Enqueue %q: %v; want taken %v", id, res.Items[0].Err, taken)
		}
	}
	other := store.FlowParams{Namespace: "ns", ID: "g2", Spec: []byte("s"), Tasks: []store.TaskInput{{ID: "g2.0", Type: "t"}, {ID: "f.700", Type: "t"}}}
	if err := s.EnqueueFlow(ctx, other); !errors.Is(err, store.ErrTaskExists) || !strings.Contains(err.Error(), `"f.700"`) {
		t.Fatalf("EnqueueFlow with a reserved id: %v, want ErrTaskExists naming f.700", err)
	}
	if n := pendingIn(t, s, "m"); n != flowFirstPart {
		t.Fatalf("%d pending in m, want %d", n, flowFirstPart)
	}
}
