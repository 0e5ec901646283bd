package goworker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/benmanns/goworker"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/resque"
)

// goworker keeps its settings, its registered classes and its connection
// pool in package variables, so these tests never run in parallel, and each
// sets every setting before each goworker.Work.

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (KILN_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

// setup returns the test Redis' URL, a client of it and a namespace of the
// test's own (with goworker's trailing colon), whose keys are deleted by
// prefix when the test ends (never FLUSHDB).
func setup(t *testing.T) (string, *redis.Client, string) {
	t.Helper()
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		missing(t, "KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("KILN_TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(o)
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		missing(t, fmt.Sprintf("Redis at KILN_TEST_REDIS_URL does not answer: %v", err))
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "kt-gw-" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, ns+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Unlink(ctx, iter.Val())
		}
		_ = rdb.Close()
	})
	return u, rdb, ns
}

// work runs goworker over queues until they are empty (-exit-on-complete),
// with numbers decoded as json.Number (-use-number).
func work(t *testing.T, uri, ns, queues string) {
	t.Helper()
	goworker.SetSettings(goworker.WorkerSettings{
		QueuesString:   queues,
		IntervalFloat:  0.001,
		Concurrency:    8,
		Connections:    10,
		URI:            uri,
		Namespace:      ns,
		ExitOnComplete: true,
		UseNumber:      true,
	})
	done := make(chan error, 1)
	go func() { done <- goworker.Work() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("goworker.Work: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("goworker.Work did not return within 2 minutes")
	}
}

type call struct {
	queue string
	args  []any
}

// recorder registers class with goworker and records every call of it.
type recorder struct {
	mu    sync.Mutex
	calls []call
}

func record(class string) *recorder {
	r := &recorder{}
	goworker.Register(class, func(queue string, args ...any) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, call{queue, args})
		return nil
	})
	return r
}

// TestGoworkerRunsKilnJobs: goworker runs the jobs kiln's resque.Client
// writes, with their arguments as goworker decodes them, and counts them
// in Resque's statistics.
func TestGoworkerRunsKilnJobs(t *testing.T) {
	uri, rdb, ns := setup(t)
	ctx := context.Background()
	c, err := resque.NewClient(rdb, &resque.ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	special := record("KilnSpecial")
	many := record("KilnMany")

	args := []any{
		"hi <there> & \u2028 \u00e9", 42, 2.5, true, nil,
		map[string]any{"nested": []any{1, "two"}},
		json.RawMessage(`12345678901234567890`),
	}
	if err := c.Enqueue(ctx, "gw-special", "KilnSpecial", args...); err != nil {
		t.Fatal(err)
	}
	const n = 500
	lists := make([][]any, n)
	for i := range lists {
		lists[i] = []any{i, fmt.Sprintf("job-%d", i)}
	}
	if err := c.EnqueueMany(ctx, "gw-many", "KilnMany", lists...); err != nil {
		t.Fatal(err)
	}
	work(t, uri, ns, "gw-special,gw-many")

	want := []any{
		"hi <there> & \u2028 \u00e9", json.Number("42"), json.Number("2.5"), true, nil,
		map[string]any{"nested": []any{json.Number("1"), "two"}},
		json.Number("12345678901234567890"),
	}
	if len(special.calls) != 1 || special.calls[0].queue != "gw-special" || !reflect.DeepEqual(special.calls[0].args, want) {
		t.Errorf("KilnSpecial calls = %#v, want one on gw-special with %#v", special.calls, want)
	}
	if len(many.calls) != n {
		t.Fatalf("KilnMany ran %d times, want %d", len(many.calls), n)
	}
	seen := make(map[string]bool)
	for _, cl := range many.calls {
		if cl.queue != "gw-many" || len(cl.args) != 2 {
			t.Fatalf("KilnMany call %#v", cl)
		}
		i, s := cl.args[0].(json.Number), cl.args[1].(string)
		if s != "job-"+i.String() || seen[s] {
			t.Errorf("KilnMany call %#v (duplicate or wrong args)", cl)
		}
		seen[s] = true
	}
	if got := rdb.Get(ctx, ns+"stat:processed").Val(); got != fmt.Sprint(n+1) {
		t.Errorf("stat:processed = %q, want %d", got, n+1)
	}
	if got := rdb.LLen(ctx, ns+"failed").Val(); got != 0 {
		t.Errorf("goworker recorded %d failures: %q", got, rdb.LRange(ctx, ns+"failed", 0, -1).Val())
	}
}

// TestGoworkerRunsScheduledJobs: jobs delayed with kiln's EnqueueAt (in
// resque-scheduler's layout) and moved by kiln's Scheduler run on goworker.
func TestGoworkerRunsScheduledJobs(t *testing.T) {
	uri, rdb, ns := setup(t)
	ctx := context.Background()
	// The client's clock says 1970, so these times are in its future and are
	// delayed; for the scheduler (the Redis clock) they are long due.
	c, err := resque.NewClient(rdb, &resque.ClientConfig{Namespace: ns, NowFunc: func() time.Time { return time.Unix(1000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	later := record("KilnLater")
	const n = 50
	for i := range n {
		if err := c.EnqueueAt(ctx, time.Unix(2000+int64(i%5), 0), "gw-later", "KilnLater", i); err != nil {
			t.Fatal(err)
		}
	}
	if got := rdb.ZCard(ctx, ns+"delayed_queue_schedule").Val(); got != 5 {
		t.Fatalf("delayed_queue_schedule has %d timestamps, want 5", got)
	}
	s, err := resque.NewScheduler(rdb, &resque.SchedulerConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if moved, err := s.MoveDue(ctx); err != nil || moved != n {
		t.Fatalf("MoveDue = %d, %v; want %d", moved, err, n)
	}
	work(t, uri, ns, "gw-later")
	got := make(map[string]int)
	for _, cl := range later.calls {
		got[fmt.Sprint(cl.args...)]++
	}
	for i := range n {
		if got[fmt.Sprint(i)] != 1 {
			t.Errorf("delayed job %d ran %d times", i, got[fmt.Sprint(i)])
		}
	}
	if len(later.calls) != n {
		t.Errorf("KilnLater ran %d times, want %d", len(later.calls), n)
	}
}

// TestKilnRunsGoworkerJobs: kiln's worker runs the jobs goworker.Enqueue
// writes (goworker's producer side).
func TestKilnRunsGoworkerJobs(t *testing.T) {
	uri, rdb, ns := setup(t)
	ctx := context.Background()
	goworker.SetSettings(goworker.WorkerSettings{
		QueuesString: "gw-out", IntervalFloat: 0.001, Connections: 2, URI: uri, Namespace: ns, UseNumber: true,
	})
	const n = 20
	for i := range n {
		if err := goworker.Enqueue(&goworker.Job{Queue: "gw-out", Payload: goworker.Payload{Class: "FromGoworker", Args: []any{i, "x <&>"}}}); err != nil {
			t.Fatal(err)
		}
	}
	goworker.Close()
	reg := resque.NewRegistry()
	var mu sync.Mutex
	got := make(map[string]int)
	reg.Register("FromGoworker", func(queue string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		got[fmt.Sprint(queue, args)]++
		return nil
	})
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := resque.Work(wctx, resque.Config{
		Redis: rdb, Namespace: ns, Queues: []string{"gw-out"}, Registry: reg, Concurrency: 4,
		ExitOnComplete: true, UseNumber: true, Interval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if k := fmt.Sprint("gw-out", []any{json.Number(fmt.Sprint(i)), "x <&>"}); got[k] != 1 {
			t.Errorf("job %d ran %d times (ran: %v)", i, got[k], got)
		}
	}
	if len(got) != n {
		t.Errorf("kiln ran %d distinct jobs, want %d", len(got), n)
	}
}
