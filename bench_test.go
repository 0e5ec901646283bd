package kiln_test

import (
	"context"
	"encoding/binary"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

// The benchmarks of docs/benchmarks.md. Run them with
//
//	go test -run '^$' -bench . -benchtime 1x .
//
// (each iteration is a whole workload, so one iteration is a measurement).

func openBenchStore(b *testing.B) *embedded.Store {
	b.Helper()
	s, err := embedded.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkEnqueue measures durable enqueues through the Client, one task
// per call and in batches of 1000.
func BenchmarkEnqueue(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		c, err := kiln.NewClient(openBenchStore(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := c.Enqueue(b.Context(), "noop", nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("single-parallel", func(b *testing.B) {
		c, err := kiln.NewClient(openBenchStore(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(32)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Enqueue(context.Background(), "noop", nil, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("batch1000", func(b *testing.B) {
		c, err := kiln.NewClient(openBenchStore(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		reqs := make([]kiln.TaskRequest, 1000)
		for i := range reqs {
			reqs[i] = kiln.TaskRequest{Type: "noop"}
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := c.EnqueueMany(b.Context(), reqs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(reqs))/b.Elapsed().Seconds(), "tasks/s")
	})
}

// BenchmarkEndToEnd enqueues 100,000 no-op tasks in batches of 1000 while
// one worker with concurrency 50 runs them, and stops when the store has
// recorded every one as succeeded.
func BenchmarkEndToEnd(b *testing.B) { endToEnd(b, false) }

// BenchmarkEndToEndMetrics is BenchmarkEndToEnd with Prometheus metrics
// (kiln.Metrics) on the worker and the client, gathered every second as a
// Prometheus server would scrape them (docs/metrics.md, their cost).
func BenchmarkEndToEndMetrics(b *testing.B) { endToEnd(b, true) }

func endToEnd(b *testing.B, withMetrics bool) {
	b.Helper()
	const total, batch = 100_000, 1000
	for b.Loop() {
		b.StopTimer()
		s := openBenchStore(b)
		var done atomic.Int64
		all := make(chan struct{})
		var m *kiln.Metrics
		var reg *prometheus.Registry
		if withMetrics {
			reg = prometheus.NewRegistry()
			var err error
			if m, err = kiln.NewMetrics(reg); err != nil {
				b.Fatal(err)
			}
		}
		w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
			Concurrency: 50, Metrics: m,
			EventFunc: func(e kiln.Event) {
				if e.Kind == kiln.EventSucceeded && done.Add(1) == total {
					close(all)
				}
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		w.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
		c, err := kiln.NewClient(s, &kiln.ClientConfig{Metrics: m})
		if err != nil {
			b.Fatal(err)
		}
		reqs := make([]kiln.TaskRequest, batch)
		for i := range reqs {
			reqs[i] = kiln.TaskRequest{Type: "noop"}
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
		if reg != nil {
			wg.Go(func() { gatherEvery(ctx, b, reg, scrapeInterval(b)) })
		}
		b.StartTimer()
		start := time.Now()
		for i := 0; i < total; i += batch {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				b.Fatal(err)
			}
		}
		<-all
		// The handlers are done; wait until the store has every outcome.
		for {
			st, err := s.Stats(ctx, store.StatsParams{Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue}})
			if err != nil {
				b.Fatal(err)
			}
			if st.Queues[0].Counts[store.StateSucceeded] == total {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		cancel()
		wg.Wait()
		b.ReportMetric(total/elapsed.Seconds(), "tasks/s")
		b.StartTimer()
	}
}

// scrapeInterval is how often BenchmarkEndToEndMetrics gathers its
// registry: every second, as Prometheus scrapes, or KILN_BENCH_SCRAPE_EVERY
// (a Go duration). Under valgrind, which runs the benchmark about 100 times
// slower, "100s" keeps the number of scrapes per run what it is natively.
func scrapeInterval(b *testing.B) time.Duration {
	b.Helper()
	v := os.Getenv("KILN_BENCH_SCRAPE_EVERY")
	if v == "" {
		return time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		b.Fatalf("KILN_BENCH_SCRAPE_EVERY=%q: want a positive Go duration", v)
	}
	return d
}

// gatherEvery gathers reg every interval until ctx ends, as a Prometheus
// server scraping it would.
func gatherEvery(ctx context.Context, b *testing.B, reg *prometheus.Registry, interval time.Duration) {
	b.Helper()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := reg.Gather(); err != nil {
				b.Error(err)
				return
			}
		}
	}
}

// BenchmarkLatency enqueues single tasks at a steady 500 per second for
// five seconds to an idle worker and reports the time from the start of
// Enqueue to the start of the handler.
func BenchmarkLatency(b *testing.B) {
	const rate, count = 500, 2500
	for b.Loop() {
		b.StopTimer()
		s := openBenchStore(b)
		lat := make([]time.Duration, 0, count)
		var mu sync.Mutex
		got := make(chan struct{}, count)
		w, err := kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: 10})
		if err != nil {
			b.Fatal(err)
		}
		base := time.Now()
		w.Handle("ping", kiln.HandlerFunc(func(_ context.Context, t *kiln.Task) error {
			d := time.Since(base) - time.Duration(binary.BigEndian.Uint64(t.Payload))
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
			got <- struct{}{}
			return nil
		}))
		c, err := kiln.NewClient(s, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
		b.StartTimer()
		tick := time.NewTicker(time.Second / rate)
		for i := 0; i < count; i++ {
			<-tick.C
			p := binary.BigEndian.AppendUint64(nil, uint64(time.Since(base)))
			if _, err := c.Enqueue(ctx, "ping", p, nil); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		for range count {
			<-got
		}
		b.StopTimer()
		cancel()
		wg.Wait()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
		b.StartTimer()
	}
}
