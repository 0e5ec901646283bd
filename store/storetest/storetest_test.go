package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFakeClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	c := storetest.NewFakeClock(start)
	var _ store.Clock = c
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("Now() = %v, want %v", got, start)
	}
	if got, want := c.Advance(90*time.Second), start.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("Advance(90s) = %v, want %v", got, want)
	}
	if got, want := c.Now(), start.Add(90*time.Second); !got.Equal(want) {
		t.Errorf("Now() after Advance = %v, want %v", got, want)
	}
	c.Set(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("Now() after Set = %v, want %v", got, start)
	}

	// Concurrent use (checked by -race): 8 goroutines advance 100 times each.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(800*time.Millisecond); !got.Equal(want) {
		t.Errorf("Now() after concurrent advances = %v, want %v", got, want)
	}
}

// stub is a store that answers every call with an empty result, counts the
// calls that reach it, and serves List and Stats from fields.
type stub struct {
	mu     sync.Mutex
	calls  map[string]int
	tasks  []*store.Task
	stats  []store.QueueStats
	closed bool
}

func newStub() *stub { return &stub{calls: map[string]int{}} }

func (s *stub) hit(m string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[m]++
}

func (s *stub) count(m string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[m]
}

func (s *stub) Enqueue(_ context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	s.hit("Enqueue")
	items := make([]store.EnqueueItem, len(p.Tasks))
	for i, in := range p.Tasks {
		items[i] = store.EnqueueItem{ID: in.ID, State: store.StatePending}
	}
	return store.EnqueueResult{Items: items}, nil
}
func (s *stub) Lease(context.Context, store.LeaseParams) (store.LeaseResult, error) {
	s.hit("Lease")
	return store.LeaseResult{}, nil
}
func (s *stub) Extend(context.Context, store.ExtendParams) (store.ExtendResult, error) {
	s.hit("Extend")
	return store.ExtendResult{}, nil
}
func (s *stub) Report(_ context.Context, p store.ReportParams) (store.ReportResult, error) {
	s.hit("Report")
	return store.ReportResult{Errs: make([]error, len(p.Outcomes))}, nil
}

func (s *stub) WaitCancels(context.Context, store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	s.hit("WaitCancels")
	return store.WaitCancelsResult{}, nil
}
func (s *stub) Get(context.Context, store.GetParams) (store.GetResult, error) {
	s.hit("Get")
	return store.GetResult{}, nil
}
func (s *stub) List(context.Context, store.ListParams) (store.ListResult, error) {
	s.hit("List")
	return store.ListResult{Tasks: s.tasks}, nil
}
func (s *stub) Stats(context.Context, store.StatsParams) (store.StatsResult, error) {
	s.hit("Stats")
	return store.StatsResult{Queues: s.stats}, nil
}
func (s *stub) Cancel(context.Context, store.IDsParams) (store.AdminResult, error) {
	s.hit("Cancel")
	return store.AdminResult{}, nil
}
func (s *stub) Retry(context.Context, store.IDsParams) (store.AdminResult, error) {
	s.hit("Retry")
	return store.AdminResult{}, nil
}
func (s *stub) Delete(context.Context, store.IDsParams) (store.AdminResult, error) {
	s.hit("Delete")
	return store.AdminResult{}, nil
}
func (s *stub) SetQueuePaused(context.Context, store.QueuePauseParams) error {
	s.hit("SetQueuePaused")
	return nil
}
func (s *stub) Sweep(context.Context, store.SweepParams) (store.SweepResult, error) {
	s.hit("Sweep")
	return store.SweepResult{}, nil
}
func (s *stub) Ping(context.Context) error { s.hit("Ping"); return nil }
func (s *stub) Close() error {
	s.hit("Close")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

var errBoom = errors.New("boom")

func report(t *testing.T, f store.Store) error {
	t.Helper()
	_, err := f.Report(t.Context(), store.ReportParams{Outcomes: []store.Outcome{{ID: "a", LeaseID: 1, Kind: store.OutcomeSucceeded}}})
	return err
}

func TestFaultyFailNext(t *testing.T) {
	t.Parallel()
	s := newStub()
	f := storetest.Faulty(s)
	f.FailNext("Report", errBoom)
	f.FailNext("Report", errBoom)
	for i := range 2 {
		if err := report(t, f); !errors.Is(err, errBoom) {
			t.Errorf("Report %d: got %v, want %v", i, err, errBoom)
		}
	}
	if got := s.count("Report"); got != 0 {
		t.Errorf("failed Reports reached the store %d times, want 0", got)
	}
	if err := report(t, f); err != nil {
		t.Errorf("third Report: got %v, want nil", err)
	}
	if got, want := s.count("Report"), 1; got != want {
		t.Errorf("store saw %d Reports, want %d", got, want)
	}
	if got, want := f.Calls("Report"), 3; got != want {
		t.Errorf("Calls(Report) = %d, want %d", got, want)
	}
	// Other methods are not affected.
	if _, err := f.Lease(t.Context(), store.LeaseParams{}); err != nil {
		t.Errorf("Lease: got %v, want nil", err)
	}
}

func TestFaultyFailNextAfter(t *testing.T) {
	t.Parallel()
	s := newStub()
	f := storetest.Faulty(s)
	f.FailNextAfter("Enqueue", errBoom)
	res, err := f.Enqueue(t.Context(), store.EnqueueParams{Tasks: []store.TaskInput{{ID: "a", Type: "t"}}})
	if !errors.Is(err, errBoom) || len(res.Items) != 0 {
		t.Errorf("Enqueue: got (%d items, %v), want (0 items, %v)", len(res.Items), err, errBoom)
	}
	if got := s.count("Enqueue"); got != 1 {
		t.Errorf("store saw %d Enqueues, want 1 (the work is done, the answer lost)", got)
	}
}

func TestFaultyFailAllAndReset(t *testing.T) {
	t.Parallel()
	s := newStub()
	f := storetest.Faulty(s)
	f.FailAll("Ping", errBoom)
	f.FailAll("SetQueuePaused", errBoom)
	for range 3 {
		if err := f.Ping(t.Context()); !errors.Is(err, errBoom) {
			t.Errorf("Ping: got %v, want %v", err, errBoom)
		}
	}
	f.Heal("Ping")
	if err := f.Ping(t.Context()); err != nil {
		t.Errorf("Ping after Heal: got %v, want nil", err)
	}
	if err := f.SetQueuePaused(t.Context(), store.QueuePauseParams{}); !errors.Is(err, errBoom) {
		t.Errorf("SetQueuePaused: got %v, want %v", err, errBoom)
	}
	f.FailNext("Sweep", errBoom)
	f.Reset()
	if err := f.SetQueuePaused(t.Context(), store.QueuePauseParams{}); err != nil {
		t.Errorf("SetQueuePaused after Reset: got %v, want nil", err)
	}
	if _, err := f.Sweep(t.Context(), store.SweepParams{}); err != nil {
		t.Errorf("Sweep after Reset: got %v, want nil", err)
	}
	if got, want := s.count("Ping"), 1; got != want {
		t.Errorf("store saw %d Pings, want %d", got, want)
	}
	if f.Unwrap() != store.Store(s) {
		t.Error("Unwrap did not return the wrapped store")
	}
}

func TestFaultyCloseAlwaysCloses(t *testing.T) {
	t.Parallel()
	s := newStub()
	f := storetest.Faulty(s)
	f.FailNext("Close", errBoom)
	if err := f.Close(); !errors.Is(err, errBoom) {
		t.Errorf("Close: got %v, want %v", err, errBoom)
	}
	if !s.closed {
		t.Error("Close with an injected error did not close the wrapped store")
	}
}

func TestFaultyEveryMethod(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStub()
	f := storetest.Faulty(s)
	calls := map[string]func() error{
		"Enqueue":        func() error { _, err := f.Enqueue(ctx, store.EnqueueParams{}); return err },
		"Lease":          func() error { _, err := f.Lease(ctx, store.LeaseParams{}); return err },
		"Extend":         func() error { _, err := f.Extend(ctx, store.ExtendParams{}); return err },
		"Report":         func() error { _, err := f.Report(ctx, store.ReportParams{}); return err },
		"WaitCancels":    func() error { _, err := f.WaitCancels(ctx, store.WaitCancelsParams{}); return err },
		"Get":            func() error { _, err := f.Get(ctx, store.GetParams{}); return err },
		"List":           func() error { _, err := f.List(ctx, store.ListParams{}); return err },
		"Stats":          func() error { _, err := f.Stats(ctx, store.StatsParams{}); return err },
		"Cancel":         func() error { _, err := f.Cancel(ctx, store.IDsParams{}); return err },
		"Retry":          func() error { _, err := f.Retry(ctx, store.IDsParams{}); return err },
		"Delete":         func() error { _, err := f.Delete(ctx, store.IDsParams{}); return err },
		"SetQueuePaused": func() error { return f.SetQueuePaused(ctx, store.QueuePauseParams{}) },
		"Sweep":          func() error { _, err := f.Sweep(ctx, store.SweepParams{}); return err },
		"Ping":           func() error { return f.Ping(ctx) },
		"Close":          f.Close,
	}
	if len(calls) != len(storetest.Methods) {
		t.Fatalf("test covers %d methods, Methods lists %d", len(calls), len(storetest.Methods))
	}
	for _, m := range storetest.Methods {
		call := calls[m]
		if call == nil {
			t.Fatalf("no test call for method %s", m)
		}
		f.FailNext(m, fmt.Errorf("%s: %w", m, errBoom))
		if err := call(); !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), m) {
			t.Errorf("%s with FailNext: got %v, want the injected error", m, err)
		}
		if err := call(); err != nil {
			t.Errorf("%s after the fault: got %v, want nil", m, err)
		}
	}
}

func TestFaultyUnknownMethodPanics(t *testing.T) {
	t.Parallel()
	f := storetest.Faulty(newStub())
	defer func() {
		if recover() == nil {
			t.Error("FailNext(\"Repot\") did not panic")
		}
	}()
	f.FailNext("Repot", errBoom)
}

// recTB records Errorf calls instead of failing the test.
type recTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCheckInvariants(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func() []*store.Task {
		return []*store.Task{
			{Namespace: "ns", ID: "a", Queue: "q", State: store.StatePending},
			{Namespace: "ns", ID: "b", Queue: "q", State: store.StateActive, Attempt: 1, LeaseID: 9, LeaseExpiresAt: now},
			{Namespace: "ns", ID: "c", Queue: "r", State: store.StateDead, FinishedAt: now, ExpiresAt: now.Add(time.Hour)},
		}
	}
	goodStats := func() []store.QueueStats {
		q := store.QueueStats{Queue: "q"}
		q.Counts[store.StatePending], q.Counts[store.StateActive] = 1, 1
		r := store.QueueStats{Queue: "r"}
		r.Counts[store.StateDead] = 1
		return []store.QueueStats{q, r}
	}
	for _, tc := range []struct {
		name   string
		mutate func(tasks []*store.Task, stats []store.QueueStats) ([]*store.Task, []store.QueueStats)
		want   string // a substring of the first error; empty means no error
	}{
		{"Good", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) { return ts, ss }, ""},
		{"BadState", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ts[0].State = 0
			return ts, ss
		}, "not a valid state"},
		{"ActiveWithoutLease", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ts[1].LeaseID = 0
			return ts, ss
		}, "LeaseID 0"},
		{"ActiveWithoutExpiry", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ts[1].LeaseExpiresAt = time.Time{}
			return ts, ss
		}, "no LeaseExpiresAt"},
		{"TerminalWithoutFinishedAt", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ts[2].FinishedAt = time.Time{}
			return ts, ss
		}, "no FinishedAt"},
		{"Twice", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			return append(ts, ts[0]), ss
		}, "listed twice"},
		{"StatsDiffer", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ss[0].Counts[store.StatePending] = 2
			return ts, ss
		}, "Stats counts differ"},
		{"WrongNamespace", func(ts []*store.Task, ss []store.QueueStats) ([]*store.Task, []store.QueueStats) {
			ts[0].Namespace = "other"
			return ts, ss
		}, "Namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStub()
			s.tasks, s.stats = tc.mutate(good(), goodStats())
			rec := &recTB{TB: t}
			storetest.CheckInvariants(rec, s, "ns")
			switch {
			case tc.want == "" && len(rec.errs) != 0:
				t.Errorf("CheckInvariants on a good namespace: got errors %q, want none", rec.errs)
			case tc.want != "" && (len(rec.errs) == 0 || !strings.Contains(rec.errs[0], tc.want)):
				t.Errorf("CheckInvariants: got errors %q, want one containing %q", rec.errs, tc.want)
			}
		})
	}
}
