package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// testClose covers Ping and Close: calls after Close and calls blocked in
// Close return ErrClosed. The harness's cleanup closes the store a second
// time, so Close must tolerate that (its error is the harness's to ignore).
func testClose(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		if err := f.s.Ping(f.ctx()); err != nil {
			t.Errorf("Ping on an open store: got %v, want nil", err)
		}
	})

	t.Run("CallsAfterClose", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		id := f.addN(1, "t", "q")[0]
		if err := f.s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: []store.TaskInput{input("t", "q")}}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Enqueue after Close: got %v, want %v", err, store.ErrClosed)
		}
		if _, err := f.s.Lease(f.ctx(), store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Lease after Close: got %v, want %v", err, store.ErrClosed)
		}
		if _, err := f.s.Get(f.ctx(), store.GetParams{Namespace: f.ns, IDs: []string{id}}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Get after Close: got %v, want %v", err, store.ErrClosed)
		}
		if err := f.s.Ping(f.ctx()); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Ping after Close: got %v, want %v", err, store.ErrClosed)
		}
		if _, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Wait: time.Hour}); !errors.Is(err, store.ErrClosed) {
			t.Errorf("WaitCancels after Close: got %v, want %v", err, store.ErrClosed)
		}
	})

	t.Run("CloseWakesWaitCancels", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		res, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns})
		if err != nil {
			t.Fatalf("WaitCancels: %v", err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Cursor: res.Cursor, Wait: time.Hour})
			done <- err
		}()
		time.Sleep(20 * time.Millisecond) // let it wait; not needed for the check
		if err := f.s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("a WaitCancels waiting when the store closed: got %v, want %v", err, store.ErrClosed)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Close did not end a waiting WaitCancels within %s", waitLimit)
		}
	})

	t.Run("CloseWakesWaitingLease", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		done := make(chan error, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			_, err := f.s.Lease(f.ctx(), store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, Wait: time.Hour})
			done <- err
		}()
		<-started
		if err := f.s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-done:
			// The Lease may have found the store already closed, or been
			// woken by Close; it must not answer as if nothing happened.
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("Lease(Wait) across Close: got %v, want %v", err, store.ErrClosed)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Lease(Wait 1h) did not return within %s after Close", waitLimit)
		}
	})
}

// testLimits covers inputs that are wrong as a whole: batches over
// store.MaxBatch and bad namespace or queue names.
func testLimits(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("BatchTooLarge", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		ins := make([]store.TaskInput, store.MaxBatch+1)
		for i := range ins {
			ins[i] = input("t", "q")
		}
		res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: ins})
		if !errors.Is(err, store.ErrInvalidOption) {
			t.Errorf("Enqueue of %d tasks: got (%d items, %v), want error %v", len(ins), len(res.Items), err, store.ErrInvalidOption)
		}
		f.wantEmpty()
		// A full batch is accepted.
		f.add(ins[:store.MaxBatch]...)
		if got := len(f.listAll(store.ListParams{Limit: store.MaxListLimit})); got != store.MaxBatch {
			t.Errorf("List after a batch of %d: got %d tasks", store.MaxBatch, got)
		}
		ids := make([]string, store.MaxBatch+1)
		for i := range ids {
			ids[i] = ins[i].ID
		}
		if _, err := f.s.Get(f.ctx(), store.GetParams{Namespace: f.ns, IDs: ids}); !errors.Is(err, store.ErrInvalidOption) {
			t.Errorf("Get of %d ids: got %v, want %v", len(ids), err, store.ErrInvalidOption)
		}
	})

	t.Run("BadNames", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		bad := "bad namespace"
		res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: bad, Tasks: []store.TaskInput{input("t", "q")}})
		if err == nil && (len(res.Items) != 1 || !errors.Is(res.Items[0].Err, store.ErrInvalidName)) {
			t.Errorf("Enqueue into namespace %q: got (%+v, nil), want %v returned or in the item", bad, res.Items, store.ErrInvalidName)
		} else if err != nil && !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("Enqueue into namespace %q: got %v, want %v", bad, err, store.ErrInvalidName)
		}
		for _, tc := range []struct {
			name string
			call func(context.Context) error
		}{
			{"Get", func(ctx context.Context) error {
				_, err := f.s.Get(ctx, store.GetParams{Namespace: bad, IDs: []string{newID()}})
				return err
			}},
			{"List", func(ctx context.Context) error { _, err := f.s.List(ctx, store.ListParams{Namespace: bad}); return err }},
			{"Stats", func(ctx context.Context) error {
				_, err := f.s.Stats(ctx, store.StatsParams{Namespace: bad})
				return err
			}},
			{"SetQueuePaused(namespace)", func(ctx context.Context) error {
				return f.s.SetQueuePaused(ctx, store.QueuePauseParams{Namespace: bad, Queue: "q", Paused: true})
			}},
			{"SetQueuePaused(queue)", func(ctx context.Context) error {
				return f.s.SetQueuePaused(ctx, store.QueuePauseParams{Namespace: f.ns, Queue: "bad queue", Paused: true})
			}},
		} {
			if err := tc.call(f.ctx()); !errors.Is(err, store.ErrInvalidName) {
				t.Errorf("%s with a bad name: got %v, want %v", tc.name, err, store.ErrInvalidName)
			}
		}
		f.wantEmpty()
	})
}

// testRaces runs admin calls and reports against each other and checks that
// every task ends in one consistent state.
func testRaces(t *testing.T, h Harness) {
	t.Parallel()

	// A cancel racing the worker's success: the cancel either marks the
	// active task (and the success still counts: the handler finished) or
	// finds it finished and fails with ErrInvalidState.
	t.Run("CancelVersusReport", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 200
		f.addN(n, "t", "q")
		tasks := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: n, Duration: time.Hour})
		if len(tasks) != n {
			t.Fatalf("Lease(Max %d): got %d tasks", n, len(tasks))
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for _, tk := range tasks {
				res, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}})
				if err != nil {
					t.Errorf("Report: %v", err)
					return
				}
				if res.Errs[0] != nil {
					t.Errorf("Report(succeeded) of %s: %v", tk.ID, res.Errs[0])
				}
			}
		})
		wg.Go(func() {
			for _, tk := range tasks {
				res, err := f.s.Cancel(f.ctx(), store.IDsParams{Namespace: f.ns, IDs: []string{tk.ID}})
				if err != nil {
					t.Errorf("Cancel: %v", err)
					return
				}
				it := res.Items[0]
				marked := it.Err == nil && it.State == store.StateActive
				if !marked && !errors.Is(it.Err, store.ErrInvalidState) {
					t.Errorf("Cancel of %s racing its report: got (%s, %v), want (active, nil) or %v", tk.ID, it.State, it.Err, store.ErrInvalidState)
				}
			}
		})
		wg.Wait()
		for _, tk := range f.gets(ids(tasks)...) {
			if tk == nil || tk.State != store.StateSucceeded {
				t.Errorf("after the race: got %+v, want a succeeded task", tk)
			}
		}
		f.check()
	})

	// Sweeps racing reports of leases that are expiring: each task ends
	// either succeeded (the report won) or pending with the report rejected
	// by ErrLeaseLost (the sweep won), never both and never neither.
	t.Run("SweepVersusReport", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 200
		ins := make([]store.TaskInput, n)
		for i := range ins {
			ins[i] = input("t", "q")
			ins[i].MaxRetries = 1
		}
		f.add(ins...)
		tasks := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: n, Duration: time.Minute})
		if len(tasks) != n {
			t.Fatalf("Lease(Max %d): got %d tasks", n, len(tasks))
		}
		f.clock.Advance(time.Minute + time.Millisecond)
		reportErrs := make([]error, n)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i, tk := range tasks {
				res, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}})
				if err != nil {
					t.Errorf("Report: %v", err)
					return
				}
				reportErrs[i] = res.Errs[0]
			}
		})
		wg.Go(func() {
			for range 20 {
				if _, err := f.s.Sweep(f.ctx(), store.SweepParams{Limit: 10}); err != nil {
					t.Errorf("Sweep: %v", err)
					return
				}
			}
		})
		wg.Wait()
		f.sweep()
		for i, tk := range f.gets(ids(tasks)...) {
			switch {
			case reportErrs[i] == nil && tk.State == store.StateSucceeded:
			case errors.Is(reportErrs[i], store.ErrLeaseLost) && tk.State == store.StatePending:
			default:
				t.Errorf("task %s: report got %v and the task is %s; want (nil, succeeded) or (%v, pending)", tk.ID, reportErrs[i], tk.State, store.ErrLeaseLost)
			}
		}
		f.check()
	})

	// Single-task enqueues from many goroutines at once, as a server's
	// handlers make them (a store may send concurrent calls together): each
	// id is taken once, each unique key held by one task, whose id the
	// others get with ErrDuplicate; the counts are exact and the change
	// feed has one enqueue per task that went in.
	t.Run("ConcurrentEnqueue", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const (
			callers = 32
			ids     = 300 // each enqueued twice under the same id
			keys    = 40  // each the unique key of 4 different tasks
		)
		var cursor string
		if _, ok := f.s.(store.Feed); ok {
			cursor = f.feedStart()
		}
		var calls []store.TaskInput
		for range ids {
			in := input("t", "q")
			calls = append(calls, in, in)
		}
		for k := range keys {
			for range 4 {
				in := input("u", "q")
				in.UniqueKey = fmt.Sprintf("key-%d", k)
				in.UniqueTTL = time.Hour
				calls = append(calls, in)
			}
		}
		items := make([]store.EnqueueItem, len(calls))
		var next atomic.Int64
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= len(calls) {
						return
					}
					res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: calls[i : i+1]})
					if err != nil {
						t.Errorf("Enqueue: %v", err)
						return
					}
					if len(res.Items) != 1 {
						t.Errorf("Enqueue of one task: %d items", len(res.Items))
						return
					}
					items[i] = res.Items[0]
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		in := map[string]bool{} // the ids enqueued
		for i := 0; i < 2*ids; i += 2 {
			a, b := items[i], items[i+1]
			if (a.Err == nil) == (b.Err == nil) || !errors.Is(a.Err, store.ErrTaskExists) && !errors.Is(b.Err, store.ErrTaskExists) {
				t.Errorf("id %s enqueued twice at once: got (%v, %v); want one nil and one %v", calls[i].ID, a.Err, b.Err, store.ErrTaskExists)
			}
			in[calls[i].ID] = true
		}
		for k := range keys {
			group := items[2*ids+4*k : 2*ids+4*k+4]
			var holder string
			for j, it := range group {
				if it.Err == nil {
					if holder != "" {
						t.Errorf("unique key-%d: two tasks enqueued (%s and %s)", k, holder, it.ID)
					}
					holder = calls[2*ids+4*k+j].ID
				}
			}
			if holder == "" {
				t.Errorf("unique key-%d: no task enqueued", k)
				continue
			}
			in[holder] = true
			for _, it := range group {
				if it.Err != nil && (!errors.Is(it.Err, store.ErrDuplicate) || it.ID != holder) {
					t.Errorf("unique key-%d: got (%s, %v); want (%s, %v)", k, it.ID, it.Err, holder, store.ErrDuplicate)
				}
			}
		}
		if got := f.stats("q")[0].Counts[store.StatePending]; got != int64(len(in)) {
			t.Errorf("Stats: %d pending; want %d", got, len(in))
		}
		f.check()
		if cursor == "" {
			return
		}
		changes, _ := f.changesSince(cursor)
		seen := map[string]int{}
		for _, c := range changes {
			if c.Kind != store.ChangeEnqueued || c.State != store.StatePending {
				t.Errorf("change %s; want only enqueues of pending tasks", changeLine(c))
			}
			seen[c.ID]++
		}
		for id := range in {
			if seen[id] != 1 {
				t.Errorf("task %s: %d enqueue changes; want 1", id, seen[id])
			}
		}
		if len(seen) != len(in) {
			t.Errorf("changes for %d tasks; want %d", len(seen), len(in))
		}
	})
}
