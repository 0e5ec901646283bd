package metrics

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kilnhq/kiln/store"
)

// TestLabelsBounded: past MaxLabelValues distinct types (or queues), new
// names are counted under OtherLabel, and names seen before keep theirs.
func TestLabelsBounded(t *testing.T) {
	t.Parallel()
	s, err := New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxLabelValues {
		s.Series("q", "t"+strconv.Itoa(i)).Enqueued.Inc()
	}
	s.Series("q", "one-too-many").Enqueued.Inc()
	s.Series("q", "another").Enqueued.Inc()
	s.Series("q", "t0").Enqueued.Inc()
	if got := testutil.ToFloat64(s.enqueued.WithLabelValues("q", OtherLabel)); got != 2 {
		t.Errorf("_other = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.enqueued.WithLabelValues("q", "t0")); got != 2 {
		t.Errorf("t0 = %v, want 2", got)
	}
	if n := testutil.CollectAndCount(s.enqueued); n != MaxLabelValues+1 {
		t.Errorf("%d series, want %d", n, MaxLabelValues+1)
	}
	if ser := s.Series("", "t0"); ser != s.Series(store.DefaultQueue, "t0") {
		t.Error("the empty queue is not the default queue")
	}
}

// TestDepthCached: however many scrapes, the sources are asked at most
// once per DepthRefresh; a source's queue is shown once even when two
// sources (two workers) name it.
func TestDepthCached(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	src := func(context.Context) ([]Depth, error) {
		calls.Add(1)
		d := Depth{Namespace: "ns", QueueStats: store.QueueStats{Queue: "q"}}
		d.Counts[store.StatePending] = 7
		return []Depth{d}, nil
	}
	s.AddDepth(src)
	remove := s.AddDepth(src)
	for range 5 {
		if n := testutil.CollectAndCount(s.depth); n != len(store.AllStates) {
			t.Fatalf("%d samples, want %d", n, len(store.AllStates))
		}
	}
	if c := calls.Load(); c != 2 {
		t.Errorf("sources asked %d times over 5 scrapes, want 2 (once each)", c)
	}
	remove() // a change of sources refreshes at the next scrape
	testutil.CollectAndCount(s.depth)
	if c := calls.Load(); c != 3 {
		t.Errorf("sources asked %d times, want 3", c)
	}
}

// BenchmarkRecordTask is what metrics add to one task that a client
// enqueues and a worker runs: the series lookups of the client and the
// worker, and every counter and histogram they touch (docs/benchmarks.md).
func BenchmarkRecordTask(b *testing.B) {
	s, err := New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	t := &store.Task{Queue: "default", Type: "noop", CreatedAt: now, RunAt: now, StartedAt: now.Add(time.Millisecond)}
	for b.Loop() {
		s.Series(t.Queue, t.Type).Enqueued.Inc() // the client
		ser := s.Series(t.Queue, t.Type)         // the worker, at the lease
		ObserveWait(ser, t)
		ser.Started.Inc()
		ser.Succeeded.Inc()
		ser.Handler.Observe(0.0001)
	}
}
