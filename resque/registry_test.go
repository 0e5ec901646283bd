package resque

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRegistryWhileRunning checks the keys Ruby tools read while a job
// runs, and that a stop removes them.
func TestRegistryWhileRunning(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	started, release := make(chan struct{}), make(chan struct{})
	reg.Register("Hold", func(string, ...any) error {
		close(started)
		<-release
		return nil
	})
	cfg := testConfig(rdb, ns, reg, "high", "low")
	cfg.Concurrency = 2
	stop := startWork(t, cfg)
	job := `{"class":"Hold","args":[1, "a"]}`
	push(t, rdb, ns, "low", job)
	<-started
	ctx := t.Context()
	base := "testhost:" + strconv.Itoa(os.Getpid()) + ":high,low"
	members, err := rdb.SMembers(ctx, ns+"workers").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(members)
	if want := []string{base + ":0", base + ":1"}; !slices.Equal(members, want) {
		t.Fatalf("%sworkers = %v, want %v", ns, members, want)
	}
	// The slot running the job: worker:<id> is {queue, run_at, payload}
	// (written while the handler starts).
	var working string
	waitFor(t, "worker:<id> of the running job", func() bool {
		for _, id := range members {
			if v, err := rdb.Get(ctx, ns+"worker:"+id).Result(); err == nil {
				working = v
				return true
			}
		}
		return false
	})
	for _, id := range members {
		started, err := rdb.Get(ctx, ns+"worker:"+id+":started").Result()
		if err != nil || !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}$`).MatchString(started) {
			t.Errorf("worker:%s:started = %q, %v; want Ruby's Time#to_s", id, started, err)
		}
		hb, err := rdb.HGet(ctx, ns+"workers:heartbeat", id).Result()
		if _, perr := time.Parse(time.RFC3339, hb); err != nil || perr != nil {
			t.Errorf("workers:heartbeat %s = %q, %v; want an ISO 8601 time", id, hb, err)
		}
		if n, err := rdb.Get(ctx, ns+"stat:processed:"+id).Result(); err != nil || n != "0" {
			t.Errorf("stat:processed:%s = %q, %v; want 0", id, n, err)
		}
	}
	if !regexp.MustCompile(`^\{"queue":"low","run_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ","payload":\{"class":"Hold","args":\[1,"a"\]\}\}$`).MatchString(working) {
		t.Errorf("worker:<id> = %q, want {queue, run_at, payload}", working)
	}
	// Reliable mode: the job waits in the processing list of its queue.
	proc := ns + "kiln:processing:" + base + ":low"
	if l, _ := rdb.LRange(ctx, proc, 0, -1).Result(); !slices.Equal(l, []string{job}) {
		t.Errorf("processing list %s = %q, want the job", proc, l)
	}
	close(release)
	waitFor(t, "the job's outcome", func() bool { return getInt(t, rdb, ns+"stat:processed") == 1 })
	if n, _ := rdb.LLen(ctx, proc).Result(); n != 0 {
		t.Errorf("processing list holds %d jobs after the job finished", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if k := registryKeys(t, rdb, ns); len(k) != 0 {
		t.Errorf("after the stop, registry keys left: %v", k)
	}
	if hb, _ := rdb.HLen(ctx, ns+"workers:heartbeat").Result(); hb != 0 {
		t.Errorf("workers:heartbeat has %d entries after the stop", hb)
	}
}

// TestJanitorReturnsJobsOfDeadWorker makes the records of a dead process
// by hand (a processing list per queue, a heartbeat long past, registry
// keys) and checks that a live worker returns its jobs to the head of
// their queues, in their order, runs them, and removes the dead process
// from the registry; a live process's jobs are not touched.
func TestJanitorReturnsJobsOfDeadWorker(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	ctx := t.Context()
	dead := "otherhost:999:a,b"
	rec := ns + "kiln:worker:" + dead
	procA, procB := ns+"kiln:processing:"+dead+":a", ns+"kiln:processing:"+dead+":b"
	// Processing lists hold the newest job at the head.
	rdb.LPush(ctx, procA, `{"class":"Rec","args":["a1"]}`, `{"class":"Rec","args":["a2"]}`)
	rdb.LPush(ctx, procB, `{"class":"Rec","args":["b1"]}`)
	rdb.HSet(ctx, rec, "queue:a", procA, "queue:b", procB, "slot:"+dead, "1")
	rdb.ZAdd(ctx, ns+"kiln:heartbeats", redisZ(1000, dead))
	rdb.SAdd(ctx, ns+"workers", dead)
	rdb.Set(ctx, ns+"worker:"+dead, `{"queue":"a"}`, 0)
	rdb.Set(ctx, ns+"worker:"+dead+":started", "x", 0)
	rdb.HSet(ctx, ns+"workers:heartbeat", dead, "2020-01-01T00:00:00+00:00")
	// A live process (fresh heartbeat) whose job must stay.
	live := "otherhost:1000:a"
	liveProc := ns + "kiln:processing:" + live + ":a"
	rdb.LPush(ctx, liveProc, `{"class":"Rec","args":["live"]}`)
	rdb.HSet(ctx, ns+"kiln:worker:"+live, "queue:a", liveProc)
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, ns+"kiln:heartbeats", redisZ(float64(now.UnixMilli()+60_000), live))
	// Behind the returned jobs in queue a: one that was there already.
	push(t, rdb, ns, "a", `{"class":"Rec","args":["a3"]}`)

	// Reap alone first: the order at the head of the queues.
	rs, err := reap(ctx, rdb, ns, 2*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].base != dead || rs[0].moved != 3 {
		t.Fatalf("reap = %+v, want %s with 3 jobs", rs, dead)
	}
	qa, _ := rdb.LRange(ctx, ns+"queue:a", 0, -1).Result()
	if want := []string{`{"class":"Rec","args":["a1"]}`, `{"class":"Rec","args":["a2"]}`, `{"class":"Rec","args":["a3"]}`}; !slices.Equal(qa, want) {
		t.Errorf("queue a = %q, want %q", qa, want)
	}
	if k := registryKeys(t, rdb, ns); slices.ContainsFunc(k, func(s string) bool { return strings.Contains(s, dead) }) {
		t.Errorf("keys of the dead worker left: %v", k)
	}
	if ok, _ := rdb.SIsMember(ctx, ns+"workers", dead).Result(); ok {
		t.Error("the dead worker is still in workers")
	}
	if n, _ := rdb.LLen(ctx, liveProc).Result(); n != 1 {
		t.Error("the live process's job was moved")
	}

	// A worker then runs them.
	rdb.ZAdd(ctx, ns+"kiln:heartbeats", redisZ(1000, dead))
	rdb.HSet(ctx, rec, "queue:b", procB)
	rdb.LPush(ctx, procB, `{"class":"Rec","args":["b2"]}`)
	reg := NewRegistry()
	ran := make(chan string, 10)
	reg.Register("Rec", func(_ string, args ...any) error { ran <- fmt.Sprint(args...); return nil })
	cfg := testConfig(rdb, ns, reg, "a", "b")
	cfg.Concurrency = 1
	stop := startWork(t, cfg)
	var got []string
	for len(got) < 5 {
		select {
		case s := <-ran:
			got = append(got, s)
		case <-time.After(20 * time.Second):
			t.Fatalf("ran %v, want 5 jobs", got)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"a1", "a2", "a3", "b1", "b2"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

// TestShutdownTimeoutReturnsJob stops a worker whose job outlives the
// shutdown timeout: the job goes back to the head of its queue, the
// handler's context is cancelled, the worker unregisters.
func TestShutdownTimeoutReturnsJob(t *testing.T) {
	t.Parallel()
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			t.Parallel()
			rdb, ns := testClient(t)
			reg := NewRegistry()
			started, unblock := make(chan struct{}), make(chan struct{})
			cancelled := make(chan struct{})
			reg.RegisterContext("Slow", func(ctx context.Context, _ string, _ ...any) error {
				close(started)
				<-ctx.Done()
				close(cancelled)
				<-unblock // ignores its context for a while longer
				return nil
			})
			job := `{"class":"Slow","args":[]}`
			push(t, rdb, ns, "q", job, `{"class":"Other","args":[]}`)
			cfg := testConfig(rdb, ns, reg, "q")
			cfg.Concurrency, cfg.ShutdownTimeout, cfg.Plain = 1, 300*time.Millisecond, plain
			stop := startWork(t, cfg)
			<-started
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			<-cancelled
			close(unblock)
			q, _ := rdb.LRange(t.Context(), ns+"queue:q", 0, -1).Result()
			if want := []string{job, `{"class":"Other","args":[]}`}; !slices.Equal(q, want) {
				t.Errorf("queue = %q, want %q", q, want)
			}
			if k := registryKeys(t, rdb, ns); len(k) != 0 {
				t.Errorf("registry keys left: %v", k)
			}
			if n := getInt(t, rdb, ns+"stat:processed") + getInt(t, rdb, ns+"stat:failed"); n != 0 {
				t.Errorf("%d outcomes recorded, want none", n)
			}
		})
	}
}

// TestRedisCLIPush pushes jobs with the redis-cli binary, the way
// goworker's documentation shows, and runs them.
func TestRedisCLIPush(t *testing.T) {
	t.Parallel()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
			t.Fatal("redis-cli is not on PATH and KILN_TEST_REQUIRE_ALL is set")
		}
		t.Skip("redis-cli is not on PATH")
	}
	rdb, ns := testClient(t)
	out, err := exec.Command(cli, "-u", testRedisURL(t), "-r", "100", "RPUSH", ns+"queue:myqueue", `{"class":"MyClass","args":["hi","there"]}`).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli: %v: %s", err, out)
	}
	reg := NewRegistry()
	n := 0
	reg.Register("MyClass", func(queue string, args ...any) error {
		if queue != "myqueue" || len(args) != 2 || args[0] != "hi" || args[1] != "there" {
			return fmt.Errorf("got %s %v", queue, args)
		}
		n++
		return nil
	})
	cfg := testConfig(rdb, ns, reg, "myqueue")
	cfg.Concurrency, cfg.ExitOnComplete = 1, true
	if err := Work(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if n != 100 || getInt(t, rdb, ns+"stat:processed") != 100 {
		t.Fatalf("ran %d jobs (stat:processed %d), want 100", n, getInt(t, rdb, ns+"stat:processed"))
	}
	if raw, _ := rdb.LRange(t.Context(), ns+"failed", 0, -1).Result(); len(raw) != 0 {
		b, _ := json.Marshal(raw)
		t.Fatalf("failed: %s", b)
	}
}

// TestReapedJobsKeepTheirOrder: a process taken for dead while it runs
// three jobs has them returned to the head of their queue in their
// original order; the outcomes it records afterwards are not counted.
func TestReapedJobsKeepTheirOrder(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := NewRegistry()
	var runs atomic.Int32
	release := make(chan struct{})
	reg.Register("Hold", func(string, ...any) error { runs.Add(1); <-release; return nil })
	jobs := []string{`{"class":"Hold","args":["a"]}`, `{"class":"Hold","args":["b"]}`, `{"class":"Hold","args":["c"]}`, `{"class":"Hold","args":["d"]}`}
	push(t, rdb, ns, "q", jobs...)
	cfg := testConfig(rdb, ns, reg, "q")
	cfg.Concurrency = 3
	stop := startWork(t, cfg)
	waitFor(t, "three running jobs", func() bool { return runs.Load() == 3 })
	base := "testhost:" + strconv.Itoa(os.Getpid()) + ":q"
	rs, err := reap(t.Context(), rdb, ns, 0, base)
	if err != nil || len(rs) != 1 || rs[0].moved != 3 {
		t.Fatalf("reap = %+v, %v; want 3 jobs moved", rs, err)
	}
	if q := rdb.LRange(t.Context(), ns+"queue:q", 0, -1).Val(); !slices.Equal(q, jobs) {
		t.Errorf("queue = %q, want %q", q, jobs)
	}
	close(release)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The three outcomes recorded after the reap found their jobs gone;
	// the runs after them (jobs taken again before the stop) count.
	if n := getInt(t, rdb, ns+"stat:processed"); n != int(runs.Load())-3 {
		t.Errorf("stat:processed = %d after %d runs: outcomes of reaped jobs were counted", n, runs.Load())
	}
}
