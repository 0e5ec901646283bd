package kiln_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// Workflow benchmarks (docs/benchmarks.md, "Workflows"):
//
//	go test -run '^$' -bench 'BenchmarkWorkflow' -benchtime 1x -count 3 .
//
// With KILN_TEST_REDIS_URL set, the Redis store is measured too.

// benchStores opens a fresh store per call: embedded, and Redis when
// KILN_TEST_REDIS_URL is set.
func benchStores(b *testing.B, fn func(b *testing.B, open func() store.Store)) {
	b.Run("store=embedded", func(b *testing.B) {
		fn(b, func() store.Store { return openBenchStore(b) })
	})
	url := os.Getenv("KILN_TEST_REDIS_URL")
	if url == "" {
		return
	}
	b.Run("store=redis", func(b *testing.B) {
		fn(b, func() store.Store {
			prefix := fmt.Sprintf("kiln-bench-wf-%d", time.Now().UnixNano())
			s, err := redisstore.Open(b.Context(), url, &redisstore.Config{Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				_ = s.Close()
				deletePrefix(url, prefix)
			})
			return s
		})
	})
}

// runFlowBenchWorker runs a worker of no-op tasks on s until the benchmark ends.
func runFlowBenchWorker(b *testing.B, s store.Store, concurrency int) {
	b.Helper()
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	w.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
		if err := <-done; err != nil {
			b.Errorf("worker: %v", err)
		}
	})
}

// waitSucceeded polls the store until n tasks of the default queue have
// succeeded.
func waitSucceeded(b *testing.B, s store.Store, n int64) {
	b.Helper()
	for {
		st, err := s.Stats(b.Context(), store.StatsParams{Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue}})
		if err != nil {
			b.Fatal(err)
		}
		if len(st.Queues) == 1 && st.Queues[0].Counts[store.StateSucceeded] >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkWorkflowChord compares a chord of 10,000 no-op members (and a
// no-op callback) with 10,000 independent no-op tasks enqueued in batches
// of 1000, each from enqueue to the last outcome, one worker at
// concurrency 50.
func BenchmarkWorkflowChord(b *testing.B) {
	const n = 10000
	benchStores(b, func(b *testing.B, open func() store.Store) {
		b.Run("tasks", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := open()
				c, _ := kiln.NewClient(s, nil)
				runFlowBenchWorker(b, s, 50)
				reqs := make([]kiln.TaskRequest, 1000)
				for i := range reqs {
					reqs[i] = kiln.TaskRequest{Type: "noop"}
				}
				b.StartTimer()
				for range n / 1000 {
					if _, err := c.EnqueueMany(b.Context(), reqs); err != nil {
						b.Fatal(err)
					}
				}
				waitSucceeded(b, s, n)
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/op")
		})
		b.Run("chord", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := open()
				c, _ := kiln.NewClient(s, nil)
				runFlowBenchWorker(b, s, 50)
				members := make([]kiln.Step, n)
				for i := range members {
					members[i] = kiln.NewSignature("noop")
				}
				wf := kiln.Chord(kiln.Group(members...), kiln.NewSignature("noop"))
				b.StartTimer()
				r, err := c.EnqueueWorkflow(b.Context(), wf, nil)
				if err != nil {
					b.Fatal(err)
				}
				waitSucceeded(b, s, n+1) // the callback has run
				b.StopTimer()
				if _, err := r.Wait(b.Context()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/op")
		})
	})
}

// BenchmarkWorkflowChain measures a chain of 100 no-op steps, against 100
// no-op tasks run one after another by a client that enqueues each when
// the one before it has finished; the metric is per step.
func BenchmarkWorkflowChain(b *testing.B) {
	const steps = 100
	benchStores(b, func(b *testing.B, open func() store.Store) {
		b.Run("client-driven", func(b *testing.B) {
			s := open()
			c, _ := kiln.NewClient(s, nil)
			runFlowBenchWorker(b, s, 4)
			for b.Loop() {
				for range steps {
					r, err := c.Enqueue(b.Context(), "noop", nil, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := r.Wait(b.Context()); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e6/float64(b.N*steps), "µs/step")
		})
		b.Run("chain", func(b *testing.B) {
			s := open()
			c, _ := kiln.NewClient(s, nil)
			runFlowBenchWorker(b, s, 4)
			parts := make([]kiln.Step, steps)
			for i := range parts {
				parts[i] = kiln.NewSignature("noop")
			}
			for b.Loop() {
				r, err := c.EnqueueWorkflow(b.Context(), kiln.Chain(parts...), nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Wait(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e6/float64(b.N*steps), "µs/step")
		})
	})
}

// deletePrefix deletes the Redis keys of a benchmark's prefix.
func deletePrefix(url, prefix string) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, "*"+prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			c.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Unlink(ctx, keys...)
	}
}
