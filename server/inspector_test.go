package server_test

import (
	"errors"
	"testing"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store/remote"
)

// TestInspectorOverHTTP runs kiln.Inspector on a remote store: every call
// goes through the native API and answers as on a local store.
func TestInspectorOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rs, err := remote.Open(t.Context(), b.ts.URL, &remote.Config{Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	c, err := kiln.NewClient(rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	insp := c.Inspector()
	ctx := t.Context()
	var ids []string
	for range 5 {
		r, err := c.Enqueue(ctx, "t", []byte("p"), &kiln.TaskOptions{Queue: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
	}

	qs, err := insp.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0] != (kiln.QueueInfo{Queue: "mail", Pending: 5}) {
		t.Fatalf("Queues = %+v, %v", qs, err)
	}
	if err := insp.PauseQueue(ctx, "mail"); err != nil {
		t.Fatal(err)
	}
	if q, err := insp.Queue(ctx, "mail"); err != nil || !q.Paused {
		t.Fatalf("Queue after pause = %+v, %v", q, err)
	}
	if err := insp.ResumeQueue(ctx, "mail"); err != nil {
		t.Fatal(err)
	}

	var got []string
	for task, err := range insp.All(ctx, &kiln.ListOptions{Queue: "mail", Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, task.ID)
	}
	if len(got) != 5 || got[0] != ids[0] || got[4] != ids[4] {
		t.Errorf("All = %v, want %v", got, ids)
	}

	if err := insp.Cancel(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := insp.Cancel(ctx, ids[0]); !errors.Is(err, kiln.ErrInvalidState) {
		t.Errorf("second Cancel = %v, want ErrInvalidState", err)
	}
	if err := insp.Retry(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := insp.Delete(ctx, ids[1], "no-such-task"); !errors.Is(err, kiln.ErrNotFound) {
		t.Errorf("Delete(batch) = %v, want ErrNotFound for the second id", err)
	}
	if _, err := insp.Task(ctx, ids[1]); !errors.Is(err, kiln.ErrNotFound) {
		t.Errorf("Task(deleted) = %v, want ErrNotFound", err)
	}
	if n, err := insp.CancelAll(ctx, nil); err != nil || n != 4 {
		t.Errorf("CancelAll = %d, %v, want 4", n, err)
	}
	if n, err := insp.DeleteAll(ctx, &kiln.ListOptions{States: []kiln.State{kiln.StateCancelled}}); err != nil || n != 4 {
		t.Errorf("DeleteAll = %d, %v, want 4", n, err)
	}
	if qs, err := insp.Queues(ctx); err != nil || len(qs) != 0 {
		t.Errorf("Queues at the end = %+v, %v, want none", qs, err)
	}
}
