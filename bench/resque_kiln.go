package main

import (
	"context"
	"io"
	"log"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/resque"
)

// runResqueKiln runs the Resque workloads on kiln's Resque worker
// (resque.Work): in its default, reliable mode every job moves atomically
// to a processing list and leaves it with its outcome; in plain mode jobs
// are popped, at most once, as goworker does.
func runResqueKiln(plain bool) resqueResult {
	ctx := context.Background()
	r := resqueResult{name: "kiln resque.Work (reliable)"}
	if plain {
		r.name = "kiln resque.Work (Plain)"
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	work := func(rdb *redis.Client, ns, queue string, reg *resque.Registry) (stop func()) {
		wctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			err := resque.Work(wctx, resque.Config{
				Redis: rdb, Namespace: ns, Queues: []string{queue}, Registry: reg,
				Concurrency: *concurrency, Logger: quiet, Plain: plain,
			})
			if err != nil {
				log.Fatalf("kiln resque: %v", err)
			}
		})
		return func() { cancel(); wg.Wait() }
	}

	// End to end.
	{
		rdb, c, ns, cleanup := resqueSetup("kiln")
		var ran atomic.Int64
		reg := resque.NewRegistry()
		reg.Register("Noop", func(string, ...any) error { ran.Add(1); return nil })
		stop := work(rdb, ns, "noop", reg)
		before := readRedisLoad(rdb)
		start := time.Now()
		enqueueNoops(ctx, c, "noop", *tasks)
		waitProcessed(ctx, rdb, ns, *tasks)
		r.e2e = float64(*tasks) / time.Since(start).Seconds()
		r.perJob(before, readRedisLoad(rdb), *tasks)
		stop()
		cleanup()
		log.Printf("%s: end to end %.0f jobs/s (%d ran)", r.name, r.e2e, ran.Load())
	}

	// Latency.
	{
		rdb, c, ns, cleanup := resqueSetup("kilnlat")
		base := time.Now()
		var lat latencies
		reg := resque.NewRegistry()
		reg.Register("Ping", func(_ string, args ...any) error {
			lat.add(sinceStamp(base, args))
			return nil
		})
		stop := work(rdb, ns, "ping", reg)
		time.Sleep(100 * time.Millisecond) // let it reach its idle wait
		steady(func() { enqueueStamped(ctx, c, base) })
		lat.wait(steadyCount())
		stop()
		cleanup()
		r.p50, r.p99, r.max = lat.quantiles()
		log.Printf("%s: latency p50 %s p99 %s", r.name, r.p50, r.p99)
	}
	return r
}
