package storetest

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/store"
)

// CheckInvariants lists every task of namespace ns in s and reports through t
// every broken invariant: each task has a valid state and belongs to ns; an
// active task has a LeaseID, a LeaseExpiresAt and an Attempt of at least 1; a
// terminal task has FinishedAt and an ExpiresAt not before it; no task is
// listed twice; and Stats counts per queue and state equal the counts from
// List. It uses t.Errorf, so the caller's test goes on, and must not run while
// other goroutines change the namespace.
func CheckInvariants(t testing.TB, s store.Store, ns string) {
	t.Helper()
	ctx := t.Context()
	tasks := listAll(ctx, t, s, ns, store.ListParams{Limit: store.MaxListLimit})
	seen := make(map[string]bool, len(tasks))
	counts := make(map[string]*[store.NumStates + 1]int64)
	for _, tk := range tasks {
		if seen[tk.ID] {
			t.Errorf("invariant: task %s listed twice", tk.ID)
			continue
		}
		seen[tk.ID] = true
		if tk.Namespace != ns {
			t.Errorf("invariant: task %s: Namespace = %q, want %q", tk.ID, tk.Namespace, ns)
		}
		if !tk.State.Valid() {
			t.Errorf("invariant: task %s: State = %v, not a valid state", tk.ID, tk.State)
			continue
		}
		if tk.State == store.StateActive {
			if tk.LeaseID == 0 {
				t.Errorf("invariant: active task %s has LeaseID 0", tk.ID)
			}
			if tk.LeaseExpiresAt.IsZero() {
				t.Errorf("invariant: active task %s has no LeaseExpiresAt", tk.ID)
			}
			if tk.Attempt < 1 {
				t.Errorf("invariant: active task %s has Attempt %d, want >= 1", tk.ID, tk.Attempt)
			}
		}
		if tk.State.Terminal() {
			if tk.FinishedAt.IsZero() {
				t.Errorf("invariant: %s task %s has no FinishedAt", tk.State, tk.ID)
			} else if tk.ExpiresAt.Before(tk.FinishedAt) {
				t.Errorf("invariant: %s task %s: ExpiresAt %v is before FinishedAt %v", tk.State, tk.ID, tk.ExpiresAt, tk.FinishedAt)
			}
		}
		c := counts[tk.Queue]
		if c == nil {
			c = new([store.NumStates + 1]int64)
			counts[tk.Queue] = c
		}
		c[tk.State]++
	}
	res, err := s.Stats(ctx, store.StatsParams{Namespace: ns})
	if err != nil {
		t.Errorf("invariant: Stats: %v", err)
		return
	}
	got := make(map[string][store.NumStates + 1]int64)
	for i, q := range res.Queues {
		if i > 0 && res.Queues[i-1].Queue >= q.Queue {
			t.Errorf("invariant: Stats queues not sorted by name: %q before %q", res.Queues[i-1].Queue, q.Queue)
		}
		if q.Total() == 0 && !q.Paused {
			t.Errorf("invariant: Stats lists queue %q with no tasks, and it is not paused", q.Queue)
			continue
		}
		if q.Total() != 0 {
			got[q.Queue] = q.Counts
		}
	}
	want := make(map[string][store.NumStates + 1]int64, len(counts))
	for q, c := range counts {
		want[q] = *c
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("invariant: Stats counts differ from List counts per queue, indexed by state (-list +stats):\n%s", diff)
	}
}
