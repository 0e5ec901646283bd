//go:build linux

package ironapi_test

import (
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
)

// trueProgram is the trivial program both halves of BenchmarkHostedVsRaw
// start.
const trueProgram = "/bin/true"

// rawStarts starts trueProgram n times, concurrency at once, with os/exec
// from this process, and returns the wall time it took.
func rawStarts(tb testing.TB, n, concurrency int) time.Duration {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := exec.Command(trueProgram).Run(); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// waitComplete polls the package's stats until n of its tasks completed.
func waitComplete(tb testing.TB, b *bundle, id string, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var stats map[string]int
		b.json(http.MethodGet, "/2/projects/"+project+"/codes/"+id+"/stats", nil, &stats)
		if stats["error"]+stats["timeout"] > 0 {
			tb.Fatalf("tasks failed: %v", stats)
		}
		if stats["complete"] >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after 10 minutes: %v", stats)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkHostedVsRaw sets kiln's code package tasks beside the machine's
// own rate of starting processes, in the same run: raw is trueProgram
// started by os/exec, 8 at a time; kiln is a code package whose program is
// a copy of trueProgram ("binary" runtime), queued through the IronWorker
// API in batches of 1000 and run by a server with --runner-concurrency 8,
// end to end (queue, lease, task directory, start with the limits, log,
// report). Each sandbox the machine gives, with each limiter it allows.
// The raw starts run before and after the tasks; "ratio-%" is
// kiln's tasks/s against their mean rate, "cpu-ratio" kiln's CPU time per
// task against the CPU time of one raw start: both hold up on a loaded
// machine, where wall-clock rates do not. CPU time is the whole process
// tree's (through a cgroup of the benchmark's own where the machine allows
// it, see the log line).
//
//	go test -run '^$' -bench 'BenchmarkHostedVsRaw' -benchtime 1000x -count 3 ./server/ironapi/
func BenchmarkHostedVsRaw(b *testing.B) {
	prog, err := os.ReadFile(trueProgram)
	if err != nil {
		b.Skip(err)
	}
	const concurrency = 8
	for _, sc := range []struct {
		sb  runner.Sandbox
		lim runner.Limiter
	}{
		{runner.SandboxOff, runner.LimiterPtrace}, {runner.SandboxOff, runner.LimiterTrampoline},
		{runner.SandboxUser, runner.LimiterPtrace}, {runner.SandboxUser, runner.LimiterTrampoline},
		{runner.SandboxBwrap, runner.LimiterPtrace}, {runner.SandboxBwrap, runner.LimiterTrampoline},
		{runner.SandboxNamespaces, ""}, // the helper sets the limits
	} {
		name := string(sc.sb) + "/" + string(sc.lim)
		if sc.lim == "" {
			name = string(sc.sb)
		}
		b.Run(name, func(b *testing.B) {
			rc := runner.Config{Sandbox: sc.sb, Limiter: sc.lim}
			probe := rc
			probe.WorkDir = testenv.SharedDir(b)
			if r, err := runner.New(&probe); err != nil || r.Sandbox().Mode != sc.sb || r.Sandbox().Limiter != sc.lim {
				b.Skipf("sandbox %s, limiter %s: %v", sc.sb, sc.lim, err)
			}
			s := setupWith(b, kilntest.Embedded(b, nil), &hosted.Config{
				WorkDir: testenv.SharedDir(b), Concurrency: concurrency, Runner: &rc,
			})
			id := s.mustUpload(map[string]any{"name": "true", "file_name": "true", "runtime": "binary"},
				testenv.Zip(b, map[string][]byte{"true": prog}))
			queue := func(n int) {
				for left := n; left > 0; left -= 1000 {
					batch := make([]map[string]any, min(left, 1000))
					for i := range batch {
						batch[i] = map[string]any{"code_name": "true", "payload": ""}
					}
					s.queue(batch...)
				}
			}
			const warm = 20
			queue(warm)
			waitComplete(b, s, id, warm)
			rawStarts(b, warm, concurrency)

			cpu := testenv.NewCPUMeter(b)
			load0 := testenv.Machine()
			c0 := cpu.Used()
			raw1 := rawStarts(b, b.N, concurrency)
			c1 := cpu.Used()
			b.ResetTimer()
			start := time.Now()
			queue(b.N)
			waitComplete(b, s, id, warm+b.N)
			wall := time.Since(start)
			b.StopTimer()
			c2 := cpu.Used()
			raw2 := rawStarts(b, b.N, concurrency)
			c3 := cpu.Used()

			n := float64(b.N)
			rawRate := 2 * n / (raw1 + raw2).Seconds()
			rate := n / wall.Seconds()
			rawCPU := (c1 - c0 + c3 - c2).Seconds() / (2 * n)
			taskCPU := (c2 - c1).Seconds() / n
			b.ReportMetric(rate, "tasks/s")
			b.ReportMetric(rawRate, "raw-starts/s")
			b.ReportMetric(100*rate/rawRate, "ratio-%")
			b.ReportMetric(taskCPU*1000, "cpu-ms/task")
			b.ReportMetric(rawCPU*1000, "cpu-ms/raw-start")
			b.ReportMetric(taskCPU/rawCPU, "cpu-ratio")
			b.Logf("%s; CPU time by %s; load average after %s", load0, cpu.Source(), testenv.LoadAvg())
		})
	}
}
