package storetest

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// legal lists, per state, the states a task may be in after one store call
// (0 stands for deleted). It is the state diagram of package store.
var legal = map[store.State][]store.State{
	store.StateScheduled: {store.StateScheduled, store.StatePending, store.StateActive, store.StateCancelled, 0},
	store.StatePending:   {store.StatePending, store.StateActive, store.StateCancelled, 0},
	store.StateActive:    {store.StateActive, store.StateSucceeded, store.StateRetry, store.StateDead, store.StateCancelled, store.StatePending},
	store.StateRetry:     {store.StateRetry, store.StatePending, store.StateActive, store.StateCancelled, 0},
	store.StateSucceeded: {store.StateSucceeded, 0},
	store.StateDead:      {store.StateDead, store.StatePending, 0},
	store.StateCancelled: {store.StateCancelled, store.StatePending, 0},
}

var outcomeKinds = []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeRetry, store.OutcomeDead, store.OutcomeCancelled, store.OutcomeRelease}

// testRandom drives the store with a seeded random sequence of calls and
// checks after each one that every task moved along an edge of the state
// diagram, that attempts only fall by Retry or an unstarted release, that an
// active task's lease changes only by a new Lease, and the invariants.
// (A scheduled or retry task may go straight to active: Lease takes due
// tasks without a Sweep.)
func testRandom(t *testing.T, h Harness) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0x6b696c6e)) //nolint:gosec // a reproducible walk from a logged seed, not a secret
	f := h.setup(t)
	queues := []string{"a", "b"}
	var all []string
	prev := map[string]*store.Task{}
	held := map[string]*store.Task{} // leases the "workers" hold

	pick := func() string { return all[r.IntN(len(all))] }
	// pickHeld picks a held lease; map order is not seeded, so sort first.
	pickHeld := func() (*store.Task, bool) {
		if len(held) == 0 {
			return nil, false
		}
		keys := make([]string, 0, len(held))
		for id := range held {
			keys = append(keys, id)
		}
		slices.Sort(keys)
		return held[keys[r.IntN(len(keys))]], true
	}
	for step := range 400 {
		var op string
		switch n := r.IntN(100); {
		case n < 15 || len(all) == 0:
			op = "enqueue"
			ins := make([]store.TaskInput, 1+r.IntN(3))
			for i := range ins {
				ins[i] = input("t", queues[r.IntN(2)])
				ins[i].MaxRetries = r.IntN(3)
				ins[i].Priority = r.IntN(3)
				if r.IntN(4) == 0 {
					ins[i].RunAt = f.now().Add(time.Duration(1+r.IntN(60)) * time.Second)
				}
				all = append(all, ins[i].ID)
			}
			f.add(ins...)
		case n < 35:
			op = "lease"
			for _, tk := range f.lease(store.LeaseParams{Queues: queues, Max: 1 + r.IntN(4), Duration: time.Duration(10+r.IntN(50)) * time.Second}) {
				held[tk.ID] = tk
			}
		case n < 55:
			op = "report"
			if tk, ok := pickHeld(); ok {
				id := tk.ID
				o := store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: outcomeKinds[r.IntN(len(outcomeKinds))], Error: "e"}
				if o.Kind == store.OutcomeRetry && r.IntN(2) == 0 {
					o.RetryAt = f.now().Add(time.Duration(r.IntN(30)) * time.Second)
				}
				o.NotStarted = o.Kind == store.OutcomeRelease && r.IntN(2) == 0
				// A lease that is no longer current must fail with
				// ErrLeaseLost (ErrNotFound once the task is deleted); a current one that has not expired must be
				// accepted. (An expired one not yet swept may go either way.)
				cur := prev[id]
				current := cur != nil && cur.State == store.StateActive && cur.LeaseID == tk.LeaseID
				err := f.report(o)[0]
				switch {
				case current && cur.LeaseExpiresAt.After(f.now()) && err != nil:
					t.Fatalf("step %d: Report(%s) of the current lease of %s: %v", step, o.Kind, id, err)
				case cur == nil && !errors.Is(err, store.ErrNotFound):
					t.Fatalf("step %d: Report(%s) of deleted task %s: got %v, want %v", step, o.Kind, id, err, store.ErrNotFound)
				case cur != nil && !current && !errors.Is(err, store.ErrLeaseLost):
					t.Fatalf("step %d: Report(%s) of a lease of %s that is no longer current: got %v, want %v", step, o.Kind, id, err, store.ErrLeaseLost)
				}
				delete(held, id)
			}
		case n < 62:
			op = "extend"
			if tk, ok := pickHeld(); ok {
				f.extend(time.Duration(10+r.IntN(50))*time.Second, store.ExtendLease{LeaseRef: store.LeaseRef{ID: tk.ID, LeaseID: tk.LeaseID}, Progress: &store.Progress{Percent: r.IntN(101)}})
			}
		case n < 70:
			op = "cancel"
			f.cancel(pick())
		case n < 76:
			op = "retry"
			f.retry(pick())
		case n < 80:
			op = "delete"
			f.del(pick())
		case n < 92:
			op = "advance"
			f.clock.Advance(time.Duration(r.IntN(40)) * time.Second)
		default:
			op = "sweep"
			f.sweep()
		}

		got := f.gets(all...)
		for i, id := range all {
			before, after := prev[id], got[i]
			if before == nil {
				if after != nil {
					prev[id] = after
				}
				continue
			}
			st := store.State(0)
			if after != nil {
				st = after.State
			}
			if !slices.Contains(legal[before.State], st) {
				t.Fatalf("step %d (%s): task %s went from %s to %v", step, op, id, before.State, st)
			}
			if after == nil {
				delete(prev, id)
				continue
			}
			if after.Attempt < before.Attempt && op != "retry" && op != "report" {
				t.Fatalf("step %d (%s): task %s Attempt fell from %d to %d", step, op, id, before.Attempt, after.Attempt)
			}
			if before.State == store.StateActive && after.State == store.StateActive && after.LeaseID != before.LeaseID && op != "lease" {
				t.Fatalf("step %d (%s): active task %s changed LeaseID from %d to %d", step, op, id, before.LeaseID, after.LeaseID)
			}
			if after.State == store.StateActive && before.State != store.StateActive && after.Attempt != before.Attempt+1 {
				t.Fatalf("step %d (%s): task %s leased with Attempt %d after %d", step, op, id, after.Attempt, before.Attempt)
			}
			prev[id] = after
		}
		if step%50 == 49 {
			f.check()
		}
	}
	f.check()
}
