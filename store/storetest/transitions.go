package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

// transition is one row of the state diagram: a task made in state from,
// an action on it, and what must follow.
type transition struct {
	name string
	from store.State
	// task adjusts the input the task is made from.
	task func(in *store.TaskInput)
	// do acts on the task and returns the per-item error of the call.
	do func(f *fixture, tk *store.Task) error
	// want is the state after do; 0 means the task must be gone.
	want store.State
	// wantErr, when set, is the error do must return; the task must then be
	// unchanged.
	wantErr error
	// check, when set, checks the task after do.
	check func(f *fixture, before, after *store.Task)
}

// Actions used by the table.
func doCancel(f *fixture, tk *store.Task) error { return f.cancel(tk.ID)[0].Err }
func doRetry(f *fixture, tk *store.Task) error  { return f.retry(tk.ID)[0].Err }
func doDelete(f *fixture, tk *store.Task) error { return f.del(tk.ID)[0].Err }

func doReport(kind store.OutcomeKind, mod func(*store.Outcome)) func(f *fixture, tk *store.Task) error {
	return func(f *fixture, tk *store.Task) error {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: kind}
		if mod != nil {
			mod(&o)
		}
		return f.report(o)[0]
	}
}

// doExpire advances the clock past the task's lease and sweeps.
func doExpire(f *fixture, tk *store.Task) error {
	f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
	f.sweep()
	return nil
}

// doDue advances the clock to the task's RunAt and sweeps.
func doDue(f *fixture, tk *store.Task) error {
	f.clock.Set(tk.RunAt)
	res := f.sweep()
	if res.Promoted != 1 {
		f.t.Errorf("Sweep at RunAt: got Promoted %d, want 1", res.Promoted)
	}
	return nil
}

func withRetries(n int) func(*store.TaskInput) {
	return func(in *store.TaskInput) { in.MaxRetries = n }
}

// wantLeaseError checks LastError after a lease expired.
func wantLeaseError(f *fixture, _, after *store.Task) {
	if !strings.Contains(strings.ToLower(after.LastError), "lease") {
		f.t.Errorf("after lease expiry: LastError = %q, want it to mention the lease", after.LastError)
	}
}

// wantFinished checks FinishedAt and ExpiresAt of a task that just became
// terminal.
func wantFinished(f *fixture, _, after *store.Task) {
	now := f.now()
	if !after.FinishedAt.Equal(now) {
		f.t.Errorf("FinishedAt = %v, want the store's now %v", after.FinishedAt, now)
	}
	if want := now.Add(store.RetentionDefault); !after.ExpiresAt.Equal(want) {
		f.t.Errorf("ExpiresAt = %v, want FinishedAt+RetentionDefault %v", after.ExpiresAt, want)
	}
}

func transitions() []transition {
	tt := []transition{
		{name: "scheduled/due/pending", from: store.StateScheduled, do: doDue, want: store.StatePending},
		{
			name: "pending/lease/active", from: store.StatePending,
			do: func(f *fixture, tk *store.Task) error {
				got := f.lease(store.LeaseParams{Queues: []string{tk.Queue}, Duration: 30 * time.Second, WorkerID: "w7"})
				if len(got) != 1 || got[0].ID != tk.ID {
					f.t.Fatalf("Lease: got %v, want [%s]", ids(got), tk.ID)
				}
				now := f.now()
				want := tk.Clone()
				want.State = store.StateActive
				want.Attempt = 1
				want.LeaseID = got[0].LeaseID
				want.LeaseExpiresAt = now.Add(30 * time.Second)
				want.WorkerID = "w7"
				want.StartedAt = now
				if diff := cmp.Diff(want, got[0], cmpOpts...); diff != "" {
					f.t.Errorf("leased task differs (-want +got):\n%s", diff)
				}
				if got[0].LeaseID == 0 {
					f.t.Error("leased task has LeaseID 0")
				}
				return nil
			},
			want: store.StateActive,
			check: func(f *fixture, _, after *store.Task) {
				if after.Attempt != 1 {
					f.t.Errorf("Attempt = %d, want 1", after.Attempt)
				}
			},
		},
		{
			name: "active/report-succeeded/succeeded", from: store.StateActive,
			do:   doReport(store.OutcomeSucceeded, func(o *store.Outcome) { o.Result = []byte(`{"n":42}`) }),
			want: store.StateSucceeded,
			check: func(f *fixture, before, after *store.Task) {
				wantFinished(f, before, after)
				if got, want := string(after.Result), `{"n":42}`; got != want {
					f.t.Errorf("Result = %q, want %q", got, want)
				}
			},
		},
		{
			name: "active/report-retry/retry", from: store.StateActive, task: withRetries(3),
			do: func(f *fixture, tk *store.Task) error {
				return doReport(store.OutcomeRetry, func(o *store.Outcome) {
					o.Error = "try again"
					o.RetryAt = f.now().Add(5 * time.Minute)
				})(f, tk)
			},
			want: store.StateRetry,
			check: func(f *fixture, _, after *store.Task) {
				if after.LastError != "try again" {
					f.t.Errorf("LastError = %q, want %q", after.LastError, "try again")
				}
				if want := f.now().Add(5 * time.Minute); !after.RunAt.Equal(want) {
					f.t.Errorf("RunAt = %v, want RetryAt %v", after.RunAt, want)
				}
				if after.Attempt != 1 {
					f.t.Errorf("Attempt = %d, want 1", after.Attempt)
				}
			},
		},
		{
			name: "active/report-dead/dead", from: store.StateActive, task: withRetries(3),
			do:   doReport(store.OutcomeDead, func(o *store.Outcome) { o.Error = "hopeless" }),
			want: store.StateDead,
			check: func(f *fixture, before, after *store.Task) {
				wantFinished(f, before, after)
				if after.LastError != "hopeless" {
					f.t.Errorf("LastError = %q, want %q", after.LastError, "hopeless")
				}
			},
		},
		{
			name: "active/report-cancelled/cancelled", from: store.StateActive,
			do:    doReport(store.OutcomeCancelled, func(o *store.Outcome) { o.Error = "stopped" }),
			want:  store.StateCancelled,
			check: wantFinished,
		},
		{
			name: "active/report-release/pending", from: store.StateActive,
			do:   doReport(store.OutcomeRelease, nil),
			want: store.StatePending,
			check: func(f *fixture, _, after *store.Task) {
				if after.Attempt != 1 {
					f.t.Errorf("Attempt after release without NotStarted = %d, want 1", after.Attempt)
				}
			},
		},
		{
			name: "active/report-release-not-started/pending", from: store.StateActive,
			do:   doReport(store.OutcomeRelease, func(o *store.Outcome) { o.NotStarted = true }),
			want: store.StatePending,
			check: func(f *fixture, _, after *store.Task) {
				if after.Attempt != 0 {
					f.t.Errorf("Attempt after release with NotStarted = %d, want 0", after.Attempt)
				}
			},
		},
		{
			name: "retry/due/pending", from: store.StateRetry, task: withRetries(3),
			do: doDue, want: store.StatePending,
		},
		{
			name: "active/lease-expired/pending", from: store.StateActive, task: withRetries(1),
			do: doExpire, want: store.StatePending,
			check: func(f *fixture, before, after *store.Task) {
				wantLeaseError(f, before, after)
				if after.Attempt != 1 {
					f.t.Errorf("Attempt after recovery = %d, want 1 (kept)", after.Attempt)
				}
			},
		},
		{
			name: "active/lease-expired-no-retries/dead", from: store.StateActive,
			do: doExpire, want: store.StateDead,
			check: func(f *fixture, before, after *store.Task) {
				wantLeaseError(f, before, after)
				if after.FinishedAt.IsZero() {
					f.t.Error("dead task has no FinishedAt")
				}
			},
		},
		{
			name: "active/cancel-then-report-cancelled/cancelled", from: store.StateActive,
			do: func(f *fixture, tk *store.Task) error {
				it := f.cancel(tk.ID)[0]
				if it.Err != nil {
					return it.Err
				}
				if it.State != store.StateActive {
					f.t.Errorf("Cancel(active).State = %s, want active", it.State)
				}
				if got := f.wantState(tk.ID, store.StateActive); !got.CancelRequested {
					f.t.Error("after Cancel(active): CancelRequested = false, want true")
				}
				ext := f.extend(time.Minute, store.ExtendLease{LeaseRef: store.LeaseRef{ID: tk.ID, LeaseID: tk.LeaseID}})[0]
				if ext.Err != nil {
					f.t.Fatalf("Extend after Cancel: %v", ext.Err)
				}
				if !ext.CancelRequested {
					f.t.Error("Extend after Cancel: CancelRequested = false, want true")
				}
				return doReport(store.OutcomeCancelled, nil)(f, tk)
			},
			want:  store.StateCancelled,
			check: wantFinished,
		},
		{
			name: "active/cancel-then-lease-expired/cancelled", from: store.StateActive, task: withRetries(5),
			do: func(f *fixture, tk *store.Task) error {
				if err := f.cancel(tk.ID)[0].Err; err != nil {
					return err
				}
				f.clock.Set(tk.LeaseExpiresAt.Add(time.Millisecond))
				if res := f.sweep(); res.Cancelled != 1 {
					f.t.Errorf("Sweep: got Cancelled %d, want 1", res.Cancelled)
				}
				return nil
			},
			want:  store.StateCancelled,
			check: wantFinished,
		},
		{
			name: "dead/retry/pending", from: store.StateDead, task: withRetries(2),
			do: doRetry, want: store.StatePending,
			check: func(f *fixture, _, after *store.Task) {
				if after.Attempt != 0 {
					f.t.Errorf("Attempt after Retry = %d, want 0", after.Attempt)
				}
				if tk := f.leaseOne(after.Queue); tk.ID != after.ID || tk.Attempt != 1 {
					f.t.Errorf("Lease after Retry: got %s attempt %d, want %s attempt 1", tk.ID, tk.Attempt, after.ID)
				}
			},
		},
		{
			name: "cancelled/retry/pending", from: store.StateCancelled,
			do: doRetry, want: store.StatePending,
			check: func(f *fixture, _, after *store.Task) {
				if after.Attempt != 0 {
					f.t.Errorf("Attempt after Retry = %d, want 0", after.Attempt)
				}
			},
		},
		{name: "active/delete/error", from: store.StateActive, do: doDelete, wantErr: store.ErrInvalidState},
	}
	for _, st := range []store.State{store.StatePending, store.StateScheduled, store.StateRetry} {
		tt = append(tt, transition{
			name: st.String() + "/cancel/cancelled", from: st, do: doCancel, want: store.StateCancelled,
			check: wantFinished,
		})
	}
	for _, st := range []store.State{store.StateSucceeded, store.StateDead, store.StateCancelled} {
		tt = append(tt, transition{name: st.String() + "/cancel/error", from: st, do: doCancel, wantErr: store.ErrInvalidState})
	}
	for _, st := range []store.State{store.StateScheduled, store.StatePending, store.StateActive, store.StateRetry, store.StateSucceeded} {
		tt = append(tt, transition{name: st.String() + "/retry/error", from: st, do: doRetry, wantErr: store.ErrInvalidState})
	}
	for _, st := range []store.State{store.StateScheduled, store.StatePending, store.StateRetry, store.StateSucceeded, store.StateDead, store.StateCancelled} {
		tt = append(tt, transition{name: st.String() + "/delete/gone", from: st, do: doDelete})
	}
	return tt
}

// testTransitions walks every edge of the state diagram, one fresh store per
// row, and checks the invariants after each.
func testTransitions(t *testing.T, h Harness) {
	t.Parallel()
	for _, tr := range transitions() {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			f := h.setup(t)
			in := store.TaskInput{Queue: "q"}
			if tr.task != nil {
				tr.task(&in)
			}
			tk := f.makeTask(tr.from, in)
			before := f.mustGet(tk.ID)
			err := tr.do(f, tk)
			switch {
			case tr.wantErr != nil:
				if !errors.Is(err, tr.wantErr) {
					t.Fatalf("got error %v, want %v", err, tr.wantErr)
				}
				if diff := cmp.Diff(before, f.mustGet(tk.ID), cmpOpts...); diff != "" {
					t.Errorf("task changed by a failed call (-before +after):\n%s", diff)
				}
			case err != nil:
				t.Fatalf("got error %v, want nil", err)
			case tr.want == 0:
				if got := f.get(tk.ID); got != nil {
					t.Errorf("Get after delete: got task in state %s, want nil", got.State)
				}
			default:
				after := f.wantState(tk.ID, tr.want)
				if tr.check != nil {
					tr.check(f, before, after)
				}
			}
			f.check()
		})
	}
}
