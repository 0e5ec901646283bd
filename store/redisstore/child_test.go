package redisstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	//nolint:depguard // the multi-process test drives the real kiln.Worker on this store (issue 4); a test file is not compiled into the store
	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// Environment of a worker child process (see TestMultiProcessKill).
const (
	envChild  = "KILN_REDISSTORE_CHILD"  // "worker"
	envRun    = "KILN_REDISSTORE_RUN"    // the parent's runToken
	envPrefix = "KILN_REDISSTORE_PREFIX" // the store's key prefix
	envRunLog = "KILN_REDISSTORE_RUNLOG" // folder of the child's run log
)

// Settings of the multi-process test: short leases so that a killed
// worker's tasks come back quickly.
const (
	mpTasks       = 10_000
	mpWorkers     = 3
	mpConcurrency = 16
	mpLease       = 1500 * time.Millisecond
	mpKillEvery   = 2 * time.Second
	mpWork        = 50 * time.Millisecond // each task's simulated work
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
	return true
}

// runWorkerChild runs a kiln.Worker on the Redis store until SIGTERM. Its
// handler records its start and finish in the process's run log
// (internal/chaos) in the folder envRunLog names.
func runWorkerChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := chaos.SignalReady(); err != nil {
		return err
	}
	s, err := Open(ctx, os.Getenv(testenv.RedisEnv), &Config{Prefix: os.Getenv(envPrefix)})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a graceful stop, not a failure
		}
		return err
	}
	defer func() { _ = s.Close() }()
	runs, err := chaos.OpenRunLog(os.Getenv(envRunLog), "p"+strconv.Itoa(os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = runs.Close() }()
	chaos.WatchStalls(ctx, runs, mpLease/4)
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
		Concurrency:   mpConcurrency,
		LeaseDuration: mpLease,
		LeaseWait:     time.Second,
		SweepInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	w.Handle("job", kiln.HandlerFunc(func(ctx context.Context, t *kiln.Task) error {
		if err := runs.Start(t.ID, t.Attempt); err != nil {
			return err
		}
		// The task's work: it takes a little while, so that kills land
		// in the middle of runs.
		var err error
		select {
		case <-time.After(mpWork):
		case <-ctx.Done():
			err = ctx.Err()
		}
		if ferr := runs.Finish(t.ID, t.Attempt, err); ferr != nil {
			return ferr
		}
		return err
	}))
	if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// TestMultiProcessKill runs three worker processes on one Redis over 10,000
// tasks and SIGKILLs one of them every two seconds (restarting it). At the
// end every task must have succeeded, every task must have a recorded run,
// and every task that ran more than once must owe each extra run to a kill
// of the process that ran it before (the ledger of internal/chaos).
func TestMultiProcessKill(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process kill test: skipped with -short")
	}
	url := testenv.RedisURL(t)
	t.Parallel()
	prefix := newPrefix()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	s := mustOpen(t, url, &Config{Prefix: prefix})
	defer func() { _ = s.Close() }()
	c, err := kiln.NewClient(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]kiln.TaskRequest, mpTasks)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "job"}
	}
	results, err := c.EnqueueMany(ctx, reqs)
	if err != nil {
		t.Fatalf("EnqueueMany: %v", err)
	}
	ledger := chaos.NewLedger()
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.ID()
	}
	ledger.Ack(ids...)

	start := func(n int) *chaos.Proc {
		return chaos.Start(t, chaos.Cmd{Name: fmt.Sprintf("worker-%d", n), Ready: filepath.Join(dir, fmt.Sprintf("ready-%d", n)),
			Env: []string{envChild + "=worker", envRun + "=" + runToken, envPrefix + "=" + prefix, envRunLog + "=" + dir}})
	}
	kills, started := 0, 0
	children := make([]*chaos.Proc, mpWorkers)
	for i := range children {
		children[i] = start(started)
		started++
	}
	defer func() {
		for _, ch := range children {
			_ = ch.Stop(syscall.SIGKILL) // after the graceful stop below, a no-op
		}
	}()

	// Kill one worker every two seconds, round robin, until every task
	// has succeeded; check progress with a bounded poll of the counts.
	kill := time.NewTicker(mpKillEvery)
	defer kill.Stop()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	next := 0
	for done := false; !done; {
		select {
		case <-ctx.Done():
			st, _ := s.Stats(context.Background(), store.StatsParams{Namespace: store.DefaultNamespace})
			t.Fatalf("not every task succeeded in time: %+v", st)
		case <-kill.C:
			ch := children[next]
			if err := ch.Kill(); err != nil {
				t.Fatal(err)
			}
			ledger.Event(chaos.Kill, "p"+strconv.Itoa(ch.Pid()), ch.Name())
			kills++
			children[next] = start(started)
			started++
			next = (next + 1) % mpWorkers
		case <-poll.C:
			st, err := s.Stats(ctx, store.StatsParams{Namespace: store.DefaultNamespace, Queues: []string{store.DefaultQueue}})
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			done = st.Queues[0].Counts[store.StateSucceeded] == mpTasks
		}
	}
	// Stop the live workers gracefully.
	for _, ch := range children {
		if err := ch.Stop(syscall.SIGTERM); err != nil {
			t.Errorf("worker %d exited with %v", ch.Pid(), err)
		}
	}
	if kills == 0 {
		t.Fatal("no worker was killed: the test proved nothing")
	}

	// Every task succeeded, and the counts say so.
	st, err := s.Stats(ctx, store.StatsParams{Namespace: store.DefaultNamespace})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Queues) != 1 || st.Queues[0].Total() != mpTasks || st.Queues[0].Counts[store.StateSucceeded] != mpTasks {
		t.Errorf("Stats: got %+v, want %d succeeded tasks and nothing else", st.Queues, mpTasks)
	}
	tasks := make(map[string]*store.Task, len(ids))
	for start := 0; start < len(ids); start += 1000 {
		chunk := ids[start:min(start+1000, len(ids))]
		res, err := s.Get(ctx, store.GetParams{Namespace: store.DefaultNamespace, IDs: chunk})
		if err != nil {
			t.Fatal(err)
		}
		for i, tk := range res.Tasks {
			tasks[chunk[i]] = tk
		}
	}

	// Every task ran; every extra run is explained by a kill.
	logs, err := chaos.ReadLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := ledger.Check("redis multi-process", "3 worker processes on one Redis, 10,000 tasks, a worker SIGKILLed every 2 s", logs, tasks)
	t.Log("\n" + r.Table())
	for i, f := range r.Failures() {
		if i == 20 {
			t.Errorf("... %d failures in all", len(r.Failures()))
			break
		}
		t.Errorf("%s %s: %s", f.What, f.Task, f.Detail)
	}
	t.Logf("%d tasks, %d workers started, %d killed, %d extra runs (all after a kill)", mpTasks, started, kills, r.ExtraRuns)
}

// A worker child stopped (SIGTERM) right after it said it was ready, while
// it may still be opening the store, exits cleanly: a stop during start-up
// is a graceful stop (TestMultiProcessKill stops the workers it has just
// started when the last task succeeds).
func TestWorkerChildStopDuringStart(t *testing.T) {
	testenv.RedisURL(t)
	t.Parallel()
	dir := t.TempDir()
	for i := range 5 {
		p := chaos.Start(t, chaos.Cmd{Name: fmt.Sprintf("early-%d", i), Ready: filepath.Join(dir, fmt.Sprintf("ready-%d", i)),
			Env: []string{envChild + "=worker", envRun + "=" + runToken, envPrefix + "=" + newPrefix(), envRunLog + "=" + dir}})
		if err := p.Stop(syscall.SIGTERM); err != nil {
			t.Errorf("worker %d stopped during its start: %v", p.Pid(), err)
		}
	}
}
