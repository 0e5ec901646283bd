package resque

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// fakeNow is a settable clock for clients and schedulers.
type fakeNow struct{ unix atomic.Int64 }

func (f *fakeNow) now() time.Time { return time.Unix(f.unix.Load(), 0) }

func newFakeNow(unix int64) *fakeNow {
	f := &fakeNow{}
	f.unix.Store(unix)
	return f
}

func TestNewSchedulerErrors(t *testing.T) {
	t.Parallel()
	_, err := NewScheduler(nil, &SchedulerConfig{Interval: -time.Second, Batch: -1})
	want := "resque: NewScheduler: the Redis client is nil\nthe interval -1s is negative\nthe batch size -1 is negative"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestSchedulerMovesDueJobs(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	clock := newFakeNow(1_900_000_000)
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns, NowFunc: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns, NowFunc: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range []time.Duration{10 * time.Second, 10 * time.Second, 20 * time.Second} {
		if err := c.EnqueueIn(ctx, d, "q", "Job", i); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.MoveDue(ctx); err != nil || n != 0 {
		t.Fatalf("MoveDue before anything is due = %d, %v; want 0", n, err)
	}
	clock.unix.Add(10)
	if n, err := s.MoveDue(ctx); err != nil || n != 2 {
		t.Fatalf("MoveDue at +10s = %d, %v; want 2", n, err)
	}
	if got, want := rdb.LRange(ctx, ns+"queue:q", 0, -1).Val(), []string{
		`{"class":"Job","args":[0]}`, `{"class":"Job","args":[1]}`,
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("queue:q = %q, want %q", got, want)
	}
	if !rdb.SIsMember(ctx, ns+"queues", "q").Val() {
		t.Error("q is not in queues")
	}
	// The +10s timestamp is gone from every key; the +20s one is untouched.
	if n := rdb.Exists(ctx, ns+"delayed:1900000010",
		ns+`timestamps:{"class":"Job","args":[0],"queue":"q"}`,
		ns+`timestamps:{"class":"Job","args":[1],"queue":"q"}`).Val(); n != 0 {
		t.Errorf("%d keys of the moved timestamp remain", n)
	}
	if got := rdb.ZRange(ctx, ns+"delayed_queue_schedule", 0, -1).Val(); !reflect.DeepEqual(got, []string{"1900000020"}) {
		t.Errorf("delayed_queue_schedule = %q, want [1900000020]", got)
	}
	clock.unix.Add(3600)
	if n, err := s.MoveDue(ctx); err != nil || n != 1 {
		t.Fatalf("MoveDue at +1h = %d, %v; want 1", n, err)
	}
	if n := rdb.Exists(ctx, ns+"delayed_queue_schedule", ns+"delayed:1900000020").Val(); n != 0 {
		t.Errorf("%d schedule keys remain after every job moved", n)
	}
}

// TestSchedulerJobFormats: items in node-resque's key order, with extra
// fields, without args, with numbers encoding/json would change, all become
// Resque queue jobs with their class and args byte for byte.
func TestSchedulerJobFormats(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	items := map[string]string{
		`{"class":"N","queue":"q","args":[12345678901234567890,1.50,"<&>"]}`: `{"class":"N","args":[12345678901234567890,1.50,"<&>"]}`,
		`{"queue":"q","class":"R","x":{"y":1}}`:                              `{"class":"R","args":[]}`,
		`{"class":"S","args":null,"queue":"q"}`:                              `{"class":"S","args":[]}`,
		`{ "class" : "T" , "args" : [ 1 , 2 ] , "queue" : "q" }`:             `{"class":"T","args":[ 1 , 2 ]}`,
	}
	var want []string
	for item, job := range items {
		rdb.RPush(ctx, ns+"delayed:100", item)
		rdb.SAdd(ctx, ns+"timestamps:"+item, "delayed:100")
		want = append(want, job)
	}
	rdb.ZAdd(ctx, ns+"delayed_queue_schedule", redis.Z{Score: 100, Member: "100"})
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns}) // the Redis clock: 100 is long past
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.MoveDue(ctx); err != nil || n != len(items) {
		t.Fatalf("MoveDue = %d, %v; want %d", n, err, len(items))
	}
	got := rdb.LRange(ctx, ns+"queue:q", 0, -1).Val()
	if !sameMembers(got, want) {
		t.Errorf("queue:q = %q, want %q", got, want)
	}
	for item := range items {
		if rdb.Exists(ctx, ns+"timestamps:"+item).Val() != 0 {
			t.Errorf("timestamps:%s remains", item)
		}
	}
}

func TestSchedulerInvalidItems(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	bad := []struct{ item, why string }{
		{`not json`, "not a JSON object"},
		{`{"class":"C","args":[]}`, `"queue" is missing`},
		{`{"queue":"q","args":[]}`, `"class" is missing or not a non-empty string`},
		{`{"class":"C","args":{"a":1},"queue":"q"}`, `"args" is not an array`},
	}
	for _, b := range bad {
		rdb.RPush(ctx, ns+"delayed:100", b.item)
	}
	rdb.RPush(ctx, ns+"delayed:100", `{"class":"Good","args":[1],"queue":"q"}`)
	rdb.ZAdd(ctx, ns+"delayed_queue_schedule", redis.Z{Score: 100, Member: "100"})
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns, ID: "host:1:scheduler"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.MoveDue(ctx); err != nil || n != len(bad)+1 {
		t.Fatalf("MoveDue = %d, %v; want %d", n, err, len(bad)+1)
	}
	if got := rdb.LRange(ctx, ns+"queue:q", 0, -1).Val(); !reflect.DeepEqual(got, []string{`{"class":"Good","args":[1]}`}) {
		t.Errorf("queue:q = %q", got)
	}
	failed := rdb.LRange(ctx, ns+"failed", 0, -1).Val()
	if len(failed) != len(bad) {
		t.Fatalf("failed has %d records, want %d", len(failed), len(bad))
	}
	for i, rec := range failed {
		var r struct {
			FailedAt  string          `json:"failed_at"`
			Payload   json.RawMessage `json:"payload"`
			Exception string          `json:"exception"`
			Error     string          `json:"error"`
			Worker    string          `json:"worker"`
		}
		if err := json.Unmarshal([]byte(rec), &r); err != nil {
			t.Fatalf("failed[%d] %s: %v", i, rec, err)
		}
		if !strings.HasPrefix(rec, `{"failed_at":"`) || !rubyFailedAt.MatchString(r.FailedAt) {
			t.Errorf("failed[%d] = %s: not Resque's key order or failed_at format", i, rec)
		}
		if r.Exception != "InvalidDelayedJob" || !strings.Contains(r.Error, bad[i].why) || r.Worker != "host:1:scheduler" {
			t.Errorf("failed[%d] = %s, want InvalidDelayedJob with %q", i, rec, bad[i].why)
		}
	}
	if n := rdb.Exists(ctx, ns+"delayed:100", ns+"delayed_queue_schedule").Val(); n != 0 {
		t.Errorf("%d schedule keys remain", n)
	}
}

// TestSchedulersExactlyOnce runs many schedulers at once over many delayed
// jobs (some identical, at one timestamp) while producers keep adding more,
// and checks that every job reached its queue exactly once.
func TestSchedulersExactlyOnce(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	const (
		jobs       = 3000
		timestamps = 30
		schedulers = 6
		producers  = 3
		twins      = 5 // identical jobs pushed at one timestamp
	)
	base := int64(1_900_000_000)
	clock := newFakeNow(base + timestamps) // everything is due
	enqueue := func(i int) {
		c, err := NewClient(rdb, &ClientConfig{Namespace: ns, NowFunc: func() time.Time { return time.Unix(base, 0) }})
		if err != nil {
			t.Error(err)
			return
		}
		if err := c.EnqueueAt(ctx, time.Unix(base+int64(i%timestamps), 0), fmt.Sprintf("q%d", i%3), "Job", i); err != nil {
			t.Error(err)
		}
	}
	for i := range jobs / 2 { // half before the schedulers start
		enqueue(i)
	}
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns, NowFunc: func() time.Time { return time.Unix(base, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	for range twins {
		if err := c.EnqueueAt(ctx, time.Unix(base+7, 0), "q0", "Twin", "same"); err != nil {
			t.Fatal(err)
		}
	}

	var produced sync.WaitGroup
	var next atomic.Int64
	next.Store(jobs / 2)
	for range producers {
		produced.Go(func() {
			for i := next.Add(1) - 1; i < jobs; i = next.Add(1) - 1 {
				enqueue(int(i))
			}
		})
	}
	var moved atomic.Int64
	stop := make(chan struct{})
	var running sync.WaitGroup
	for k := range schedulers {
		s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns, NowFunc: clock.now, Batch: 1 + k*7})
		if err != nil {
			t.Fatal(err)
		}
		running.Go(func() {
			for {
				n, err := s.MoveDue(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				moved.Add(int64(n))
				select {
				case <-stop:
					if n == 0 {
						return
					}
				default:
				}
			}
		})
	}
	produced.Wait()
	close(stop)
	running.Wait()
	// One last pass catches what the producers added after a scheduler's
	// last look at a timestamp.
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns, NowFunc: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.MoveDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved.Add(int64(n))

	if got := moved.Load(); got != jobs+twins {
		t.Errorf("schedulers report %d moved, want %d", got, jobs+twins)
	}
	seen := make(map[int]int)
	twinsSeen := 0
	for q := range 3 {
		for _, j := range rdb.LRange(ctx, fmt.Sprintf("%squeue:q%d", ns, q), 0, -1).Val() {
			if j == `{"class":"Twin","args":["same"]}` {
				twinsSeen++
				continue
			}
			var d struct {
				Args []int `json:"args"`
			}
			if err := json.Unmarshal([]byte(j), &d); err != nil || len(d.Args) != 1 {
				t.Fatalf("queue q%d: unexpected job %s", q, j)
			}
			if d.Args[0]%3 != q {
				t.Errorf("job %d in queue q%d", d.Args[0], q)
			}
			seen[d.Args[0]]++
		}
	}
	for i := range jobs {
		if seen[i] != 1 {
			t.Errorf("job %d reached its queue %d times", i, seen[i])
		}
	}
	if twinsSeen != twins {
		t.Errorf("%d of the %d identical jobs reached the queue", twinsSeen, twins)
	}
	if keys := rdb.Keys(ctx, ipGlobEscape(ns)+"delayed*").Val(); len(keys) != 0 {
		t.Errorf("schedule keys remain: %q", keys)
	}
	if keys := rdb.Keys(ctx, ipGlobEscape(ns)+"timestamps:*").Val(); len(keys) != 0 {
		t.Errorf("%d timestamps: keys remain", len(keys))
	}
}

func TestSchedulerRun(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	// Due in the current second of the Redis clock, or the next one.
	if err := c.EnqueueIn(ctx, 0, "q", "Soon", 1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- RunScheduler(ctx, rdb, &SchedulerConfig{Namespace: ns, Interval: 20 * time.Millisecond})
	}()
	ipEventually(t, "the scheduler moves the job", func() bool { return rdb.LLen(ctx, ns+"queue:q").Val() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
}

// rubyFailedAt is Ruby Resque's failed_at: strftime("%Y/%m/%d %H:%M:%S %Z").
var rubyFailedAt = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+$`)

func sameMembers(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]int)
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func FuzzJobOfDelayedItem(f *testing.F) {
	for _, s := range []string{
		`{"class":"C","args":[1,"x"],"queue":"q"}`,
		`{"class":"N","queue":"q","args":[12345678901234567890]}`,
		`{"class":"C","queue":"q"}`, `{"class":"","queue":"q"}`, `[]`, `null`, `{"class":1,"queue":"q"}`,
		`{"class":"C","args":"x","queue":"q"}`, "{\"class\":\"\u2028\",\"queue\":\"q\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, item []byte) {
		queue, job, err := jobOfDelayedItem(item)
		if err != nil {
			return
		}
		if queue == "" {
			t.Fatalf("%q: empty queue without an error", item)
		}
		var in, out struct {
			Class string `json:"class"`
			Args  []any  `json:"args"`
		}
		if err := json.Unmarshal(job, &out); err != nil {
			t.Fatalf("%q: the job %q is not JSON: %v", item, job, err)
		}
		_ = json.Unmarshal(item, &in)
		if in.Args == nil {
			in.Args = []any{}
		}
		if out.Class != in.Class || !reflect.DeepEqual(in.Args, out.Args) {
			t.Fatalf("%q -> %q: class/args changed", item, job)
		}
	})
}

func FuzzEncodeJob(f *testing.F) {
	f.Add("MyClass", "hi", 1.5)
	f.Add("A<&>", "\u2028\\u2028\"", math.Copysign(0, -1))
	f.Fuzz(func(t *testing.T, class, s string, x float64) {
		b, err := EncodeJob(class, []any{s, x})
		if err != nil {
			return
		}
		var d struct {
			Class string `json:"class"`
			Args  []any  `json:"args"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%q is not JSON: %v", b, err)
		}
		if d.Class != class || len(d.Args) != 2 || d.Args[1] != x {
			t.Fatalf("%q decodes to %+v", b, d)
		}
		if utf8.ValidString(s) && d.Args[0] != s {
			t.Fatalf("%q: arg %q, want %q", b, d.Args[0], s)
		}
	})
}

// A worker with Config.Scheduler moves due delayed jobs to their queues and
// runs them: without it the job below would stay in delayed_queue_schedule.
func TestWorkRunsScheduler(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	ran := make(chan []any, 1)
	reg.Register("Later", func(_ string, args ...any) error { ran <- args; return nil })
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnqueueIn(t.Context(), time.Second, "q", "Later", "x", 1); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.Scheduler = true
	stop := startWork(t, cfg)
	select {
	case args := <-ran:
		if fmt.Sprint(args) != "[x 1]" {
			t.Errorf("args = %v, want [x 1]", args)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the delayed job did not run within 20 s")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.ZCard(t.Context(), ns+"delayed_queue_schedule").Result(); n != 0 {
		t.Errorf("delayed_queue_schedule holds %d timestamps after the job ran", n)
	}
}
