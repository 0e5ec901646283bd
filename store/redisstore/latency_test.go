package redisstore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// BenchmarkWakeLatency measures how soon an idle leaser gets a task after
// its enqueue starts, and where that time goes. One Store enqueues single
// tasks at a steady 500 per second (one every 2 ms, b.N tasks); another,
// as a worker's would, waits in Lease (Max 10, Wait 5 s) and reports each
// task succeeded from a second goroutine. Per task it records:
//
//   - enqueue: the Enqueue call (the script's round trip);
//   - wake: from the start of the Enqueue until the leaser's Store received
//     the wake-up message the script published;
//   - lease: from that message until Lease returned the task (the waiting
//     Lease wakes and runs the lease script);
//   - total: from the start of the Enqueue until Lease returned the task;
//   - ping: a PING's round trip, sent after each Enqueue: what the machine
//     itself adds (process scheduling, loopback) to any round trip.
//
// It reports p50, p99 and max of each in µs, and prints the machine's load
// average, the garbage collections and the connection pool's waits during
// the run. Run it with a fixed count:
//
//	KILN_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench WakeLatency -benchtime 2500x ./store/redisstore/
func BenchmarkWakeLatency(b *testing.B) {
	url := testenv.RedisURL(b)
	var lastWake atomic.Int64 // ns since base of the newest wake-up message
	base := time.Now()
	wakeHook = func(string) { lastWake.Store(int64(time.Since(base))) }
	defer func() { wakeHook = nil }()
	prefix := newPrefix()
	client := mustOpen(b, url, &Config{Prefix: prefix})
	defer func() { _ = client.Close() }()
	worker := mustOpen(b, url, &Config{Prefix: prefix})
	defer func() { _ = worker.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	n := b.N
	started := make([]int64, n) // ns since base at the start of each Enqueue
	enqueued := make([]int64, n)
	woken := make([]int64, n)
	leased := make([]int64, n)
	pings := make([]int64, n)
	index := make(map[string]int, n)
	var mu sync.Mutex
	got := make(chan struct{}, n)
	outcomes := make(chan store.Outcome, n)
	var wg sync.WaitGroup
	wg.Go(func() { // the worker's leases
		for ctx.Err() == nil {
			res, err := worker.Lease(ctx, store.LeaseParams{
				Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue},
				Max: 10, Duration: 30 * time.Second, Wait: 5 * time.Second, WorkerID: "bench",
			})
			now := int64(time.Since(base))
			if err != nil {
				return
			}
			w := lastWake.Load()
			for _, t := range res.Tasks {
				mu.Lock()
				i := index[t.ID]
				mu.Unlock()
				leased[i], woken[i] = now, w
				outcomes <- store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
				got <- struct{}{}
			}
		}
	})
	wg.Go(func() { // the worker's reports
		for {
			select {
			case o := <-outcomes:
				batch := []store.Outcome{o}
			more:
				for len(batch) < 100 {
					select {
					case o := <-outcomes:
						batch = append(batch, o)
					default:
						break more
					}
				}
				if _, err := worker.Report(ctx, store.ReportParams{Namespace: store.DefaultNamespace, Outcomes: batch}); err != nil && ctx.Err() == nil {
					b.Errorf("Report: %v", err)
				}
			case <-ctx.Done():
				return
			}
		}
	})
	time.Sleep(100 * time.Millisecond) // the leaser is waiting
	load := loadAverage()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	pool0 := client.rdb.PoolStats()
	wpool0 := worker.rdb.PoolStats()
	b.ResetTimer()
	tick := time.NewTicker(2 * time.Millisecond)
	for i := range n {
		<-tick.C
		id := fmt.Sprintf("lat-%d", i)
		mu.Lock()
		index[id] = i
		mu.Unlock()
		started[i] = int64(time.Since(base))
		if _, err := client.Enqueue(ctx, store.EnqueueParams{Namespace: store.DefaultNamespace, Tasks: []store.TaskInput{{ID: id, Type: "ping"}}}); err != nil {
			b.Fatal(err)
		}
		enqueued[i] = int64(time.Since(base))
		if err := client.rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings[i] = int64(time.Since(base)) - enqueued[i]
	}
	tick.Stop()
	for range n {
		select {
		case <-got:
		case <-time.After(time.Minute):
			b.Fatal("a task was not leased within a minute")
		}
	}
	b.StopTimer()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	pool1 := client.rdb.PoolStats()
	wpool1 := worker.rdb.PoolStats()
	cancel()
	wg.Wait()

	seg := func(name string, f func(i int) int64) {
		ds := make([]time.Duration, 0, n)
		for i := range n {
			ds = append(ds, time.Duration(f(i)))
		}
		slices.Sort(ds)
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		b.ReportMetric(us(ds[n/2]), name+"-p50-µs")
		b.ReportMetric(us(ds[min(n*99/100, n-1)]), name+"-p99-µs")
		b.ReportMetric(us(ds[n-1]), name+"-max-µs")
	}
	seg("enqueue", func(i int) int64 { return enqueued[i] - started[i] })
	seg("wake", func(i int) int64 { return max(woken[i]-started[i], 0) })
	seg("lease", func(i int) int64 { return max(leased[i]-max(woken[i], started[i]), 0) })
	seg("total", func(i int) int64 { return leased[i] - started[i] })
	seg("ping", func(i int) int64 { return pings[i] })
	b.ReportMetric(0, "ns/op")
	fmt.Printf("%s: %d tasks; load average %s at the start, %s at the end; %d GCs (%.1f ms paused); pool waits: client %d (%.1f ms), worker %d (%.1f ms)\n",
		b.Name(), n, load, loadAverage(), ms1.NumGC-ms0.NumGC, float64(ms1.PauseTotalNs-ms0.PauseTotalNs)/1e6,
		pool1.WaitCount-pool0.WaitCount, float64(pool1.WaitDurationNs-pool0.WaitDurationNs)/1e6,
		wpool1.WaitCount-wpool0.WaitCount, float64(wpool1.WaitDurationNs-wpool0.WaitDurationNs)/1e6)
}

// loadAverage is the machine's 1, 5 and 15 minute load average.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(raw))[:3], " ")
}
