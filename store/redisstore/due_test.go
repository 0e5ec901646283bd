package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// TestLeaseWakesAtDueTime: a Lease waiting on an empty queue returns a task
// enqueued meanwhile with a due time (and a retry reported meanwhile) when
// it is due, by the notification of the enqueue and the due time it brings,
// not by the fallback check (lengthened here to an hour) nor by a sweep
// (none runs). Before the fix, the enqueue of a delayed task and a delayed
// retry published nothing, and the Lease slept until its next check.
func TestLeaseWakesAtDueTime(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	s.wakeCheck = time.Hour
	const ns = "due"
	lease := func() chan []*store.Task {
		got := make(chan []*store.Task, 1)
		go func() {
			res, err := s.Lease(context.Background(), store.LeaseParams{Namespace: ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, Wait: time.Hour})
			if err != nil {
				t.Errorf("Lease: %v", err)
			}
			got <- res.Tasks
		}()
		time.Sleep(50 * time.Millisecond) // let it reach its wait
		return got
	}
	want := func(got chan []*store.Task, what string) *store.Task {
		t.Helper()
		select {
		case tasks := <-got:
			if len(tasks) != 1 {
				t.Fatalf("%s: Lease returned %d tasks", what, len(tasks))
			}
			return tasks[0]
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: a waiting Lease did not return within 20 s of the task's due time (100 ms)", what)
			return nil
		}
	}

	got := lease()
	res, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{
		{ID: "a", Type: "t", Queue: "q", RunAt: time.Now().Add(100 * time.Millisecond)},
	}})
	if err != nil || res.Items[0].Err != nil {
		t.Fatalf("Enqueue: %v %v", err, res.Items)
	}
	tk := want(got, "delayed enqueue")

	got = lease()
	rr, err := s.Report(t.Context(), store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{
		{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "x", RetryAt: time.Now().Add(100 * time.Millisecond)},
	}})
	if err != nil || rr.Errs[0] != nil {
		t.Fatalf("Report: %v %v", err, rr.Errs)
	}
	want(got, "delayed retry")
}
