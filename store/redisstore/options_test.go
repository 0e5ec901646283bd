package redisstore

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// TestEnqueueOptionsAnyKey: a unique key that holds "|" (the separator of
// the unique key's entry, "<until>|<id>") works: it is held, refused to a
// second task with the holder's id, and released by the success of its
// holder (unique until success); the task's other options arrive intact.
func TestEnqueueOptionsAnyKey(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	ns := store.DefaultNamespace
	in := func(id string) store.TaskInput {
		return store.TaskInput{ID: id, Type: "t", UniqueKey: "a|b||c|", UniqueTTL: time.Hour, UniqueUntilSuccess: true,
			MaxRetries: 7, Retention: 90 * time.Minute}
	}
	res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{in("first"), in("second")}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Items[0].Err != nil || !errors.Is(res.Items[1].Err, store.ErrDuplicate) || res.Items[1].ID != "first" {
		t.Fatalf("Enqueue of two tasks with one unique key = %+v; want the first in, the second %v naming it", res.Items, store.ErrDuplicate)
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"first"}})
	if err != nil {
		t.Fatal(err)
	}
	if tk := got.Tasks[0]; tk.UniqueKey != "a|b||c|" || tk.MaxRetries != 7 || tk.Retention != 90*time.Minute {
		t.Fatalf("Get(first) = key %q, max retries %d, retention %s; want a|b||c|, 7, 1h30m", tk.UniqueKey, tk.MaxRetries, tk.Retention)
	}
	lr, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Minute, WorkerID: "w"})
	if err != nil || len(lr.Tasks) != 1 {
		t.Fatalf("Lease = %+v, %v; want the first task", lr, err)
	}
	rr, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: "first", LeaseID: lr.Tasks[0].LeaseID, Kind: store.OutcomeSucceeded}}})
	if err != nil || rr.Errs[0] != nil {
		t.Fatalf("Report = %+v, %v", rr, err)
	}
	res, err = s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{in("third")}})
	if err != nil || res.Items[0].Err != nil {
		t.Fatalf("Enqueue after the holder succeeded = %+v, %v; want the key released", res, err)
	}
}
