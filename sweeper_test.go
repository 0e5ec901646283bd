package kiln

import (
	"context"
	"testing"
	"time"
)

// Workers that share a store elect one sweeper: only one of them calls the
// store's Sweep, at the usual interval; when it stops, another takes over.
func TestOneSweeperPerStore(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 4
	ws := make([]*Worker, n)
	for i := range ws {
		w := b.newWorker(t, &WorkerConfig{SweepInterval: 10 * time.Millisecond})
		// A lease far longer than the test: no takeover by a slow tick.
		w.sweepLeaseTTL = time.Hour
		w.Handle("t", HandlerFunc(func(context.Context, *Task) error { return nil }))
		b.run(t, w)
		ws[i] = w
	}
	sweepers := func(running []*Worker, base []int64) []int {
		var out []int
		for i, w := range running {
			if w.sweeps.Load() > base[i] {
				out = append(out, i)
			}
		}
		return out
	}
	total := func(base []int64) int64 {
		var s int64
		for i, w := range ws {
			s += w.sweeps.Load() - base[i]
		}
		return s
	}
	zero := make([]int64, n)
	waitFor(t, "30 sweeps", func() bool { return total(zero) >= 30 })
	got := sweepers(ws, zero)
	if len(got) != 1 {
		t.Fatalf("workers %v swept; want exactly one sweeper among %d workers", got, n)
	}
	lead := got[0]

	// The sweeper stops (gracefully: it hands the role over at once).
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	if err := ws[lead].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	base := make([]int64, n)
	for i, w := range ws {
		base[i] = w.sweeps.Load()
	}
	waitFor(t, "another sweeper", func() bool { return total(base) >= 30 })
	got = sweepers(ws, base)
	if len(got) != 1 || got[0] == lead {
		t.Fatalf("after the sweeper %d stopped, workers %v swept; want exactly one other", lead, got)
	}
}
