package kiln_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
)

// The latency benchmarks of docs/benchmarks.md ("Cancel and start
// latency"). Each iteration is one measured event; run them with a fixed
// count, for example
//
//	KILN_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench 'Cancel|Lateness' -benchtime 200x .
//
// They report p50, p99 and max in ms, and log the machine (CPU model, cores,
// load average) they ran on, since figures from a loaded machine differ.

// logMachine logs the CPU model, the number of CPUs and the load average.
func logMachine(b *testing.B) {
	b.Helper()
	model := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load := "unknown"
	if raw, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(raw))[:3], " ")
	}
	// Printed, not logged: a parent benchmark's log is not shown.
	fmt.Printf("%s: machine: %s, %d CPUs, load average %s\n", b.Name(), model, runtime.NumCPU(), load)
}

// reportLatencies reports the p50, p99 and max of ds in ms.
func reportLatencies(b *testing.B, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := min(int(q*float64(len(ds))), len(ds)-1)
		return float64(ds[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(float64(ds[len(ds)-1])/float64(time.Millisecond), "max-ms")
	b.ReportMetric(0, "ns/op") // one iteration is one event, not a cost
}

// benchWorker runs a worker with default lease and wait settings (a 30 s
// lease, so heartbeats every 10 s; 5 s idle waits) until the benchmark ends.
func benchWorker(b *testing.B, s store.Store, retry time.Duration, register func(w *kiln.Worker)) {
	b.Helper()
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
		Concurrency:    4,
		SweepInterval:  -1, // no sweep promotes a task: only the store's wake-up
		RetryDelayFunc: func(int, error, *kiln.Task) time.Duration { return retry },
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	register(w)
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
		if err := <-runErr; err != nil {
			b.Errorf("Run: %v", err)
		}
	})
}

// BenchmarkCancel measures the time from Client.Cancel of an active task to
// its handler's context being cancelled, on every store.
func BenchmarkCancel(b *testing.B) {
	logMachine(b)
	for _, kind := range []string{"embedded", "redis", "remote"} {
		b.Run(kind, func(b *testing.B) {
			s := newTestStore(b, kind).open(b)
			started := make(chan struct{}, 1)
			seen := make(chan time.Time, 1)
			benchWorker(b, s, 0, func(w *kiln.Worker) {
				w.Handle("long", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
					started <- struct{}{}
					<-ctx.Done()
					seen <- time.Now()
					return ctx.Err()
				}))
			})
			c, err := kiln.NewClient(s, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				res, err := c.Enqueue(ctx, "long", nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				<-started
				t0 := time.Now()
				if err := res.Cancel(ctx); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, (<-seen).Sub(t0))
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
	}
}

// BenchmarkLateness measures how late an idle worker starts a task after it
// became due: a task enqueued with ProcessIn 50 ms ("delay"), and the retry
// of a task failed with a retry delay of 50 ms ("retry"), on every store.
func BenchmarkLateness(b *testing.B) {
	logMachine(b)
	const delay = 50 * time.Millisecond
	for _, kind := range []string{"embedded", "redis", "remote"} {
		b.Run("delay/"+kind, func(b *testing.B) {
			s := newTestStore(b, kind).open(b)
			startedAt := make(chan time.Time, 1)
			benchWorker(b, s, delay, func(w *kiln.Worker) {
				w.Handle("t", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
					startedAt <- time.Now()
					return nil
				}))
			})
			c, err := kiln.NewClient(s, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			time.Sleep(100 * time.Millisecond) // the worker is idle, waiting in the store
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				due := time.Now().Add(delay) // the client computes RunAt after this
				if _, err := c.Enqueue(ctx, "t", nil, &kiln.TaskOptions{ProcessIn: delay}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, max((<-startedAt).Sub(due), 0))
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
		b.Run("retry/"+kind, func(b *testing.B) {
			s := newTestStore(b, kind).open(b)
			var mu sync.Mutex
			failedAt := map[string]time.Time{}
			startedAt := make(chan time.Duration, 1)
			errFirst := errors.New("first attempt fails")
			benchWorker(b, s, delay, func(w *kiln.Worker) {
				w.Handle("t", kiln.HandlerFunc(func(_ context.Context, t *kiln.Task) error {
					now := time.Now()
					mu.Lock()
					defer mu.Unlock()
					if t.Attempt == 1 {
						failedAt[t.ID] = now
						return errFirst
					}
					startedAt <- max(now.Sub(failedAt[t.ID].Add(delay)), 0)
					return nil
				}))
			})
			c, err := kiln.NewClient(s, nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			time.Sleep(100 * time.Millisecond)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Enqueue(ctx, "t", nil, &kiln.TaskOptions{MaxRetries: new(1)}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, <-startedAt)
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
	}
}
