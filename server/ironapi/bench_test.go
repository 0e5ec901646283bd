package ironapi_test

import (
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
)

// nowSource prints the time its process started running main, in Unix
// nanoseconds: the benchmarks' "process start".
const nowSource = `package main

import (
	"fmt"
	"time"
)

func main() { fmt.Println(time.Now().UnixNano()) }
`

// benchPackages uploads "sh" (a shell script running date +%s%N) and "go"
// (a compiled Go program printing the time) to b.
func benchPackages(tb testing.TB, b *bundle) {
	tb.Helper()
	b.mustUpload(map[string]any{"name": "sh", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(tb, map[string][]byte{"run.sh": []byte("date +%s%N\n")}))
	data, err := os.ReadFile(testenv.BuildGo(tb, nowSource))
	if err != nil {
		tb.Fatal(err)
	}
	b.mustUpload(map[string]any{"name": "go", "file_name": "worker", "runtime": "binary"},
		testenv.Zip(tb, map[string][]byte{"worker": data}))
}

func benchServer(tb testing.TB, concurrency int) *bundle {
	tb.Helper()
	return benchServerIn(tb, concurrency, runner.SandboxAuto)
}

// benchServerIn is benchServer with the runner's sandbox sb.
func benchServerIn(tb testing.TB, concurrency int, sb runner.Sandbox) *bundle {
	tb.Helper()
	b := setupWith(tb, kilntest.Embedded(tb, nil), &hosted.Config{
		WorkDir: testenv.SharedDir(tb), Concurrency: concurrency, PollInterval: 100 * time.Millisecond,
		LeaseWait: 100 * time.Millisecond, Runner: &runner.Config{Sandbox: sb},
	})
	benchPackages(tb, b)
	return b
}

// waitAll polls the package's stats until n tasks completed.
func waitAll(tb testing.TB, b *bundle, code string, n int) {
	tb.Helper()
	var codes struct {
		Codes []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"codes"`
	}
	b.json(http.MethodGet, "/2/projects/"+project+"/codes", nil, &codes)
	id := ""
	for _, c := range codes.Codes {
		if c.Name == code {
			id = c.ID
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
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
		<-tick.C
	}
}

// BenchmarkHostedThroughput: tasks per second of a trivial package with 8
// concurrent processes, from queueing (in batches of 1000) to complete.
func BenchmarkHostedThroughput(b *testing.B) {
	for _, code := range []string{"sh", "go"} {
		b.Run(code, func(b *testing.B) {
			s := benchServer(b, 8)
			task := map[string]any{"code_name": code, "payload": ""}
			b.ResetTimer()
			start := time.Now()
			for left := b.N; left > 0; left -= 1000 {
				batch := make([]map[string]any, min(left, 1000))
				for i := range batch {
					batch[i] = task
				}
				s.queue(batch...)
			}
			waitAll(b, s, code, b.N)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}

// BenchmarkHostedStartLatency: from a task's created_at (the queue
// request) to its program's first instruction (the time it prints), one
// task at a time on an idle runner; p50 and p99; in each sandbox the
// machine gives.
func BenchmarkHostedStartLatency(b *testing.B) {
	for _, sc := range []struct {
		code string
		sb   runner.Sandbox
	}{{"sh", runner.SandboxAuto}, {"go", runner.SandboxAuto}, {"go", runner.SandboxOff}, {"go", runner.SandboxUser}, {"go", runner.SandboxBwrap}, {"go", runner.SandboxNamespaces}} {
		code := sc.code
		b.Run(code+"/"+string(sc.sb), func(b *testing.B) {
			if r, err := runner.New(&runner.Config{Sandbox: sc.sb, WorkDir: testenv.SharedDir(b)}); err != nil {
				b.Skipf("sandbox %s: %v", sc.sb, err)
			} else {
				b.Logf("sandbox %s, %s", r.Sandbox(), testenv.Machine())
			}
			s := benchServerIn(b, 8, sc.sb)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				id := s.queue(map[string]any{"code_name": code, "payload": ""})[0]
				ti := s.waitFor(id, func(ti taskInfo) bool { return ti.Status == "complete" || ti.Status == "error" })
				ns, err := strconv.ParseInt(strings.TrimSpace(s.log(id)), 10, 64)
				if err != nil || ti.Status != "complete" {
					b.Fatalf("task %s: %s, log %q", id, ti.Status, s.log(id))
				}
				lat = append(lat, time.Unix(0, ns).Sub(ti.CreatedAt))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)*99/100, len(lat)-1)].Microseconds())/1000, "p99-ms")
		})
	}
}
