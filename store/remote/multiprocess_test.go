package remote_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln" //nolint:depguard // the test runs kiln.Worker processes on the remote store, as users do
	"github.com/kilnhq/kiln/internal/apiclient"
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
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600); err != nil { //nolint:gosec // G703: the folder is the test's own t.TempDir, passed by the parent
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "addr")); err != nil { //nolint:gosec // G703: the folder is the test's own t.TempDir, passed by the parent
		return err
	}
	return srv.Serve(ctx, ln)
}

// workerRole runs a kiln.Worker on the remote store with the worker
// handshake. Each run of a task appends "id attempt pid" to the process's
// own file, written before the handler returns.
func workerRole() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pid := os.Getpid()
	f, err := os.OpenFile(filepath.Join(os.Getenv(mpDirEnv), fmt.Sprintf("runs-%d.log", pid)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // G703: the folder is the test's own t.TempDir, passed by the parent
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := remote.Open(ctx, os.Getenv(mpURLEnv), &remote.Config{Project: mpProject, WorkerSecret: os.Getenv(mpSecret), Logger: log})
	if err != nil {
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
	var mu sync.Mutex
	w.Handle("mp", kiln.HandlerFunc(func(ctx context.Context, tk *kiln.Task) error {
		t := time.NewTimer(mpWork) // the task's work
		defer t.Stop()
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(f, "%s %d %d\n", tk.ID, tk.Attempt, pid) // one write per line: nothing buffered in the process
		return err
	}))
	return w.Run(ctx)
}

// netSetup gives each worker a network namespace when the machine allows
// it: a bridge on the host with the server's address, and one veth pair per
// namespace. It returns the address for the server to listen on and, per
// worker, the command prefix that runs a program in its namespace.
func netSetup(t *testing.T, workers int) (listen string, prefix [][]string) {
	t.Helper()
	loopback := func(why string) (string, [][]string) {
		t.Logf("workers on loopback, not in network namespaces: %s", why)
		return "127.0.0.1:0", make([][]string, workers)
	}
	if os.Geteuid() != 0 {
		return loopback("not root")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return loopback("no ip command (iproute2)")
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	subnet := fmt.Sprintf("10.%d.%d", 200+int(b[0])%50, b[1])
	bridge := "kbr" + tag
	var cleanup []func()
	undo := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	ip := func(args ...string) error {
		out, err := exec.Command(ipPath, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	steps := func() error {
		if err := ip("link", "add", bridge, "type", "bridge"); err != nil {
			return err
		}
		cleanup = append(cleanup, func() { _ = ip("link", "del", bridge) })
		if err := ip("addr", "add", subnet+".1/24", "dev", bridge); err != nil {
			return err
		}
		if err := ip("link", "set", bridge, "up"); err != nil {
			return err
		}
		for i := range workers {
			ns := fmt.Sprintf("kiln-%s-%d", tag, i)
			host, peer := fmt.Sprintf("kv%s%da", tag, i), fmt.Sprintf("kv%s%db", tag, i)
			if err := ip("netns", "add", ns); err != nil {
				return err
			}
			cleanup = append(cleanup, func() { _ = ip("netns", "del", ns) })
			if err := ip("link", "add", host, "type", "veth", "peer", "name", peer); err != nil {
				return err
			}
			cleanup = append(cleanup, func() { _ = ip("link", "del", host) })
			for _, args := range [][]string{
				{"link", "set", peer, "netns", ns},
				{"link", "set", host, "master", bridge},
				{"link", "set", host, "up"},
				{"netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("%s.%d/24", subnet, i+2), "dev", peer},
				{"netns", "exec", ns, "ip", "link", "set", peer, "up"},
				{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
			} {
				if err := ip(args...); err != nil {
					return err
				}
			}
			prefix = append(prefix, []string{ipPath, "netns", "exec", ns})
		}
		return nil
	}
	if err := steps(); err != nil {
		undo()
		return loopback(err.Error())
	}
	t.Cleanup(undo)
	t.Logf("workers in %d network namespaces, server on bridge %s at %s.1", workers, bridge, subnet)
	return subnet + ".1:0", prefix
}

// proc is a child process of the test.
type proc struct {
	cmd  *exec.Cmd
	done chan error
}

func startProc(t *testing.T, prefix []string, env ...string) *proc {
	t.Helper()
	argv := append(append([]string{}, prefix...), os.Args[0], "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p
}

// stop sends sig and waits for the process to end.
func (p *proc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	_ = p.cmd.Process.Signal(sig) // it may have ended already
	select {
	case err := <-p.done:
		return err
	case <-time.After(waitLimit):
		_ = p.cmd.Process.Kill()
		if err := <-p.done; err != nil {
			return fmt.Errorf("pid %d did not stop within %s after %v; killed: %w", p.cmd.Process.Pid, waitLimit, sig, err)
		}
		return fmt.Errorf("pid %d did not stop within %s after %v", p.cmd.Process.Pid, waitLimit, sig)
	}
}

// TestMultiProcess: a server process, three remote worker processes (in
// their own network namespaces where the machine allows), 10,000 tasks, one
// worker killed with SIGKILL every two seconds and restarted. Every task
// must succeed, and every task that ran more than once must have run in a
// process that was killed before its last run.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test: skipped with -short")
	}
	const workers = 3
	dir := t.TempDir()
	listen, prefixes := netSetup(t, workers)

	srv := startProc(t, nil, roleEnv+"=server", mpDirEnv+"="+dir, mpAddrEnv+"="+listen)
	defer func() {
		if err := srv.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	addr := waitForFile(t, filepath.Join(dir, "addr"), srv)
	url := "http://" + addr

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
	reqs := make([]kiln.TaskRequest, mpTasks)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "mp", Options: kiln.TaskOptions{MaxRetries: 100}}
	}
	if _, err := client.EnqueueMany(t.Context(), reqs); err != nil {
		t.Fatalf("EnqueueMany: %v", err)
	}

	// The workers, and the killer: every two seconds one worker, in turn,
	// gets SIGKILL and a successor.
	killed := map[int]bool{}
	procs := make([]*proc, workers)
	startWorker := func(i int) {
		procs[i] = startProc(t, prefixes[i], roleEnv+"=worker", mpDirEnv+"="+dir, mpURLEnv+"="+url, mpSecret+"="+ws.WorkerSecret)
	}
	for i := range procs {
		startWorker(i)
	}
	defer func() {
		for i, p := range procs {
			if err := p.stop(t, syscall.SIGTERM); err != nil {
				t.Errorf("worker %d (pid %d): %v", i, p.cmd.Process.Pid, err)
			}
		}
	}()
	kill := time.NewTicker(2 * time.Second)
	defer kill.Stop()
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	deadline := time.After(75 * time.Second)
	next := 0
	for done := false; !done; {
		select {
		case <-deadline:
			t.Fatalf("not every task succeeded within 75 s (%d kills)", len(killed))
		case <-kill.C:
			p := procs[next]
			pid := p.cmd.Process.Pid
			if err := p.stop(t, syscall.SIGKILL); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("worker %d (pid %d) ended before its kill: %v", next, pid, err)
			}
			killed[pid] = true
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

	// Every task succeeded.
	var all []*store.Task
	for p := (store.ListParams{Namespace: mpProject, Limit: store.MaxListLimit}); ; {
		res, err := cs.List(t.Context(), p)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		all = append(all, res.Tasks...)
		if res.NextCursor == "" {
			break
		}
		p.Cursor = res.NextCursor
	}
	if len(all) != mpTasks {
		t.Fatalf("List: %d tasks, want %d", len(all), mpTasks)
	}
	for _, tk := range all {
		if tk.State != store.StateSucceeded {
			t.Errorf("task %s: state %s after %d attempts (%s), want succeeded", tk.ID, tk.State, tk.Attempt, tk.LastError)
		}
	}

	// Every run is in the logs; a task that ran more than once did so
	// because a process that ran it before was killed.
	runs := readRuns(t, dir)
	dups, explained := 0, 0
	for _, tk := range all {
		rs := runs[tk.ID]
		if len(rs) == 0 {
			t.Errorf("task %s succeeded but no worker logged a run", tk.ID)
			continue
		}
		if len(rs) == 1 {
			continue
		}
		dups++
		ok := true
		for _, r := range rs[:len(rs)-1] {
			if !killed[r.pid] {
				ok = false
			}
		}
		if !ok {
			t.Errorf("task %s ran %d times (%v) and not every earlier run's process was killed (killed: %v)", tk.ID, len(rs), rs, killed)
			continue
		}
		explained++
	}
	if len(runs) != mpTasks {
		t.Errorf("logs name %d tasks, want %d", len(runs), mpTasks)
	}
	retried := 0
	for _, tk := range all {
		if tk.Attempt > 1 {
			retried++
		}
	}
	t.Logf("%d tasks, %d kills, %d tasks leased again after a kill, %d ran to the end more than once, all explained by a kill: %v", mpTasks, len(killed), retried, dups, dups == explained)
	if len(killed) < 2 || retried == 0 {
		t.Errorf("the kills hit nothing (%d kills, %d tasks leased again): the test tested nothing", len(killed), retried)
	}
}

type run struct {
	attempt, pid int
}

// readRuns reads every worker's log: task id -> runs, in attempt order.
func readRuns(t *testing.T, dir string) map[string][]run {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "runs-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]run{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) != 3 {
				continue // the torn last line of a killed process cannot happen with one write per line, but be lenient
			}
			attempt, err1 := strconv.Atoi(fs[1])
			pid, err2 := strconv.Atoi(fs[2])
			if err := errors.Join(err1, err2); err != nil {
				t.Fatalf("%s: %q: %v", name, sc.Text(), err)
			}
			out[fs[0]] = append(out[fs[0]], run{attempt, pid})
		}
		_ = f.Close()
	}
	for _, rs := range out {
		slices.SortFunc(rs, func(a, b run) int { return a.attempt - b.attempt })
	}
	return out
}

// waitForFile polls for a file the server writes when it listens, and
// returns its content.
func waitForFile(t *testing.T, path string, p *proc) string {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitLimit)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		select {
		case err := <-p.done:
			t.Fatalf("server ended before listening: %v", err)
		case <-deadline:
			t.Fatalf("server did not listen within %s", waitLimit)
		case <-tick.C:
		}
	}
}
