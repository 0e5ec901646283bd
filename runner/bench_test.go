//go:build linux

package runner

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
)

// concurrentRuns is how many Run calls the throughput benchmarks keep in
// flight.
const concurrentRuns = 8

// benchSandboxes are the sandboxes the benchmarks compare: off, and those
// this machine can give.
func benchSandboxes(b *testing.B) []Sandbox {
	out := []Sandbox{SandboxOff}
	for _, sb := range []Sandbox{SandboxUser, SandboxBwrap, SandboxNamespaces} {
		if r, err := New(&Config{Sandbox: sb, WorkDir: testenv.SharedDir(b)}); err == nil && r.Sandbox().Mode == sb {
			out = append(out, sb)
		}
	}
	return out
}

// BenchmarkRunTasks: tasks per second of a trivial package with 8
// concurrent Run calls, without a sandbox and in each sandbox this machine
// gives (the program run in place, "no-copy", lives in /tmp, which the
// bwrap sandbox hides: off only).
//
//	go test -run '^$' -bench 'BenchmarkRunTasks' -benchtime 5s -count 3 ./runner/
func BenchmarkRunTasks(b *testing.B) {
	bin := testenv.BuildGo(b, workerSource)
	type benchCase struct {
		name string
		sb   Sandbox
		spec Spec
	}
	var cases []benchCase
	for _, sb := range benchSandboxes(b) {
		cases = append(cases,
			benchCase{"sh-true/" + string(sb), sb, Spec{PackageDir: shPkg(b, "exec /bin/true"), Runtime: "sh", File: "run.sh"}},
			benchCase{"go-binary/" + string(sb), sb, Spec{PackageDir: workerPkg(b), File: "worker", Payload: []byte(`{"mode":"true"}`)}})
	}
	cases = append(cases, benchCase{"go-binary-no-copy/off", SandboxOff, Spec{Command: []string{bin}, Payload: []byte(`{"mode":"true"}`)}})
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := newRunner(b, Config{Sandbox: tc.sb, WorkDir: testenv.SharedDir(b)})
			b.SetParallelism((concurrentRuns + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			var id atomic.Int64
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					spec := tc.spec
					spec.TaskID = "b" + strconv.FormatInt(id.Add(1), 10)
					res, err := r.Run(context.Background(), spec)
					if err != nil || res.Status != StatusComplete {
						b.Errorf("Run: %v, %+v", err, res)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}

// BenchmarkStartLatency: time from the Run call to the program running,
// one task at a time, without a sandbox and in each sandbox this machine
// gives: "handshake" is when Run saw the exec succeed, "main" when the Go
// worker's main printed its clock (after the Go runtime's own start-up).
//
//	go test -run '^$' -bench 'BenchmarkStartLatency' -benchtime 300x -count 3 ./runner/
func BenchmarkStartLatency(b *testing.B) {
	bin := testenv.BuildGo(b, workerSource)
	type benchCase struct {
		name string
		sb   Sandbox
		spec Spec
	}
	var cases []benchCase
	for _, sb := range benchSandboxes(b) {
		cases = append(cases, benchCase{"package/" + string(sb), sb, Spec{PackageDir: workerPkg(b), File: "worker", Payload: []byte(`{"mode":"start"}`)}})
	}
	cases = append(cases, benchCase{"no-copy/off", SandboxOff, Spec{Command: []string{bin}, Payload: []byte(`{"mode":"start"}`)}})
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := newRunner(b, Config{Sandbox: tc.sb, WorkDir: testenv.SharedDir(b)})
			var handshake, mainStart []time.Duration
			for i := 0; b.Loop(); i++ {
				var out syncBuffer
				spec := tc.spec
				spec.TaskID = "l" + strconv.Itoa(i)
				spec.Log = &out
				t0 := time.Now()
				res, err := r.Run(context.Background(), spec)
				if err != nil || res.Status != StatusComplete {
					b.Fatalf("Run: %v, %+v", err, res)
				}
				ns, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
				if err != nil {
					b.Fatalf("worker output %q: %v", out.String(), err)
				}
				handshake = append(handshake, res.StartedAt.Sub(t0))
				mainStart = append(mainStart, time.Unix(0, ns).Sub(t0))
			}
			reportPercentiles(b, "handshake", handshake)
			reportPercentiles(b, "main", mainStart)
		})
	}
}

// BenchmarkSpawn compares starting the Go worker directly (os/exec, no
// limits) with starting it through Run (trampoline, limits, task dir):
// the price of the trampoline (docs/decisions/003-runner-limits.md).
//
//	go test -run '^$' -bench 'BenchmarkSpawn' -benchtime 300x -count 3 ./runner/
func BenchmarkSpawn(b *testing.B) {
	bin := testenv.BuildGo(b, workerSource)
	payload := filepath.Join(b.TempDir(), "payload")
	if err := os.WriteFile(payload, []byte(`{"mode":"true"}`), 0o600); err != nil {
		b.Fatal(err)
	}
	b.Run("direct-exec", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command(bin, "-payload", payload)
			cmd.Env = []string{"PATH=" + PathDefault}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
	b.Run("run-trampoline", func(b *testing.B) {
		r := newRunner(b, Config{Sandbox: SandboxOff})
		for i := 0; b.Loop(); i++ {
			res, err := r.Run(context.Background(), Spec{TaskID: fmt.Sprint("s", i), Command: []string{bin}, Payload: []byte(`{"mode":"true"}`)})
			if err != nil || res.Status != StatusComplete {
				b.Fatalf("Run: %v, %+v", err, res)
			}
		}
	})
}

func reportPercentiles(b *testing.B, name string, d []time.Duration) {
	b.Helper()
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds()), name+"-p50-µs")
	b.ReportMetric(float64(pct(0.99).Microseconds()), name+"-p99-µs")
}

// BenchmarkSandboxCost: what each sandbox adds to starting a task, measured
// on /bin/true with the sandboxes interleaved (one task of each per
// iteration, so that a busy machine weighs on all alike): the time from
// the Run call to the exec's handshake, and to Run's return. (Not CPU
// time: bwrap's init is not reaped by bwrap, so the task's rusage misses
// it.)
//
//	go test -run '^$' -bench 'BenchmarkSandboxCost' -benchtime 300x -count 3 ./runner/
func BenchmarkSandboxCost(b *testing.B) {
	var sbs []string
	var runners []*Runner
	for _, sb := range benchSandboxes(b) {
		lims := []Limiter{LimiterAuto}
		if sb == SandboxNamespaces {
			lims = []Limiter{""}
		}
		if sb == SandboxBwrap {
			lims = []Limiter{LimiterTrampoline, LimiterPtrace}
		}
		for _, lim := range lims {
			r, err := New(&Config{Sandbox: sb, Limiter: lim, WorkDir: testenv.SharedDir(b)})
			if err != nil {
				b.Logf("sandbox %s, limiter %s: %v", sb, lim, err)
				continue
			}
			sbs = append(sbs, string(sb)+"/"+string(r.Sandbox().Limiter))
			runners = append(runners, r)
		}
	}
	handshake := make([][]time.Duration, len(sbs))
	total := make([][]time.Duration, len(sbs))
	for i := 0; b.Loop(); i++ {
		for j, r := range runners {
			t0 := time.Now()
			res, err := r.Run(context.Background(), Spec{TaskID: fmt.Sprint("c", i), Command: []string{"/bin/true"}})
			if err != nil || res.Status != StatusComplete {
				b.Fatalf("Run: %v, %+v", err, res)
			}
			handshake[j] = append(handshake[j], res.StartedAt.Sub(t0))
			total[j] = append(total[j], time.Since(t0))
		}
	}
	for j, sb := range sbs {
		reportPercentiles(b, sb+"-handshake", handshake[j])
		reportPercentiles(b, sb+"-run", total[j])
	}
}

// BenchmarkRunVsRaw sets Run beside the machine's own process starts in
// the same run: /bin/true started 8 at a time by os/exec from this
// process (raw, before and after), then through Run with 8 calls in flight
// (no package: task directory, payload and config files, the start with
// the limits, the log pipe, the wait), for each sandbox and limiter this
// machine gives. "cpu-ratio" is the CPU time of a Run against that of a
// raw start (the process tree's, see testenv.CPUMeter), which load
// changes far less than the rates. Without bwrap each case runs also with
// Config.Cgroup off ("/cgroup-off"): the cost of the group kills.
//
//	go test -run '^$' -bench 'BenchmarkRunVsRaw' -benchtime 2000x -count 3 ./runner/
func BenchmarkRunVsRaw(b *testing.B) {
	type benchCase struct {
		sb  Sandbox
		lim Limiter
		cg  string // Config.Cgroup
	}
	var cases []benchCase
	for _, sb := range benchSandboxes(b) {
		if sb == SandboxNamespaces {
			// The helper sets the limits: no limiter.
			cases = append(cases, benchCase{sb, "", CgroupAuto})
			continue
		}
		for _, lim := range []Limiter{LimiterPtrace, LimiterTrampoline} {
			cases = append(cases, benchCase{sb, lim, CgroupAuto})
			if sb != SandboxBwrap {
				// The cost of the group kills (a cgroup per task).
				cases = append(cases, benchCase{sb, lim, CgroupOff})
			}
		}
	}
	raw := func(n int) time.Duration {
		var next atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range concurrentRuns {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := exec.Command("/bin/true").Run(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	for _, tc := range cases {
		name := string(tc.sb) + "/" + string(tc.lim)
		if tc.lim == "" {
			name = string(tc.sb)
		}
		if tc.cg == CgroupOff {
			name += "/cgroup-off"
		}
		b.Run(name, func(b *testing.B) {
			r, err := New(&Config{Sandbox: tc.sb, Limiter: tc.lim, WorkDir: testenv.SharedDir(b), Cgroup: tc.cg})
			if err != nil || r.Sandbox().Mode != tc.sb || r.Sandbox().Limiter != tc.lim {
				b.Skipf("sandbox %s, limiter %s: %v", tc.sb, tc.lim, err)
			}
			if tc.cg == CgroupAuto && tc.sb != SandboxBwrap && tc.sb != SandboxNamespaces && !r.Sandbox().GroupKill {
				b.Logf("no group kills here: %s", r.Sandbox().GroupKillNote)
			}
			run := func(n int) time.Duration {
				var next atomic.Int64
				start := time.Now()
				var wg sync.WaitGroup
				for range concurrentRuns {
					wg.Go(func() {
						for i := next.Add(1); i <= int64(n); i = next.Add(1) {
							res, err := r.Run(context.Background(), Spec{TaskID: "v" + strconv.FormatInt(i, 10), Command: []string{"/bin/true"}})
							if err != nil || res.Status != StatusComplete {
								b.Errorf("Run: %v, %+v", err, res)
								return
							}
						}
					})
				}
				wg.Wait()
				return time.Since(start)
			}
			run(20)
			raw(20)
			cpu := testenv.NewCPUMeter(b)
			load0 := testenv.Machine()
			c0 := cpu.Used()
			raw1 := raw(b.N)
			c1 := cpu.Used()
			b.ResetTimer()
			wall := run(b.N)
			b.StopTimer()
			c2 := cpu.Used()
			raw2 := raw(b.N)
			c3 := cpu.Used()
			n := float64(b.N)
			rawRate := 2 * n / (raw1 + raw2).Seconds()
			rate := n / wall.Seconds()
			rawCPU := (c1 - c0 + c3 - c2).Seconds() / (2 * n)
			runCPU := (c2 - c1).Seconds() / n
			b.ReportMetric(rate, "runs/s")
			b.ReportMetric(rawRate, "raw-starts/s")
			b.ReportMetric(100*rate/rawRate, "ratio-%")
			b.ReportMetric(runCPU*1000, "cpu-ms/run")
			b.ReportMetric(rawCPU*1000, "cpu-ms/raw-start")
			b.ReportMetric(runCPU/rawCPU, "cpu-ratio")
			b.Logf("%s; CPU time by %s; load average after %s", load0, cpu.Source(), testenv.LoadAvg())
		})
	}
}

// BenchmarkGroupKillCost isolates what the group kills add to a task,
// sequentially: "cgroup" makes a task's cgroup, kills it and removes it
// (no process); "start/plain" and "start/cgroup" start /bin/true and wait
// for it, the second in a cgroup of its own made, killed and removed as
// Run does. "cpu-us/op" is this process's CPU time and its children's
// (getrusage): the kernel's deferred work to free a cgroup runs in its own
// workers and is not counted.
//
//	go test -run '^$' -bench 'BenchmarkGroupKillCost' -benchtime 2000x -count 3 ./runner/
func BenchmarkGroupKillCost(b *testing.B) {
	r, err := New(&Config{Sandbox: SandboxOff, WorkDir: testenv.SharedDir(b)})
	if err != nil || r.cg == nil {
		b.Skipf("no group kills here: %v %s", err, r.Sandbox().GroupKillNote)
	}
	start := func(b *testing.B, cg *taskCgroup) {
		b.Helper()
		cmd := &exec.Cmd{Path: "/bin/true", Args: []string{"true"}, SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
		cg.into(cmd.SysProcAttr)
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		fn   func(b *testing.B)
	}{
		{"cgroup", func(b *testing.B) {
			b.Helper()
			cg, err := r.cg.newTask()
			if err != nil {
				b.Fatal(err)
			}
			if err := cg.kill(); err != nil {
				b.Fatal(err)
			}
		}},
		{"start/plain", func(b *testing.B) { b.Helper(); start(b, nil) }},
		{"start/cgroup", func(b *testing.B) {
			b.Helper()
			cg, err := r.cg.newTask()
			if err != nil {
				b.Fatal(err)
			}
			start(b, cg)
			if err := cg.kill(); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			load0 := testenv.LoadAvg()
			c0 := cpuSelfChildren()
			for b.Loop() {
				bc.fn(b)
			}
			b.ReportMetric(float64((cpuSelfChildren()-c0).Microseconds())/float64(b.N), "cpu-us/op")
			b.Logf("load average %s, after %s", load0, testenv.LoadAvg())
		})
	}
}

// cpuSelfChildren is the CPU time of this process and its reaped children.
func cpuSelfChildren() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

// BenchmarkRunPackageFiles: what the number of files in a package costs
// each task. A shell package (`exec /bin/true`) with 1, 100 and 1,000 more
// files of 4 KiB in ten folders, 8 Run calls in flight: without a sandbox
// and in the namespaces sandbox where this machine gives it, each file
// copied into the task's folder, and in the namespaces sandbox with
// Config.LinkPackage ("ns-link"), each file a hard link. "cpu-ms/run" is
// the CPU of the process tree per task (testenv.CPUMeter), which load
// changes far less than the rate; the difference between two sizes over
// the difference of their files is what a file costs.
//
//	go test -run '^$' -bench 'BenchmarkRunPackageFiles' -benchtime 300x -count 3 ./runner/
func BenchmarkRunPackageFiles(b *testing.B) {
	type benchCase struct {
		name string
		sb   Sandbox
		link bool
	}
	var cases []benchCase
	for _, sb := range benchSandboxes(b) {
		if sb == SandboxOff || sb == SandboxNamespaces {
			cases = append(cases, benchCase{string(sb), sb, false})
		}
		if sb == SandboxNamespaces {
			cases = append(cases, benchCase{"ns-link", sb, true})
		}
	}
	for _, bc := range cases {
		for _, files := range []int{0, 100, 1000} {
			b.Run(fmt.Sprintf("%s/files=%d", bc.name, files), func(b *testing.B) {
				entries := []entry{{name: "run.sh", data: []byte("exec /bin/true"), mode: 0o644}}
				data := make([]byte, 4096)
				for i := range files {
					entries = append(entries, entry{name: fmt.Sprintf("lib%d/f%d.js", i%10, i), data: data, mode: 0o644})
				}
				pkg := pkgDir(b, entries...)
				r := newRunner(b, Config{Sandbox: bc.sb, WorkDir: testenv.SharedDir(b), LinkPackage: bc.link})
				spec := Spec{PackageDir: pkg, Runtime: "sh", File: "run.sh"}
				runN := func(n int, prefix string) {
					var next atomic.Int64
					var wg sync.WaitGroup
					for range concurrentRuns {
						wg.Go(func() {
							for i := next.Add(1); i <= int64(n); i = next.Add(1) {
								s := spec
								s.TaskID = prefix + strconv.FormatInt(i, 10)
								res, err := r.Run(context.Background(), s)
								if err != nil || res.Status != StatusComplete {
									b.Errorf("Run: %v, %+v", err, res)
									return
								}
							}
						})
					}
					wg.Wait()
				}
				runN(10, "w")
				cpu := testenv.NewCPUMeter(b)
				load0 := testenv.Machine()
				c0 := cpu.Used()
				b.ResetTimer()
				start := time.Now()
				runN(b.N, "b")
				wall := time.Since(start)
				b.StopTimer()
				c1 := cpu.Used()
				b.ReportMetric(float64(b.N)/wall.Seconds(), "runs/s")
				b.ReportMetric((c1-c0).Seconds()*1000/float64(b.N), "cpu-ms/run")
				b.Logf("%s; CPU time by %s; load average after %s", load0, cpu.Source(), testenv.LoadAvg())
			})
		}
	}
}
