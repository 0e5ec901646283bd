package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// testUniqueUntilSuccess covers TaskInput.UniqueUntilSuccess: the key is
// held while the task waits, runs and retries, released in the step that
// records its success, held for the whole window when it dies, and never
// released for a task that no longer holds it.
func testUniqueUntilSuccess(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	key := newName("key")
	in := func(untilSuccess bool) store.TaskInput {
		in := input(newName("type"), "q")
		in.UniqueKey, in.UniqueTTL, in.UniqueUntilSuccess = key, time.Hour, untilSuccess
		return in
	}
	dup := func(what, holder string, untilSuccess bool) {
		t.Helper()
		if it := f.enqueue(in(untilSuccess))[0]; !errors.Is(it.Err, store.ErrDuplicate) || it.ID != holder {
			t.Fatalf("%s: enqueue got (%q, %v), want (%q, %v)", what, it.ID, it.Err, holder, store.ErrDuplicate)
		}
	}
	free := func(what string, untilSuccess bool) store.TaskInput {
		t.Helper()
		next := in(untilSuccess)
		if it := f.enqueue(next)[0]; it.Err != nil {
			t.Fatalf("%s: enqueue got %v, want the key free", what, it.Err)
		}
		return next
	}
	leaseOf := func(in store.TaskInput) *store.Task {
		t.Helper()
		got := f.lease(store.LeaseParams{Queues: []string{"q"}, Types: []string{in.Type}})
		if len(got) != 1 || got[0].ID != in.ID {
			t.Fatalf("lease of %s: got %d tasks", in.ID, len(got))
		}
		return got[0]
	}

	// Held while pending, active and retrying; released by the success.
	a := in(true)
	f.add(a)
	if got := f.mustGet(a.ID); !got.UniqueUntilSuccess || got.UniqueKey != key {
		t.Fatalf("Get: UniqueUntilSuccess %v, key %q; want true, %q", got.UniqueUntilSuccess, got.UniqueKey, key)
	}
	dup("pending", a.ID, true)
	tk := leaseOf(a)
	dup("active", a.ID, false)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry})
	dup("after a failed attempt", a.ID, true)
	tk = leaseOf(a)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("ok")})

	// Free at once, before the window ends and with no sweep. The next
	// holder keeps the key for its whole window (the default meaning).
	b := free("after success", false)
	tk = leaseOf(b)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
	dup("window after success", b.ID, true)
	f.clock.Advance(time.Hour)
	f.sweep()

	// A task that dies keeps its key to the end of the window.
	c := free("after the window", true)
	tk = leaseOf(c)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "no"})
	dup("after dead", c.ID, true)
	f.clock.Advance(time.Hour)
	f.sweep()

	// A task whose window ended lost the key to another: its success must
	// not release the other's hold.
	d := free("after the dead task's window", true)
	tk = leaseOf(d)
	f.clock.Advance(time.Hour)
	e := free("after the running task's window", false)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
	dup("after the old holder succeeded", e.ID, true)
	f.check()

	if f.reopen == nil {
		return
	}
	// Durable: the option and the holds survive a reopen.
	g := in(true)
	g.UniqueKey = newName("key")
	f.add(g)
	f.s = f.reopen()
	if got := f.mustGet(g.ID); !got.UniqueUntilSuccess {
		t.Fatal("UniqueUntilSuccess lost in a reopen")
	}
	dup("after a reopen", e.ID, false)
	tk = leaseOf(g)
	f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
	h2 := input("t", "q")
	h2.UniqueKey, h2.UniqueTTL = g.UniqueKey, time.Minute
	if it := f.enqueue(h2)[0]; it.Err != nil {
		t.Fatalf("after a reopen and success: %v, want the key free", it.Err)
	}
	f.check()
}
