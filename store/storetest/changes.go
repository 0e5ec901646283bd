package storetest

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// feed returns the store's store.Feed, or skips the test.
func (f *fixture) feed() store.Feed {
	f.t.Helper()
	fd, ok := f.s.(store.Feed)
	if !ok {
		f.t.Skip("the store does not implement store.Feed")
	}
	return fd
}

// feedStart returns the feed's current cursor.
func (f *fixture) feedStart() string {
	f.t.Helper()
	res, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Wait: time.Hour})
	if err != nil {
		f.t.Fatalf("Changes(no cursor): %v", err)
	}
	if res.Cursor == "" || len(res.Changes) != 0 || res.Missed {
		f.t.Fatalf("Changes(no cursor) = %+v; want a cursor at once, no changes, not missed", res)
	}
	return res.Cursor
}

// changesSince returns every change after cursor (none missed) and the
// cursor after them, checking that Seq grows and the cursor follows it.
func (f *fixture) changesSince(cursor string) ([]store.Change, string) {
	f.t.Helper()
	var out []store.Change
	for {
		res, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: cursor})
		if err != nil {
			f.t.Fatalf("Changes(%s): %v", cursor, err)
		}
		if res.Missed {
			f.t.Fatalf("Changes(%s): Missed; want every change kept", cursor)
		}
		if len(res.Changes) == 0 {
			if res.Cursor != cursor {
				f.t.Fatalf("Changes(%s) with no changes: cursor %q; want it kept", cursor, res.Cursor)
			}
			return out, cursor
		}
		out = append(out, res.Changes...)
		cursor = res.Cursor
		if last := res.Changes[len(res.Changes)-1].Seq; strconv.FormatUint(last, 10) != cursor {
			f.t.Fatalf("Changes: cursor %q after a change of Seq %d; want the Seq", cursor, last)
		}
	}
}

// changeLine describes a change for comparison: kind, task, state and
// attempt (and the worker of a start, the error of a failure).
func changeLine(c store.Change) string {
	st := c.State.String()
	if c.State == 0 {
		st = "gone"
	}
	s := fmt.Sprintf("%s %s %s a%d", c.Kind, c.ID, st, c.Attempt)
	if c.WorkerID != "" {
		s += " w=" + c.WorkerID
	}
	if c.Error != "" {
		s += " e=" + c.Error
	}
	return s
}

// wantChanges requires that the changes after *cursor are exactly want (see
// changeLine), in order, with growing Seq, and moves *cursor past them.
func (f *fixture) wantChanges(cursor *string, want ...string) {
	f.t.Helper()
	got, next := f.changesSince(*cursor)
	lines := make([]string, len(got))
	for i, c := range got {
		lines[i] = changeLine(c)
		if i > 0 && c.Seq <= got[i-1].Seq {
			f.t.Errorf("change %d has Seq %d after %d; want growing", i, c.Seq, got[i-1].Seq)
		}
		if c.Queue == "" || c.Type == "" || c.Time.IsZero() {
			f.t.Errorf("change %d (%s) = %+v; want its queue, type and time", i, lines[i], c)
		}
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		f.t.Fatalf("changes:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(want, "\n  "))
	}
	*cursor = next
}

// testChanges covers store.Feed: the exact changes of each transition, in
// the order the store applied them, and the cursor's contract.
func testChanges(t *testing.T, h Harness) {
	t.Parallel()

	lease := func(f *fixture, q string) *store.Task {
		f.t.Helper()
		got := f.lease(store.LeaseParams{Queues: []string{q}, WorkerID: "w1"})
		if len(got) != 1 {
			f.t.Fatalf("Lease(%s): got %d tasks, want 1", q, len(got))
		}
		return got[0]
	}

	t.Run("Succeeded", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		id := f.addN(1, "t", "q")[0]
		tk := lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("r")})
		f.wantChanges(&cur,
			"enqueued "+id+" pending a0",
			"started "+id+" active a1 w=w1",
			"succeeded "+id+" succeeded a1")
	})

	t.Run("FailedRetryingDead", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		in := input("t", "q")
		in.MaxRetries = 2
		id := f.add(in)[0]
		tk := lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "boom", RetryAt: f.now().Add(time.Minute)})
		f.wantChanges(&cur,
			"enqueued "+id+" pending a0",
			"started "+id+" active a1 w=w1",
			"failed "+id+" active a1 e=boom",
			"retrying "+id+" retry a1")
		// Due again: the promotion is not a change of its own; the next
		// start shows it.
		f.clock.Advance(time.Minute)
		f.sweep()
		tk = lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "again"})
		tk = lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "last"})
		f.wantChanges(&cur,
			"started "+id+" active a2 w=w1",
			"failed "+id+" active a2 e=again",
			"retrying "+id+" pending a2",
			"started "+id+" active a3 w=w1",
			"failed "+id+" active a3 e=last",
			"dead "+id+" dead a3")
	})

	t.Run("CancelWaiting", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		a := input("t", "q")
		b := input("t", "q")
		b.RunAt = f.now().Add(time.Hour)
		f.add(a, b)
		// One call for both: the batch route of the API and the CLI.
		for _, it := range f.cancel(a.ID, b.ID) {
			if it.Err != nil {
				t.Fatalf("Cancel: %v", it.Err)
			}
		}
		f.wantChanges(&cur,
			"enqueued "+a.ID+" pending a0",
			"enqueued "+b.ID+" scheduled a0",
			"cancelled "+a.ID+" cancelled a0",
			"cancelled "+b.ID+" cancelled a0")
		// A refused cancel changes nothing.
		f.cancel(a.ID)
		f.wantChanges(&cur)
	})

	t.Run("CancelActive", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(2, "t", "q")
		a, b := lease(f, "q"), lease(f, "q")
		cur := f.feedStart()
		f.cancel(a.ID, b.ID) // marks only: no change of state yet
		f.wantChanges(&cur)
		f.mustReport(store.Outcome{ID: a.ID, LeaseID: a.LeaseID, Kind: store.OutcomeCancelled, Error: "stopped"})
		f.clock.Set(b.LeaseExpiresAt.Add(time.Millisecond))
		f.sweep()
		f.wantChanges(&cur,
			"cancelled "+a.ID+" cancelled a1",
			"lease_lost "+b.ID+" cancelled a1")
	})

	t.Run("RetriedDeleted", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		id := f.addN(1, "t", "q")[0]
		tk := lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "x"})
		cur := f.feedStart()
		if it := f.retry(id)[0]; it.Err != nil {
			t.Fatalf("Retry: %v", it.Err)
		}
		f.retry(id) // refused: pending
		if it := f.del(id)[0]; it.Err != nil {
			t.Fatalf("Delete: %v", it.Err)
		}
		f.del(id) // not found
		f.wantChanges(&cur,
			"retried "+id+" pending a0",
			"deleted "+id+" gone a0")
	})

	t.Run("DeleteFinished", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		id := f.addN(1, "t", "q")[0]
		tk := lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		cur := f.feedStart()
		f.del(id)
		f.wantChanges(&cur, "deleted "+id+" gone a1")
	})

	t.Run("LeaseLost", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.MaxRetries = 1
		id := f.add(in)[0]
		cur := f.feedStart()
		tk := lease(f, "q")
		f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
		f.sweep()
		tk = lease(f, "q")
		// A report after the expiry is refused and changes nothing.
		f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
		f.sweep()
		f.report(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		f.wantChanges(&cur,
			"started "+id+" active a1 w=w1",
			"lease_lost "+id+" pending a1",
			"started "+id+" active a2 w=w1",
			"lease_lost "+id+" dead a2")
	})

	t.Run("Released", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		id := f.addN(1, "t", "q")[0]
		cur := f.feedStart()
		tk := lease(f, "q")
		f.mustReport(store.Outcome{ID: id, LeaseID: tk.LeaseID, Kind: store.OutcomeRelease, NotStarted: true})
		f.wantChanges(&cur,
			"started "+id+" active a1 w=w1",
			"released "+id+" pending a0")
	})

	t.Run("Namespaces", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		other := f.in(t, newName("ns"))
		cur := other.feedStart()
		f.addN(3, "t", "q")
		other.wantChanges(&cur)
	})

	t.Run("Wait", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		type result struct {
			res store.ChangesResult
			err error
		}
		ch := make(chan result, 1)
		go func() {
			res, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: cur, Wait: time.Hour})
			ch <- result{res, err}
		}()
		id := f.addN(1, "t", "q")[0]
		select {
		case r := <-ch:
			if r.err != nil || len(r.res.Changes) != 1 || r.res.Changes[0].ID != id || r.res.Changes[0].Kind != store.ChangeEnqueued {
				t.Fatalf("a waiting Changes after an enqueue = %+v, %v; want the enqueue", r.res, r.err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("a waiting Changes did not return within %s of an enqueue", waitLimit)
		}
		// Nothing new: an empty answer after the wait, the cursor kept.
		res, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: f.feedStart(), Wait: 20 * time.Millisecond})
		if err != nil || len(res.Changes) != 0 || res.Missed {
			t.Fatalf("Changes(20ms) with nothing new = %+v, %v; want nothing", res, err)
		}
	})

	t.Run("Cursors", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		f.addN(3, "t", "q")
		res, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: cur, Max: 2})
		if err != nil || len(res.Changes) != 2 {
			t.Fatalf("Changes(Max 2) = %+v, %v; want 2 changes", res, err)
		}
		rest, _ := f.changesSince(res.Cursor)
		if len(rest) != 1 || rest[0].Seq <= res.Changes[1].Seq {
			t.Fatalf("Changes after a page = %+v; want the third change", rest)
		}
		// A cursor beyond the feed (another store's, a later run's).
		far := strconv.FormatUint(rest[0].Seq+1<<40, 10)
		res, err = f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: far, Wait: time.Hour})
		if err != nil || !res.Missed || res.Cursor == "" || res.Cursor == far {
			t.Fatalf("Changes(foreign cursor) = %+v, %v; want Missed at once with the current cursor", res, err)
		}
		if _, err := f.feed().Changes(f.ctx(), store.ChangesParams{Namespace: f.ns, Cursor: "x"}); err == nil {
			t.Fatal("Changes(cursor x): no error")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := f.feedStart()
		const workers, each = 4, 10
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					in := input("t", "q")
					res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: []store.TaskInput{in}})
					if err != nil || res.Items[0].Err != nil {
						t.Errorf("Enqueue: %v %+v", err, res)
						return
					}
					lr, err := f.s.Lease(f.ctx(), store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute})
					if err != nil {
						t.Errorf("Lease: %v", err)
						return
					}
					for _, tk := range lr.Tasks {
						if _, err := f.s.Report(f.ctx(), store.ReportParams{Namespace: f.ns, Outcomes: []store.Outcome{{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
							t.Errorf("Report: %v", err)
						}
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		got, _ := f.changesSince(cur)
		want := []store.ChangeKind{store.ChangeEnqueued, store.ChangeStarted, store.ChangeSucceeded}
		per := map[string]int{}
		for i, c := range got {
			if i > 0 && c.Seq <= got[i-1].Seq {
				t.Fatalf("change %d: Seq %d after %d; want growing", i, c.Seq, got[i-1].Seq)
			}
			n := per[c.ID]
			if n >= len(want) || c.Kind != want[n] {
				t.Fatalf("change %d of task %s is %s; want the sequence %v", n, c.ID, c.Kind, want)
			}
			per[c.ID] = n + 1
		}
		if len(per) != workers*each || len(got) != workers*each*3 {
			t.Fatalf("got %d changes of %d tasks; want %d of %d", len(got), len(per), workers*each*3, workers*each)
		}
	})
}
