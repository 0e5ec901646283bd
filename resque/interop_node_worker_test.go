package resque

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Interoperability of kiln's worker (Work) with node-resque: kiln runs what
// node-resque enqueues and delays, and node-resque's failure API reads,
// removes and retries the failed records kiln writes.

// workOnce runs Work over queues until they are empty (ExitOnComplete).
func workOnce(t *testing.T, rdb *redis.Client, ns string, reg *Registry, queues ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ipWait)
	defer cancel()
	err := Work(ctx, Config{
		Redis: rdb, Namespace: ns, Registry: reg, Queues: queues, Concurrency: 4,
		ExitOnComplete: true, Interval: 100 * time.Millisecond, Hostname: "interophost",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("Work: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Work did not finish the queues within %s", ipWait)
	}
}

// echoRecorder registers Echo in a new registry and records its calls.
type echoRecorder struct {
	mu    sync.Mutex
	calls []echoCall
}

type echoCall struct {
	queue string
	args  []any
}

func newEcho() (*Registry, *echoRecorder) {
	reg := NewRegistry()
	e := &echoRecorder{}
	reg.Register("Echo", func(queue string, args ...any) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.calls = append(e.calls, echoCall{queue, args})
		return nil
	})
	return reg, e
}

// checkRan checks that Echo ran each of n jobs with interopArgs(i) exactly
// once, on queueOf(i).
func (e *echoRecorder) checkRan(t *testing.T, n int, queueOf func(int) string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.calls) != n {
		t.Fatalf("kiln ran %d Echo jobs, want %d", len(e.calls), n)
	}
	seen := make(map[int]bool)
	for _, c := range e.calls {
		f, _ := c.args[0].(float64)
		i := int(f)
		want := interopArgs(i)
		want[0] = float64(i)
		want[2].(map[string]any)["n"] = float64(i)
		if !reflect.DeepEqual(c.args, want) {
			t.Errorf("job %d ran with %#v, want %#v", i, c.args, want)
		}
		if c.queue != queueOf(i) {
			t.Errorf("job %d ran on %q, want %q", i, c.queue, queueOf(i))
		}
		if seen[i] {
			t.Errorf("job %d ran twice", i)
		}
		seen[i] = true
	}
}

// TestKilnRunsNodeJobs: kiln's worker runs the jobs node-resque enqueues
// (its format has an extra "queue" field) and, after kiln's scheduler moved
// them, the jobs it delays with enqueueAt.
func TestKilnRunsNodeJobs(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	const n = 30
	cfg := newNodeConfig(t, ns)
	queueOf := func(i int) string { return []string{"ka", "kb", "kc"}[i%3] }
	for i := range n {
		var delay any // nil: enqueue now
		if i%3 == 2 {
			delay = -1000 // already due, but node-resque still writes the delayed layout
		}
		cfg.Jobs = append(cfg.Jobs, []any{queueOf(i), "Echo", interopArgs(i), delay})
	}
	var enq struct{ Enqueued int }
	runNode(t, "enqueue", cfg, &enq)
	if got := rdb.LRange(ctx, ns+"queue:ka", 0, 0).Val(); len(got) != 1 || !strings.Contains(got[0], `"queue":"ka"`) {
		t.Fatalf("node-resque's job %q lacks its queue field: is this node-resque's format?", got)
	}
	s, err := NewScheduler(rdb, &SchedulerConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if moved, err := s.MoveDue(ctx); err != nil || moved != n/3 {
		t.Fatalf("MoveDue = %d, %v; want %d", moved, err, n/3)
	}
	reg, echo := newEcho()
	workOnce(t, rdb, ns, reg, "ka", "kb", "kc")
	echo.checkRan(t, n, queueOf)
	if got := rdb.Get(ctx, ns+"stat:processed").Val(); got != fmt.Sprint(n) {
		t.Errorf("stat:processed = %q, want %d", got, n)
	}
}

// nodeFailed is a failed record as node-resque's queue.failed() returns it.
type nodeFailed struct {
	Worker  string `json:"worker"`
	Queue   string `json:"queue"`
	Payload struct {
		Class string `json:"class"`
		Args  []any  `json:"args"`
	} `json:"payload"`
	Exception string   `json:"exception"`
	Error     string   `json:"error"`
	Backtrace []string `json:"backtrace"`
	FailedAt  string   `json:"failed_at"`
}

// failingJobs makes kiln's worker fail n jobs (Fail) whose errors and args
// hold characters that encoders treat differently, and returns the
// registry, in which Fail succeeds once allow is called.
func failingJobs(t *testing.T, rdb *redis.Client, ns string, n int) (*Registry, func()) {
	t.Helper()
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := c.Enqueue(context.Background(), "kf", "Fail", i, "<&> é \\ \" \u2029"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	allowed := false
	reg := NewRegistry()
	reg.Register("Fail", func(_ string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		if allowed {
			return nil
		}
		return fmt.Errorf("job %v failed: <&> é \\ \" \t\u2028", args[0])
	})
	return reg, func() {
		mu.Lock()
		allowed = true
		mu.Unlock()
	}
}

// TestNodeReadsKilnFailures: node-resque's queue.failed() parses the failed
// records kiln writes, and queue.removeFailed removes each of them (it
// finds a record by its exact JSON.stringify bytes).
func TestNodeReadsKilnFailures(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	const n = 5
	reg, _ := failingJobs(t, rdb, ns, n)
	workOnce(t, rdb, ns, reg, "kf")
	if got := rdb.LLen(context.Background(), ns+"failed").Val(); got != n {
		t.Fatalf("kiln wrote %d failed records, want %d", got, n)
	}

	cfg := newNodeConfig(t, ns)
	var got struct{ Failed []nodeFailed }
	runNode(t, "failed", cfg, &got)
	if len(got.Failed) != n {
		t.Fatalf("node-resque lists %d failed jobs, want %d", len(got.Failed), n)
	}
	for _, f := range got.Failed {
		i, _ := f.Payload.Args[0].(float64)
		wantErr := fmt.Sprintf("job %v failed: <&> é \\ \" \t\u2028", i)
		if f.Queue != "kf" || f.Payload.Class != "Fail" || len(f.Payload.Args) != 2 || f.Payload.Args[1] != "<&> é \\ \" \u2029" ||
			f.Exception != ExceptionError || f.Error != wantErr || !strings.HasPrefix(f.Worker, "interophost:") || !rubyFailedAt.MatchString(f.FailedAt) {
			t.Errorf("node-resque reads the failed record as %+v", f)
		}
	}

	var removed struct {
		Removed []int
		Left    int
	}
	runNode(t, "remove-failed", cfg, &removed)
	if !reflect.DeepEqual(removed.Removed, []int{1, 1, 1, 1, 1}) || removed.Left != 0 {
		t.Errorf("node-resque's removeFailed: removed %v, %d left; want each removed, none left", removed.Removed, removed.Left)
	}
}

// TestNodeRetriesKilnFailures: node-resque's retryAndRemoveFailed removes
// kiln's failed records and enqueues their jobs again, and kiln runs them.
func TestNodeRetriesKilnFailures(t *testing.T) {
	t.Parallel()
	nodeReady(t)
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	const n = 3
	reg, allow := failingJobs(t, rdb, ns, n)
	workOnce(t, rdb, ns, reg, "kf")
	var retried struct{ Retried, Left int }
	runNode(t, "retry-failed", newNodeConfig(t, ns), &retried)
	if retried.Retried != n || retried.Left != 0 {
		t.Fatalf("node-resque retried %d, left %d; want %d and 0", retried.Retried, retried.Left, n)
	}
	if got := rdb.LLen(ctx, ns+"queue:kf").Val(); got != n {
		t.Fatalf("queue:kf has %d jobs after the retry, want %d", got, n)
	}
	allow()
	workOnce(t, rdb, ns, reg, "kf")
	if got := rdb.Get(ctx, ns+"stat:processed").Val(); got != fmt.Sprint(n) {
		t.Errorf("stat:processed = %q after the retried jobs ran, want %d", got, n)
	}
	if got := rdb.LLen(ctx, ns+"failed").Val(); got != 0 {
		t.Errorf("failed has %d records, want 0", got)
	}
}
