package main

// The Resque comparison (-resque): kiln's Resque worker (package resque)
// and goworker (github.com/benmanns/goworker, the Go Resque worker kiln's
// resque package replaces) on the same Redis, one after the other in one
// run, on the same jobs written by kiln's resque.Client (kiln twice: its
// default reliable mode and, unless -resque-plain=false, its Plain mode):
//
//   - end to end: jobs/s for -tasks no-op jobs at -concurrency, from the first
//     enqueue (batches of 1000, while the worker runs) until Redis counts
//     every job in <ns>stat:processed;
//   - latency: enqueue-to-start p50/p99 of single jobs enqueued at a steady
//     -rate to an idle worker.
//
// goworker polls its queues (LPOP, then sleeps -goworker-interval when all
// were empty; its default is 5 s, here 1 ms as the fair comparison) and
// gets -concurrency+1 Redis connections (its default is 2, which would make
// its 50 workers wait for a connection). Each system works under a namespace
// of its own, deleted afterwards.
//
//	cd bench && go run . -resque -redis redis://127.0.0.1:6379/0

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/benmanns/goworker"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/resque"
)

var (
	resqueRun        = benchFlags.Bool("resque", false, "instead of the store comparison, compare kiln's Resque worker with goworker (-only kiln or -only goworker for one)")
	resquePlain      = benchFlags.Bool("resque-plain", true, "with -resque: also run kiln's worker in Plain mode (at most once, as goworker)")
	goworkerInterval = benchFlags.Duration("goworker-interval", time.Millisecond, "goworker's poll interval (its -interval; default 5 s)")
)

type resqueResult struct {
	name          string
	e2e           float64 // jobs/s
	p50, p99, max time.Duration
	// Redis commands and Redis CPU per job in the end-to-end phase.
	cmdsPerJob, redisUSPerJob float64
	// CPU of this process (producer and worker) per job, same phase.
	goUSPerJob float64
}

func runResque() {
	log.Printf("machine: %s; load average at start: %s", cpuModel(), loadAvg())
	var rows []resqueResult
	if *only == "" || *only == "kiln" {
		rows = append(rows, runResqueKiln(false))
		if *resquePlain {
			rows = append(rows, runResqueKiln(true))
		}
	}
	if *only == "" || *only == "goworker" {
		rows = append(rows, runGoworker())
	}
	fmt.Printf("\n%d no-op jobs, concurrency %d, latency at %d jobs/s for %s; GOMAXPROCS %d\n", *tasks, *concurrency, *rate, *latencyFor, runtime.GOMAXPROCS(0))
	fmt.Printf("CPU: %s; load average at the end: %s\n\n", cpuModel(), loadAvg())
	fmt.Println("| worker | end to end (jobs/s) | latency p50 | latency p99 | latency max | Redis commands/job | Redis CPU µs/job | Go process CPU µs/job |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %s | %s | %s | %.2f | %.1f | %.1f |\n", r.name, r.e2e, ms(r.p50), ms(r.p99), ms(r.max), r.cmdsPerJob, r.redisUSPerJob, r.goUSPerJob)
	}
	if last := rows[len(rows)-1]; len(rows) > 1 && last.e2e > 0 && strings.HasPrefix(last.name, "goworker") {
		fmt.Println()
		for _, r := range rows[:len(rows)-1] {
			fmt.Printf("%s / goworker end to end: %.1fx\n", r.name, r.e2e/last.e2e)
		}
	}
}

// resqueSetup returns a Redis client, a kiln resque.Client under a fresh
// namespace, and a function that deletes the namespace's keys.
func resqueSetup(name string) (*redis.Client, *resque.Client, string, func()) {
	o, err := redis.ParseURL(*redisURL)
	if err != nil {
		log.Fatal(err)
	}
	o.PoolSize = 2 * *concurrency
	rdb := redis.NewClient(o)
	ns := "rbench-" + token() + "-" + name + ":"
	c := must(resque.NewClient(rdb, &resque.ClientConfig{Namespace: ns}))
	return rdb, c, ns, func() {
		deleteKeys(*redisURL, ns+"*")
		_ = rdb.Close()
	}
}

// enqueueNoops writes n no-op jobs onto queue in batches of 1000.
func enqueueNoops(ctx context.Context, c *resque.Client, queue string, n int) {
	batch := make([][]any, 1000)
	for i := 0; i < n; i += len(batch) {
		if err := c.EnqueueMany(ctx, queue, "Noop", batch[:min(len(batch), n-i)]...); err != nil {
			log.Fatalf("enqueue: %v", err)
		}
	}
}

// waitProcessed waits until <ns>stat:processed reaches n.
func waitProcessed(ctx context.Context, rdb *redis.Client, ns string, n int) {
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := rdb.Get(ctx, ns+"stat:processed").Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			log.Fatalf("stat:processed: %v", err)
		}
		if v >= n {
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("stat:processed is %d after a minute, want %d", v, n)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// enqueueStamped enqueues one job whose argument is its enqueue time, in
// nanoseconds since base.
func enqueueStamped(ctx context.Context, c *resque.Client, base time.Time) {
	if err := c.Enqueue(ctx, "ping", "Ping", strconv.FormatInt(int64(time.Since(base)), 10)); err != nil {
		log.Fatalf("enqueue: %v", err)
	}
}

// sinceStamp is the time since the enqueue time a job carries.
func sinceStamp(base time.Time, args []any) time.Duration {
	s, _ := args[0].(string)
	ns, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		log.Fatalf("ping job with args %v", args)
	}
	return time.Since(base) - time.Duration(ns)
}

// ---- goworker ----

func runGoworker() resqueResult {
	ctx := context.Background()
	r := resqueResult{name: fmt.Sprintf("goworker (interval %s)", *goworkerInterval)}
	var (
		mu     sync.Mutex
		onNoop func()
		onPing func(args []any)
	)
	goworker.Register("Noop", func(string, ...any) error {
		mu.Lock()
		f := onNoop
		mu.Unlock()
		f()
		return nil
	})
	goworker.Register("Ping", func(_ string, args ...any) error {
		mu.Lock()
		f := onPing
		mu.Unlock()
		f(args)
		return nil
	})
	// work runs goworker on queue until stop is closed; goworker stops on a
	// signal only, so stop sends this process SIGINT, which goworker catches.
	// goworker parses the flag package's command line on its first use
	// unless it is parsed already: parse it empty, so that goworker takes
	// its settings from SetSettings alone.
	if err := flag.CommandLine.Parse(nil); err != nil {
		log.Fatal(err)
	}
	work := func(ns, queue string, stop <-chan struct{}) {
		goworker.SetSettings(goworker.WorkerSettings{
			QueuesString:  queue,
			IntervalFloat: goworkerInterval.Seconds(),
			Concurrency:   *concurrency,
			Connections:   *concurrency + 1,
			URI:           *redisURL,
			Namespace:     ns,
			UseNumber:     true,
		})
		done := make(chan error, 1)
		go func() { done <- goworker.Work() }()
		<-stop
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			log.Fatal(err)
		}
		if err := <-done; err != nil {
			log.Fatalf("goworker: %v", err)
		}
	}

	// End to end.
	{
		rdb, c, ns, cleanup := resqueSetup("gw")
		var ran atomic.Int64
		mu.Lock()
		onNoop = func() { ran.Add(1) }
		mu.Unlock()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { work(ns, "noop", stop) })
		before := readRedisLoad(rdb)
		start := time.Now()
		enqueueNoops(ctx, c, "noop", *tasks)
		waitProcessed(ctx, rdb, ns, *tasks)
		r.e2e = float64(*tasks) / time.Since(start).Seconds()
		r.perJob(before, readRedisLoad(rdb), *tasks)
		close(stop)
		wg.Wait()
		cleanup()
		log.Printf("goworker: end to end %.0f jobs/s (%d ran)", r.e2e, ran.Load())
	}

	// Latency.
	{
		_, c, ns, cleanup := resqueSetup("gwlat")
		base := time.Now()
		var lat latencies
		mu.Lock()
		onPing = func(args []any) { lat.add(sinceStamp(base, args)) }
		mu.Unlock()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { work(ns, "ping", stop) })
		time.Sleep(100 * time.Millisecond) // let it reach its idle polling
		steady(func() { enqueueStamped(ctx, c, base) })
		lat.wait(steadyCount())
		close(stop)
		wg.Wait()
		cleanup()
		r.p50, r.p99, r.max = lat.quantiles()
		log.Printf("goworker: latency p50 %s p99 %s", r.p50, r.p99)
	}
	return r
}

// redisLoad is a reading of a Redis server's command count and CPU time.
type redisLoad struct {
	calls  int64
	cpuSec float64
	goCPU  time.Duration // this process' CPU time
}

// readRedisLoad sums the calls of INFO commandstats (INFO itself left out)
// and used_cpu_user + used_cpu_sys of INFO cpu. The counters are
// server-wide: other clients of the server add to them.
func readRedisLoad(rdb *redis.Client) redisLoad {
	info, err := rdb.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		log.Fatalf("INFO: %v", err)
	}
	l := redisLoad{goCPU: selfCPU()}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_cpu_user" || k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			l.cpuSec += f
		case strings.HasPrefix(k, "cmdstat_") && k != "cmdstat_info":
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			n, _ := strconv.ParseInt(calls, 10, 64)
			l.calls += n
		}
	}
	return l
}

// perJob sets r's Redis figures from the readings around n jobs.
func (r *resqueResult) perJob(before, after redisLoad, n int) {
	r.cmdsPerJob = float64(after.calls-before.calls) / float64(n)
	r.redisUSPerJob = (after.cpuSec - before.cpuSec) * 1e6 / float64(n)
	r.goUSPerJob = float64((after.goCPU - before.goCPU).Microseconds()) / float64(n)
}

// ---- machine ----

// cpuModel is the "model name" of /proc/cpuinfo and the number of CPUs.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return fmt.Sprintf("unknown CPU (%d CPUs)", runtime.NumCPU())
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return fmt.Sprintf("%s (%d CPUs)", strings.TrimSpace(v), runtime.NumCPU())
		}
	}
	return fmt.Sprintf("unknown CPU (%d CPUs)", runtime.NumCPU())
}

// loadAvg is the 1, 5 and 15 minute load average of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
