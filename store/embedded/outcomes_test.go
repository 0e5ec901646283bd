package embedded

import (
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// TestGetOutcomesFromDisk reads finished tasks (on disk only, after a
// reopen) with GetParams.Outcomes: their outcomes without their payloads,
// which Outcomes does not read (the conformance case GetOutcomes compares
// the outcomes with a full Get's).
func TestGetOutcomesFromDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	ctx := t.Context()
	var in []store.TaskInput
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("t%d", i)
		ids = append(ids, id)
		in = append(in, store.TaskInput{ID: id, Type: "ty", Queue: "q", Priority: i % 3, Payload: []byte("payload-" + id)})
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"q"}, Max: 6, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 6 {
		t.Fatalf("Lease: %d tasks, %v", len(l.Tasks), err)
	}
	var outs []store.Outcome
	dead := map[string]bool{"t1": true, "t3": true, "t5": true}
	for _, tk := range l.Tasks {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("r-" + tk.ID)}
		if dead[tk.ID] {
			o = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "boom " + tk.ID}
		}
		outs = append(outs, o)
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, nil)
	defer func() { _ = s.Close() }()
	res, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: ids, Outcomes: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range res.Tasks {
		if g == nil || !g.State.Terminal() || g.Payload != nil {
			t.Fatalf("%s: %+v; want it finished, without its payload", ids[i], g)
		}
		if !dead[g.ID] && string(g.Result) != "r-"+g.ID || dead[g.ID] && g.LastError != "boom "+g.ID {
			t.Fatalf("%s: result %q, error %q", ids[i], g.Result, g.LastError)
		}
	}
}
