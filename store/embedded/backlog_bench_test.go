package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// BenchmarkBacklog measures what a large backlog costs the embedded store
// (docs/benchmarks.md): it enqueues KILN_BACKLOG no-op tasks (default
// 100,000) in batches of 1000 from 8 goroutines and reports the enqueue rate over the first
// tenth and the last tenth of them (and over KILN_BACKLOG_PROBE tasks more
// when set: the same window at any backlog), the peak resident memory of the process
// (VmHWM, so run it alone), the time from Open to the first leased task
// after a restart with that backlog, the rate of leasing and finishing a
// tenth of that backlog, the CPU time of each step and of the whole, and
// the bytes the process wrote to disk. The engine compacts in the
// background: a step's CPU time includes the compactions that earlier
// steps left to do, so compare the totals.
//
//	KILN_BACKLOG=1000000 go test -run '^$' -bench 'Backlog$' -benchtime 1x ./store/embedded/
func BenchmarkBacklog(b *testing.B) {
	total := envCount(b, "KILN_BACKLOG", 100_000, 10_000)
	// KILN_BACKLOG_PROBE tasks more (none unless set) are enqueued after
	// the backlog, their rate and CPU time reported on their own: the
	// same amount of work at any backlog (the last tenth is 10,000 tasks
	// of a 100,000 backlog, 100,000 of a 1,000,000 one, and only the
	// longer one is sure to pay for the engine's flushes and compactions).
	// The steps after it then run with those tasks too.
	probe := envCount(b, "KILN_BACKLOG_PROBE", 0, 1000)
	const enqueuers = 8
	for b.Loop() {
		dir := b.TempDir()
		cpu0 := cpuTime()
		s, err := Open(dir, &Config{ReserveBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		ctx := b.Context()
		tenth := total / 10
		// fill enqueues tasks from to to and returns their rate per
		// second, and the CPU time per task.
		fill := func(from, to int) (float64, time.Duration) {
			start, cpu := time.Now(), cpuTime()
			var next atomic.Int64
			next.Store(int64(from))
			var wg sync.WaitGroup
			errs := make(chan error, enqueuers)
			for range enqueuers {
				wg.Go(func() {
					errs <- enqueueFrom(ctx, s, &next, to)
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			return float64(to-from) / time.Since(start).Seconds(), (cpuTime() - cpu) / time.Duration(to-from)
		}
		firstRate, firstCPU := fill(0, tenth)
		fill(tenth, total-tenth)
		lastRate, lastCPU := fill(total-tenth, total)
		var probeRate float64
		var probeCPU time.Duration
		if probe > 0 {
			probeRate, probeCPU = fill(total, total+probe)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heapAfterFill, rssAfterFill := ms.HeapInuse, procValue("/proc/self/status", "VmRSS:")<<10
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		start, cpu := time.Now(), cpuTime()
		s, err = Open(dir, &Config{ReserveBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "b", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 100, Duration: time.Minute})
		if err != nil || len(res.Tasks) == 0 {
			b.Fatalf("lease after restart: %d tasks, %v", len(res.Tasks), err)
		}
		ready, readyCPU := time.Since(start), cpuTime()-cpu
		// Lease and finish a tenth of the backlog, 100 at a time.
		start, cpu = time.Now(), cpuTime()
		processed := 0
		for processed < tenth {
			if processed > 0 {
				res, err = s.Lease(ctx, store.LeaseParams{Namespace: "b", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 100, Duration: time.Minute})
				if err != nil || len(res.Tasks) == 0 {
					b.Fatalf("lease: %d tasks, %v", len(res.Tasks), err)
				}
			}
			out := make([]store.Outcome, len(res.Tasks))
			for i, t := range res.Tasks {
				out[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
			}
			if _, err := s.Report(ctx, store.ReportParams{Namespace: "b", Outcomes: out}); err != nil {
				b.Fatal(err)
			}
			processed += len(res.Tasks)
		}
		processRate, processCPU := float64(processed)/time.Since(start).Seconds(), (cpuTime()-cpu)/time.Duration(processed)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(firstCPU)/1e3, "cpu-µs/enq-first-tenth")
		b.ReportMetric(float64(lastCPU)/1e3, "cpu-µs/enq-last-tenth")
		if probe > 0 {
			b.ReportMetric(float64(probeCPU)/1e3, "cpu-µs/enq-probe")
			b.ReportMetric(probeRate, "enq/s-probe")
		}
		b.ReportMetric(readyCPU.Seconds(), "cpu-s-to-ready")
		b.ReportMetric(float64(processCPU)/1e3, "cpu-µs/done")
		b.ReportMetric(firstRate, "enq/s-first-tenth")
		b.ReportMetric(lastRate, "enq/s-last-tenth")
		b.ReportMetric(ready.Seconds(), "s-to-ready")
		b.ReportMetric(processRate, "done/s")
		b.ReportMetric((cpuTime() - cpu0).Seconds(), "cpu-s-total")
		b.ReportMetric(float64(heapAfterFill)/(1<<20), "MiB-heap-after-enqueue")
		b.ReportMetric(float64(rssAfterFill)/(1<<20), "MiB-RSS-after-enqueue")
		b.ReportMetric(float64(peakRSS())/(1<<20), "MiB-peak-RSS")
		b.ReportMetric(float64(procValue("/proc/self/io", "write_bytes:"))/(1<<20), "MiB-written")
	}
}

// envCount returns the number the environment variable name holds, or def
// when it is unset; a value that is no number of at least least fails b.
func envCount(b *testing.B, name string, def, least int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a number of at least %d", name, v, least)
	}
	return n
}

// peakRSS returns the process's peak resident memory in bytes (VmHWM), or
// 0 where /proc does not tell.
func peakRSS() int64 { return procValue("/proc/self/status", "VmHWM:") << 10 }

// procValue returns the number after name in the file (of /proc), or 0.
func procValue(file, name string) int64 {
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// enqueueFrom enqueues tasks in batches of 1000, numbered from next on,
// until the number reaches to.
func enqueueFrom(ctx context.Context, s *Store, next *atomic.Int64, to int) error {
	const batch = 1000
	in := make([]store.TaskInput, batch)
	for {
		at := int(next.Add(batch)) - batch
		if at >= to {
			return nil
		}
		for i := range in {
			in[i] = store.TaskInput{ID: fmt.Sprintf("b%09d", at+i), NewID: true, Type: "noop", Payload: []byte("{}")}
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "b", Tasks: in}); err != nil {
			return err
		}
	}
}

// BenchmarkSoak processes KILN_SOAK no-op tasks (default 200,000) in rounds
// of 100,000 (enqueue them from 8 goroutines, then lease and finish them,
// 100 at a time) and reports the resident memory after the first and the
// last round, the peak (VmHWM), the Go heap in use at the end, and the CPU
// time per task: finished tasks must not stay in memory.
//
//	KILN_SOAK=10000000 go test -run '^$' -bench 'Soak$' -benchtime 1x ./store/embedded/
func BenchmarkSoak(b *testing.B) {
	total := envCount(b, "KILN_SOAK", 200_000, 100_000)
	const round = 100_000
	for b.Loop() {
		s, err := Open(b.TempDir(), &Config{ReserveBytes: -1})
		if err != nil {
			b.Fatal(err)
		}
		ctx := b.Context()
		cpu0 := cpuTime()
		var firstRSS, lastRSS int64
		for done := 0; done < total; done += round {
			var next atomic.Int64
			next.Store(int64(done))
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for range 8 {
				wg.Go(func() { errs <- enqueueFrom(ctx, s, &next, done+round) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			for n := 0; n < round; {
				res, err := s.Lease(ctx, store.LeaseParams{Namespace: "b", Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 100, Duration: time.Minute})
				if err != nil || len(res.Tasks) == 0 {
					b.Fatalf("lease: %d tasks, %v", len(res.Tasks), err)
				}
				out := make([]store.Outcome, len(res.Tasks))
				for i, t := range res.Tasks {
					out[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
				}
				if _, err := s.Report(ctx, store.ReportParams{Namespace: "b", Outcomes: out}); err != nil {
					b.Fatal(err)
				}
				n += len(res.Tasks)
			}
			lastRSS = procValue("/proc/self/status", "VmRSS:") << 10
			if done == 0 {
				firstRSS = lastRSS
			}
		}
		cpu := cpuTime() - cpu0
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(firstRSS)/(1<<20), "MiB-RSS-first-round")
		b.ReportMetric(float64(lastRSS)/(1<<20), "MiB-RSS-last-round")
		b.ReportMetric(float64(peakRSS())/(1<<20), "MiB-peak-RSS")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "MiB-heap-end")
		b.ReportMetric(float64(cpu)/1e3/float64(total), "cpu-µs/task")
	}
}
