package remote_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln" //nolint:depguard // the test runs kiln.Worker processes on the remote store, as users do
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server" //nolint:depguard // the test's server process; the package itself talks HTTP only
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/remote"
)

// The test binary plays the server and the workers of TestMultiProcess:
// TestMain runs the role named by roleEnv instead of the tests.
const (
	roleEnv   = "KILN_REMOTE_TEST_ROLE"
	mpDirEnv  = "KILN_MP_DIR"
	mpAddrEnv = "KILN_MP_ADDR"
	mpURLEnv  = "KILN_MP_URL"
	mpSecret  = "KILN_MP_SECRET"
	mpProject = "mp"
	mpTasks   = 10000
	// mpWork is how long each task's handler works, so that kills land
	// while tasks run.
	mpWork = 40 * time.Millisecond
)

// runRole runs the role of a child process and reports whether it did.
func runRole() bool {
	var err error
	switch os.Getenv(roleEnv) {
	case "":
		return false
	case "server":
		err = serverRole()
	case "worker":
		err = workerRole()
	default:
		err = fmt.Errorf("unknown role %q", os.Getenv(roleEnv))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "role:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// serverRole serves the API on an embedded store in $KILN_MP_DIR, on
// $KILN_MP_ADDR, with the admin token of the tests, sweeping often; it
// writes the address it listens on to <dir>/addr and stops on SIGTERM.
func serverRole() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	dir := os.Getenv(mpDirEnv)
	stalls, err := chaos.OpenRunLog(dir, chaos.ServerRunner)
	if err != nil {
		return err
	}
	defer func() { _ = stalls.Close() }()
	chaos.WatchStalls(ctx, stalls, 500*time.Millisecond) // a quarter of the workers' lease
	emb, err := embedded.Open(filepath.Join(dir, "data"), nil)
	if err != nil {
		return err
	}
	defer func() { _ = emb.Close() }()
	// The workers reach the server over the test's own bridge, not
	// loopback: plain HTTP there needs AllowInsecureWorkers.
	srv, err := server.New(&server.Config{Store: emb, BootstrapToken: adminToken, BootstrapProject: mpProject, SweepInterval: 100 * time.Millisecond, ShutdownTimeout: 5 * time.Second,
		AllowInsecureWorkers: true})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", os.Getenv(mpAddrEnv))
	if err != nil {
		return err
	}
	if err := chaos.WriteFileAtomic(filepath.Join(dir, "addr"), []byte(ln.Addr().String())); err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

// workerRole runs a kiln.Worker on the remote store with the worker
// handshake. Each run of a task is recorded in the process's run log
// (internal/chaos), its start before the work and its finish after.
func workerRole() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := chaos.SignalReady(); err != nil {
		return err
	}
	runs, err := chaos.OpenRunLog(os.Getenv(mpDirEnv), "p"+strconv.Itoa(os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = runs.Close() }()
	chaos.WatchStalls(ctx, runs, 500*time.Millisecond) // a quarter of the lease
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := remote.Open(ctx, os.Getenv(mpURLEnv), &remote.Config{Project: mpProject, WorkerSecret: os.Getenv(mpSecret), Logger: log})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: a graceful stop, not a failure
		}
		return err
	}
	defer func() { _ = s.Close() }()
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
		Namespace: mpProject, Concurrency: 16, LeaseDuration: 2 * time.Second, LeaseWait: time.Second,
		ShutdownTimeout: 5 * time.Second, Logger: log,
	})
	if err != nil {
		return err
	}
	w.Handle("mp", kiln.HandlerFunc(func(ctx context.Context, tk *kiln.Task) error {
		if err := runs.Start(tk.ID, tk.Attempt); err != nil {
			return err
		}
		t := time.NewTimer(mpWork) // the task's work
		defer t.Stop()
		var err error
		select {
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-t.C:
		}
		if ferr := runs.Finish(tk.ID, tk.Attempt, err); ferr != nil {
			return ferr
		}
		return err
	}))
	return w.Run(ctx)
}

// TestMultiProcess: a server process, three remote worker processes (in
// their own network namespaces where the machine allows), 10,000 tasks, one
// worker killed with SIGKILL every two seconds and restarted. Every task
// must succeed, and every task that ran more than once must have done so
// because the process of its earlier run was killed (the ledger of
// internal/chaos).
func TestMultiProcess(t *testing.T) { //nolint:paralleltest // a server and worker processes under load, killed every 2 s: run alone, beside no other test's load
	if testing.Short() {
		t.Skip("multi-process test: skipped with -short")
	}
	const workers = 3
	dir := t.TempDir()
	nw := chaos.NewNet(t, workers)

	srv := chaos.Start(t, chaos.Cmd{Name: "server", Env: []string{roleEnv + "=server", mpDirEnv + "=" + dir, mpAddrEnv + "=" + nw.Listen()}})
	defer func() {
		if err := srv.Stop(syscall.SIGTERM); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	url := "http://" + chaos.WaitFile(t, filepath.Join(dir, "addr"), srv)

	admin, err := apiclient.New(url, &apiclient.Config{Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	// The bootstrap made the project; a new worker secret is shown to us.
	var ws wire.WorkerSecret
	if err := admin.Do(t.Context(), apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", mpProject, "worker-secret")}, &ws); err != nil {
		t.Fatalf("rotate the worker secret: %v", err)
	}
	cs, err := remote.Open(t.Context(), url, &remote.Config{Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.Close() }()
	client, err := kiln.NewClient(cs, &kiln.ClientConfig{Namespace: mpProject})
	if err != nil {
		t.Fatal(err)
	}
	ledger := chaos.NewLedger()
	reqs := make([]kiln.TaskRequest, mpTasks)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "mp", Options: kiln.TaskOptions{MaxRetries: new(100)}}
	}
	results, err := client.EnqueueMany(t.Context(), reqs)
	if err != nil {
		t.Fatalf("EnqueueMany: %v", err)
	}
	for _, r := range results {
		ledger.Ack(r.ID())
	}

	// The workers, and the killer: every two seconds one worker, in turn,
	// gets SIGKILL and a successor.
	procs := make([]*chaos.Proc, workers)
	started := 0 // names each process's ready file: a successor must not find its predecessor's
	startWorker := func(i int) {
		name := fmt.Sprintf("worker-%d", i)
		started++
		procs[i] = chaos.Start(t, chaos.Cmd{Name: name, Prefix: nw.Prefix(i), Ready: filepath.Join(dir, fmt.Sprintf("ready-%d", started)),
			Env: []string{roleEnv + "=worker", mpDirEnv + "=" + dir, mpURLEnv + "=" + url, mpSecret + "=" + ws.WorkerSecret}})
	}
	for i := range procs {
		startWorker(i)
	}
	defer func() {
		for _, p := range procs {
			if err := p.Stop(syscall.SIGTERM); err != nil {
				t.Errorf("%s (pid %d): %v", p.Name(), p.Pid(), err)
			}
		}
	}()
	kill := time.NewTicker(2 * time.Second)
	defer kill.Stop()
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	deadline := time.After(75 * time.Second)
	next, kills := 0, 0
	for done := false; !done; {
		select {
		case <-deadline:
			t.Fatalf("not every task succeeded within 75 s (%d kills)", kills)
		case <-kill.C:
			p := procs[next]
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			ledger.Event(chaos.Kill, "p"+strconv.Itoa(p.Pid()), p.Name())
			kills++
			startWorker(next)
			next = (next + 1) % workers
		case <-check.C:
			st, err := cs.Stats(t.Context(), store.StatsParams{Namespace: mpProject})
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			var finished int64
			for _, q := range st.Queues {
				finished += q.Counts[store.StateSucceeded] + q.Counts[store.StateDead] + q.Counts[store.StateCancelled]
			}
			done = finished == mpTasks
		}
	}

	// Every task succeeded, every run is in the logs, and every extra run
	// follows a kill of the process that ran the task before.
	tasks := map[string]*store.Task{}
	for p := (store.ListParams{Namespace: mpProject, Limit: store.MaxListLimit}); ; {
		res, err := cs.List(t.Context(), p)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, tk := range res.Tasks {
			tasks[tk.ID] = tk
		}
		if res.NextCursor == "" {
			break
		}
		p.Cursor = res.NextCursor
	}
	if len(tasks) != mpTasks {
		t.Fatalf("List: %d tasks, want %d", len(tasks), mpTasks)
	}
	logs, err := chaos.ReadLogs(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := ledger.Check("multi-process", "a server process, 3 remote worker processes, 10,000 tasks, a worker SIGKILLed every 2 s", logs, tasks)
	t.Log("\n" + r.Table())
	for i, f := range r.Failures() {
		if i == 20 {
			t.Errorf("... %d failures in all", len(r.Failures()))
			break
		}
		t.Errorf("%s %s: %s", f.What, f.Task, f.Detail)
	}
	if kills < 2 || r.ExtraRuns+r.Burned == 0 {
		t.Errorf("the kills hit nothing (%d kills, %d extra runs, %d burned attempts): the test tested nothing", kills, r.ExtraRuns, r.Burned)
	}
}
