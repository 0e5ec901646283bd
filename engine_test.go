package kiln_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// engineWaitLimit bounds every wait for something that should happen
// promptly; it guards against hanging tests and is never a measurement.
const engineWaitLimit = 20 * time.Second

// lockedBuffer is a bytes.Buffer safe for concurrent writes (logs).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// refuseReports is a store whose Report always fails, as a store does
// whose writes cannot be confirmed (Redis with WaitReplicas and a replica
// down).
type refuseReports struct{ store.Store }

func (refuseReports) Report(context.Context, store.ReportParams) (store.ReportResult, error) {
	return store.ReportResult{}, fmt.Errorf("refused by the test: %w", store.ErrUnavailable)
}

// eventually polls cond until it holds, failing the test after
// engineWaitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(engineWaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", engineWaitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShutdownKeepsDeadline: when the store refuses every report, finished
// handlers fill the outcome buffer and the reporter retries; Shutdown still
// returns by its context's deadline, says in the log how many outcomes it
// could not report, and loses no task (they stay in the store, to run again
// when their leases expire). Before the fix, Shutdown never returned.
func TestShutdownKeepsDeadline(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, ts *testStore) {
		s := ts.open(t)
		shutdownRefusingStore(t, s, refuseReports{s})
	})
}

// TestShutdownKeepsDeadlineRedisNoReplica: the same with a real refusal:
// a Redis store that waits for one replica, where there is none.
func TestShutdownKeepsDeadlineRedisNoReplica(t *testing.T) {
	t.Parallel()
	ts := newTestStore(t, "redis")
	s := ts.open(t)
	waiting := ts.openRedis(t, func(c *redisstore.Config) {
		c.WaitReplicas, c.WaitTimeout = 1, 20*time.Millisecond
	})
	shutdownRefusingStore(t, s, waiting)
}

// shutdownRefusingStore enqueues through s and runs a worker on refusing,
// a store that does not record reports.
func shutdownRefusingStore(t *testing.T, s, refusing store.Store) {
	t.Helper()
	const total = 600
	c, err := kiln.NewClient(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]kiln.TaskRequest, total)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "quick"}
	}
	if _, err := c.EnqueueMany(t.Context(), reqs); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	w, err := kiln.NewWorker(refusing, &kiln.WorkerConfig{
		Concurrency: 4, LeaseWait: 50 * time.Millisecond, SweepInterval: -1,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int64
	w.Handle("quick", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		ran.Add(1)
		return nil
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	// More outcomes than the buffer holds: handlers now block on it.
	eventually(t, "the outcome buffer (256) to fill", func() bool { return ran.Load() >= 260 })

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 300*time.Millisecond)
		defer cancel()
		shut <- w.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(engineWaitLimit):
		t.Fatalf("Shutdown with a 300 ms deadline did not return within %s", engineWaitLimit)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(engineWaitLimit):
		t.Fatalf("Run did not return within %s after Shutdown", engineWaitLimit)
	}
	if l := logs.String(); !strings.Contains(l, "unreported=") || strings.Contains(l, "unreported=0 ") {
		t.Errorf("the log does not say how many outcomes were not reported:\n%s", l)
	}
	// Nothing lost: every task is still in the store, none finished.
	st, err := s.Stats(t.Context(), store.StatsParams{Namespace: store.DefaultNamespace})
	if err != nil {
		t.Fatal(err)
	}
	var n, done int64
	for _, q := range st.Queues {
		n += q.Total()
		done += q.Counts[store.StateSucceeded]
	}
	if n != total || done != 0 {
		t.Errorf("after the stop: %d tasks, %d succeeded; want %d, none succeeded", n, done, total)
	}
}
