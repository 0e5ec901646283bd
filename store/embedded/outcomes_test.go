package embedded

import (
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// TestGetOutcomesFromDisk reads finished tasks (on disk only, after a
// reopen) with GetParams.Outcomes: each outcome as a full Get gives it
// (state, error, result, type, queue, priority), without the payload,
// which Outcomes does not read.
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
	for i, tk := range l.Tasks {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("r-" + tk.ID)}
		if i%2 == 1 {
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
	ids = append(ids, "none")
	full, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: "ns", IDs: ids, Outcomes: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		f, g := full.Tasks[i], got.Tasks[i]
		if id == "none" {
			if f != nil || g != nil {
				t.Fatalf("none: %+v, %+v; want nil", f, g)
			}
			continue
		}
		if f == nil || g == nil || string(f.Payload) != "payload-"+id {
			t.Fatalf("%s: full %+v, outcomes %+v", id, f, g)
		}
		if g.ID != f.ID || g.Type != f.Type || g.Queue != f.Queue || g.Priority != f.Priority || g.State != f.State ||
			g.LastError != f.LastError || string(g.Result) != string(f.Result) || !f.State.Terminal() {
			t.Fatalf("%s: outcomes %+v, want those of %+v", id, g, f)
		}
		if g.Payload != nil {
			t.Fatalf("%s: payload %q read with Outcomes", id, g.Payload)
		}
	}
}
