// Command bench runs the same workloads on kiln (Redis store) and on asynq
// against one local Redis, one after the other, and prints one table:
//
//   - batch enqueue: tasks/s for 100,000 tasks; kiln in batches of 1000
//     (Client.EnqueueMany), asynq with 50 concurrent single enqueues (it has
//     no batch API);
//   - end to end: tasks/s for 100,000 no-op tasks at concurrency 50, from the
//     first enqueue until the store has recorded every task as done, with the
//     enqueues running while the worker runs;
//   - latency: enqueue-to-start p50 and p99 of single tasks enqueued at a
//     steady 500 tasks/s to an idle worker.
//
// kiln uses its own key prefix (removed afterwards); asynq uses database
// -asynq-db, whose asynq:* keys are removed before and after each phase.
//
// Run it from the repository root with
//
//	cd bench && go run . -redis redis://127.0.0.1:6379/0
//
// With -resque it compares kiln's Resque worker with goworker instead (see
// resque.go). With -scale embedded or -scale redis it runs a backlog of
// 1,000,000 tasks through one store instead: enqueue all, restart, process
// (see scale.go). Every mode prints the CPU model and the load average
// beside its figures.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// benchFlags are the benchmark's flags. They are not the flag package's
// command line: goworker (the -resque comparison) defines its own flags
// there (-concurrency, -queues, ...) when it is imported.
var benchFlags = flag.NewFlagSet("bench", flag.ExitOnError)

var (
	redisURL    = benchFlags.String("redis", "redis://127.0.0.1:6379/0", "Redis URL for kiln (asynq uses the same server, database -asynq-db)")
	asynqDB     = benchFlags.Int("asynq-db", 15, "Redis database for asynq; its asynq:* keys are deleted")
	tasks       = benchFlags.Int("tasks", 100_000, "tasks in the enqueue and end-to-end runs")
	concurrency = benchFlags.Int("concurrency", 50, "handlers running at once")
	rate        = benchFlags.Int("rate", 500, "tasks per second in the latency run")
	latencyFor  = benchFlags.Duration("latency-for", 5*time.Second, "length of the latency run")
	only        = benchFlags.String("only", "", "run only kiln or only asynq (with -resque: only kiln or only goworker)")
	cpuProfile  = benchFlags.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	scripts     = benchFlags.Bool("scripts", false, "instead of the comparison, measure Redis CPU per task of each kiln script (enqueue, lease, report) in isolation")
	scriptBatch = benchFlags.Int("script-batch", 50, "tasks per Lease and per Report call with -scripts")
	checkEvery  = benchFlags.Duration("asynq-task-check-interval", time.Millisecond, "asynq's TaskCheckInterval (default 1 s; lowered for latency)")
	enqueueOnly = benchFlags.Bool("enqueue-only", false, "instead of the comparison, measure single (non-batched) enqueues only: -tasks tasks, one per call, from -callers goroutines, kiln and asynq alternately -rounds times")
	callers     = benchFlags.Int("callers", 50, "goroutines enqueueing at once with -enqueue-only")
	rounds      = benchFlags.Int("rounds", 3, "rounds of kiln and asynq with -enqueue-only and -latency-only")
	latencyOnly = benchFlags.Bool("latency-only", false, "run only the latency phase, kiln and asynq alternately -rounds times, with the load average of each")
	callgrind   = benchFlags.String("callgrind-pid", "", "instead of the comparison, count the instructions per kiln script call of the Redis at -redis, run under valgrind --tool=callgrind with this process id (see callgrind.go)")
	cgDir       = benchFlags.String("callgrind-dir", ".", "the folder of that Redis' callgrind dumps (its --callgrind-out-file=DIR/cg.out.%p)")
	taskPayload = benchFlags.Int("task-payload", 0, "payload bytes of every task kiln and asynq enqueue in the comparison's enqueue and end-to-end runs, with -enqueue-only, -scripts and -callgrind-pid (0: none)")
	cmpRounds   = benchFlags.Int("compare-rounds", 1, "rounds of the comparison (kiln, then asynq), each printed with its ratio and load average, then the median ratio: the machine's speed moves between rounds, so a ratio is taken within its round")
	feedReader  = benchFlags.Bool("read-feed", false, "kiln: read the change feed during each run, as a server with an event stream open does (the Redis store records changes only while its feed is read)")
)

// payload returns a task's payload: -task-payload bytes, nil for none.
func payload() []byte {
	if *taskPayload <= 0 {
		return nil
	}
	return make([]byte, *taskPayload)
}

type result struct {
	name          string
	enqueue, e2e  float64 // tasks/s
	p50, p99, max time.Duration
	// Redis' own CPU per task in the enqueue and end-to-end phases.
	enqueueCPU, e2eCPU redisCost
}

func main() {
	_ = benchFlags.Parse(os.Args[1:]) // ExitOnError: exits on a bad flag
	log.SetFlags(0)
	if *cpuProfile != "" {
		f := must(os.Create(*cpuProfile))
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *scalePhase != "" {
		runScalePhase()
		return
	}
	if *scaleStore != "" { // prints the machine and the load itself
		runScale()
		return
	}
	if *resqueRun { // the same
		runResque()
		return
	}
	load0 := loadAverage()
	defer func() {
		fmt.Printf("\nmachine: %s; load average %s at the start, %s at the end\n", cpuModel(), load0, loadAverage())
	}()
	if *scripts {
		runScripts()
		return
	}
	if *enqueueOnly {
		runEnqueueOnly()
		return
	}
	if *latencyOnly {
		runLatencyOnly()
		return
	}
	if *callgrind != "" {
		runCallgrind(*callgrind, *cgDir)
		return
	}
	var ratios []float64
	for round := 1; round <= max(*cmpRounds, 1); round++ {
		if *cmpRounds > 1 {
			fmt.Printf("\n## round %d of %d (load average %s)\n", round, *cmpRounds, loadAverage())
		}
		if r := compare(); r > 0 {
			ratios = append(ratios, r)
		}
	}
	if len(ratios) > 1 {
		fmt.Printf("\nkiln / asynq end to end, per round: %s; median %.1fx\n", formatRatios(ratios), median(ratios))
	}
}

// compare runs kiln and asynq (or the one -only names) once, prints their
// tables, and returns kiln's end-to-end rate over asynq's (0 without both).
func compare() float64 {
	var rows []result
	if *only == "" || *only == "kiln" {
		rows = append(rows, runKiln())
	}
	if *only == "" || *only == "asynq" {
		rows = append(rows, runAsynq())
	}
	fmt.Printf("\n%d tasks (%d-byte payloads), concurrency %d, latency at %d tasks/s for %s; GOMAXPROCS %d\n\n", *tasks, *taskPayload, *concurrency, *rate, *latencyFor, runtime.GOMAXPROCS(0))
	fmt.Println("| system | batch enqueue (tasks/s) | end to end (tasks/s) | latency p50 | latency p99 | latency max |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %s | %s | %s |\n", r.name, r.enqueue, r.e2e, ms(r.p50), ms(r.p99), ms(r.max))
	}
	ratio := 0.0
	if len(rows) == 2 && rows[1].e2e > 0 {
		ratio = rows[0].e2e / rows[1].e2e
		fmt.Printf("\nkiln / asynq end to end: %.1fx\n", ratio)
	}
	fmt.Println("\nRedis per task (INFO commandstats and INFO cpu deltas; µs of Redis CPU per task):")
	fmt.Println()
	fmt.Println("| system | phase | scripts µs/task | script calls/task | Redis process CPU µs/task | Go process CPU µs/task |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for _, r := range rows {
		for _, ph := range []struct {
			name string
			c    redisCost
		}{{"batch enqueue", r.enqueueCPU}, {"end to end", r.e2eCPU}} {
			fmt.Printf("| %s | %s | %.2f | %.3f | %.2f | %.2f |\n", r.name, ph.name, ph.c.scriptUS, ph.c.scriptCalls, ph.c.processUS, ph.c.goUS)
		}
	}
	return ratio
}

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	v = slices.Sorted(slices.Values(v))
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// formatRatios lists ratios as "4.2x, 5.1x, ...".
func formatRatios(v []float64) string {
	parts := make([]string, len(v))
	for i, r := range v {
		parts[i] = fmt.Sprintf("%.1fx", r)
	}
	return strings.Join(parts, ", ")
}

// runLatencyOnly runs the latency phase of kiln and asynq alternately,
// -rounds times, and prints one row per run with the load average at its
// end.
func runLatencyOnly() {
	type row struct {
		r    result
		load string
	}
	var rows []row
	for range *rounds {
		if *only == "" || *only == "kiln" {
			rows = append(rows, row{runKiln(), loadAverage()})
		}
		if *only == "" || *only == "asynq" {
			rows = append(rows, row{runAsynq(), loadAverage()})
		}
	}
	fmt.Printf("\nlatency: single tasks at %d tasks/s for %s to an idle worker (concurrency %d)\n\n", *rate, *latencyFor, *concurrency)
	fmt.Println("| system | latency p50 | latency p99 | latency max | load average |")
	fmt.Println("|---|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.r.name, ms(r.r.p50), ms(r.r.p99), ms(r.r.max), r.load)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func token() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ---- kiln ----

// readChanges reads the change feed of s's default namespace until s is
// closed, as a server's event stream does.
func readChanges(s *redisstore.Store) {
	ctx := context.Background()
	res, err := s.Changes(ctx, store.ChangesParams{Namespace: store.DefaultNamespace})
	for err == nil {
		res, err = s.Changes(ctx, store.ChangesParams{Namespace: store.DefaultNamespace, Cursor: res.Cursor, Wait: time.Second})
	}
}

func runKiln() result {
	ctx := context.Background()
	prefix := "kbench-" + token()
	defer deleteKeys(*redisURL, "{"+prefix+"*", prefix+"*")
	open := func(name string) *redisstore.Store {
		s, err := redisstore.Open(ctx, *redisURL, &redisstore.Config{Prefix: prefix + "-" + name})
		if err != nil {
			log.Fatalf("kiln: open: %v", err)
		}
		if *feedReader {
			go readChanges(s)
		}
		return s
	}
	r := result{name: "kiln (Redis store)"}
	reqs := make([]kiln.TaskRequest, 1000)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "noop", Payload: payload()}
	}

	// Batch enqueue.
	if !*latencyOnly {
		s := open("enq")
		c := must(kiln.NewClient(s, nil))
		before := sampleRedis(*redisURL)
		start := time.Now()
		for i := 0; i < *tasks; i += len(reqs) {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				log.Fatalf("kiln: enqueue: %v", err)
			}
		}
		r.enqueue = float64(*tasks) / time.Since(start).Seconds()
		r.enqueueCPU = sampleRedis(*redisURL).since(before, *tasks)
		_ = s.Close()
		log.Printf("kiln: batch enqueue %.0f tasks/s", r.enqueue)
	}

	// End to end.
	if !*latencyOnly {
		s := open("e2e")
		var done atomic.Int64
		all := make(chan struct{})
		total := int64(*tasks)
		w := must(kiln.NewWorker(s, &kiln.WorkerConfig{
			Concurrency: *concurrency,
			EventFunc: func(e kiln.Event) {
				if e.Kind == kiln.EventSucceeded && done.Add(1) == total {
					close(all)
				}
			},
		}))
		w.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
		c := must(kiln.NewClient(s, nil))
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = w.Run(wctx) })
		before := sampleRedis(*redisURL)
		start := time.Now()
		for i := 0; i < *tasks; i += len(reqs) {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				log.Fatalf("kiln: enqueue: %v", err)
			}
		}
		<-all
		for { // the handlers are done; wait until the store has every outcome
			st, err := s.Stats(ctx, store.StatsParams{Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue}})
			if err != nil {
				log.Fatalf("kiln: stats: %v", err)
			}
			if st.Queues[0].Counts[store.StateSucceeded] == total {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		r.e2e = float64(*tasks) / time.Since(start).Seconds()
		r.e2eCPU = sampleRedis(*redisURL).since(before, *tasks)
		cancel()
		wg.Wait()
		_ = s.Close()
		log.Printf("kiln: end to end %.0f tasks/s", r.e2e)
	}

	// Latency.
	{
		s := open("lat")
		base := time.Now()
		var lat latencies
		w := must(kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: *concurrency}))
		w.Handle("ping", kiln.HandlerFunc(func(_ context.Context, t *kiln.Task) error {
			sent, _ := binary.Varint(t.Payload)
			lat.add(time.Since(base) - time.Duration(sent))
			return nil
		}))
		c := must(kiln.NewClient(s, nil))
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = w.Run(wctx) })
		steady(func() {
			p := binary.AppendVarint(nil, int64(time.Since(base)))
			if _, err := c.Enqueue(ctx, "ping", p, nil); err != nil {
				log.Fatalf("kiln: enqueue: %v", err)
			}
		})
		lat.wait(steadyCount())
		cancel()
		wg.Wait()
		_ = s.Close()
		r.p50, r.p99, r.max = lat.quantiles()
		log.Printf("kiln: latency p50 %s p99 %s", r.p50, r.p99)
	}
	return r
}

// runScripts measures the Redis CPU each kiln script costs per task, one
// phase per script, on one store: enqueue every task (batches of 1000, as
// EnqueueMany sends them), lease them all (-script-batch per call), report
// them all succeeded (-script-batch per call).
func runScripts() {
	ctx := context.Background()
	prefix := "kbench-" + token()
	defer deleteKeys(*redisURL, "{"+prefix+"*", prefix+"*")
	s, err := redisstore.Open(ctx, *redisURL, &redisstore.Config{Prefix: prefix})
	if err != nil {
		log.Fatalf("kiln: open: %v", err)
	}
	defer func() { _ = s.Close() }()
	c := must(kiln.NewClient(s, nil))
	reqs := make([]kiln.TaskRequest, 1000)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "noop", Payload: payload()}
	}
	n := *tasks - *tasks%len(reqs)
	type phase struct {
		name string
		c    redisCost
		d    time.Duration
	}
	var phases []phase
	measure := func(name string, f func()) {
		before := sampleRedis(*redisURL)
		start := time.Now()
		f()
		phases = append(phases, phase{name, sampleRedis(*redisURL).since(before, n), time.Since(start)})
	}
	measure("enqueue (batches of 1000)", func() {
		for i := 0; i < n; i += len(reqs) {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				log.Fatalf("kiln: enqueue: %v", err)
			}
		}
	})
	leased := make([]store.Outcome, 0, n)
	measure(fmt.Sprintf("lease (%d per call)", *scriptBatch), func() {
		for len(leased) < n {
			res, err := s.Lease(ctx, store.LeaseParams{
				Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue},
				Max: min(*scriptBatch, n-len(leased)), Duration: time.Hour, WorkerID: "bench",
			})
			if err != nil {
				log.Fatalf("kiln: lease: %v", err)
			}
			if len(res.Tasks) == 0 {
				log.Fatalf("kiln: lease: nothing left after %d of %d", len(leased), n)
			}
			for _, t := range res.Tasks {
				leased = append(leased, store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded})
			}
		}
	})
	measure(fmt.Sprintf("report succeeded (%d per call)", *scriptBatch), func() {
		for i := 0; i < n; i += *scriptBatch {
			res, err := s.Report(ctx, store.ReportParams{Namespace: store.DefaultNamespace, Outcomes: leased[i:min(i+*scriptBatch, n)]})
			if err != nil {
				log.Fatalf("kiln: report: %v", err)
			}
			for _, e := range res.Errs {
				if e != nil {
					log.Fatalf("kiln: report: %v", e)
				}
			}
		}
	})
	fmt.Printf("\n%d tasks; Redis CPU per task by script (INFO commandstats / INFO cpu deltas)\n\n", n)
	fmt.Println("| script | scripts µs/task | script calls/task | Redis process CPU µs/task | Go process CPU µs/task | tasks/s (serial calls) |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	var total float64
	for _, ph := range phases {
		total += ph.c.scriptUS
		fmt.Printf("| %s | %.2f | %.3f | %.2f | %.2f | %.0f |\n", ph.name, ph.c.scriptUS, ph.c.scriptCalls, ph.c.processUS, ph.c.goUS, float64(n)/ph.d.Seconds())
	}
	fmt.Printf("| **all three** | **%.2f** | | | | |\n", total)
}

// ---- asynq ----

func runAsynq() result {
	ctx := context.Background()
	o, err := redis.ParseURL(*redisURL)
	if err != nil {
		log.Fatal(err)
	}
	opt := asynq.RedisClientOpt{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: *asynqDB, PoolSize: 2 * *concurrency}
	asynqURL := fmt.Sprintf("redis://%s/%d", o.Addr, *asynqDB)
	clean := func() { deleteKeys(asynqURL, "asynq:*") }
	clean()
	defer clean()
	r := result{name: "asynq v0.26.0"}
	// A client per phase: an asynq client registers each queue once, and
	// clean() removes the registrations between phases.
	var client *asynq.Client
	newClient := func() {
		if client != nil {
			_ = client.Close()
		}
		client = asynq.NewClient(opt)
	}
	defer func() { _ = client.Close() }()

	// enqueueAll enqueues n tasks with 50 goroutines: asynq has no batch API.
	enqueueAll := func(n int, typ string) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if _, err := client.Enqueue(asynq.NewTask(typ, payload())); err != nil {
						log.Fatalf("asynq: enqueue: %v", err)
					}
				}
			})
		}
		wg.Wait()
	}
	server := func(mux *asynq.ServeMux) *asynq.Server {
		srv := asynq.NewServer(opt, asynq.Config{
			Concurrency:       *concurrency,
			TaskCheckInterval: *checkEvery,
			LogLevel:          asynq.ErrorLevel,
			Logger:            quietLogger{},
		})
		if err := srv.Start(mux); err != nil {
			log.Fatalf("asynq: start: %v", err)
		}
		return srv
	}

	// Enqueue.
	if !*latencyOnly {
		newClient()
		before := sampleRedis(*redisURL)
		start := time.Now()
		enqueueAll(*tasks, "noop")
		r.enqueue = float64(*tasks) / time.Since(start).Seconds()
		r.enqueueCPU = sampleRedis(*redisURL).since(before, *tasks)
		clean()
		log.Printf("asynq: enqueue %.0f tasks/s", r.enqueue)
	}

	// End to end.
	if !*latencyOnly {
		var done atomic.Int64
		all := make(chan struct{})
		total := int64(*tasks)
		mux := asynq.NewServeMux()
		mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
			if done.Add(1) == total {
				close(all)
			}
			return nil
		})
		newClient()
		srv := server(mux)
		insp := asynq.NewInspector(opt)
		before := sampleRedis(*redisURL)
		start := time.Now()
		enqueueAll(*tasks, "noop")
		<-all
		for { // the handlers are done; wait until asynq has recorded every one
			q, err := insp.GetQueueInfo("default")
			if err != nil {
				log.Fatalf("asynq: inspect: %v", err)
			}
			if q.Pending == 0 && q.Active == 0 {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		r.e2e = float64(*tasks) / time.Since(start).Seconds()
		r.e2eCPU = sampleRedis(*redisURL).since(before, *tasks)
		srv.Shutdown()
		_ = insp.Close()
		clean()
		log.Printf("asynq: end to end %.0f tasks/s", r.e2e)
	}

	// Latency.
	{
		base := time.Now()
		var lat latencies
		mux := asynq.NewServeMux()
		mux.HandleFunc("ping", func(_ context.Context, t *asynq.Task) error {
			sent, _ := binary.Varint(t.Payload())
			lat.add(time.Since(base) - time.Duration(sent))
			return nil
		})
		newClient()
		srv := server(mux)
		steady(func() {
			p := binary.AppendVarint(nil, int64(time.Since(base)))
			if _, err := client.EnqueueContext(ctx, asynq.NewTask("ping", p)); err != nil {
				log.Fatalf("asynq: enqueue: %v", err)
			}
		})
		lat.wait(steadyCount())
		srv.Shutdown()
		r.p50, r.p99, r.max = lat.quantiles()
		log.Printf("asynq: latency p50 %s p99 %s", r.p50, r.p99)
	}
	return r
}

type quietLogger struct{}

func (quietLogger) Debug(...any) {}
func (quietLogger) Info(...any)  {}
func (quietLogger) Warn(...any)  {}
func (quietLogger) Error(args ...any) {
	slog.New(slog.NewTextHandler(os.Stderr, nil)).Error(fmt.Sprint(args...))
}
func (quietLogger) Fatal(args ...any) { log.Fatal(args...) }

// ---- shared ----

func steadyCount() int { return int(latencyFor.Seconds() * float64(*rate)) }

// steady calls enqueue at the steady rate, one task per tick.
func steady(enqueue func()) {
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	for range steadyCount() {
		<-tick.C
		enqueue()
	}
}

type latencies struct {
	mu  sync.Mutex
	all []time.Duration
	got chan struct{}
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d)
	n := len(l.all)
	l.mu.Unlock()
	if n == steadyCount() {
		l.ch() <- struct{}{}
	}
}

func (l *latencies) ch() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got == nil {
		l.got = make(chan struct{}, 1)
	}
	return l.got
}

func (l *latencies) wait(int) {
	select {
	case <-l.ch():
	case <-time.After(time.Minute):
		log.Fatal("latency run: not every task ran within a minute")
	}
}

func (l *latencies) quantiles() (p50, p99, maxd time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.all)
	n := len(l.all)
	return l.all[n/2], l.all[n*99/100], l.all[n-1]
}

// deleteKeys removes the keys matching the patterns (never FLUSHDB).
func deleteKeys(url string, patterns ...string) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	for _, pat := range patterns {
		iter := c.Scan(ctx, 0, pat, 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 1000 {
				c.Unlink(ctx, batch...)
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			c.Unlink(ctx, batch...)
		}
	}
}

// redisSample is a reading of a Redis server's counters.
type redisSample struct {
	scriptCalls, scriptUS int64
	cpuSec                float64 // used_cpu_user + used_cpu_sys
	goCPU                 time.Duration
}

// redisCost is Redis' cost per task between two samples.
type redisCost struct {
	scriptUS, scriptCalls, processUS float64
	goUS                             float64 // this (Go) process' CPU per task
}

// sampleRedis reads INFO commandstats and INFO cpu of the server url names.
// The counters are server-wide: run the benchmark on a Redis nothing else
// uses (see docs/benchmarks.md) for clean figures.
func sampleRedis(url string) redisSample {
	o, err := redis.ParseURL(url)
	if err != nil {
		log.Fatal(err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	info, err := c.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		log.Fatalf("INFO: %v", err)
	}
	var s redisSample
	s.goCPU = selfCPU()
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			s.cpuSec += f
			continue
		}
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		var calls, usec int64
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec":
				usec, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if name == "cmdstat_evalsha" || name == "cmdstat_eval" {
			s.scriptCalls += calls
			s.scriptUS += usec
		}
	}
	return s
}

func (s redisSample) since(b redisSample, tasks int) redisCost {
	n := float64(tasks)
	return redisCost{
		scriptUS:    float64(s.scriptUS-b.scriptUS) / n,
		scriptCalls: float64(s.scriptCalls-b.scriptCalls) / n,
		processUS:   (s.cpuSec - b.cpuSec) * 1e6 / n,
		goUS:        float64((s.goCPU - b.goCPU).Microseconds()) / n,
	}
}

// selfCPU is the user and system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
