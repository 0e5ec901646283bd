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
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

var (
	redisURL    = flag.String("redis", "redis://127.0.0.1:6379/0", "Redis URL for kiln (asynq uses the same server, database -asynq-db)")
	asynqDB     = flag.Int("asynq-db", 15, "Redis database for asynq; its asynq:* keys are deleted")
	tasks       = flag.Int("tasks", 100_000, "tasks in the enqueue and end-to-end runs")
	concurrency = flag.Int("concurrency", 50, "handlers running at once")
	rate        = flag.Int("rate", 500, "tasks per second in the latency run")
	latencyFor  = flag.Duration("latency-for", 5*time.Second, "length of the latency run")
	only        = flag.String("only", "", "run only kiln or only asynq")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	checkEvery  = flag.Duration("asynq-task-check-interval", time.Millisecond, "asynq's TaskCheckInterval (default 1 s; lowered for latency)")
)

type result struct {
	name          string
	enqueue, e2e  float64 // tasks/s
	p50, p99, max time.Duration
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *cpuProfile != "" {
		f := must(os.Create(*cpuProfile))
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var rows []result
	if *only == "" || *only == "kiln" {
		rows = append(rows, runKiln())
	}
	if *only == "" || *only == "asynq" {
		rows = append(rows, runAsynq())
	}
	fmt.Printf("\n%d tasks, concurrency %d, latency at %d tasks/s for %s; GOMAXPROCS %d\n\n", *tasks, *concurrency, *rate, *latencyFor, runtime.GOMAXPROCS(0))
	fmt.Println("| system | batch enqueue (tasks/s) | end to end (tasks/s) | latency p50 | latency p99 | latency max |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Printf("| %s | %.0f | %.0f | %s | %s | %s |\n", r.name, r.enqueue, r.e2e, ms(r.p50), ms(r.p99), ms(r.max))
	}
	if len(rows) == 2 && rows[1].e2e > 0 {
		fmt.Printf("\nkiln / asynq end to end: %.1fx\n", rows[0].e2e/rows[1].e2e)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func token() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ---- kiln ----

func runKiln() result {
	ctx := context.Background()
	prefix := "kbench-" + token()
	defer deleteKeys(*redisURL, "{"+prefix+"*", prefix+"*")
	open := func(name string) *redisstore.Store {
		s, err := redisstore.Open(ctx, *redisURL, &redisstore.Config{Prefix: prefix + "-" + name})
		if err != nil {
			log.Fatalf("kiln: open: %v", err)
		}
		return s
	}
	r := result{name: "kiln (Redis store)"}
	reqs := make([]kiln.TaskRequest, 1000)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "noop"}
	}

	// Batch enqueue.
	{
		s := open("enq")
		c := must(kiln.NewClient(s, nil))
		start := time.Now()
		for i := 0; i < *tasks; i += len(reqs) {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				log.Fatalf("kiln: enqueue: %v", err)
			}
		}
		r.enqueue = float64(*tasks) / time.Since(start).Seconds()
		_ = s.Close()
		log.Printf("kiln: batch enqueue %.0f tasks/s", r.enqueue)
	}

	// End to end.
	{
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
			lat.add(time.Since(base) - time.Duration(binary.BigEndian.Uint64(t.Payload)))
			return nil
		}))
		c := must(kiln.NewClient(s, nil))
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = w.Run(wctx) })
		steady(func() {
			p := binary.BigEndian.AppendUint64(nil, uint64(time.Since(base)))
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
					if _, err := client.Enqueue(asynq.NewTask(typ, nil)); err != nil {
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
	{
		newClient()
		start := time.Now()
		enqueueAll(*tasks, "noop")
		r.enqueue = float64(*tasks) / time.Since(start).Seconds()
		clean()
		log.Printf("asynq: enqueue %.0f tasks/s", r.enqueue)
	}

	// End to end.
	{
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
			lat.add(time.Since(base) - time.Duration(binary.BigEndian.Uint64(t.Payload())))
			return nil
		})
		newClient()
		srv := server(mux)
		steady(func() {
			p := binary.BigEndian.AppendUint64(nil, uint64(time.Since(base)))
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

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}
