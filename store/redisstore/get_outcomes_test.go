package redisstore

import (
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// TestGetOutcomes checks Get with GetParams.Outcomes: the outcome of each
// task (id, type, queue, state, last error, result) as a full Get gives
// it, and not the rest (payload).
func TestGetOutcomes(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	in := []store.TaskInput{
		{ID: "ok", Type: "t", Queue: "q", Payload: []byte("p1")},
		{ID: "bad", Type: "u", Queue: "q", Payload: []byte("p2")},
		{ID: "open", Type: "t", Queue: "q2", Payload: []byte("p3"), Priority: 3},
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "ns", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"q"}, Max: 2, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 2 {
		t.Fatalf("Lease: %d tasks, %v", len(l.Tasks), err)
	}
	var outs []store.Outcome
	for _, tk := range l.Tasks {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("r")}
		if tk.ID == "bad" {
			o = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "boom"}
		}
		outs = append(outs, o)
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	ids := []string{"ok", "bad", "open", "none"}
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
		if f == nil || g == nil {
			if f != g {
				t.Fatalf("%s: full %+v, outcomes %+v", id, f, g)
			}
			continue
		}
		if g.ID != f.ID || g.Type != f.Type || g.Queue != f.Queue || g.Priority != f.Priority || g.State != f.State ||
			g.LastError != f.LastError || string(g.Result) != string(f.Result) {
			t.Fatalf("%s: outcomes %+v, want those of %+v", id, g, f)
		}
		if g.Payload != nil {
			t.Fatalf("%s: payload %q read with Outcomes", id, g.Payload)
		}
	}
	if got.Tasks[1].LastError != "boom" || string(got.Tasks[0].Result) != "r" || got.Tasks[2].Priority != 3 {
		t.Fatalf("outcomes %+v, %+v, %+v", got.Tasks[0], got.Tasks[1], got.Tasks[2])
	}
}
