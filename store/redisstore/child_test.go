package redisstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	//nolint:depguard // the multi-process test drives the real kiln.Worker on this store (issue 4); a test file is not compiled into the store
	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
)

// Environment of a worker child process (see TestMultiProcessKill).
const (
	envChild  = "KILN_REDISSTORE_CHILD"  // "worker"
	envRun    = "KILN_REDISSTORE_RUN"    // the parent's runToken
	envPrefix = "KILN_REDISSTORE_PREFIX" // the store's key prefix
	envRunLog = "KILN_REDISSTORE_RUNLOG" // file the child appends its runs to
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
// handler appends "id attempt pid" to the run log before it returns, so every
// run that may have been reported is on record.
func runWorkerChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := Open(ctx, os.Getenv("KILN_TEST_REDIS_URL"), &Config{Prefix: os.Getenv(envPrefix)})
	if err != nil {
		return err
	}
	defer func() { _ = s.Close() }()
	//nolint:gosec // G703: the path is a file in the parent test's t.TempDir(), passed by the parent
	f, err := os.OpenFile(os.Getenv(envRunLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	pid := os.Getpid()
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
		Concurrency:   mpConcurrency,
		LeaseDuration: mpLease,
		LeaseWait:     time.Second,
		SweepInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	w.Handle("job", kiln.HandlerFunc(func(ctx context.Context, t *kiln.Task) error {
		// The task's work: it takes a little while, so that kills land
		// in the middle of runs.
		select {
		case <-time.After(mpWork):
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(f, "%s %d %d\n", t.ID, t.Attempt, pid)
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
// and every task that ran more than once must owe each extra run to a killed
// process: its earlier runs were all in processes that were SIGKILLed.
func TestMultiProcessKill(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process kill test: skipped with -short")
	}
	url := redisURL(t)
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
	ids := make([]string, len(results))
	for i, r := range results {
		ids[i] = r.ID()
	}

	type child struct {
		cmd    *exec.Cmd
		done   chan error
		exited bool
	}
	wait := func(ch *child) error {
		ch.exited = true
		return <-ch.done
	}
	start := func(n int) *child {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"=worker", envRun+"="+runToken, envPrefix+"="+prefix,
			envRunLog+"="+filepath.Join(dir, fmt.Sprintf("runs-%d.log", n)))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start worker: %v", err)
		}
		ch := &child{cmd: cmd, done: make(chan error, 1)}
		go func() { ch.done <- cmd.Wait() }()
		return ch
	}
	killed := map[int]bool{}
	started := 0
	children := make([]*child, mpWorkers)
	for i := range children {
		children[i] = start(started)
		started++
	}
	defer func() {
		for _, ch := range children {
			if !ch.exited {
				_ = ch.cmd.Process.Kill()
				_ = wait(ch)
			}
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
			killed[ch.cmd.Process.Pid] = true
			if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill: %v", err)
			}
			if err := wait(ch); err == nil {
				t.Errorf("worker %d exited cleanly after SIGKILL", ch.cmd.Process.Pid)
			}
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
		_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, ch := range children {
		if err := wait(ch); err != nil {
			t.Errorf("worker %d exited with %v", ch.cmd.Process.Pid, err)
		}
	}
	if len(killed) == 0 {
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
	for start := 0; start < len(ids); start += 1000 {
		res, err := s.Get(ctx, store.GetParams{Namespace: store.DefaultNamespace, IDs: ids[start:min(start+1000, len(ids))]})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range res.Tasks {
			if tk == nil || tk.State != store.StateSucceeded {
				t.Fatalf("task not succeeded at the end: %+v", tk)
			}
		}
	}

	// Every task ran; every extra run is explained by a kill.
	type run struct{ attempt, pid int }
	runs := map[string][]run{}
	files, _ := filepath.Glob(filepath.Join(dir, "runs-*.log"))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			parts := strings.Fields(sc.Text())
			if len(parts) != 3 {
				continue // a line cut short by SIGKILL
			}
			a, _ := strconv.Atoi(parts[1])
			p, _ := strconv.Atoi(parts[2])
			runs[parts[0]] = append(runs[parts[0]], run{a, p})
		}
		_ = f.Close()
	}
	dups := 0
	for _, id := range ids {
		rs := runs[id]
		if len(rs) == 0 {
			t.Errorf("task %s succeeded but no run of it was recorded", id)
			continue
		}
		sort.Slice(rs, func(i, j int) bool { return rs[i].attempt < rs[j].attempt })
		for i, r := range rs[:len(rs)-1] {
			dups++
			if !killed[r.pid] {
				t.Errorf("task %s ran again (attempt %d) after attempt %d finished in process %d, which was never killed", id, rs[i+1].attempt, r.attempt, r.pid)
			}
		}
	}
	t.Logf("%d tasks, %d workers started, %d killed, %d duplicate runs (all after a kill)", mpTasks, started, len(killed), dups)
}
