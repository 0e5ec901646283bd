package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

// testDurability checks that every acknowledged change survives closing and
// reopening the store. It is skipped when the harness has no reopen.
func testDurability(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	if f.reopen == nil {
		t.Skip("the store is not durable (Harness.New returned no reopen function)")
	}
	var all []string
	mk := func(st store.State, in store.TaskInput) *store.Task {
		tk := f.makeTask(st, in)
		all = append(all, tk.ID)
		return tk
	}
	// First a task whose lease expired and was recovered.
	recovered := mk(store.StateActive, store.TaskInput{Queue: "q", MaxRetries: 3})
	f.clock.Set(recovered.LeaseExpiresAt.Add(time.Millisecond))
	f.sweep()
	for _, st := range store.AllStates {
		mk(st, store.TaskInput{Queue: "q", MaxRetries: 2, Payload: []byte("payload of " + st.String())})
	}
	full := mk(store.StatePending, store.TaskInput{
		Queue: "q", Payload: []byte{0, 1, 2, 255}, Priority: 3, MaxRetries: 7, Timeout: time.Minute,
		Deadline: f.now().Add(time.Hour), UniqueKey: newName("key"), UniqueTTL: time.Hour, Retention: time.Hour,
	})
	progress := mk(store.StateActive, store.TaskInput{Queue: "q"})
	if it := f.extend(5*time.Minute, store.ExtendLease{LeaseRef: store.LeaseRef{ID: progress.ID, LeaseID: progress.LeaseID}, Progress: &store.Progress{Percent: 60, Message: "sixty"}})[0]; it.Err != nil {
		t.Fatalf("Extend: %v", it.Err)
	}
	cancelling := mk(store.StateActive, store.TaskInput{Queue: "q"})
	if it := f.cancel(cancelling.ID)[0]; it.Err != nil {
		t.Fatalf("Cancel: %v", it.Err)
	}
	inPaused := mk(store.StatePending, store.TaskInput{Queue: "r"})
	f.pause("r", true)
	f.pause("idle", true)
	f.clock.Advance(time.Second)

	before := f.gets(all...)
	listBefore := f.listAll(store.ListParams{WithPayload: true})
	statsBefore := f.stats()
	leaseIDs := map[uint64]bool{}
	for _, tk := range before {
		leaseIDs[tk.LeaseID] = true
	}

	reopen := func() {
		t.Helper()
		f.s = f.reopen()
		if f.s == nil {
			t.Fatal("reopen returned a nil store")
		}
		if diff := cmp.Diff(before, f.gets(all...), cmpOpts...); diff != "" {
			t.Errorf("Get after reopen differs (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(listBefore, f.listAll(store.ListParams{WithPayload: true}), cmpOpts...); diff != "" {
			t.Errorf("List after reopen differs (-before +after):\n%s", diff)
		}
		if diff := cmp.Diff(statsBefore, f.stats()); diff != "" {
			t.Errorf("Stats after reopen differ (-before +after):\n%s", diff)
		}
	}
	reopen()
	f.check()
	reopen() // a reopen that changed nothing changes nothing

	// The unique key and the ids are still taken.
	dup := input("t", "q")
	dup.UniqueKey, dup.UniqueTTL = full.UniqueKey, time.Hour
	if it := f.enqueue(dup)[0]; !errors.Is(it.Err, store.ErrDuplicate) || it.ID != full.ID {
		t.Errorf("Enqueue with a held unique key after reopen: got (%q, %v), want (%q, %v)", it.ID, it.Err, full.ID, store.ErrDuplicate)
	}
	again := input("t", "q")
	again.ID = full.ID
	if it := f.enqueue(again)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
		t.Errorf("Enqueue of an existing id after reopen: got %v, want %v", it.Err, store.ErrTaskExists)
	}
	// The paused queue is still paused.
	f.leaseNone("r")
	// Leases taken before the reopen still hold and fence.
	if it := f.extend(time.Minute, store.ExtendLease{LeaseRef: store.LeaseRef{ID: cancelling.ID, LeaseID: cancelling.LeaseID}})[0]; it.Err != nil || !it.CancelRequested {
		t.Errorf("Extend of a pre-reopen lease asked to cancel: got (CancelRequested %v, %v), want (true, nil)", it.CancelRequested, it.Err)
	}
	f.mustReport(store.Outcome{ID: progress.ID, LeaseID: progress.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("done")})
	f.mustReport(store.Outcome{ID: cancelling.ID, LeaseID: cancelling.LeaseID, Kind: store.OutcomeCancelled})
	if err := f.report(store.Outcome{ID: recovered.ID, LeaseID: recovered.LeaseID, Kind: store.OutcomeSucceeded})[0]; !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Report of a lease recovered before reopen: got %v, want %v", err, store.ErrLeaseLost)
	}
	// New leases never reuse a lease id from before the reopen.
	for _, tk := range f.lease(store.LeaseParams{Queues: []string{"q"}, Max: 100}) {
		if leaseIDs[tk.LeaseID] {
			t.Errorf("lease after reopen of task %s reuses LeaseID %d from before", tk.ID, tk.LeaseID)
		}
	}
	f.pause("r", false)
	if got := f.leaseOne("r"); got.ID != inPaused.ID {
		t.Errorf("Lease(r) after resume: got %s, want %s", got.ID, inPaused.ID)
	}
	f.check()
}
