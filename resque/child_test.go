package resque

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
)

// Environment of a worker child process: the test binary run again.
const (
	envChild  = "KILN_RESQUE_CHILD"  // "worker"
	envNS     = "KILN_RESQUE_NS"     // the namespace
	envRunLog = "KILN_RESQUE_RUNLOG" // folder of the run logs
	envConc   = "KILN_RESQUE_CONC"   // concurrency
	envWork   = "KILN_RESQUE_WORK"   // how long each job takes
)

// Settings of the kill test.
const (
	killJobs        = 10_000
	killWorkers     = 3
	killConcurrency = 8
	killWork        = 25 * time.Millisecond
	killEvery       = 2 * time.Second
	killHeartbeat   = 200 * time.Millisecond
	killDeadAfter   = 3 * time.Second
)

// childMain runs a worker child process instead of the tests when the
// environment asks for one, and reports whether it did.
func childMain() bool {
	if os.Getenv(envChild) != "worker" {
		return false
	}
	if err := runWorkerChild(); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// runWorkerChild runs Work with the class "Job" until QUIT, TERM or INT
// (the way a program with kiln's Resque worker handles signals). Each job
// takes envWork and records its start and finish, under its first
// argument, in the process's run log.
func runWorkerChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := chaos.SignalReady(); err != nil {
		return err
	}
	runs, err := chaos.OpenRunLog(os.Getenv(envRunLog), "p"+strconv.Itoa(os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = runs.Close() }()
	work, err := time.ParseDuration(os.Getenv(envWork))
	if err != nil {
		return err
	}
	conc, err := strconv.Atoi(os.Getenv(envConc))
	if err != nil {
		return err
	}
	reg := NewRegistry()
	reg.Register("Job", func(_ string, args ...any) error {
		id := fmt.Sprint(args[0])
		if err := runs.Start(id, 1); err != nil {
			return err
		}
		time.Sleep(work) // not cancellable: a stop lets it finish
		return runs.Finish(id, 1, nil)
	})
	return Work(ctx, Config{
		URI: os.Getenv("KILN_TEST_REDIS_URL"), Namespace: os.Getenv(envNS), Queues: []string{"q"},
		Registry: reg, Concurrency: conc, Interval: time.Second,
		HeartbeatInterval: killHeartbeat, DeadAfter: killDeadAfter,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func startChild(t *testing.T, name, ns, dir string, conc int, work time.Duration) *chaos.Proc {
	t.Helper()
	return chaos.Start(t, chaos.Cmd{Name: name, Ready: filepath.Join(dir, "ready-"+name), Env: []string{
		envChild + "=worker", envNS + "=" + ns, envRunLog + "=" + dir,
		envConc + "=" + strconv.Itoa(conc), envWork + "=" + work.String(),
	}})
}

// TestKillLosesNoJob runs three worker processes over 10,000 jobs and
// SIGKILLs one of them every two seconds (starting another). At the end
// every job has run to completion, exactly 10,000 outcomes are counted,
// the queue and the processing lists are empty, and every job that ran
// more than once owes each extra run to a kill of the process that ran it
// before.
func TestKillLosesNoJob(t *testing.T) {
	rdb, ns := testClient(t)
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const batch = 1000
	for i := 0; i < killJobs; i += batch {
		jobs := make([]any, 0, batch)
		for j := i; j < i+batch; j++ {
			jobs = append(jobs, fmt.Sprintf(`{"class":"Job","args":["j%d"]}`, j))
		}
		if err := rdb.RPush(ctx, ns+"queue:q", jobs...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	kills := map[string][]time.Time{} // runner -> kill times
	started := 0
	children := make([]*chaos.Proc, killWorkers)
	for i := range children {
		children[i] = startChild(t, fmt.Sprintf("worker-%d", started), ns, dir, killConcurrency, killWork)
		started++
	}
	defer func() {
		for _, ch := range children {
			_ = ch.Stop(syscall.SIGKILL) // after the graceful stop below, a no-op
		}
	}()
	kill := time.NewTicker(killEvery)
	defer kill.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	next, nkills := 0, 0
	for done := false; !done; {
		select {
		case <-ctx.Done():
			t.Fatalf("not every job was processed in time: stat:processed %d, queue %d",
				getInt(t, rdb, ns+"stat:processed"), rdb.LLen(context.Background(), ns+"queue:q").Val())
		case <-kill.C:
			ch := children[next]
			if err := ch.Kill(); err != nil {
				t.Fatal(err)
			}
			r := "p" + strconv.Itoa(ch.Pid())
			kills[r] = append(kills[r], time.Now())
			nkills++
			children[next] = startChild(t, fmt.Sprintf("worker-%d", started), ns, dir, killConcurrency, killWork)
			started++
			next = (next + 1) % killWorkers
		case <-poll.C:
			done = getInt(t, rdb, ns+"stat:processed") >= killJobs
		}
	}
	for _, ch := range children {
		if err := ch.Stop(syscall.SIGTERM); err != nil {
			t.Errorf("worker %d exited with %v", ch.Pid(), err)
		}
	}
	if nkills == 0 {
		t.Fatal("no worker was killed: the test proved nothing")
	}
	bg := context.Background()
	if n := getInt(t, rdb, ns+"stat:processed"); n != killJobs {
		t.Errorf("stat:processed = %d, want exactly %d", n, killJobs)
	}
	if n := rdb.LLen(bg, ns+"queue:q").Val() + rdb.LLen(bg, ns+"failed").Val(); n != 0 {
		t.Errorf("%d jobs left in the queue or failed", n)
	}
	procs := rdb.Keys(bg, ns+"kiln:processing:*").Val()
	for _, p := range procs {
		if n := rdb.LLen(bg, p).Val(); n > 0 {
			// A killed process's list: its jobs all ran (checked below)
			// and its janitor-time has not come; they may not be lost.
			t.Logf("processing list %s still holds %d jobs (a process killed less than %v ago)", p, n, killDeadAfter)
		}
	}
	logs, err := chaos.ReadLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	extra, unexplained := 0, 0
	for i := range killJobs {
		id := "j" + strconv.Itoa(i)
		rs := logs.Runs[id]
		if !slices.ContainsFunc(rs, func(r *chaos.Run) bool { return !r.Finish.IsZero() && r.Result == "ok" }) {
			t.Errorf("job %s never ran to completion (runs: %d)", id, len(rs))
			continue
		}
		for k := 1; k < len(rs); k++ {
			extra++
			prev := rs[k-1]
			if !slices.ContainsFunc(kills[prev.Runner], func(at time.Time) bool { return at.After(prev.Start) && !at.After(rs[k].Start) }) {
				unexplained++
				if unexplained <= 10 {
					t.Errorf("job %s ran again on %s at %v after a run on %s at %v that no kill explains",
						id, rs[k].Runner, rs[k].Start.Format(time.StampMicro), prev.Runner, prev.Start.Format(time.StampMicro))
				}
			}
		}
	}
	t.Logf("%d jobs, %d worker processes started, %d killed, %d extra runs (%d unexplained)", killJobs, started, nkills, extra, unexplained)
}

// TestSignalsStopGracefully sends QUIT, TERM and INT to a worker process
// running a job: it takes no other job, lets the running one finish,
// unregisters and exits 0.
func TestSignalsStopGracefully(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			rdb, ns := testClient(t)
			t.Parallel()
			dir := t.TempDir()
			push(t, rdb, ns, "q", `{"class":"Job","args":["first"]}`, `{"class":"Job","args":["second"]}`)
			ch := startChild(t, "worker", ns, dir, 1, time.Second)
			defer func() { _ = ch.Stop(syscall.SIGKILL) }()
			waitFor(t, "the first job to start", func() bool {
				keys := rdb.Keys(context.Background(), ns+"worker:*").Val()
				return slices.ContainsFunc(keys, func(k string) bool {
					return !strings.HasSuffix(k, ":started") && strings.Contains(rdb.Get(context.Background(), k).Val(), "first")
				})
			})
			if err := ch.Stop(sig); err != nil {
				t.Fatalf("after %v: %v", sig, err)
			}
			logs, err := chaos.ReadLogs(dir)
			if err != nil {
				t.Fatal(err)
			}
			if rs := logs.Runs["first"]; len(rs) != 1 || rs[0].Finish.IsZero() {
				t.Errorf("the running job did not finish: %+v", rs)
			}
			if rs := logs.Runs["second"]; len(rs) != 0 {
				t.Errorf("a job started after the signal: %+v", rs)
			}
			if q := rdb.LRange(context.Background(), ns+"queue:q", 0, -1).Val(); !slices.Equal(q, []string{`{"class":"Job","args":["second"]}`}) {
				t.Errorf("queue = %q, want the second job", q)
			}
			if n := getInt(t, rdb, ns+"stat:processed"); n != 1 {
				t.Errorf("stat:processed = %d, want 1", n)
			}
			if k := registryKeys(t, rdb, ns); len(k) != 0 {
				t.Errorf("registry keys left: %v", k)
			}
		})
	}
}
