package kilntest

import (
	"testing"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// RunWorker runs w in the background for the rest of the test. When the test
// ends it shuts w down gracefully (bounded by WaitLimit) and fails the test
// if Shutdown or Run returned an error or Run did not return.
func RunWorker(tb testing.TB, w *kiln.Worker) {
	tb.Helper()
	testenv.RunBackground(tb, w)
}

// Drain runs w (a worker on st, in namespace ns; "" means the default
// namespace) until no task of ns is pending, active or waiting to retry,
// then shuts it down; it fails the test when that takes longer than
// WaitLimit. Tasks scheduled for later do not count: they are not due. Use
// it after enqueuing, to test what the tasks did.
func Drain(tb testing.TB, w *kiln.Worker, st store.Store, ns string) {
	tb.Helper()
	if ns == "" {
		ns = store.DefaultNamespace
	}
	ctx := testenv.Context(tb)
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	// Deferred, so that the worker stops also when the wait fails the test.
	defer func() {
		if err := w.Shutdown(ctx); err != nil {
			tb.Errorf("kilntest: Shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			tb.Errorf("kilntest: Run: %v", err)
		}
	}()
	var statsErr error
	testenv.Eventually(tb, "the queues of namespace "+ns+" to drain", func() bool {
		res, err := st.Stats(ctx, store.StatsParams{Namespace: ns})
		if err != nil {
			statsErr = err
			return true
		}
		for _, q := range res.Queues {
			if q.Counts[store.StatePending]+q.Counts[store.StateActive]+q.Counts[store.StateRetry] > 0 {
				return false
			}
		}
		return true
	})
	if statsErr != nil {
		tb.Fatalf("kilntest: Stats: %v", statsErr)
	}
}
