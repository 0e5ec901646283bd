package kiln_test

import (
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
)

// Workflow benchmarks (docs/benchmarks.md, "Workflows"):
//
//	go test -run '^$' -bench 'BenchmarkWorkflow' -benchtime 1x -count 3 .
//	go test -run '^$' -bench 'BenchmarkWorkflowChordRatio' -benchtime 15x .
//
// With KILN_TEST_REDIS_URL set, the Redis store is measured too.

// benchStore opens a fresh store per call of open: the store is closed
// (and its Redis keys deleted) by the function open returns with it, or
// when the benchmark ends. server, when set, returns the CPU time the
// store's server has used and the commands it has run (Redis: INFO), so
// that a workload's figures include what runs outside this process; on a
// Redis server shared with other clients, theirs are counted too.
type benchStore struct {
	open   func() (store.Store, func())
	server func() (cpu time.Duration, calls int64)
}

// benchStores runs fn on the embedded store, and on Redis when
// KILN_TEST_REDIS_URL is set.
func benchStores(b *testing.B, fn func(b *testing.B, bs benchStore)) {
	b.Run("store=embedded", func(b *testing.B) {
		fn(b, benchStore{open: func() (store.Store, func()) {
			s, err := embedded.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			closeFn := sync.OnceFunc(func() { _ = s.Close() })
			b.Cleanup(closeFn)
			return s, closeFn
		}})
	})
	url := os.Getenv("KILN_TEST_REDIS_URL")
	if url == "" {
		return
	}
	b.Run("store=redis", func(b *testing.B) {
		fn(b, benchStore{open: func() (store.Store, func()) {
			prefix := fmt.Sprintf("kiln-bench-wf-%d", time.Now().UnixNano())
			s, err := redisstore.Open(b.Context(), url, &redisstore.Config{Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			closeFn := sync.OnceFunc(func() {
				_ = s.Close()
				deletePrefix(url, prefix)
			})
			b.Cleanup(closeFn)
			return s, closeFn
		}, server: func() (time.Duration, int64) { return redisServerStats(url) }})
	})
}

// redisServerStats returns the CPU time (user and system) the Redis
// server at url has used and the number of commands it has run, scripts'
// commands included (INFO cpu and commandstats); zeros when it cannot
// tell.
func redisServerStats(url string) (time.Duration, int64) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return 0, 0
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "cpu", "commandstats").Result()
	if err != nil {
		return 0, 0
	}
	var cpu float64
	var calls int64
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		case strings.HasPrefix(k, "cmdstat_"):
			for field := range strings.SplitSeq(v, ",") {
				if n, ok := strings.CutPrefix(field, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					calls += c
				}
			}
		}
	}
	return time.Duration(cpu * float64(time.Second)), calls
}

// runFlowBenchWorker runs a worker of no-op tasks on s until the returned
// function is called or the benchmark ends.
func runFlowBenchWorker(b *testing.B, s store.Store, concurrency int) (stop func()) {
	b.Helper()
	return runFlowBenchWorkerFirst(b, s, concurrency, nil)
}

// runFlowBenchWorkerFirst is runFlowBenchWorker that also stores in first,
// when not nil, the time its handler first ran (unix ns).
func runFlowBenchWorkerFirst(b *testing.B, s store.Store, concurrency int, first *atomic.Int64) (stop func()) {
	b.Helper()
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: concurrency})
	if err != nil {
		b.Fatal(err)
	}
	w.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		if first != nil && first.Load() == 0 {
			first.CompareAndSwap(0, time.Now().UnixNano())
		}
		return nil
	}))
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	stop = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
		if err := <-done; err != nil {
			b.Errorf("worker: %v", err)
		}
	})
	b.Cleanup(stop)
	return stop
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

// chordBenchN is the size of the chord, and of the independent tasks it
// is compared with.
const chordBenchN = 10000

// benchTime is the elapsed time of a measured run, the CPU time the
// process used meanwhile (0 where it is not known), the bytes it wrote
// (see processWritten), and the CPU time and commands of the store's
// server (see benchStore).
type benchTime struct {
	wall, cpu     time.Duration
	first         time.Duration // until the first task started
	written       int64
	allocBytes    uint64 // heap allocations of the process (processAllocs)
	allocObjects  uint64
	srvCPU        time.Duration
	srvCalls      int64
	srvCPUStarted time.Duration
	srvStarted    int64
}

// processAllocs returns the bytes and objects the process has allocated on
// its heap so far: unlike CPU time, a measure the machine's load does not
// change.
func processAllocs() (bytes, objects uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0, 0
	}
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func startBenchTime(bs benchStore) benchTime {
	t := benchTime{cpu: processCPU(), written: processWritten()}
	t.allocBytes, t.allocObjects = processAllocs()
	if bs.server != nil {
		t.srvCPUStarted, t.srvStarted = bs.server()
	}
	t.wall = time.Duration(time.Now().UnixNano())
	return t
}

func sinceBenchTime(bs benchStore, start benchTime) benchTime {
	t := benchTime{
		wall:    time.Duration(time.Now().UnixNano()) - start.wall,
		cpu:     processCPU() - start.cpu,
		written: processWritten() - start.written,
	}
	ab, ao := processAllocs()
	t.allocBytes, t.allocObjects = ab-start.allocBytes, ao-start.allocObjects
	if bs.server != nil {
		c, n := bs.server()
		t.srvCPU, t.srvCalls = c-start.srvCPUStarted, n-start.srvStarted
	}
	return t
}

// timeIndependent runs chordBenchN independent no-op tasks, enqueued in
// batches of 1000, on a fresh store with one worker at concurrency 50,
// and returns the time from the first enqueue to the last outcome.
func timeIndependent(b *testing.B, bs benchStore) benchTime {
	b.Helper()
	s, closeStore := bs.open()
	defer closeStore()
	c, _ := kiln.NewClient(s, nil)
	var first atomic.Int64
	defer runFlowBenchWorkerFirst(b, s, 50, &first)()
	reqs := make([]kiln.TaskRequest, 1000)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "noop"}
	}
	start := startBenchTime(bs)
	for range chordBenchN / 1000 {
		if _, err := c.EnqueueMany(b.Context(), reqs); err != nil {
			b.Fatal(err)
		}
	}
	waitSucceeded(b, s, chordBenchN)
	t := sinceBenchTime(bs, start)
	t.first = time.Duration(first.Load() - int64(start.wall))
	return t
}

// timeChord runs a chord of chordBenchN no-op members and a no-op
// callback on a fresh store with one worker at concurrency 50, and
// returns the time from EnqueueWorkflow to the callback's outcome.
func timeChord(b *testing.B, bs benchStore) benchTime {
	b.Helper()
	s, closeStore := bs.open()
	defer closeStore()
	c, _ := kiln.NewClient(s, nil)
	var first atomic.Int64
	defer runFlowBenchWorkerFirst(b, s, 50, &first)()
	members := make([]kiln.Step, chordBenchN)
	for i := range members {
		members[i] = kiln.NewSignature("noop")
	}
	wf := kiln.Chord(kiln.Group(members...), kiln.NewSignature("noop"))
	start := startBenchTime(bs)
	r, err := c.EnqueueWorkflow(b.Context(), wf, nil)
	if err != nil {
		b.Fatal(err)
	}
	waitSucceeded(b, s, chordBenchN+1) // the callback has run
	d := sinceBenchTime(bs, start)
	d.first = time.Duration(first.Load() - int64(start.wall))
	if ws, err := r.Wait(b.Context()); err != nil || ws.State != "succeeded" {
		b.Fatalf("chord: %v, %v", ws, err)
	}
	return d
}

// BenchmarkWorkflowChord compares a chord of 10,000 no-op members (and a
// no-op callback) with 10,000 independent no-op tasks enqueued in batches
// of 1000, each from enqueue to the last outcome, one worker at
// concurrency 50. BenchmarkWorkflowChordRatio runs both in turn.
func BenchmarkWorkflowChord(b *testing.B) {
	benchStores(b, func(b *testing.B, bs benchStore) {
		for _, w := range []struct {
			name string
			run  func(*testing.B, benchStore) benchTime
		}{{"tasks", timeIndependent}, {"chord", timeChord}} {
			b.Run(w.name, func(b *testing.B) {
				var total time.Duration
				for b.Loop() {
					b.StopTimer()
					total += w.run(b, bs).wall
					b.StartTimer()
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/op")
			})
		}
	})
}

// BenchmarkWorkflowChordRatio runs the two workloads of
// BenchmarkWorkflowChord alternately (independent tasks, then the chord,
// b.N times), so that a machine whose load changes weighs on both alike.
// It reports the medians of their elapsed times and of the chord-to-tasks
// ratio of each pair (the target is at most 1.5), and the same for the
// CPU time the process used (less sensitive to other processes on a busy
// machine), the time until the first task started (first-ms: a chord's
// first members wait for the workflow's commit point), and, measures that
// load does not change, the heap allocations of the process (allocMB,
// kallocs: thousands of objects), the bytes the
// process wrote (wMB: the embedded store's log, flushes and compactions)
// and on Redis the server's CPU time and commands (srv-cpu-ms, srv-calls;
// a server of its own for the benchmark, else other clients count too)
// with the ratio of the process's and the server's CPU together. Run it
// with a count of iterations, for example -benchtime 15x; it prints the
// machine and its load average before and after.
func BenchmarkWorkflowChordRatio(b *testing.B) {
	benchStores(b, func(b *testing.B, bs benchStore) {
		logMachine(b)
		var tasks, chords, tasksCPU, chordsCPU, ratios, cpuRatios []float64
		var tasksMB, chordsMB, tasksSrv, chordsSrv, tasksCalls, chordsCalls, allRatios []float64
		var tasksFirst, chordsFirst, tasksAllocMB, chordsAllocMB, tasksAllocs, chordsAllocs []float64
		for b.Loop() {
			b.StopTimer()
			t := timeIndependent(b, bs)
			c := timeChord(b, bs)
			b.StartTimer()
			tasks, chords = append(tasks, durMS(t.wall)), append(chords, durMS(c.wall))
			tasksCPU, chordsCPU = append(tasksCPU, durMS(t.cpu)), append(chordsCPU, durMS(c.cpu))
			tasksMB, chordsMB = append(tasksMB, float64(t.written)/1e6), append(chordsMB, float64(c.written)/1e6)
			tasksFirst, chordsFirst = append(tasksFirst, durMS(t.first)), append(chordsFirst, durMS(c.first))
			tasksAllocMB, chordsAllocMB = append(tasksAllocMB, float64(t.allocBytes)/1e6), append(chordsAllocMB, float64(c.allocBytes)/1e6)
			tasksAllocs, chordsAllocs = append(tasksAllocs, float64(t.allocObjects)/1e3), append(chordsAllocs, float64(c.allocObjects)/1e3)
			ratios = append(ratios, float64(c.wall)/float64(t.wall))
			if t.cpu > 0 {
				cpuRatios = append(cpuRatios, float64(c.cpu)/float64(t.cpu))
			}
			if bs.server != nil {
				tasksSrv, chordsSrv = append(tasksSrv, durMS(t.srvCPU)), append(chordsSrv, durMS(c.srvCPU))
				tasksCalls, chordsCalls = append(tasksCalls, float64(t.srvCalls)), append(chordsCalls, float64(c.srvCalls))
				allRatios = append(allRatios, float64(c.cpu+c.srvCPU)/float64(t.cpu+t.srvCPU))
			}
		}
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(medianOf(tasks), "tasks-ms")
		b.ReportMetric(medianOf(chords), "chord-ms")
		b.ReportMetric(medianOf(ratios), "ratio")
		b.ReportMetric(medianOf(tasksFirst), "tasks-first-ms")
		b.ReportMetric(medianOf(chordsFirst), "chord-first-ms")
		if len(cpuRatios) > 0 {
			b.ReportMetric(medianOf(tasksCPU), "tasks-cpu-ms")
			b.ReportMetric(medianOf(chordsCPU), "chord-cpu-ms")
			b.ReportMetric(medianOf(cpuRatios), "cpu-ratio")
		}
		if medianOf(tasksAllocMB) > 0 {
			b.ReportMetric(medianOf(tasksAllocMB), "tasks-allocMB")
			b.ReportMetric(medianOf(chordsAllocMB), "chord-allocMB")
			b.ReportMetric(medianOf(tasksAllocs), "tasks-kallocs")
			b.ReportMetric(medianOf(chordsAllocs), "chord-kallocs")
		}
		if medianOf(tasksMB) > 0 {
			b.ReportMetric(medianOf(tasksMB), "tasks-wMB")
			b.ReportMetric(medianOf(chordsMB), "chord-wMB")
		}
		if len(allRatios) > 0 {
			b.ReportMetric(medianOf(tasksSrv), "tasks-srv-cpu-ms")
			b.ReportMetric(medianOf(chordsSrv), "chord-srv-cpu-ms")
			b.ReportMetric(medianOf(tasksCalls), "tasks-srv-calls")
			b.ReportMetric(medianOf(chordsCalls), "chord-srv-calls")
			b.ReportMetric(medianOf(allRatios), "cpu+srv-ratio")
		}
		slices.Sort(ratios)
		slices.Sort(cpuRatios)
		fmt.Printf("%s: ratios %.2f; CPU ratios %.2f\n", b.Name(), ratios, cpuRatios)
		logMachine(b)
	})
}

func durMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// medianOf returns the median of xs (the upper one of an even count).
func medianOf(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// BenchmarkWorkflowChain measures a chain of 100 no-op steps, against 100
// no-op tasks run one after another by a client that enqueues each when
// the one before it has finished; the metric is per step.
func BenchmarkWorkflowChain(b *testing.B) {
	const steps = 100
	benchStores(b, func(b *testing.B, bs benchStore) {
		b.Run("client-driven", func(b *testing.B) {
			s, _ := bs.open()
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
			s, _ := bs.open()
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
