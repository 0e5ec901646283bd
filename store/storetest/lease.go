package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

func testLease(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("AttemptCountedAtLease", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.MaxRetries = 5
		f.add(in)
		for attempt := 1; attempt <= 3; attempt++ {
			tk := f.leaseOne("q")
			if tk.Attempt != attempt {
				t.Fatalf("lease %d: Attempt = %d, want %d", attempt, tk.Attempt, attempt)
			}
			if got := f.mustGet(in.ID); got.Attempt != attempt {
				t.Fatalf("lease %d: Get Attempt = %d, want %d", attempt, got.Attempt, attempt)
			}
			// RetryAt zero means now: the task is leasable again at once.
			f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: fmt.Sprint("fail ", attempt)})
		}
		f.check()
	})

	t.Run("Release", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		id := f.addN(1, "t", "q")[0]
		tk := f.leaseOne("q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRelease, NotStarted: true})
		if got := f.wantState(id, store.StatePending); got.Attempt != 0 {
			t.Errorf("after release NotStarted: Attempt = %d, want 0", got.Attempt)
		}
		tk = f.leaseOne("q")
		if tk.Attempt != 1 {
			t.Errorf("lease after release NotStarted: Attempt = %d, want 1", tk.Attempt)
		}
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRelease})
		if got := f.wantState(id, store.StatePending); got.Attempt != 1 {
			t.Errorf("after release: Attempt = %d, want 1", got.Attempt)
		}
		if tk = f.leaseOne("q"); tk.Attempt != 2 {
			t.Errorf("lease after release: Attempt = %d, want 2", tk.Attempt)
		}
		f.check()
	})

	t.Run("LeaseIDsUnique", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(20, "t", "q")
		seen := make(map[uint64]string)
		for _, tk := range f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 20}) {
			if tk.LeaseID == 0 {
				t.Errorf("task %s: LeaseID 0", tk.ID)
			}
			if other, ok := seen[tk.LeaseID]; ok {
				t.Errorf("tasks %s and %s share LeaseID %d", other, tk.ID, tk.LeaseID)
			}
			seen[tk.LeaseID] = tk.ID
		}
		if len(seen) != 20 {
			t.Errorf("Lease(Max 20): got %d distinct leases, want 20", len(seen))
		}
	})

	t.Run("StaleLease", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.MaxRetries = 3
		f.add(in)
		old := f.leaseOne("q")
		f.clock.Set(old.LeaseExpiresAt.Add(time.Millisecond))
		if res := f.sweep(); res.Recovered != 1 {
			t.Fatalf("Sweep: got Recovered %d, want 1", res.Recovered)
		}
		cur := f.leaseOne("q")
		if cur.LeaseID == old.LeaseID {
			t.Fatalf("second lease reuses LeaseID %d", cur.LeaseID)
		}
		before := f.mustGet(in.ID)
		for _, kind := range []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeRetry, store.OutcomeDead, store.OutcomeCancelled, store.OutcomeRelease} {
			err := f.report(store.Outcome{ID: in.ID, LeaseID: old.LeaseID, Kind: kind, Result: []byte("stale"), Error: "stale"})[0]
			if !errors.Is(err, store.ErrLeaseLost) {
				t.Errorf("Report(%s) with a stale lease: got %v, want %v", kind, err, store.ErrLeaseLost)
			}
		}
		ext := f.extend(time.Hour, store.ExtendLease{LeaseRef: store.LeaseRef{ID: in.ID, LeaseID: old.LeaseID}, Progress: &store.Progress{Percent: 99}})[0]
		if !errors.Is(ext.Err, store.ErrLeaseLost) {
			t.Errorf("Extend with a stale lease: got %v, want %v", ext.Err, store.ErrLeaseLost)
		}
		if err := f.report(store.Outcome{ID: in.ID, LeaseID: cur.LeaseID + old.LeaseID + 12345, Kind: store.OutcomeSucceeded})[0]; !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("Report with a made-up lease: got %v, want %v", err, store.ErrLeaseLost)
		}
		if diff := cmp.Diff(before, f.mustGet(in.ID), cmpOpts...); diff != "" {
			t.Errorf("task changed by stale calls (-before +after):\n%s", diff)
		}
		// The current lease still works, once.
		f.mustReport(store.Outcome{ID: in.ID, LeaseID: cur.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("ok")})
		if err := f.report(store.Outcome{ID: in.ID, LeaseID: cur.LeaseID, Kind: store.OutcomeDead})[0]; !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("second Report on a finished lease: got %v, want %v", err, store.ErrLeaseLost)
		}
		if got := f.wantState(in.ID, store.StateSucceeded); string(got.Result) != "ok" {
			t.Errorf("Result = %q, want %q", got.Result, "ok")
		}
		f.check()
	})

	t.Run("Types", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		a1 := f.addN(1, "a", "q")[0]
		b1 := f.addN(1, "b", "q")[0]
		a2 := f.addN(1, "a", "q")[0]
		c1 := f.addN(1, "c", "q")[0]
		got := f.lease(store.LeaseParams{Queues: []string{"q"}, Types: []string{"b"}, Max: 10})
		if !cmp.Equal(ids(got), []string{b1}) {
			t.Errorf("Lease(Types [b]): got %v, want [%s]", ids(got), b1)
		}
		for _, id := range []string{a1, a2, c1} {
			f.wantState(id, store.StatePending)
		}
		got = f.lease(store.LeaseParams{Queues: []string{"q"}, Types: []string{"c", "a"}, Max: 10})
		if want := []string{a1, a2, c1}; !cmp.Equal(sorted(ids(got)), sorted(want)) {
			t.Errorf("Lease(Types [c a]): got %v, want %v", ids(got), want)
		}
		got = f.lease(store.LeaseParams{Queues: []string{"q"}, Types: []string{"zzz"}, Max: 10})
		if len(got) != 0 {
			t.Errorf("Lease(Types [zzz]): got %v, want none", ids(got))
		}
		f.check()
	})
}

// testLeaseExpiry covers the sweeper's recovery of orphaned tasks.
func testLeaseExpiry(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("RecoverThenDead", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.MaxRetries = 1
		f.add(in)
		tk := f.lease(store.LeaseParams{Queues: []string{"q"}, Duration: 30 * time.Second})[0]
		if want := f.now().Add(30 * time.Second); !tk.LeaseExpiresAt.Equal(want) {
			t.Errorf("LeaseExpiresAt = %v, want now+30s = %v", tk.LeaseExpiresAt, want)
		}
		f.clock.Set(tk.LeaseExpiresAt.Add(-time.Millisecond))
		if res := f.sweep(); res.Total() != 0 {
			t.Errorf("Sweep before expiry: got %+v, want no change", res)
		}
		f.wantState(in.ID, store.StateActive)

		f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
		if res := f.sweep(); res != (store.SweepResult{Recovered: 1}) {
			t.Errorf("Sweep after expiry: got %+v, want Recovered 1", res)
		}
		got := f.wantState(in.ID, store.StatePending)
		if got.Attempt != 1 {
			t.Errorf("recovered task: Attempt = %d, want 1", got.Attempt)
		}
		wantLeaseError(f, nil, got)

		tk = f.leaseOne("q")
		if tk.Attempt != 2 {
			t.Errorf("second lease: Attempt = %d, want 2", tk.Attempt)
		}
		f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
		if res := f.sweep(); res != (store.SweepResult{Dead: 1}) {
			t.Errorf("Sweep after the last attempt expired: got %+v, want Dead 1", res)
		}
		got = f.wantState(in.ID, store.StateDead)
		wantLeaseError(f, nil, got)
		if !got.FinishedAt.Equal(f.now()) {
			t.Errorf("FinishedAt = %v, want %v", got.FinishedAt, f.now())
		}
		if res := f.sweep(); res.Total() != 0 {
			t.Errorf("second Sweep: got %+v, want no change", res)
		}
		f.check()
	})

	t.Run("ConcurrentSweeps", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		ins := make([]store.TaskInput, 100)
		for i := range ins {
			ins[i] = input("t", "q")
			ins[i].MaxRetries = 1
		}
		f.add(ins...)
		f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 100, Duration: time.Minute})
		f.clock.Advance(time.Minute + time.Millisecond)
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				res, err := f.s.Sweep(f.ctx(), store.SweepParams{})
				if err != nil {
					t.Errorf("Sweep: %v", err)
					return
				}
				total.Add(int64(res.Recovered))
			})
		}
		wg.Wait()
		if got := total.Load(); got != 100 {
			t.Errorf("concurrent Sweeps: got Recovered %d in all, want 100 (each change exactly once)", got)
		}
		f.check()
	})
}

// testExtend covers heartbeats: renewal from the store's clock and progress.
func testExtend(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	in := input("t", "q")
	in.MaxRetries = 2
	f.add(in)
	tk := f.lease(store.LeaseParams{Queues: []string{"q"}, Duration: 30 * time.Second})[0]
	ref := store.LeaseRef{ID: tk.ID, LeaseID: tk.LeaseID}

	f.clock.Advance(20 * time.Second)
	it := f.extend(time.Minute, store.ExtendLease{LeaseRef: ref, Progress: &store.Progress{Percent: 40, Message: "halfway"}})[0]
	if it.Err != nil {
		t.Fatalf("Extend: %v", it.Err)
	}
	want := f.now().Add(time.Minute)
	if !it.ExpiresAt.Equal(want) || it.CancelRequested {
		t.Errorf("Extend: got (ExpiresAt %v, CancelRequested %v), want (%v, false)", it.ExpiresAt, it.CancelRequested, want)
	}
	got := f.wantState(tk.ID, store.StateActive)
	if !got.LeaseExpiresAt.Equal(want) || got.ProgressPercent != 40 || got.ProgressMessage != "halfway" || got.LeaseID != tk.LeaseID {
		t.Errorf("Get after Extend: got (LeaseExpiresAt %v, progress %d %q, LeaseID %d), want (%v, 40 %q, %d)",
			got.LeaseExpiresAt, got.ProgressPercent, got.ProgressMessage, got.LeaseID, want, "halfway", tk.LeaseID)
	}

	// Past the first expiry the renewed lease holds; nil progress keeps it.
	f.clock.Set(tk.LeaseExpiresAt.Add(time.Second))
	if res := f.sweep(); res.Total() != 0 {
		t.Errorf("Sweep after the old expiry: got %+v, want no change", res)
	}
	it = f.extend(time.Minute, store.ExtendLease{LeaseRef: ref})[0]
	if it.Err != nil {
		t.Fatalf("second Extend: %v", it.Err)
	}
	got = f.wantState(tk.ID, store.StateActive)
	if got.ProgressPercent != 40 || got.ProgressMessage != "halfway" {
		t.Errorf("Extend without progress: progress = %d %q, want 40 %q kept", got.ProgressPercent, got.ProgressMessage, "halfway")
	}
	f.clock.Set(it.ExpiresAt.Add(time.Millisecond))
	if res := f.sweep(); res.Recovered != 1 {
		t.Errorf("Sweep after the renewed expiry: got %+v, want Recovered 1", res)
	}
	f.wantState(tk.ID, store.StatePending)
	f.check()
}

// testPriority covers the order of queues and of tasks within a queue.
func testPriority(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("StrictQueues", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(5, "t", "q1")
		f.addN(5, "t", "q2")
		var got []string
		for range 10 {
			got = append(got, f.leaseOne("q1", "q2").Queue)
		}
		want := []string{"q1", "q1", "q1", "q1", "q1", "q2", "q2", "q2", "q2", "q2"}
		if !cmp.Equal(got, want) {
			t.Errorf("queues of 10 single leases: got %v, want %v", got, want)
		}
		f.leaseNone("q1", "q2")
		f.check()
	})

	t.Run("StrictListOrderNotName", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(2, "t", "a")
		f.addN(2, "t", "b")
		if got := f.leaseOne("b", "a").Queue; got != "b" {
			t.Errorf("Lease(b, a): got a task of queue %s, want b", got)
		}
	})

	t.Run("BatchFillsFromNextQueue", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(3, "t", "q1")
		f.addN(5, "t", "q2")
		got := f.lease(store.LeaseParams{Queues: []string{"q1", "q2"}, Max: 6})
		count := map[string]int{}
		for _, tk := range got {
			count[tk.Queue]++
		}
		if want := map[string]int{"q1": 3, "q2": 3}; !cmp.Equal(count, want) {
			t.Errorf("Lease(Max 6) over q1 (3 tasks), q2 (5 tasks): got %v, want %v", count, want)
		}
		got = f.lease(store.LeaseParams{Queues: []string{"q1", "q2"}, Weights: []int{1, 1}, Max: 10})
		if len(got) != 2 {
			t.Errorf("weighted Lease(Max 10) with 2 tasks left: got %d, want 2", len(got))
		}
		f.check()
	})

	t.Run("Weighted", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 400
		f.addN(n, "t", "q1")
		f.addN(n, "t", "q2")
		q1 := 0
		for range n {
			if f.lease(store.LeaseParams{Queues: []string{"q1", "q2"}, Weights: []int{3, 1}})[0].Queue == "q1" {
				q1++
			}
		}
		// The expected share is 0.75, with a standard deviation near 0.02.
		if share := float64(q1) / n; share < 0.6 || share > 0.9 {
			t.Errorf("weighted 3:1 lease: q1 got a share of %.3f of %d leases, want 0.6..0.9", share, n)
		}
	})

	t.Run("TaskPriority", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		prios := []int{0, 5, 9, 5, 0, 9, 1}
		ins := make([]store.TaskInput, len(prios))
		for i, p := range prios {
			ins[i] = input("t", "q")
			ins[i].Priority = p
		}
		f.add(ins...)
		want := []string{ins[2].ID, ins[5].ID, ins[1].ID, ins[3].ID, ins[6].ID, ins[0].ID, ins[4].ID}
		var got []string
		for range ins {
			got = append(got, f.leaseOne("q").ID)
		}
		if !cmp.Equal(got, want) {
			t.Errorf("lease order (priorities %v in one batch): got %v, want %v", prios, got, want)
		}
	})

	t.Run("FIFO", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		var want []string
		for range 5 {
			want = append(want, f.addN(1, "t", "q")[0])
			f.clock.Advance(time.Millisecond)
		}
		// Tasks enqueued at the same instant keep enqueue order too.
		for range 3 {
			want = append(want, f.addN(1, "t", "q")[0])
		}
		var got []string
		for range want {
			got = append(got, f.leaseOne("q").ID)
		}
		if !cmp.Equal(got, want) {
			t.Errorf("lease order: got %v, want enqueue order %v", got, want)
		}
		// So do the tasks of one batch, past 256 of them (a store may
		// number them in parts); their ids' own order is another.
		want = f.addN(300, "t", "q")
		got = got[:0]
		for len(got) < len(want) {
			got = append(got, ids(f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 70}))...)
		}
		if !cmp.Equal(got, want) {
			t.Errorf("lease order of one batch of %d: got %v, want enqueue order %v", len(want), got, want)
		}
	})

	t.Run("RunAtOrder", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		now := f.now()
		at := func(d time.Duration) store.TaskInput {
			in := input("t", "q")
			in.RunAt = now.Add(d)
			return in
		}
		late, early, mid := at(3*time.Second), at(time.Second), at(2*time.Second)
		f.add(late, early, mid)
		f.clock.Advance(5 * time.Second)
		fresh := f.addN(1, "t", "q")[0]
		want := []string{early.ID, mid.ID, late.ID, fresh}
		var got []string
		for range want {
			got = append(got, f.leaseOne("q").ID)
		}
		if !cmp.Equal(got, want) {
			t.Errorf("lease order: got %v, want RunAt order %v", got, want)
		}
	})
}

// testPause covers paused queues.
func testPause(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	before := f.addN(1, "t", "q")[0]
	f.pause("q", true)
	item := f.enqueue(input("t", "q"))[0]
	if item.Err != nil || item.State != store.StatePending {
		t.Fatalf("Enqueue into a paused queue: got (%s, %v), want (pending, nil)", item.State, item.Err)
	}
	other := f.addN(1, "t", "other")[0]
	f.leaseNone("q")
	if got := f.leaseOne("q", "other"); got.ID != other {
		t.Errorf("Lease(q paused, other): got %s, want %s", got.ID, other)
	}
	f.pause("idle", true)
	want := []store.QueueStats{
		{Queue: "idle", Paused: true},
		{Queue: "other", Counts: counts(store.StateActive, 1)},
		{Queue: "q", Paused: true, Counts: counts(store.StatePending, 2)},
	}
	if diff := cmp.Diff(want, f.stats()); diff != "" {
		t.Errorf("Stats with paused queues (-want +got):\n%s", diff)
	}
	f.check()

	f.pause("q", false)
	got := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 10})
	if want := sorted([]string{before, item.ID}); !cmp.Equal(sorted(ids(got)), want) {
		t.Errorf("Lease after resume: got %v, want %v", ids(got), want)
	}
	if st := f.stats("q"); len(st) != 1 || st[0].Paused {
		t.Errorf("Stats(q) after resume: got %+v, want one queue, not paused", st)
	}
	f.check()
}

// counts builds QueueStats.Counts from state, count pairs.
func counts(pairs ...any) [store.NumStates + 1]int64 {
	var c [store.NumStates + 1]int64
	for len(pairs) >= 2 {
		c[pairs[0].(store.State)] = int64(pairs[1].(int))
		pairs = pairs[2:]
	}
	return c
}

// testDelayed covers tasks with a RunAt in the future.
func testDelayed(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("LeasableAtRunAt", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.RunAt = f.now().Add(time.Hour)
		if it := f.enqueue(in)[0]; it.Err != nil || it.State != store.StateScheduled {
			t.Fatalf("Enqueue with RunAt in an hour: got (%s, %v), want (scheduled, nil)", it.State, it.Err)
		}
		f.wantState(in.ID, store.StateScheduled)
		f.clock.Set(in.RunAt.Add(-time.Nanosecond))
		f.leaseNone("q")
		f.clock.Set(in.RunAt)
		if got := f.leaseOne("q"); got.ID != in.ID {
			t.Errorf("Lease at RunAt: got %s, want %s", got.ID, in.ID)
		}
		f.check()
	})

	t.Run("SweepPromotes", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.RunAt = f.now().Add(time.Minute)
		f.add(in)
		f.clock.Set(in.RunAt.Add(-time.Nanosecond))
		if res := f.sweep(); res.Promoted != 0 {
			t.Errorf("Sweep before RunAt: got Promoted %d, want 0", res.Promoted)
		}
		f.wantState(in.ID, store.StateScheduled)
		f.clock.Set(in.RunAt)
		if res := f.sweep(); res.Promoted != 1 {
			t.Errorf("Sweep at RunAt: got Promoted %d, want 1", res.Promoted)
		}
		f.wantState(in.ID, store.StatePending)
		f.check()
	})

	t.Run("RetryLeasableWhenDue", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		tk := f.makeTask(store.StateRetry, store.TaskInput{Queue: "q", MaxRetries: 1})
		f.clock.Set(tk.RunAt.Add(-time.Nanosecond))
		f.leaseNone("q")
		f.clock.Set(tk.RunAt)
		if got := f.leaseOne("q"); got.ID != tk.ID || got.Attempt != 2 {
			t.Errorf("Lease at RetryAt: got %s attempt %d, want %s attempt 2", got.ID, got.Attempt, tk.ID)
		}
	})

	t.Run("PastRunAt", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.RunAt = f.now().Add(-time.Hour)
		if it := f.enqueue(in)[0]; it.Err != nil || it.State != store.StatePending {
			t.Fatalf("Enqueue with RunAt in the past: got (%s, %v), want (pending, nil)", it.State, it.Err)
		}
		f.leaseOne("q")
	})
}

// testWait covers Lease with Wait. Wait is real time; the fake clock stands
// still. No assertion is made on elapsed time; waitLimit only keeps a broken
// store from hanging the test.
func testWait(t *testing.T, h Harness) {
	t.Parallel()

	type result struct {
		tasks []*store.Task
		err   error
	}
	leaseAsync := func(ctx context.Context, f *fixture, wait time.Duration, started chan<- struct{}) <-chan result {
		ch := make(chan result, 1)
		go func() {
			close(started)
			res, err := f.s.Lease(ctx, store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, Wait: wait})
			ch <- result{res.Tasks, err}
		}()
		return ch
	}

	t.Run("WakesOnEnqueue", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		started := make(chan struct{})
		ch := leaseAsync(f.ctx(), f, time.Hour, started)
		<-started
		id := f.addN(1, "t", "q")[0]
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("Lease(Wait): %v", r.err)
			}
			if !cmp.Equal(ids(r.tasks), []string{id}) {
				t.Errorf("Lease(Wait): got %v, want [%s]", ids(r.tasks), id)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Lease(Wait 1h) did not return within %s after a task was enqueued", waitLimit)
		}
	})

	// A delayed task enqueued while a Lease waits wakes it at its due
	// time: the enqueue tells the waiting Lease of the new earliest due
	// time. (Had it not, the Lease would sleep for its whole hour.)
	t.Run("WakesAtDueTime", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		started := make(chan struct{})
		ch := leaseAsync(f.ctx(), f, time.Hour, started)
		<-started
		time.Sleep(20 * time.Millisecond) // let it reach its wait; not needed for the check
		in := input("t", "q")
		in.RunAt = f.now().Add(50 * time.Millisecond)
		id := f.add(in)[0]
		f.clock.Advance(50 * time.Millisecond)
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("Lease(Wait): %v", r.err)
			}
			if !cmp.Equal(ids(r.tasks), []string{id}) {
				t.Errorf("Lease(Wait): got %v, want [%s]", ids(r.tasks), id)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Lease(Wait 1h) did not return within %s after a task enqueued meanwhile became due", waitLimit)
		}
	})

	t.Run("EmptyAfterWait", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		started := make(chan struct{})
		ch := leaseAsync(f.ctx(), f, 20*time.Millisecond, started)
		select {
		case r := <-ch:
			if r.err != nil || len(r.tasks) != 0 {
				t.Errorf("Lease(Wait 20ms) with nothing ready: got (%v, %v), want no tasks and no error", ids(r.tasks), r.err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("Lease(Wait 20ms) did not return within %s", waitLimit)
		}
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		ctx, cancel := context.WithCancel(f.ctx())
		started := make(chan struct{})
		ch := leaseAsync(ctx, f, time.Hour, started)
		<-started
		cancel()
		select {
		case r := <-ch:
			// Either answer is allowed: the context's error, or no tasks.
			if r.err != nil && !errors.Is(r.err, context.Canceled) {
				t.Errorf("Lease(Wait) with a cancelled context: got error %v, want nil or %v", r.err, context.Canceled)
			}
			if len(r.tasks) != 0 {
				t.Errorf("Lease(Wait) with a cancelled context: got %v, want no tasks", ids(r.tasks))
			}
		case <-time.After(waitLimit):
			t.Fatalf("Lease(Wait 1h) did not return within %s after its context was cancelled", waitLimit)
		}
	})
}

// testConcurrency runs many leasers against a producer and checks that no
// task is handed out twice while its lease is valid.
func testConcurrency(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	const (
		total   = 2000
		batch   = 100
		leasers = 8
	)
	ctx, cancel := context.WithTimeout(f.ctx(), 2*time.Minute)
	defer cancel()

	var (
		mu     sync.Mutex
		leased = make(map[string]int)
		got    atomic.Int64
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for i := 0; i < total; i += batch {
			ins := make([]store.TaskInput, batch)
			for j := range ins {
				ins[j] = input("t", "q")
			}
			res, err := f.s.Enqueue(ctx, store.EnqueueParams{Namespace: f.ns, Tasks: ins})
			if err != nil {
				t.Errorf("Enqueue: %v", err)
				cancel()
				return
			}
			for _, it := range res.Items {
				if it.Err != nil {
					t.Errorf("Enqueue item: %v", it.Err)
				}
			}
		}
	})
	for w := range leasers {
		wg.Go(func() {
			worker := fmt.Sprint("w", w)
			for got.Load() < total && ctx.Err() == nil {
				res, err := f.s.Lease(ctx, store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 17, Duration: time.Hour, Wait: 10 * time.Millisecond, WorkerID: worker})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Lease: %v", err)
					}
					return
				}
				var outs []store.Outcome
				mu.Lock()
				for _, tk := range res.Tasks {
					leased[tk.ID]++
					if tk.State != store.StateActive || tk.WorkerID != worker {
						t.Errorf("leased task %s: State %s, WorkerID %q; want active, %q", tk.ID, tk.State, tk.WorkerID, worker)
					}
					// Report half at once, keep the others' leases held.
					if tk.ID[len(tk.ID)-1]%2 == 0 {
						outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
					}
				}
				mu.Unlock()
				got.Add(int64(len(res.Tasks)))
				if len(outs) > 0 {
					rr, err := f.s.Report(ctx, store.ReportParams{Namespace: f.ns, Outcomes: outs})
					if err != nil {
						t.Errorf("Report: %v", err)
						return
					}
					for i, err := range rr.Errs {
						if err != nil {
							t.Errorf("Report %s: %v", outs[i].ID, err)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil && got.Load() < total {
		t.Fatalf("leased %d of %d tasks before the time limit", got.Load(), total)
	}
	if len(leased) != total {
		t.Errorf("got %d distinct tasks leased, want %d", len(leased), total)
	}
	for id, n := range leased {
		if n != 1 {
			t.Errorf("task %s leased %d times, want once", id, n)
		}
	}
	f.leaseNone("q")
	f.check()
}
