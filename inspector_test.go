package kiln_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
)

// inspectorSetup returns a client of s in a namespace of its own, its
// inspector, and a second client in another namespace.
func inspectorSetup(t *testing.T, s store.Store) (c *kiln.Client, insp *kiln.Inspector, other *kiln.Client) {
	t.Helper()
	c, err := kiln.NewClient(s, &kiln.ClientConfig{Namespace: "insp"})
	if err != nil {
		t.Fatal(err)
	}
	other, err = kiln.NewClient(s, &kiln.ClientConfig{Namespace: "other"})
	if err != nil {
		t.Fatal(err)
	}
	return c, c.Inspector(), other
}

func enqueueIDs(t *testing.T, c *kiln.Client, queue string, n int, opts kiln.TaskOptions) []string {
	t.Helper()
	reqs := make([]kiln.TaskRequest, n)
	for i := range reqs {
		o := opts
		o.Queue = queue
		reqs[i] = kiln.TaskRequest{Type: "t", Payload: []byte{byte(i)}, Options: o}
	}
	res, err := c.EnqueueMany(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, r := range res {
		ids[i] = r.ID()
	}
	return ids
}

// killTasks makes the pending tasks of queue dead by leasing them and
// reporting them dead, as a worker whose handler failed for good would.
func killTasks(t *testing.T, s store.Store, queue string, n int) {
	t.Helper()
	out, err := s.Lease(t.Context(), store.LeaseParams{Namespace: "insp", Queues: []string{queue}, Max: n, Duration: time.Minute, WorkerID: "test"})
	if err != nil || len(out.Tasks) != n {
		t.Fatalf("lease %d from %s: %d tasks, %v", n, queue, len(out.Tasks), err)
	}
	outs := make([]store.Outcome, n)
	for i, task := range out.Tasks {
		outs[i] = store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeDead, Error: "boom"}
	}
	res, err := s.Report(t.Context(), store.ReportParams{Namespace: "insp", Outcomes: outs})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range res.Errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestInspectorQueues(t *testing.T) {
	t.Parallel()
	for _, ts := range kiln.TestStores {
		t.Run(ts.Name, func(t *testing.T) {
			s := ts.Open(t, nil)
			t.Parallel()
			c, insp, other := inspectorSetup(t, s)
			ctx := t.Context()
			enqueueIDs(t, c, "mail", 3, kiln.TaskOptions{})
			enqueueIDs(t, c, "mail", 2, kiln.TaskOptions{ProcessIn: time.Hour})
			enqueueIDs(t, c, "video", 1, kiln.TaskOptions{})
			enqueueIDs(t, other, "elsewhere", 4, kiln.TaskOptions{})
			killTasks(t, s, "video", 1)

			got, err := insp.Queues(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []kiln.QueueInfo{
				{Queue: "mail", Pending: 3, Scheduled: 2},
				{Queue: "video", Dead: 1},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Queues (-want +got):\n%s", diff)
			}
			if got[0].Size() != 5 || got[1].Size() != 0 || got[0].Count(kiln.StateScheduled) != 2 || got[1].Count(kiln.StateDead) != 1 {
				t.Errorf("Size/Count: %d %d %d %d", got[0].Size(), got[1].Size(), got[0].Count(kiln.StateScheduled), got[1].Count(kiln.StateDead))
			}

			if err := insp.PauseQueue(ctx, "mail"); err != nil {
				t.Fatal(err)
			}
			q, err := insp.Queue(ctx, "mail")
			if err != nil || !q.Paused || q.Pending != 3 {
				t.Fatalf("Queue(mail) after pause = %+v, %v", q, err)
			}
			lease, err := s.Lease(ctx, store.LeaseParams{Namespace: "insp", Queues: []string{"mail"}, Max: 10, Duration: time.Minute})
			if err != nil || len(lease.Tasks) != 0 {
				t.Fatalf("lease from a paused queue: %d tasks, %v", len(lease.Tasks), err)
			}
			// A paused queue is listed even when empty.
			if err := insp.PauseQueue(ctx, "empty"); err != nil {
				t.Fatal(err)
			}
			all, err := insp.Queues(ctx)
			if err != nil || len(all) != 3 || all[0].Queue != "empty" || !all[0].Paused {
				t.Fatalf("Queues with a paused empty queue = %+v, %v", all, err)
			}
			for _, name := range []string{"mail", "empty"} {
				if err := insp.ResumeQueue(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
			q, err = insp.Queue(ctx, "mail")
			if err != nil || q.Paused {
				t.Fatalf("Queue(mail) after resume = %+v, %v", q, err)
			}
			lease, err = s.Lease(ctx, store.LeaseParams{Namespace: "insp", Queues: []string{"mail"}, Max: 10, Duration: time.Minute})
			if err != nil || len(lease.Tasks) != 3 {
				t.Fatalf("lease after resume: %d tasks, %v", len(lease.Tasks), err)
			}
			// An unknown queue has zero counts; a bad name is refused.
			if q, err := insp.Queue(ctx, "nothing"); err != nil || q != (kiln.QueueInfo{Queue: "nothing"}) {
				t.Errorf("Queue(nothing) = %+v, %v", q, err)
			}
			if err := insp.PauseQueue(ctx, "bad name"); !errors.Is(err, kiln.ErrInvalidName) {
				t.Errorf("PauseQueue(bad name) = %v, want ErrInvalidName", err)
			}
		})
	}
}

func TestInspectorList(t *testing.T) {
	t.Parallel()
	for _, ts := range kiln.TestStores {
		t.Run(ts.Name, func(t *testing.T) {
			s := ts.Open(t, nil)
			t.Parallel()
			c, insp, other := inspectorSetup(t, s)
			ctx := t.Context()
			pending := enqueueIDs(t, c, "q", 5, kiln.TaskOptions{})
			scheduled := enqueueIDs(t, c, "q", 2, kiln.TaskOptions{ProcessIn: time.Hour})
			enqueueIDs(t, other, "q", 3, kiln.TaskOptions{})

			// Pages of 2 follow the cursor to the end, oldest first.
			var got []string
			opts := &kiln.ListOptions{Limit: 2, States: []kiln.State{kiln.StatePending}}
			for {
				page, err := insp.List(ctx, opts)
				if err != nil {
					t.Fatal(err)
				}
				for _, task := range page.Tasks {
					if task.Payload != nil {
						t.Errorf("task %s has a payload without WithPayload", task.ID)
					}
					got = append(got, task.ID)
				}
				if page.NextCursor == "" {
					break
				}
				opts.Cursor = page.NextCursor
			}
			if !slices.Equal(got, pending) {
				t.Errorf("pending pages = %v, want %v", got, pending)
			}

			// All yields the same, newest first and with payloads here.
			got = nil
			for task, err := range insp.All(ctx, &kiln.ListOptions{Queue: "q", Newest: true, WithPayload: true, Limit: 3}) {
				if err != nil {
					t.Fatal(err)
				}
				if task.Payload == nil {
					t.Errorf("task %s has no payload with WithPayload", task.ID)
				}
				got = append(got, task.ID)
			}
			want := slices.Concat(pending, scheduled)
			slices.Reverse(want)
			if !slices.Equal(got, want) {
				t.Errorf("All newest first = %v, want %v", got, want)
			}
			// Stopping early stops.
			n := 0
			for _, err := range insp.All(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				n++
				break
			}
			if n != 1 {
				t.Errorf("All after break yielded %d", n)
			}
			// A bad cursor is an error, yielded once.
			n = 0
			for task, err := range insp.All(ctx, &kiln.ListOptions{Cursor: "not-a-cursor"}) {
				n++
				if task != nil || !errors.Is(err, kiln.ErrInvalidOption) {
					t.Errorf("All(bad cursor) = %v, %v, want ErrInvalidOption", task, err)
				}
			}
			if n != 1 {
				t.Errorf("All(bad cursor) yielded %d times", n)
			}
			task, err := insp.Task(ctx, scheduled[0])
			if err != nil || task.State != kiln.StateScheduled {
				t.Errorf("Task(%s) = %+v, %v", scheduled[0], task, err)
			}
		})
	}
}

func TestInspectorAdmin(t *testing.T) {
	t.Parallel()
	for _, ts := range kiln.TestStores {
		t.Run(ts.Name, func(t *testing.T) {
			s := ts.Open(t, nil)
			t.Parallel()
			c, insp, other := inspectorSetup(t, s)
			ctx := t.Context()
			ids := enqueueIDs(t, c, "q", 4, kiln.TaskOptions{})
			otherIDs := enqueueIDs(t, other, "q", 1, kiln.TaskOptions{})

			// Cancel one; cancelling it again is an invalid state, and an id
			// of another namespace is not found.
			if err := insp.Cancel(ctx, ids[0]); err != nil {
				t.Fatal(err)
			}
			if err := insp.Cancel(ctx, ids[0]); !errors.Is(err, kiln.ErrInvalidState) {
				t.Errorf("second Cancel = %v, want ErrInvalidState", err)
			}
			err := insp.Cancel(ctx, ids[1], otherIDs[0])
			var be *kiln.BatchError
			if !errors.As(err, &be) || len(be.Errs) != 2 || be.Errs[0] != nil || !errors.Is(be.Errs[1], kiln.ErrNotFound) {
				t.Fatalf("Cancel(batch) = %v, want a BatchError with ErrNotFound for the second id", err)
			}
			if info, err := other.Info(ctx, otherIDs[0]); err != nil || info.State != kiln.StatePending {
				t.Errorf("the other namespace's task = %+v, %v, want it pending", info, err)
			}

			// Retry the cancelled ones.
			if err := insp.Retry(ctx, ids[0], ids[1]); err != nil {
				t.Fatal(err)
			}
			if err := insp.Retry(ctx, ids[2]); !errors.Is(err, kiln.ErrInvalidState) {
				t.Errorf("Retry(pending) = %v, want ErrInvalidState", err)
			}
			q, err := insp.Queue(ctx, "q")
			if err != nil || q.Pending != 4 || q.Cancelled != 0 {
				t.Fatalf("after retry: %+v, %v", q, err)
			}

			// Delete.
			if err := insp.Delete(ctx, ids[3]); err != nil {
				t.Fatal(err)
			}
			if _, err := insp.Task(ctx, ids[3]); !errors.Is(err, kiln.ErrNotFound) {
				t.Errorf("Task(deleted) = %v, want ErrNotFound", err)
			}
			if err := insp.Delete(ctx); err != nil {
				t.Errorf("Delete() = %v", err)
			}

			// The bulk forms.
			killTasks(t, s, "q", 2)
			n, err := insp.RetryAll(ctx, nil)
			if err != nil || n != 2 {
				t.Errorf("RetryAll = %d, %v, want 2", n, err)
			}
			n, err = insp.CancelAll(ctx, &kiln.ListOptions{Queue: "q", States: []kiln.State{kiln.StatePending}})
			if err != nil || n != 3 {
				t.Errorf("CancelAll = %d, %v, want 3", n, err)
			}
			n, err = insp.DeleteAll(ctx, &kiln.ListOptions{States: []kiln.State{kiln.StateCancelled}})
			if err != nil || n != 3 {
				t.Errorf("DeleteAll = %d, %v, want 3", n, err)
			}
			if qs, err := insp.Queues(ctx); err != nil || len(qs) != 0 {
				t.Errorf("Queues after DeleteAll = %+v, %v, want none", qs, err)
			}
			if q, err := other.Inspector().Queue(ctx, "q"); err != nil || q.Pending != 1 {
				t.Errorf("the other namespace's queue = %+v, %v, want its task", q, err)
			}
		})
	}
}

// TestInspectorTaskErrors: Inspector.Task and List show a task's failed
// attempts, oldest first, with the worker that ran each; a task that never
// failed has none.
func TestInspectorTaskErrors(t *testing.T) {
	t.Parallel()
	for _, ts := range kiln.TestStores {
		t.Run(ts.Name, func(t *testing.T) {
			s := ts.Open(t, nil)
			t.Parallel()
			c, insp, _ := inspectorSetup(t, s)
			ctx := t.Context()
			ids := enqueueIDs(t, c, "errs", 1, kiln.TaskOptions{MaxRetries: new(3)})
			ok := enqueueIDs(t, c, "fine", 1, kiln.TaskOptions{})[0]
			for n, msg := range []string{"first", "second"} {
				out, err := s.Lease(ctx, store.LeaseParams{Namespace: "insp", Queues: []string{"errs"}, Max: 1, Duration: time.Minute, WorkerID: "w" + msg})
				if err != nil || len(out.Tasks) != 1 {
					t.Fatalf("lease %d: %v, %v", n, out.Tasks, err)
				}
				kind := store.OutcomeRetry
				if n == 1 {
					kind = store.OutcomeDead
				}
				res, err := s.Report(ctx, store.ReportParams{Namespace: "insp", Outcomes: []store.Outcome{{ID: ids[0], LeaseID: out.Tasks[0].LeaseID, Kind: kind, Error: msg}}})
				if err != nil || res.Errs[0] != nil {
					t.Fatalf("report %d: %v, %v", n, res.Errs, err)
				}
			}
			info, err := insp.Task(ctx, ids[0])
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range info.Errors {
				got = append(got, fmt.Sprintf("%d %s %s", e.Attempt, e.WorkerID, e.Error))
				if e.At.IsZero() {
					t.Errorf("attempt %d has no time", e.Attempt)
				}
			}
			if want := []string{"1 wfirst first", "2 wsecond second"}; !slices.Equal(got, want) || info.ErrorsDropped != 0 {
				t.Errorf("Task(...).Errors = %q (dropped %d), want %q", got, info.ErrorsDropped, want)
			}
			page, err := insp.List(ctx, &kiln.ListOptions{Queue: "errs"})
			if err != nil || len(page.Tasks) != 1 || len(page.Tasks[0].Errors) != 2 {
				t.Errorf("List(errs) = %+v, %v; want the task with its 2 errors", page.Tasks, err)
			}
			if info, err := insp.Task(ctx, ok); err != nil || info.Errors != nil {
				t.Errorf("a task that never failed: Errors %v, %v; want nil", info.Errors, err)
			}
		})
	}
}
