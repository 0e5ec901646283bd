package redisstore

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// BenchmarkLeaseReportCost leases and reports (succeeded) b.N no-op tasks,
// KILN_BENCH_BATCH (default 50) per call, from one goroutine, and reports
// the CPU Redis spent per task (INFO cpu, user + system: use a Redis of the
// benchmark's own, or others' commands count too) and this process' CPU
// per task (getrusage), which depend far less than ns/op on the machine's
// load:
//
//	KILN_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 go test -run '^$' -bench LeaseReportCost -benchtime 20000x ./store/redisstore/
func BenchmarkLeaseReportCost(b *testing.B) {
	batch := 50
	if v, err := strconv.Atoi(os.Getenv("KILN_BENCH_BATCH")); err == nil && v > 0 {
		batch = v
	}
	ctx := b.Context()
	s := mustOpen(b, testenv.RedisURL(b), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	n := (b.N + batch - 1) / batch * batch
	for done := 0; done < n; done += 1000 {
		ts := make([]store.TaskInput, min(1000, n-done))
		for i := range ts {
			ts[i] = store.TaskInput{ID: fmt.Sprintf("cost%09d", done+i), Type: "noop", MaxRetries: 25}
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "b", Tasks: ts}); err != nil {
			b.Fatal(err)
		}
	}
	redisCPU := func() float64 {
		info, err := s.rdb.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var sum float64
		for l := range strings.Lines(info) {
			for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), k); ok {
					f, _ := strconv.ParseFloat(v, 64)
					sum += f
				}
			}
		}
		return sum
	}
	ownCPU := func() float64 {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	r0, g0 := redisCPU(), ownCPU()
	b.ResetTimer()
	for done := 0; done < n; done += batch {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "b", Queues: []string{store.DefaultQueue}, Max: batch, Duration: time.Minute, WorkerID: "w"})
		if err != nil || len(res.Tasks) != batch {
			b.Fatalf("lease: %d tasks, %v", len(res.Tasks), err)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, t := range res.Tasks {
			outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "b", Outcomes: outs}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric((redisCPU()-r0)*1e6/float64(n), "redis-cpu-µs/task")
	b.ReportMetric((ownCPU()-g0)*1e6/float64(n), "go-cpu-µs/task")
}
