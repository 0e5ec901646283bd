package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The interoperability tests with node-resque (npm package node-resque,
// the version pinned by testdata/node/package-lock.json). The first test
// that needs it installs it into testdata/node/node_modules with `npm ci`;
// without node and npm, or without the npm registry, the tests skip (and fail
// under KILN_TEST_REQUIRE_ALL=1).

const nodeDir = "testdata/node"

var (
	nodeOnce sync.Once
	nodeErr  string // why node-resque is not usable, "" when it is
)

// nodeReady installs node-resque once per test binary, or skips.
func nodeReady(t *testing.T) {
	t.Helper()
	nodeOnce.Do(func() {
		for _, tool := range []string{"node", "npm"} {
			if _, err := exec.LookPath(tool); err != nil {
				nodeErr = tool + " is not installed (node-resque interop needs node and npm)"
				return
			}
		}
		if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "node-resque", "package.json")); err == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = nodeDir
		if out, err := cmd.CombinedOutput(); err != nil {
			nodeErr = fmt.Sprintf("npm ci in %s (installs node-resque from the npm registry): %v\n%s", nodeDir, err, out)
		}
	})
	if nodeErr != "" {
		ipMissing(t, nodeErr)
	}
}

// nodeConfig is interop.js' configuration.
type nodeConfig struct {
	Host      string   `json:"host"`
	Port      int      `json:"port"`
	DB        int      `json:"db"`
	Password  string   `json:"-"` // in the environment, not on the command line
	Namespace string   `json:"namespace"`
	Queues    []string `json:"queues,omitempty"`
	Count     int      `json:"count,omitempty"`
	Jobs      [][]any  `json:"jobs,omitempty"`
}

// newNodeConfig returns interop.js' configuration for the test Redis and
// the kiln namespace ns: node-resque's namespace option is ns without its
// trailing colon (node-resque joins the parts of a key with ":").
func newNodeConfig(t *testing.T, ns string) nodeConfig {
	t.Helper()
	o, err := redis.ParseURL(ipRedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	host, port, ok := strings.Cut(o.Addr, ":")
	if !ok {
		t.Fatalf("KILN_TEST_REDIS_URL: address %q has no port", o.Addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return nodeConfig{Host: host, Port: p, DB: o.DB, Password: o.Password, Namespace: strings.TrimSuffix(ns, ":")}
}

// runNode runs interop.js in mode and decodes its JSON line into out.
func runNode(t *testing.T, mode string, cfg nodeConfig, out any) {
	t.Helper()
	cmd, stdout, stderr := startNode(t, mode, cfg)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node interop.js %s: %v\nstderr:\n%s\nstdout:\n%s", mode, err, stderr, stdout)
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), out); err != nil {
		t.Fatalf("node interop.js %s: output %q: %v\nstderr:\n%s", mode, stdout, err, stderr)
	}
}

// startNode starts interop.js in mode; the caller waits for it.
func startNode(t *testing.T, mode string, cfg nodeConfig) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "interop.js", mode, string(arg))
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "KILN_INTEROP_REDIS_PASSWORD="+cfg.Password)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &stdout, &stderr
}

// nodeRun is what interop.js' work and schedule modes print.
type nodeRun struct {
	Ran []struct {
		Queue string `json:"queue"`
		Args  []any  `json:"args"`
	} `json:"ran"`
	Failed []json.RawMessage `json:"failed"`
}

// interopArgs are job arguments that tell encodings apart: HTML characters,
// line separators, non-ASCII, nesting, numbers and null.
func interopArgs(i int) []any {
	return []any{i, "<&> \u2028\u2029 é ü \\ \"", map[string]any{"list": []any{1.5, true, nil}, "n": i}}
}

// TestNodeWorkerRunsKilnJobs: a node-resque worker runs the jobs kiln's
// Client enqueues, with the arguments kiln gave.
func TestNodeWorkerRunsKilnJobs(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		if err := c.Enqueue(ctx, []string{"na", "nb"}[i%2], "Echo", interopArgs(i)...); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newNodeConfig(t, ns)
	cfg.Queues, cfg.Count = []string{"na", "nb"}, n
	var got nodeRun
	runNode(t, "work", cfg, &got)
	checkNodeRan(t, got, n, func(i int) string { return []string{"na", "nb"}[i%2] })
}

// checkNodeRan checks that node-resque ran each of n Echo jobs with
// interopArgs(i) exactly once, on queueOf(i).
func checkNodeRan(t *testing.T, got nodeRun, n int, queueOf func(int) string) {
	t.Helper()
	if len(got.Failed) > 0 {
		t.Errorf("node-resque failed jobs: %s", got.Failed)
	}
	if len(got.Ran) != n {
		t.Fatalf("node-resque ran %d jobs, want %d", len(got.Ran), n)
	}
	seen := make(map[int]bool)
	for _, r := range got.Ran {
		if len(r.Args) != 3 {
			t.Fatalf("job ran with args %v", r.Args)
		}
		f, _ := r.Args[0].(float64)
		i := int(f)
		want := interopArgs(i)
		want[0] = float64(i)
		want[2].(map[string]any)["n"] = float64(i)
		if !reflect.DeepEqual(r.Args, want) {
			t.Errorf("job %d ran with args %#v, want %#v", i, r.Args, want)
		}
		if r.Queue != queueOf(i) {
			t.Errorf("job %d ran on %q, want %q", i, r.Queue, queueOf(i))
		}
		if seen[i] {
			t.Errorf("job %d ran twice", i)
		}
		seen[i] = true
	}
}

// TestNodeSchedulerMovesKilnDelayedJobs: jobs delayed with kiln's EnqueueAt
// are moved to their queue by node-resque's scheduler and run by its worker.
func TestNodeSchedulerMovesKilnDelayedJobs(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	// The client's clock is an hour behind: the jobs are delayed (they go
	// into the schedule), and node-resque's scheduler finds them due.
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns, NowFunc: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if err := c.EnqueueAt(ctx, time.Now().Add(-time.Duration(i%4)*time.Second), "nd", "Echo", interopArgs(i)...); err != nil {
			t.Fatal(err)
		}
	}
	if got := rdb.ZCard(ctx, ns+"delayed_queue_schedule").Val(); got == 0 {
		t.Fatal("EnqueueAt wrote no schedule")
	}
	cfg := newNodeConfig(t, ns)
	cfg.Queues, cfg.Count = []string{"nd"}, n
	var got nodeRun
	runNode(t, "schedule", cfg, &got)
	checkNodeRan(t, got, n, func(int) string { return "nd" })
	// node-resque's scheduler left nothing of the schedule behind: the
	// timestamps: keys it removed are named by kiln's exact item bytes.
	ipEventually(t, "node-resque's scheduler removes the schedule", func() bool {
		return rdb.Exists(ctx, ns+"delayed_queue_schedule").Val() == 0
	})
	for _, pat := range []string{"delayed:*", "timestamps:*"} {
		if keys := rdb.Keys(ctx, ipGlobEscape(ns)+pat).Val(); len(keys) != 0 {
			t.Errorf("keys left behind: %q", keys)
		}
	}
}

// TestKilnSchedulerMovesNodeDelayedJobs: jobs node-resque delays with
// queue.enqueueAt are moved by kiln's Scheduler (in Resque's queue format)
// and then run by node-resque's worker.
func TestKilnSchedulerMovesNodeDelayedJobs(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	const n = 20
	cfg := newNodeConfig(t, ns)
	for i := range n {
		// Due up to 3 s ago: node-resque writes the delayed layout anyway.
		cfg.Jobs = append(cfg.Jobs, []any{"nk", "Echo", interopArgs(i), -1000 * (i % 4)})
	}
	var enq struct{ Enqueued int }
	runNode(t, "enqueue", cfg, &enq)
	if enq.Enqueued != n {
		t.Fatalf("node enqueued %d, want %d", enq.Enqueued, n)
	}
	if got := rdb.ZCard(ctx, ns+"delayed_queue_schedule").Val(); got == 0 {
		t.Fatal("node-resque wrote no schedule")
	}
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var moved int
	ipEventually(t, "kiln's scheduler moves every job", func() bool {
		m, err := s.MoveDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		moved += m
		return moved == n
	})
	jobs := rdb.LRange(ctx, ns+"queue:nk", 0, -1).Val()
	if len(jobs) != n {
		t.Fatalf("queue:nk has %d jobs, want %d", len(jobs), n)
	}
	for _, j := range jobs {
		if !strings.HasPrefix(j, `{"class":"Echo","args":[`) || strings.Contains(j, `"queue"`) {
			t.Errorf("moved job %s is not in Resque's queue format", j)
		}
	}
	for _, pat := range []string{"delayed*", "timestamps:*"} {
		if keys := rdb.Keys(ctx, ipGlobEscape(ns)+pat).Val(); len(keys) != 0 {
			t.Errorf("keys left behind: %q", keys)
		}
	}
	cfg.Jobs, cfg.Queues, cfg.Count = nil, []string{"nk"}, n
	var got nodeRun
	runNode(t, "work", cfg, &got)
	checkNodeRan(t, got, n, func(int) string { return "nk" })
}
