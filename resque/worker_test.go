package resque

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testConfig is a Config on the test's Redis and namespace.
func testConfig(rdb *redis.Client, ns string, reg *Registry, queues ...string) Config {
	return Config{
		Redis: rdb, Namespace: ns, Registry: reg, Queues: queues, Concurrency: 4,
		Interval: 200 * time.Millisecond, HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 2 * time.Second,
		ShutdownTimeout: 5 * time.Second, Hostname: "testhost",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// startWork runs Work in the background; stop cancels it and returns its
// error.
func startWork(t *testing.T, cfg Config) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Work(ctx, cfg) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("Work did not return within 30 s of its context's end")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func push(t testing.TB, rdb *redis.Client, ns, queue string, jobs ...string) {
	t.Helper()
	args := make([]any, len(jobs))
	for i, j := range jobs {
		args[i] = j
	}
	if err := rdb.RPush(context.Background(), ns+"queue:"+queue, args...).Err(); err != nil {
		t.Fatal(err)
	}
}

func getInt(t testing.TB, rdb *redis.Client, key string) int {
	t.Helper()
	n, err := rdb.Get(context.Background(), key).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond every 10 ms for at most 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// registryKeys returns the keys of the namespace but the queues, the
// failed list and the global counters: what a stopped worker must leave
// behind is none of them.
func registryKeys(t testing.TB, rdb *redis.Client, ns string) []string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), ns+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		rest := strings.TrimPrefix(k, ns)
		if strings.HasPrefix(rest, "queue:") || rest == "queues" || rest == "failed" || rest == "stat:processed" || rest == "stat:failed" {
			continue
		}
		out = append(out, rest)
	}
	slices.Sort(out)
	return out
}

func TestWorkRunsJobs(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	var mu sync.Mutex
	var got []string
	reg.Register("Echo", func(queue string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprint(queue, args))
		return nil
	})
	for i := range 50 {
		push(t, rdb, ns, "q", fmt.Sprintf(`{"class":"Echo","args":[%d,"x"]}`, i))
	}
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.ExitOnComplete = true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 || !slices.Contains(got, "q[7 x]") {
		t.Fatalf("ran %d jobs (%v), want 50 with q[7 x]", len(got), got)
	}
	if n := getInt(t, rdb, ns+"stat:processed"); n != 50 {
		t.Errorf("stat:processed = %d, want 50", n)
	}
	if k := registryKeys(t, rdb, ns); len(k) != 0 {
		t.Errorf("after Work returned, registry keys left: %v", k)
	}
	if ok, _ := rdb.SIsMember(t.Context(), ns+"queues", "q").Result(); !ok {
		t.Errorf("queue q is not in %squeues", ns)
	}
}

func TestStrictOrder(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	var got []string
	reg.Register("Rec", func(queue string, _ ...any) error {
		got = append(got, queue) // concurrency 1: no race
		return nil
	})
	push(t, rdb, ns, "low", `{"class":"Rec","args":[]}`, `{"class":"Rec","args":[]}`)
	push(t, rdb, ns, "high", `{"class":"Rec","args":[]}`, `{"class":"Rec","args":[]}`, `{"class":"Rec","args":[]}`)
	cfg := testConfig(rdb, ns, reg, "high", "low")
	cfg.Concurrency, cfg.ExitOnComplete = 1, true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if want := []string{"high", "high", "high", "low", "low"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestConcurrency(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	const n = 6
	var wg sync.WaitGroup
	wg.Add(n)
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	reg.RegisterContext("Barrier", func(context.Context, string, ...any) error {
		wg.Done()
		select { // returns only once all n run at the same time
		case <-all:
			return nil
		case <-time.After(20 * time.Second):
			return errors.New("not every job ran at once")
		}
	})
	for range n {
		push(t, rdb, ns, "q", `{"class":"Barrier","args":[]}`)
	}
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.Concurrency, cfg.ExitOnComplete = n, true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if p, f := getInt(t, rdb, ns+"stat:processed"), getInt(t, rdb, ns+"stat:failed"); p != n || f != 0 {
		t.Fatalf("processed %d failed %d, want %d and 0", p, f, n)
	}
}

func TestUseNumberAndTyped(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	type order struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		Extra any    `json:"extra"`
	}
	var plain, number []any
	var typed order
	var pair [2]int
	reg.Register("Plain", func(_ string, args ...any) error { plain = args; return nil })
	reg.RegisterContext("Number", func(ctx context.Context, _ string, args ...any) error {
		if j, ok := JobFromContext(ctx); !ok || j.Class != "Number" {
			return errors.New("no job in the context")
		}
		number = args
		return nil
	})
	RegisterTypedIn(reg, "Typed", func(_ context.Context, _ string, o order) error { typed = o; return nil })
	RegisterTypedIn(reg, "Pair", func(_ context.Context, _ string, p [2]int) error { pair = p; return nil })
	push(t, rdb, ns, "q", `{"class":"Plain","args":[12345678901234567890]}`)
	push(t, rdb, ns, "q", `{"class":"Number","args":[12345678901234567890]}`)
	push(t, rdb, ns, "q", `{"class":"Typed","args":[{"id":7,"name":"n","extra":1.5}]}`)
	push(t, rdb, ns, "q", `{"class":"Pair","args":[3,4]}`)
	push(t, rdb, ns, "q", `{"class":"Typed","args":[1,2]}`)
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.Concurrency, cfg.ExitOnComplete, cfg.UseNumber = 1, true, false
	// Plain runs without UseNumber; the others with it (one Work each).
	one := func(useNumber bool) {
		c := cfg
		c.UseNumber = useNumber
		c.ExitOnComplete = true
		if err := Work(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	one(false)
	if len(plain) != 1 || plain[0] != float64(12345678901234567890) {
		t.Errorf("without UseNumber: %#v, want a float64", plain)
	}
	if len(number) != 1 || number[0] != float64(12345678901234567890) {
		t.Errorf("without UseNumber: %#v, want a float64", number)
	}
	push(t, rdb, ns, "q", `{"class":"Number","args":[12345678901234567890]}`)
	one(true)
	if len(number) != 1 || number[0] != json.Number("12345678901234567890") {
		t.Errorf("with UseNumber: %#v, want json.Number", number)
	}
	if typed.ID != 7 || typed.Name != "n" || typed.Extra != float64(1.5) || pair != [2]int{3, 4} {
		t.Errorf("typed %+v pair %v", typed, pair)
	}
	recs := failedRecords(t, rdb, ns)
	if len(recs) != 1 || recs[0]["exception"] != ExceptionInvalidArgs || !strings.Contains(recs[0]["error"].(string), "want exactly 1 argument") {
		t.Errorf("failed records %v, want one InvalidArgs", recs)
	}
}

func failedRecords(t testing.TB, rdb *redis.Client, ns string) []map[string]any {
	t.Helper()
	raw, err := rdb.LRange(context.Background(), ns+"failed", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal([]byte(r), &out[i]); err != nil {
			t.Fatalf("failed record %q: %v", r, err)
		}
	}
	return out
}

// failedKeyOrder is the key order of Ruby Resque's failed records.
var failedKeyOrder = regexp.MustCompile(`^\{"failed_at":"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+","payload":.*,"exception":".*","error":".*","backtrace":\[.*\],"worker":"[^"]*","queue":"[^"]*"\}$`)

func TestBadJobsFailAndWorkerGoesOn(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	ran := 0
	reg.Register("Good", func(string, ...any) error { ran++; return nil })
	reg.Register("Boom", func(string, ...any) error { panic("kaboom") })
	reg.Register("Err", func(string, ...any) error { return errors.New("it went wrong") })
	cases := []struct{ job, exception, error string }{
		{`not json`, ExceptionInvalidJob, "not valid JSON"},
		{"{\"class\":\"Good\",\"args\":[\"\xff\"]}", ExceptionInvalidJob, "not valid UTF-8"},
		{`{"args":[]}`, ExceptionInvalidJob, `no \"class\"`},
		{`{"class":"Good","args":{"a":1}}`, ExceptionInvalidJob, `\"args\" is not an array`},
		{`{"class":"Nope","args":[]}`, ExceptionUnregisteredClass, `class \"Nope\"`},
		{`{"class":"Boom","args":[1]}`, ExceptionPanic, "kaboom"},
		{`{"class":"Err","args":[1]}`, ExceptionError, "it went wrong"},
	}
	for _, c := range cases {
		push(t, rdb, ns, "q", c.job, `{"class":"Good","args":[]}`)
	}
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.Concurrency, cfg.ExitOnComplete = 1, true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if ran != len(cases) {
		t.Errorf("good jobs run: %d, want %d", ran, len(cases))
	}
	if p, f := getInt(t, rdb, ns+"stat:processed"), getInt(t, rdb, ns+"stat:failed"); p != len(cases) || f != len(cases) {
		t.Errorf("processed %d failed %d, want %d and %d", p, f, len(cases), len(cases))
	}
	raw, err := rdb.LRange(t.Context(), ns+"failed", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != len(cases) {
		t.Fatalf("%d failed records, want %d: %q", len(raw), len(cases), raw)
	}
	for i, c := range cases {
		r := raw[i]
		if !failedKeyOrder.MatchString(r) {
			t.Errorf("record %d is not in Resque's format (key order, failed_at): %s", i, r)
		}
		if !strings.Contains(r, `"exception":"`+c.exception+`"`) || !strings.Contains(r, c.error) {
			t.Errorf("record %d = %s, want exception %s and error with %s", i, r, c.exception, c.error)
		}
		if !strings.Contains(r, `"worker":"testhost:`) || !strings.Contains(r, `"queue":"q"`) {
			t.Errorf("record %d = %s: worker or queue wrong", i, r)
		}
	}
	var boom map[string]any
	_ = json.Unmarshal([]byte(raw[5]), &boom)
	if bt, _ := boom["backtrace"].([]any); len(bt) == 0 || !strings.Contains(fmt.Sprint(bt[0]), "worker_test.go") {
		t.Errorf("panic backtrace %v, want the handler's frame first", boom["backtrace"])
	}
	if p, _ := boom["payload"].(map[string]any); p["class"] != "Boom" {
		t.Errorf("panic payload %v, want the job object", boom["payload"])
	}
}

// TestIdleWorkerTakesJobAtOnce: a worker idle on two queues with a one
// minute Interval starts jobs pushed onto either queue without waiting for
// the blocking read of the other to time out, and stops without waiting
// for its blocking reads either.
func TestIdleWorkerTakesJobAtOnce(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	ran := make(chan string, 1)
	reg.Register("Ping", func(queue string, _ ...any) error { ran <- queue; return nil })
	cfg := testConfig(rdb, ns, reg, "first", "second")
	cfg.Interval = time.Minute
	stop := startWork(t, cfg)
	for i, q := range []string{"second", "second", "first", "second", "first", "first", "second"} {
		// Let the worker go idle (blocked on both queues) before the push.
		waitFor(t, "blocked clients", func() bool { return blockedOn(t, rdb, ns) == 2 })
		push(t, rdb, ns, q, `{"class":"Ping","args":[]}`)
		select {
		case got := <-ran:
			if got != q {
				t.Fatalf("job %d ran from %s, want %s", i, got, q)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("job %d pushed onto idle queue %s did not start within 20 s (the blocking reads wait 1 min)", i, q)
		}
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("stop took %v: it waited for the blocking reads", d)
	}
	if k := registryKeys(t, rdb, ns); len(k) != 0 {
		t.Errorf("registry keys left: %v", k)
	}
}

// blockedOn counts the worker connections of the namespace that are
// blocked in a read (CLIENT LIST: their name, flag b).
func blockedOn(t testing.TB, rdb *redis.Client, ns string) int {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name=kiln-resque:"+ns) && strings.Contains(line, " flags=b ") {
			n++
		}
	}
	return n
}

// TestReconcile: after a failed read, entries of a processing list that
// the worker neither runs nor holds go back to the head of the queue; the
// ones it runs or holds stay (one per copy held).
func TestReconcile(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	qs, _ := parseQueues([]string{"q"})
	w := &worker{
		cfg: Config{}, qs: qs, rdb: rdb, ids: newIDs(ns, "h", 1, qs, 1, false),
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), active: map[*running]struct{}{}, blockers: map[string]*blocker{},
	}
	proc := w.ids.proc["q"]
	ctx := t.Context()
	// Newest at the head: lost2, run, lost1, held, held.
	rdb.LPush(ctx, proc, "held", "held", "lost1", "run", "lost2")
	push(t, rdb, ns, "q", "queued")
	w.active[&running{job: taken{queue: "q", payload: "run"}}] = struct{}{}
	w.reconcile(ctx, "q", []taken{{queue: "q", payload: "held"}, {queue: "other", payload: "held"}})
	q := rdb.LRange(ctx, ns+"queue:q", 0, -1).Val()
	if !slices.Contains(q, "lost1") || !slices.Contains(q, "lost2") || !slices.Contains(q, "held") || q[len(q)-1] != "queued" || len(q) != 4 {
		t.Errorf("queue = %q, want lost1, lost2 and one held before queued", q)
	}
	if p := rdb.LRange(ctx, proc, 0, -1).Val(); len(p) != 2 || !slices.Contains(p, "run") || !slices.Contains(p, "held") {
		t.Errorf("processing list = %q, want run and one held", p)
	}
}

// TestPauseAllWorkers: Ruby's pause switch, <ns>pause-all-workers = "true",
// keeps a worker from taking jobs; deleting it lets the worker go on.
func TestPauseAllWorkers(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	rdb.Set(t.Context(), ns+"pause-all-workers", " TRUE ", 0)
	reg := NewRegistry()
	ran := make(chan struct{}, 1)
	reg.Register("Ping", func(string, ...any) error { ran <- struct{}{}; return nil })
	cfg := testConfig(rdb, ns, reg, "q")
	stop := startWork(t, cfg)
	waitFor(t, "the worker's registration", func() bool { return rdb.SCard(context.Background(), ns+"workers").Val() > 0 })
	push(t, rdb, ns, "q", `{"class":"Ping","args":[]}`)
	select {
	case <-ran:
		t.Fatal("a paused worker ran a job")
	case <-time.After(5 * cfg.HeartbeatInterval):
	}
	rdb.Del(t.Context(), ns+"pause-all-workers")
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("the job did not run once the pause was lifted")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestFailedJobRetryAsRuby retries a failed record the way Ruby's
// Resque::Failure::Redis.requeue does (the record's queue, the payload's
// class and args) and the job runs again.
func TestFailedJobRetryAsRuby(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	calls := 0
	reg.Register("Flaky", func(_ string, args ...any) error {
		calls++
		if calls == 1 {
			return fmt.Errorf("first call fails (args %v)", args)
		}
		return nil
	})
	push(t, rdb, ns, "jobs", `{"class":"Flaky","args":[1,"two",{"three":3}]}`)
	cfg := testConfig(rdb, ns, reg, "jobs")
	cfg.Concurrency, cfg.ExitOnComplete = 1, true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	recs := failedRecords(t, rdb, ns)
	if len(recs) != 1 {
		t.Fatalf("%d failed records, want 1", len(recs))
	}
	payload, _ := recs[0]["payload"].(map[string]any)
	queue, _ := recs[0]["queue"].(string)
	job, err := json.Marshal(map[string]any{"class": payload["class"], "args": payload["args"]})
	if err != nil || queue != "jobs" {
		t.Fatalf("record %v: %v", recs[0], err)
	}
	push(t, rdb, ns, queue, string(job))
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if calls != 2 || getInt(t, rdb, ns+"stat:processed") != 1 || getInt(t, rdb, ns+"stat:failed") != 1 {
		t.Errorf("calls %d processed %d failed %d, want 2, 1, 1", calls, getInt(t, rdb, ns+"stat:processed"), getInt(t, rdb, ns+"stat:failed"))
	}
}
