package main

// The scale run (-scale embedded or -scale redis): a backlog of
// -scale-tasks no-op tasks enqueued in full before any is processed, in
// three phases, each in a fresh process of this binary (the same binary
// re-run with -scale-phase), so that each phase's peak RSS is its own:
//
//  1. enqueue: open the store, enqueue every task in batches of -batch
//     (Client.EnqueueMany, one caller, -payload bytes of payload each),
//     close the store;
//  2. ready: open the store again, as a restarted process does, ask Stats
//     for the queue's counts, lease one task and release it untouched
//     (OutcomeRelease with NotStarted: the attempt is taken back), close;
//  3. process: open the store, run one kiln.Worker at -concurrency until the
//     store has recorded every task as succeeded, close.
//
// The parent process starts the phases one after the other, reads each
// one's figures (a JSON line on its standard output) and prints them with
// the machine's CPU model and load average.
//
// For Redis, -redis-port starts a redis-server of the run's own on that
// loopback port (no persistence, nothing else on it), so that its INFO
// figures (used_memory_peak, CPU) count only the run; it is stopped at the
// end. Without it the run uses -redis, under a key prefix of its own that it
// deletes at the end, and Redis' figures include whatever else the server
// did.
//
// Only kiln's public API is used (kiln.Client, kiln.Worker, embedded.Open,
// redisstore.Open and the store.Store methods), so the run works on any
// version of the stores.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
)

var (
	scaleStore   = benchFlags.String("scale", "", "instead of the comparison, run the scale benchmark on this store (embedded or redis): enqueue -scale-tasks, restart, process (see scale.go)")
	scaleTasks   = benchFlags.Int("scale-tasks", 1_000_000, "tasks in the scale run")
	scaleBatch   = benchFlags.Int("batch", 1000, "tasks per EnqueueMany call in the scale run")
	scalePayload = benchFlags.Int("payload", 64, "payload bytes per task in the scale run")
	scaleDir     = benchFlags.String("dir", "", "embedded scale run: the data folder, which must be empty or absent (default: a fresh folder under $TMPDIR, removed at the end)")
	scalePort    = benchFlags.Int("redis-port", 0, "redis scale run: start a redis-server of the run's own on 127.0.0.1:PORT (no persistence) and stop it at the end, instead of using -redis")
	scaleKeep    = benchFlags.Bool("keep", false, "scale run: keep the data folder (embedded) or the keys (redis) at the end")

	// Set by the parent on the phases it starts.
	scalePhase  = benchFlags.String("scale-phase", "", "internal: run one phase of the scale run (enqueue, ready or process) and print its figures as JSON")
	scalePrefix = benchFlags.String("scale-prefix", "", "internal: the redis scale run's key prefix")
)

// scaleWindow is how many tasks the first and last rates of a phase cover.
func scaleWindow(n int) int { return min(100_000, max(n/10, 1)) }

// phaseResult is what one phase process reports.
type phaseResult struct {
	Phase string `json:"phase"`
	// Seconds is the measured part's wall time: the enqueues, or from the
	// worker's start until the store has every outcome. Not the open.
	Seconds float64 `json:"seconds"`
	// FirstRate and LastRate are the tasks/s of the first and the last
	// Window tasks (enqueue: by the calls' returns; process: by the
	// handlers' succeeded events).
	FirstRate float64 `json:"first_rate"`
	LastRate  float64 `json:"last_rate"`
	Window    int     `json:"window"`
	// OpenSeconds is how long the store's Open took.
	OpenSeconds float64 `json:"open_seconds"`
	// The ready phase's instants, Unix nanoseconds: main started, Open
	// returned, the first Stats answered, the first Lease returned a task.
	MainAt  int64 `json:"main_at"`
	OpenAt  int64 `json:"open_at"`
	StatsAt int64 `json:"stats_at"`
	LeaseAt int64 `json:"lease_at"`
	// Counts is the queue's counts by state when the phase ended (ready:
	// as the first Stats answered).
	Counts map[string]int64 `json:"counts"`
	// The process' CPU time and memory, for its whole life.
	UserSeconds float64 `json:"user_seconds"`
	SysSeconds  float64 `json:"sys_seconds"`
	PeakRSS     int64   `json:"peak_rss"` // VmHWM, bytes
	// ReadyPeakRSS is VmHWM when the ready phase's lease returned.
	ReadyPeakRSS int64  `json:"ready_peak_rss,omitempty"`
	GCs          uint32 `json:"gcs"`
	// SlowestCall is the enqueue phase's longest EnqueueMany call, seconds.
	SlowestCall float64 `json:"slowest_call,omitempty"`
	// DiskBytes is the embedded store's data folder size after Close.
	DiskBytes int64  `json:"disk_bytes,omitempty"`
	Load      string `json:"load"` // at the end
}

// runScale runs the scale benchmark as the parent of its phases.
func runScale() {
	if *scaleStore != "embedded" && *scaleStore != "redis" {
		log.Fatalf("-scale %q: want embedded or redis", *scaleStore)
	}
	if *scaleTasks < 1 || *scaleBatch < 1 || *scalePayload < 0 || *concurrency < 1 {
		log.Fatal("-scale-tasks, -batch and -concurrency must be at least 1, -payload at least 0")
	}
	startLoad := loadAverage()
	started := time.Now()
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	args := []string{"-scale", *scaleStore, "-scale-tasks", strconv.Itoa(*scaleTasks), "-batch", strconv.Itoa(*scaleBatch),
		"-payload", strconv.Itoa(*scalePayload), "-concurrency", strconv.Itoa(*concurrency)}
	var rs *redisServer
	var where string
	switch *scaleStore {
	case "embedded":
		dir := *scaleDir
		if dir == "" {
			dir = must(os.MkdirTemp("", "kiln-scale-"))
		} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			log.Fatalf("-dir %s is not empty: the run needs a fresh data folder", dir)
		}
		if !*scaleKeep {
			defer func() { _ = os.RemoveAll(dir) }()
		}
		args = append(args, "-dir", dir)
		where = "data folder " + dir + " (" + fsType(dir) + ")"
	case "redis":
		url := *redisURL
		if *scalePort != 0 {
			rs = startRedis(*scalePort)
			defer rs.stop()
			url = rs.url
			where = fmt.Sprintf("redis-server of its own on %s (pid %d, no persistence)", url, rs.pid())
		} else {
			where = "Redis " + url + " (shared: its INFO figures include other clients' work)"
		}
		prefix := "kscale-" + token()
		if !*scaleKeep {
			defer deleteKeys(url, "{"+prefix+"*", prefix+"*")
		}
		args = append(args, "-redis", url, "-scale-prefix", prefix)
	}

	type phaseRun struct {
		r       phaseResult
		execAt  time.Time
		redis   redisMemory
		redis0  redisMemory
		elapsed time.Duration
	}
	var runs []phaseRun
	for _, phase := range []string{"enqueue", "ready", "process"} {
		var pr phaseRun
		url := ""
		if *scaleStore == "redis" {
			url = args[slices.Index(args, "-redis")+1]
			pr.redis0 = readRedisMemory(url, "")
		}
		log.Printf("scale: %s phase (load average %s)", phase, loadAverage())
		cmd := exec.Command(self, append(slices.Clone(args), "-scale-phase", phase)...) //nolint:gosec // G204: this program again, with its own arguments
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			log.Fatal(err)
		}
		pr.execAt = time.Now()
		if err := cmd.Start(); err != nil {
			log.Fatalf("scale: start the %s phase: %v", phase, err)
		}
		var line []byte
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if b, ok := strings.CutPrefix(sc.Text(), "scale-result "); ok {
				line = []byte(b)
			} else {
				fmt.Println(sc.Text())
			}
		}
		if err := cmd.Wait(); err != nil {
			log.Fatalf("scale: the %s phase: %v", phase, err)
		}
		pr.elapsed = time.Since(pr.execAt)
		if err := json.Unmarshal(line, &pr.r); err != nil {
			log.Fatalf("scale: the %s phase's figures: %v (%q)", phase, err, line)
		}
		if url != "" {
			pr.redis = readRedisMemory(url, args[slices.Index(args, "-scale-prefix")+1])
		}
		runs = append(runs, pr)
	}

	n := *scaleTasks
	enq, ready, proc := runs[0], runs[1], runs[2]
	if got := ready.r.Counts["pending"]; got != int64(n) {
		log.Fatalf("scale: the restarted store counts %d pending tasks, want %d (%v)", got, n, ready.r.Counts)
	}
	fmt.Printf("\nkiln scale run, %s store: %d tasks (no-op, %d-byte payloads), enqueued in batches of %d (Client.EnqueueMany, one caller) before any is processed; one worker at concurrency %d\n",
		*scaleStore, n, *scalePayload, *scaleBatch, *concurrency)
	fmt.Printf("machine: %s, GOMAXPROCS %d, %s %s/%s%s\n", cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, buildRevision())
	fmt.Printf("store: %s\n", where)
	fmt.Printf("load average: %s at the start, %s at the end (%s in all)\n\n", startLoad, loadAverage(), time.Since(started).Round(time.Second))

	w := enq.r.Window
	fmt.Println("| phase | wall time | tasks/s | first / last " + count(w) + " tasks/s | CPU s (user+sys) | CPU µs/task | peak RSS (VmHWM) | load average at its end |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---|")
	row := func(name string, p phaseRun, secs float64, rate bool) {
		r := p.r
		rateS, fl := "—", "—"
		if rate {
			rateS = fmt.Sprintf("%.0f", float64(n)/secs)
			fl = fmt.Sprintf("%.0f / %.0f", r.FirstRate, r.LastRate)
		}
		cpu := r.UserSeconds + r.SysSeconds
		perTask := "—" // the ready phase is not per task
		if rate {
			perTask = fmt.Sprintf("%.1f", cpu*1e6/float64(n))
		}
		fmt.Printf("| %s | %.2f s | %s | %s | %.1f (%.1f+%.1f) | %s | %s | %s |\n", name, secs, rateS, fl,
			cpu, r.UserSeconds, r.SysSeconds, perTask, mib(r.PeakRSS), r.Load)
	}
	row("enqueue", enq, enq.r.Seconds, true)
	row("ready after a restart (fresh process)", ready, float64(ready.r.LeaseAt-ready.execAt.UnixNano())/1e9, false)
	row("process (fresh process; its open not timed)", proc, proc.r.Seconds, true)

	at := func(ns int64) string { return fmt.Sprintf("%.3f s", float64(ns-ready.execAt.UnixNano())/1e9) }
	fmt.Printf("\ntime to ready: from the start of a fresh process (exec) until its first Lease returns a task: **%s**\n", at(ready.r.LeaseAt))
	fmt.Printf("  process running (main entered): %s; Open returned: %s (Open itself %.3f s); first Stats answered: %s (%d pending); first Lease returned a task: %s\n",
		at(ready.r.MainAt), at(ready.r.OpenAt), ready.r.OpenSeconds, at(ready.r.StatsAt), ready.r.Counts["pending"], at(ready.r.LeaseAt))
	fmt.Printf("  peak RSS of the restarted process when its first lease returned: %s\n", mib(ready.r.ReadyPeakRSS))
	fmt.Printf("process phase: Open took %.3f s before the worker started; counts at its end: %v\n", proc.r.OpenSeconds, proc.r.Counts)
	fmt.Printf("first / last %s: enqueue, the first and last %s tasks enqueued (the queue holding 0 and %s tasks as they went in); process, the first and last %s tasks whose handlers returned (the queue holding %s and %s)\n",
		count(w), count(w), count(n-w), count(w), count(n), count(w))
	fmt.Printf("slowest EnqueueMany call: %.3f s\n", enq.r.SlowestCall)
	fmt.Printf("enqueue and process wall times exclude the store's Open; CPU and peak RSS are the whole phase process's (Open included); CPU µs/task divides by all %d tasks in every row\n", n)
	if *scaleStore == "embedded" {
		fmt.Printf("data folder on disk: %s after the enqueue, %s after processing\n", mib(enq.r.DiskBytes), mib(proc.r.DiskBytes))
	}
	if rs != nil || *scaleStore == "redis" {
		var others int64
		fmt.Println("\nRedis (INFO memory and cpu after each phase; used_memory_peak is the server's peak since it started):")
		fmt.Println()
		fmt.Println("| phase | used_memory | used_memory_peak | used_memory_rss | redis-server VmHWM | Redis CPU s in the phase | Redis CPU µs/task | keys | other clients' keys |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for i, name := range []string{"enqueue", "ready", "process"} {
			m := runs[i].redis
			cpu := m.cpu - runs[i].redis0.cpu
			perTask := "—"
			if name != "ready" {
				perTask = fmt.Sprintf("%.1f", cpu*1e6/float64(n))
			}
			fmt.Printf("| %s | %s | %s | %s | %s | %.1f | %s | %d | %d |\n", name, mib(m.used), mib(m.peak), mib(m.rss), mib(m.hwm), cpu, perTask, m.keys, m.keys-m.own)
			others = max(others, m.keys-m.own)
		}
		if others > 0 {
			fmt.Printf("\nWARNING: the Redis held up to %d keys that are not the run's: other clients use it, and the Redis CPU and memory figures include their work\n", others)
		}
	}
	if proc.r.Counts["succeeded"] != int64(n) {
		log.Fatalf("scale: %d of %d tasks succeeded", proc.r.Counts["succeeded"], n)
	}
}

// runScalePhase runs one phase in this process and prints its figures.
func runScalePhase() {
	mainAt := time.Now()
	ctx := context.Background()
	n := *scaleTasks
	r := phaseResult{Phase: *scalePhase, Window: scaleWindow(n), MainAt: mainAt.UnixNano()}
	openStart := time.Now()
	s := openScaleStore(ctx)
	r.OpenAt = time.Now().UnixNano()
	r.OpenSeconds = time.Since(openStart).Seconds()
	switch *scalePhase {
	case "enqueue":
		scaleEnqueue(ctx, s, &r)
	case "ready":
		scaleReady(ctx, s, &r)
	case "process":
		scaleProcess(ctx, s, &r)
	default:
		log.Fatalf("-scale-phase %q: want enqueue, ready or process", *scalePhase)
	}
	if r.Counts == nil {
		r.Counts = scaleCounts(ctx, s)
	}
	if err := s.Close(); err != nil {
		log.Fatalf("scale %s: close: %v", *scalePhase, err)
	}
	if *scaleStore == "embedded" {
		r.DiskBytes = dirBytes(*scaleDir)
	}
	u, sy := processCPU()
	r.UserSeconds, r.SysSeconds = u.Seconds(), sy.Seconds()
	r.PeakRSS = procStatusBytes("self", "VmHWM")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.GCs = ms.NumGC
	r.Load = loadAverage()
	fmt.Printf("scale-result %s\n", must(json.Marshal(r)))
}

func openScaleStore(ctx context.Context) store.Store {
	switch *scaleStore {
	case "embedded":
		s, err := embedded.Open(*scaleDir, nil)
		if err != nil {
			log.Fatalf("scale: open %s: %v", *scaleDir, err)
		}
		return s
	case "redis":
		s, err := redisstore.Open(ctx, *redisURL, &redisstore.Config{Prefix: *scalePrefix})
		if err != nil {
			log.Fatalf("scale: open %s: %v", *redisURL, err)
		}
		return s
	}
	log.Fatalf("-scale %q: want embedded or redis", *scaleStore)
	return nil
}

var scaleQueue = store.StatsParams{Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue}}

// scaleCounts is the default queue's counts by state name.
func scaleCounts(ctx context.Context, s store.Store) map[string]int64 {
	st, err := s.Stats(ctx, scaleQueue)
	if err != nil {
		log.Fatalf("scale: stats: %v", err)
	}
	m := map[string]int64{}
	for _, q := range st.Queues {
		for _, state := range store.AllStates {
			if c := q.Counts[state]; c != 0 {
				m[state.String()] += c
			}
		}
	}
	return m
}

func scaleEnqueue(ctx context.Context, s store.Store, r *phaseResult) {
	n, w, batch, size := *scaleTasks, r.Window, *scaleBatch, *scalePayload
	c := must(kiln.NewClient(s, nil))
	rng := rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'})
	reqs := make([]kiln.TaskRequest, batch)
	// The first window ends at the end of the batch that reaches it, the
	// last begins with the batch that crosses into it (with -batch 1000 and
	// a window of 100,000 both are batch boundaries).
	var firstN, lastFrom int
	var firstEnd, lastStart time.Time
	start := time.Now()
	for done := 0; done < n; {
		k := min(batch, n-done)
		// A fresh buffer per batch: a store may keep the payloads it is given.
		buf := make([]byte, k*size)
		_, _ = rng.Read(buf)
		for i := range k {
			p := buf[i*size : (i+1)*size]
			if len(p) >= 8 {
				binary.BigEndian.PutUint64(p, uint64(done+i))
			}
			reqs[i] = kiln.TaskRequest{Type: "noop", Payload: p}
		}
		callStart := time.Now()
		if lastStart.IsZero() && done+k > n-w {
			lastFrom, lastStart = done, callStart
		}
		if _, err := c.EnqueueMany(ctx, reqs[:k]); err != nil {
			log.Fatalf("scale: enqueue after %d tasks: %v", done, err)
		}
		done += k
		now := time.Now()
		r.SlowestCall = max(r.SlowestCall, now.Sub(callStart).Seconds())
		if done >= w && firstEnd.IsZero() {
			firstN, firstEnd = done, now
		}
		if step := max(n/10, 1); done/step != (done-k)/step {
			log.Printf("scale: enqueued %d of %d (%.0f tasks/s so far)", done, n, float64(done)/now.Sub(start).Seconds())
		}
	}
	end := time.Now()
	r.Seconds = end.Sub(start).Seconds()
	r.FirstRate = float64(firstN) / firstEnd.Sub(start).Seconds()
	if lastFrom < n {
		r.LastRate = float64(n-lastFrom) / end.Sub(lastStart).Seconds()
	}
}

func scaleReady(ctx context.Context, s store.Store, r *phaseResult) {
	r.Counts = scaleCounts(ctx, s)
	r.StatsAt = time.Now().UnixNano()
	res, err := s.Lease(ctx, store.LeaseParams{
		Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue},
		Max: 1, Duration: time.Minute, WorkerID: "kiln-scale-ready",
	})
	if err != nil {
		log.Fatalf("scale: first lease: %v", err)
	}
	if len(res.Tasks) != 1 {
		log.Fatalf("scale: first lease returned %d tasks, want 1 (counts %v)", len(res.Tasks), r.Counts)
	}
	r.LeaseAt = time.Now().UnixNano()
	r.ReadyPeakRSS = procStatusBytes("self", "VmHWM")
	t := res.Tasks[0]
	rep, err := s.Report(ctx, store.ReportParams{Namespace: store.DefaultNamespace, Outcomes: []store.Outcome{
		{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeRelease, NotStarted: true},
	}})
	if err == nil {
		err = errors.Join(rep.Errs...)
	}
	if err != nil {
		log.Fatalf("scale: release the first lease: %v", err)
	}
}

func scaleProcess(ctx context.Context, s store.Store, r *phaseResult) {
	n, w := int64(*scaleTasks), int64(r.Window)
	var done, failed atomic.Int64
	var atFirst, atLast, atAll atomic.Int64 // Unix ns when w, n-w and n handlers had returned
	wk := must(kiln.NewWorker(s, &kiln.WorkerConfig{
		Concurrency: *concurrency,
		EventFunc: func(e kiln.Event) {
			if e.Kind == kiln.EventFailed {
				failed.Add(1)
			}
			if e.Kind != kiln.EventSucceeded {
				return
			}
			now := time.Now().UnixNano()
			d := done.Add(1)
			if d == w {
				atFirst.Store(now)
			}
			if d == n-w {
				atLast.Store(now)
			}
			if d == n {
				atAll.Store(now)
			}
		},
	}))
	wk.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	start := time.Now()
	wg.Go(func() { runErr = wk.Run(wctx) })
	last, lastAt := int64(0), start
	for tick := time.NewTicker(100 * time.Millisecond); done.Load() < n; <-tick.C {
		if f := failed.Load(); f > 0 {
			log.Fatalf("scale: %d handler attempts failed", f)
		}
		if d := done.Load(); d != last {
			if d/(n/10+1) != last/(n/10+1) {
				log.Printf("scale: processed %d of %d (%.0f tasks/s so far)", d, n, float64(d)/time.Since(start).Seconds())
			}
			last, lastAt = d, time.Now()
		} else if time.Since(lastAt) > 2*time.Minute {
			log.Fatalf("scale: no task finished for 2 minutes; %d of %d done; counts %v", d, n, scaleCounts(ctx, s))
		}
	}
	for { // every handler has returned; wait until the store has every outcome
		c := scaleCounts(ctx, s)
		if c["succeeded"] == n {
			r.Counts = c
			break
		}
		time.Sleep(time.Millisecond)
	}
	end := time.Now()
	cancel()
	wg.Wait()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		log.Fatalf("scale: worker: %v", runErr)
	}
	r.Seconds = end.Sub(start).Seconds()
	r.FirstRate = float64(w) / (float64(atFirst.Load()-start.UnixNano()) / 1e9)
	if n > w {
		r.LastRate = float64(w) / (float64(atAll.Load()-atLast.Load()) / 1e9)
	}
}

// ---- measures of the machine and the processes ----

// procStatusBytes reads a "kB" field (VmHWM, VmRSS) of /proc/PID/status.
func procStatusBytes(pid, field string) int64 {
	raw, err := os.ReadFile("/proc/" + pid + "/status") //nolint:gosec // G304: a process's status under /proc
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// processCPU is this process' user and system CPU time.
func processCPU() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func mib(b int64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// count writes n as 100k or 1M where it can.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// buildRevision is ", commit X" from the binary's build information.
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return ", commit " + rev[:min(len(rev), 12)] + dirty
}

// fsType names the file system a folder is on (from /proc/self/mounts).
func fsType(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "file system unknown"
	}
	abs, _ = filepath.EvalSymlinks(abs)
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "file system unknown"
	}
	best, typ := "", "unknown"
	for line := range strings.Lines(string(raw)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if (abs == f[1] || strings.HasPrefix(abs, strings.TrimSuffix(f[1], "/")+"/")) && len(f[1]) > len(best) {
			best, typ = f[1], f[2]+" on "+f[0]
		}
	}
	return typ
}

// ---- a redis-server of the run's own ----

type redisServer struct {
	cmd *exec.Cmd
	dir string
	url string
}

func startRedis(port int) *redisServer {
	dir := must(os.MkdirTemp("", "kiln-scale-redis-"))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		log.Fatalf("scale: something already listens on %s; pick another -redis-port", addr)
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", //nolint:gosec // G204: the operator's -redis-port
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--loglevel", "warning")
	cmd.Stderr = os.Stderr // its log goes to its standard output, discarded
	if err := cmd.Start(); err != nil {
		log.Fatalf("scale: start redis-server: %v", err)
	}
	rs := &redisServer{cmd: cmd, dir: dir, url: fmt.Sprintf("redis://%s/0", addr)}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer func() { _ = c.Close() }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			break
		}
		if time.Now().After(deadline) {
			rs.stop()
			log.Fatal("scale: redis-server did not answer within 30 s")
		}
	}
	if n := c.DBSize(context.Background()).Val(); n != 0 {
		rs.stop()
		log.Fatalf("scale: the new redis-server holds %d keys", n)
	}
	return rs
}

func (rs *redisServer) pid() int { return rs.cmd.Process.Pid }

func (rs *redisServer) stop() {
	_ = rs.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = rs.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = rs.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(rs.dir)
}

// redisMemory is a reading of a Redis server's memory and CPU.
type redisMemory struct {
	used, peak, rss, hwm int64
	cpu                  float64 // used_cpu_user + used_cpu_sys
	keys                 int64   // DBSIZE
	own                  int64   // the run's keys (under its prefix), when counted
}

// readRedisMemory reads the server's INFO and DBSIZE; with the run's key
// prefix, it then counts the run's own keys (SCAN, after the INFO: its CPU
// is not in the reading).
func readRedisMemory(url, prefix string) redisMemory {
	o, err := redis.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "memory", "cpu", "server").Result()
	if err != nil {
		log.Fatalf("INFO: %v", err)
	}
	var m redisMemory
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		i, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "used_memory":
			m.used = i
		case "used_memory_peak":
			m.peak = i
		case "used_memory_rss":
			m.rss = i
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			m.cpu += f
		case "process_id":
			m.hwm = procStatusBytes(v, "VmHWM")
		}
	}
	m.keys = c.DBSize(context.Background()).Val()
	m.own = m.keys
	if prefix != "" {
		m.own = 0
		for _, pat := range []string{"{" + prefix + ":*", prefix + ":*"} {
			iter := c.Scan(context.Background(), 0, pat, 10000).Iterator()
			for iter.Next(context.Background()) {
				m.own++
			}
			if err := iter.Err(); err != nil {
				log.Fatalf("SCAN: %v", err)
			}
		}
	}
	return m
}
