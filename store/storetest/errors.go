package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

// testErrorHistory checks Task.Errors: every failed attempt (a retry, a
// dead or cancelled report with an error, a lease that expired) appends
// its number, time, worker and error, oldest first; the history is
// bounded; a success adds nothing; it survives a reopen.
func testErrorHistory(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)

	// fail leases the task as worker w and ends the attempt with kind and
	// msg, one second after the previous step.
	fail := func(f *fixture, id, w string, kind store.OutcomeKind, msg string) *store.Task {
		f.t.Helper()
		f.clock.Advance(time.Second)
		tk := f.leaseTask(id, w)
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: kind, Error: msg, RetryAt: f.now()})
		return f.mustGet(id)
	}
	// wantHistory checks the history by Get and by List.
	wantHistory := func(f *fixture, id string, want []store.AttemptError, dropped int) *store.Task {
		f.t.Helper()
		got := f.mustGet(id)
		if diff := cmp.Diff(want, got.Errors, cmpOpts...); diff != "" {
			f.t.Errorf("Errors by Get (-want +got):\n%s", diff)
		}
		if got.ErrorsDropped != dropped {
			f.t.Errorf("ErrorsDropped by Get = %d, want %d", got.ErrorsDropped, dropped)
		}
		var listed *store.Task
		for _, tk := range f.listAll(store.ListParams{}) {
			if tk.ID == id {
				listed = tk
			}
		}
		if listed == nil {
			f.t.Fatalf("List does not have task %s", id)
		}
		if diff := cmp.Diff(got.Errors, listed.Errors, cmpOpts...); diff != "" || listed.ErrorsDropped != dropped {
			f.t.Errorf("Errors by List differ from Get (dropped %d) (-get +list):\n%s", listed.ErrorsDropped, diff)
		}
		return got
	}

	t.Run("Order", func(t *testing.T) {
		f := f.in(t, newName("ns"))
		in := input("t", "q")
		in.MaxRetries = 5
		id := f.add(in)[0]
		var want []store.AttemptError
		fail(f, id, "w1", store.OutcomeRetry, "first")
		want = append(want, store.AttemptError{Attempt: 1, At: f.now(), Error: "first", WorkerID: "w1"})
		fail(f, id, "w2", store.OutcomeRetry, "second")
		want = append(want, store.AttemptError{Attempt: 2, At: f.now(), Error: "second", WorkerID: "w2"})
		// The third attempt's worker is lost: its lease expires.
		f.clock.Advance(time.Second)
		tk := f.leaseTask(id, "w3")
		f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
		f.sweep()
		after := f.wantState(id, store.StatePending)
		want = append(want, store.AttemptError{Attempt: 3, At: f.now(), Error: after.LastError, WorkerID: "w3"})
		if !strings.Contains(after.LastError, "lease") {
			t.Errorf("LastError after the lease expired = %q, want it to mention the lease", after.LastError)
		}
		wantHistory(f, id, want, 0)
		got := fail(f, id, "w4", store.OutcomeDead, "fourth")
		want = append(want, store.AttemptError{Attempt: 4, At: f.now(), Error: "fourth", WorkerID: "w4"})
		if got.State != store.StateDead || got.LastError != "fourth" {
			t.Errorf("after the dead report: state %s, LastError %q; want dead, %q", got.State, got.LastError, "fourth")
		}
		wantHistory(f, id, want, 0)

		// An operator's retry keeps the history; the attempts count again
		// from 1.
		if it := f.retry(id)[0]; it.Err != nil {
			t.Fatalf("Retry: %v", it.Err)
		}
		fail(f, id, "w5", store.OutcomeCancelled, "stopped")
		want = append(want, store.AttemptError{Attempt: 1, At: f.now(), Error: "stopped", WorkerID: "w5"})
		wantHistory(f, id, want, 0)
	})

	t.Run("Cap", func(t *testing.T) {
		f := f.in(t, newName("ns"))
		const fails = store.MaxAttemptErrors + 5
		in := input("t", "q")
		in.MaxRetries = fails
		id := f.add(in)[0]
		// 4 KiB errors, with a 3-byte character across the cap.
		long := func(n int) string {
			return fmt.Sprintf("%04d", n) + strings.Repeat("x", store.MaxAttemptErrorBytes-6) + "€" + strings.Repeat("y", 4096)
		}
		var want []store.AttemptError
		for n := 1; n <= fails; n++ {
			fail(f, id, "w", store.OutcomeRetry, long(n))
			want = append(want, store.AttemptError{Attempt: n, At: f.now(), Error: long(n)[:store.MaxAttemptErrorBytes-2], WorkerID: "w"})
		}
		got := wantHistory(f, id, want[fails-store.MaxAttemptErrors:], fails-store.MaxAttemptErrors)
		for _, e := range got.Errors {
			if len(e.Error) > store.MaxAttemptErrorBytes || !utf8.ValidString(e.Error) {
				t.Errorf("attempt %d: error of %d bytes (valid UTF-8: %v), want at most %d and valid", e.Attempt, len(e.Error), utf8.ValidString(e.Error), store.MaxAttemptErrorBytes)
			}
		}
		if got.LastError != long(fails) {
			t.Errorf("LastError is %d bytes, want the whole %d of the last error", len(got.LastError), len(long(fails)))
		}
	})

	t.Run("SuccessAddsNothing", func(t *testing.T) {
		f := f.in(t, newName("ns"))
		id := f.add(input("t", "q"))[0]
		tk := f.leaseTask(id, "w")
		// Handing a task back, and a cancel without an error, are no failures.
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRelease, NotStarted: true})
		tk = f.leaseTask(id, "w")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("ok")})
		got := wantHistory(f, id, nil, 0)
		if got.State != store.StateSucceeded || got.Errors != nil {
			t.Errorf("after a success: state %s, Errors %#v; want succeeded and nil", got.State, got.Errors)
		}
		c := f.add(input("t", "q"))[0]
		tk = f.leaseTask(c, "w")
		f.mustReport(store.Outcome{ID: c, LeaseID: tk.LeaseID, Kind: store.OutcomeCancelled})
		wantHistory(f, c, nil, 0)
		// An operator's cancel of a pending task ends no attempt.
		p := f.add(input("t", "q"))[0]
		f.cancel(p)
		wantHistory(f, p, nil, 0)
	})

	t.Run("RetryThenSucceed", func(t *testing.T) {
		f := f.in(t, newName("ns"))
		in := input("t", "q")
		in.MaxRetries = 3
		id := f.add(in)[0]
		fail(f, id, "w1", store.OutcomeRetry, "flaky")
		want := []store.AttemptError{{Attempt: 1, At: f.now(), Error: "flaky", WorkerID: "w1"}}
		f.clock.Advance(time.Second)
		tk := f.leaseTask(id, "w2")
		if diff := cmp.Diff(want, tk.Errors, cmpOpts...); diff != "" {
			t.Errorf("Errors of the leased task (-want +got):\n%s", diff)
		}
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		if got := wantHistory(f, id, want, 0); got.State != store.StateSucceeded {
			t.Errorf("state %s, want succeeded", got.State)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		// Not parallel with the others: it reopens the shared store.
		if f.reopen == nil {
			t.Skip("the store is not durable (Harness.New returned no reopen function)")
		}
		g := f.in(t, newName("ns"))
		in := input("t", "q")
		in.MaxRetries = store.MaxAttemptErrors + 2
		id := g.add(in)[0]
		for n := range store.MaxAttemptErrors + 1 {
			fail(g, id, "w", store.OutcomeRetry, fmt.Sprintf("failure %d", n+1))
		}
		before := g.mustGet(id)
		if len(before.Errors) != store.MaxAttemptErrors || before.ErrorsDropped != 1 {
			t.Fatalf("before reopen: %d entries, %d dropped; want %d and 1", len(before.Errors), before.ErrorsDropped, store.MaxAttemptErrors)
		}
		g.s = g.reopen()
		f.s = g.s
		if diff := cmp.Diff(before, g.mustGet(id), cmpOpts...); diff != "" {
			t.Errorf("Get after reopen differs (-before +after):\n%s", diff)
		}
		// And it goes on from there.
		fail(g, id, "w", store.OutcomeRetry, "after reopen")
		got := g.mustGet(id)
		if n := len(got.Errors); n != store.MaxAttemptErrors || got.ErrorsDropped != 2 || got.Errors[n-1].Error != "after reopen" {
			t.Errorf("after reopen and one more failure: %d entries, %d dropped, last %q", n, got.ErrorsDropped, got.Errors[n-1].Error)
		}
	})
}

// leaseTask leases the task id (the only ready task of its queue) as
// worker w.
func (f *fixture) leaseTask(id, w string) *store.Task {
	f.t.Helper()
	tk := f.mustGet(id)
	got := f.lease(store.LeaseParams{Queues: []string{tk.Queue}, WorkerID: w})
	if len(got) != 1 || got[0].ID != id {
		f.t.Fatalf("Lease: got %v, want [%s]", ids(got), id)
	}
	return got[0]
}
