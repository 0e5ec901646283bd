package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// testWaitCancels covers WaitCancels, the push of cancel requests to
// workers, and the error of a cancel that comes too late. Waits are real
// time; waitLimit only keeps a broken store from hanging the test.
func testWaitCancels(t *testing.T, h Harness) {
	t.Parallel()

	type result struct {
		res store.WaitCancelsResult
		err error
	}
	waitAsync := func(f *fixture, cursor string, wait time.Duration) <-chan result {
		ch := make(chan result, 1)
		go func() {
			res, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Cursor: cursor, Wait: wait})
			ch <- result{res, err}
		}()
		return ch
	}
	start := func(f *fixture) string {
		f.t.Helper()
		res, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Wait: time.Hour})
		if err != nil {
			f.t.Fatalf("WaitCancels(no cursor): %v", err)
		}
		if res.Cursor == "" || len(res.Leases) != 0 || res.Missed {
			f.t.Fatalf("WaitCancels(no cursor) = %+v; want a cursor at once, no leases, not missed", res)
		}
		return res.Cursor
	}
	recvRes := func(t *testing.T, ch <-chan result, what string) store.WaitCancelsResult {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("%s: %v", what, r.err)
			}
			return r.res
		case <-time.After(waitLimit):
			t.Fatalf("%s: WaitCancels did not return within %s", what, waitLimit)
			return store.WaitCancelsResult{}
		}
	}

	t.Run("PushesActiveCancel", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := start(f)
		f.addN(2, "t", "q")
		a, b := f.leaseOne("q"), f.leaseOne("q")
		ch := waitAsync(f, cur, time.Hour)
		if it := f.cancel(a.ID)[0]; it.Err != nil || it.State != store.StateActive {
			t.Fatalf("Cancel(active) = %+v", it)
		}
		res := recvRes(t, ch, "a waiting WaitCancels, after an active task was cancelled")
		want := store.LeaseRef{ID: a.ID, LeaseID: a.LeaseID}
		if len(res.Leases) != 1 || res.Leases[0] != want || res.Missed || res.Cursor == "" || res.Cursor == cur {
			t.Fatalf("WaitCancels = %+v; want [%+v], a new cursor, not missed", res, want)
		}
		// A request made while nobody waits is kept for the next call.
		if it := f.cancel(b.ID)[0]; it.Err != nil {
			t.Fatalf("Cancel(active) = %+v", it)
		}
		res2 := recvRes(t, waitAsync(f, res.Cursor, time.Hour), "WaitCancels with the previous cursor")
		want = store.LeaseRef{ID: b.ID, LeaseID: b.LeaseID}
		if len(res2.Leases) != 1 || res2.Leases[0] != want || res2.Missed {
			t.Fatalf("WaitCancels = %+v; want [%+v]", res2, want)
		}
		// Nothing new: an empty answer after the wait, the cursor kept.
		res3 := recvRes(t, waitAsync(f, res2.Cursor, 20*time.Millisecond), "WaitCancels(20ms) with nothing new")
		if len(res3.Leases) != 0 || res3.Missed || res3.Cursor != res2.Cursor {
			t.Fatalf("WaitCancels(20ms) with nothing new = %+v; want no leases and cursor %q", res3, res2.Cursor)
		}
	})

	t.Run("WaitingTasksNotPushed", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := start(f)
		id := f.addN(1, "t", "q")[0]
		if it := f.cancel(id)[0]; it.Err != nil || it.State != store.StateCancelled {
			t.Fatalf("Cancel(pending) = %+v", it)
		}
		res := recvRes(t, waitAsync(f, cur, 50*time.Millisecond), "WaitCancels(50ms)")
		if len(res.Leases) != 0 {
			t.Errorf("WaitCancels after a pending task was cancelled = %+v; want no leases (no worker holds it)", res)
		}
	})

	t.Run("Namespaces", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		other := f.in(t, newName("ns"))
		cur := start(other)
		f.addN(1, "t", "q")
		a := f.leaseOne("q")
		f.cancel(a.ID)
		res := recvRes(t, waitAsync(other, cur, 50*time.Millisecond), "WaitCancels(50ms) of another namespace")
		if len(res.Leases) != 0 {
			t.Errorf("WaitCancels of another namespace = %+v; want nothing", res)
		}
	})

	t.Run("ForeignCursorMissed", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		res, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Cursor: "not-a-cursor-of-this-store", Wait: time.Hour})
		if err != nil || !res.Missed || res.Cursor == "" {
			t.Errorf("WaitCancels(foreign cursor) = %+v, %v; want Missed at once, with a cursor", res, err)
		}
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		cur := start(f)
		ctx, cancel := context.WithCancel(f.ctx())
		ch := make(chan error, 1)
		go func() {
			_, err := f.s.WaitCancels(ctx, store.WaitCancelsParams{Namespace: f.ns, Cursor: cur, Wait: time.Hour})
			ch <- err
		}()
		cancel()
		select {
		case err := <-ch:
			if err == nil {
				break // an empty answer is allowed too
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("WaitCancels with a cancelled context: %v, want nil or %v", err, context.Canceled)
			}
		case <-time.After(waitLimit):
			t.Fatalf("WaitCancels(1h) did not return within %s after its context was cancelled", waitLimit)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		if _, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: f.ns, Wait: -time.Second}); !errors.Is(err, store.ErrInvalidOption) {
			t.Errorf("WaitCancels(negative wait): %v, want %v", err, store.ErrInvalidOption)
		}
		if _, err := f.s.WaitCancels(f.ctx(), store.WaitCancelsParams{Namespace: "bad name"}); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("WaitCancels(bad namespace): %v, want %v", err, store.ErrInvalidName)
		}
	})

	// A cancel of a task that already finished comes too late: it fails
	// with ErrTaskFinished (which matches ErrInvalidState too) and says the
	// state the task ended in.
	t.Run("TooLate", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		f.addN(2, "t", "q")
		ok, bad := f.leaseOne("q"), f.leaseOne("q")
		f.mustReport(
			store.Outcome{ID: ok.ID, LeaseID: ok.LeaseID, Kind: store.OutcomeSucceeded},
			store.Outcome{ID: bad.ID, LeaseID: bad.LeaseID, Kind: store.OutcomeDead, Error: "x"},
		)
		for _, c := range []struct {
			id   string
			want store.State
		}{{ok.ID, store.StateSucceeded}, {bad.ID, store.StateDead}} {
			it := f.cancel(c.id)[0]
			if !errors.Is(it.Err, store.ErrTaskFinished) || !errors.Is(it.Err, store.ErrInvalidState) || it.State != c.want {
				t.Errorf("Cancel(%s task) = (%v, %v); want (%v, %v)", c.want, it.State, it.Err, c.want, store.ErrTaskFinished)
			}
		}
		// A cancelled task is not "finished too late": cancelling it again
		// is only an invalid state.
		id := f.addN(1, "t", "q")[0]
		f.cancel(id)
		if it := f.cancel(id)[0]; !errors.Is(it.Err, store.ErrInvalidState) || errors.Is(it.Err, store.ErrTaskFinished) {
			t.Errorf("Cancel(cancelled task) = %v; want %v alone", it.Err, store.ErrInvalidState)
		}
	})
}
