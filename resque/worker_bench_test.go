package resque

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkWorkThroughput runs b.N no-op jobs (at least 20,000) at
// concurrency 50 and reports end-to-end jobs/s, from the start of Work to
// the last outcome recorded.
//
//	go test -run '^$' -bench BenchmarkWorkThroughput -benchtime 1x ./resque/
func BenchmarkWorkThroughput(b *testing.B) {
	for _, plain := range []bool{false, true} {
		name := "reliable"
		if plain {
			name = "plain"
		}
		b.Run(name, func(b *testing.B) {
			rdb, ns := testClient(b)
			n := max(b.N, 20_000)
			const batch = 1000
			for i := 0; i < n; i += batch {
				jobs := make([]any, 0, batch)
				for j := i; j < min(i+batch, n); j++ {
					jobs = append(jobs, fmt.Sprintf(`{"class":"Noop","args":[%d]}`, j))
				}
				if err := rdb.RPush(context.Background(), ns+"queue:q", jobs...).Err(); err != nil {
					b.Fatal(err)
				}
			}
			reg := NewRegistry()
			reg.Register("Noop", func(string, ...any) error { return nil })
			cfg := testConfig(rdb, ns, reg, "q")
			cfg.Concurrency, cfg.ExitOnComplete, cfg.Plain = 50, true, plain
			b.ResetTimer()
			start := time.Now()
			if err := Work(context.Background(), cfg); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			if got := getInt(b, rdb, ns+"stat:processed"); got != n {
				b.Fatalf("processed %d of %d", got, n)
			}
			b.ReportMetric(float64(n)/el.Seconds(), "jobs/s")
		})
	}
}

// BenchmarkIdleStartLatency measures how soon a job pushed onto an idle
// worker starts: the worker serves two queues and every job is pushed onto
// the second one, one at a time. It reports the p50 and p99 of push to
// handler start.
//
//	go test -run '^$' -bench BenchmarkIdleStartLatency -benchtime 500x ./resque/
func BenchmarkIdleStartLatency(b *testing.B) {
	rdb, ns := testClient(b)
	reg := NewRegistry()
	started := make(chan time.Time, 1)
	reg.Register("Ping", func(string, ...any) error { started <- time.Now(); return nil })
	cfg := testConfig(rdb, ns, reg, "first", "second")
	cfg.Interval = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = Work(ctx, cfg) }()
	defer func() { cancel(); wg.Wait() }()
	// Warm up: the worker is registered and idle.
	push(b, rdb, ns, "second", `{"class":"Ping","args":[]}`)
	<-started
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		time.Sleep(2 * time.Millisecond) // idle again: blocked on the queues
		t0 := time.Now()
		push(b, rdb, ns, "second", `{"class":"Ping","args":[]}`)
		lat = append(lat, (<-started).Sub(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
