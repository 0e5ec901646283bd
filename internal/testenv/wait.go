package testenv

import (
	"context"
	"testing"
	"time"
)

// Eventually calls cond until it returns true, at first every millisecond and
// then every 20 ms, and fails the test when WaitLimit passes first or the
// test's context ends. what says what the test waits for.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(WaitLimit)
	delay := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", WaitLimit, what)
		}
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-tb.Context().Done():
			timer.Stop()
			tb.Fatalf("the test ended while waiting for %s", what)
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// Recv waits for a value on c, failing the test after WaitLimit.
func Recv[T any](tb testing.TB, c <-chan T, what string) T {
	tb.Helper()
	timer := time.NewTimer(WaitLimit)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		tb.Fatalf("timed out after %s waiting for %s", WaitLimit, what)
		panic("unreachable")
	}
}

// Context returns the test's context, bounded by WaitLimit: for calls that
// wait on something that should happen promptly.
func Context(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), WaitLimit)
	tb.Cleanup(cancel)
	return ctx
}

// Runner is what RunBackground runs: a kiln.Worker, a server, anything that
// runs until told to stop.
type Runner interface {
	Run(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// RunBackground runs r until the test ends, then shuts it down (bounded by
// WaitLimit) and checks that Run returned nil.
func RunBackground(tb testing.TB, r Runner) {
	tb.Helper()
	errc := make(chan error, 1)
	ctx := context.WithoutCancel(tb.Context())
	runCtx, stop := context.WithCancel(ctx)
	go func() { errc <- r.Run(runCtx) }()
	tb.Cleanup(func() {
		defer stop()
		sctx, cancel := context.WithTimeout(ctx, WaitLimit)
		defer cancel()
		if err := r.Shutdown(sctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("Run: %v", err)
			}
		case <-sctx.Done():
			tb.Errorf("Run did not return within %s of Shutdown", WaitLimit)
		}
	})
}
