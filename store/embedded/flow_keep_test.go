package embedded

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// inMemory reports whether task id of namespace ns is in the store's
// memory.
func inMemory(s *Store, ns, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nss[ns]
	return n != nil && n.tasks[id] != nil
}

// evicted waits until task id of namespace ns is no longer in memory (the
// eviction follows the commit of the write after its record), and reports
// whether it went within 30 s.
func evicted(s *Store, ns, id string) bool {
	for range 3000 {
		if !inMemory(s, ns, id) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// otherN numbers the tasks runAll adds.
var otherN atomic.Int64

// runAll leases and succeeds every pending task of queue q, then writes
// one more task (the eviction of the ones before follows its commit).
func runAll(t *testing.T, s *Store, q string) []string {
	t.Helper()
	ctx := context.Background()
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{q}, Max: 100, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var outs []store.Outcome
	var ids []string
	for _, tk := range l.Tasks {
		outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte(`"r-` + tk.ID + `"`)})
		ids = append(ids, tk.ID)
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	// Another write: its commit runs the eviction of the ones before.
	r, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: fmt.Sprintf("other-%d", otherN.Add(1)), Type: "x", Queue: "other"}}})
	if err != nil || r.Items[0].Err != nil {
		t.Fatalf("Enqueue: %v, %+v", err, r.Items)
	}
	return ids
}

// TestFlowKeepsMembersInMemory checks that the finished members of an open
// flow stay in memory (the steps after them read them), that they are
// evicted once the flow ended, and that a plain task is evicted as before;
// and that a member's result reads the same either way.
func TestFlowKeepsMembersInMemory(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir(), nil)
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s")}
	var after []string
	for i := range 5 {
		id := fmt.Sprintf("f.%d", i)
		p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "t", Queue: "m"})
		after = append(after, id)
	}
	p.Held = []store.HeldTask{{Task: store.TaskInput{ID: "f.cb", Type: "t", Queue: "cb"}, After: after}}
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: "plain", Type: "t", Queue: "m"}}}); err != nil {
		t.Fatal(err)
	}
	runAll(t, s, "m")
	runAll(t, s, "other")
	if !evicted(s, "ns", "plain") {
		t.Fatalf("a finished task that is no flow's member is still in memory")
	}
	// The members finished in the same write as plain: they would be
	// gone by now too.
	for _, id := range after {
		if !inMemory(s, "ns", id) {
			t.Errorf("member %s of the open flow was evicted", id)
		}
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: append([]string{"plain"}, after...)})
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range got.Tasks {
		if tk == nil || tk.State != store.StateSucceeded || string(tk.Result) != `"r-`+tk.ID+`"` {
			t.Fatalf("Get[%d] = %+v, want succeeded with its result", i, tk)
		}
	}
	if s.flowKept <= 0 {
		t.Errorf("flowKept = %d with 5 members kept", s.flowKept)
	}
	// The callback ends the flow: the members go from memory.
	runAll(t, s, "cb")
	runAll(t, s, "other")
	for _, id := range append(after, "f.cb") {
		if !evicted(s, "ns", id) {
			t.Errorf("member %s still in memory after its flow ended", id)
		}
	}
	if s.flowKept != 0 {
		t.Errorf("flowKept = %d after the flow ended, want 0", s.flowKept)
	}
	got, err = s.Get(ctx, store.GetParams{Namespace: "ns", IDs: after})
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range got.Tasks {
		if tk == nil || tk.State != store.StateSucceeded || string(tk.Result) != `"r-`+tk.ID+`"` {
			t.Fatalf("Get[%d] from disk = %+v, want succeeded with its result", i, tk)
		}
	}
}

// TestFlowKeepBound checks that the members kept in memory stay within
// flowKeepBytes: past it, finished members are evicted as other tasks.
func TestFlowKeepBound(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir(), nil)
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	s.mu.Lock()
	s.flowKept = flowKeepBytes - 1000 // room for about 2 members
	s.mu.Unlock()
	p := store.FlowParams{Namespace: "ns", ID: "f", Spec: []byte("s")}
	var after []string
	for i := range 10 {
		id := fmt.Sprintf("f.%d", i)
		p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "t", Queue: "m"})
		after = append(after, id)
	}
	p.Held = []store.HeldTask{{Task: store.TaskInput{ID: "f.cb", Type: "t", Queue: "cb"}, After: after}}
	if err := s.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: "plain", Type: "t", Queue: "m"}}}); err != nil {
		t.Fatal(err)
	}
	runAll(t, s, "m")
	runAll(t, s, "other")
	if !evicted(s, "ns", "plain") {
		t.Fatalf("a finished task that is no flow's member is still in memory")
	}
	kept := 0
	for _, id := range after {
		if inMemory(s, "ns", id) {
			kept++
		}
	}
	if kept == 0 || kept == len(after) {
		t.Errorf("%d of %d members kept in memory with room for a few", kept, len(after))
	}
	if s.flowKept > flowKeepBytes {
		t.Errorf("flowKept = %d, over the bound %d", s.flowKept, flowKeepBytes)
	}
}
