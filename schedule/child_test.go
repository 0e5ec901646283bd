package schedule_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// Environment of a scheduler child process (see TestExactlyOnceOnRedis).
const (
	envChild  = "KILN_SCHEDULE_CHILD"  // the child's name
	envPrefix = "KILN_SCHEDULE_PREFIX" // the store's key prefix
	envLog    = "KILN_SCHEDULE_LOG"    // file the child appends its enqueues to
)

// childMain runs a scheduler child process instead of the tests when the
// environment asks for one, and reports whether it did.
func childMain() bool {
	name := os.Getenv(envChild)
	if name == "" {
		return false
	}
	if err := runChild(name); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	return true
}

// loggingStore appends "task-id child result" to a file for every task
// it is asked to enqueue, before the store answers.
type loggingStore struct {
	*redisstore.Store
	name string
	mu   sync.Mutex
	f    *os.File
}

func (s *loggingStore) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	res, err := s.Store.Enqueue(ctx, p)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, in := range p.Tasks {
		result := "error"
		if err == nil {
			result = "ok"
			if res.Items[i].Err != nil {
				result = strings.ReplaceAll(res.Items[i].Err.Error(), " ", "_")
			}
		}
		if _, werr := fmt.Fprintf(s.f, "%s %s %s\n", in.ID, s.name, result); werr != nil {
			return res, werr
		}
	}
	return res, err
}

// runChild runs a Scheduler on the Redis store until SIGTERM.
func runChild(name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rs, err := redisstore.Open(ctx, os.Getenv(testenv.RedisEnv), &redisstore.Config{Prefix: os.Getenv(envPrefix)})
	if err != nil {
		return err
	}
	defer func() { _ = rs.Close() }()
	//nolint:gosec // G703: the path is a file in the parent test's t.TempDir(), passed by the parent
	f, err := os.OpenFile(os.Getenv(envLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	s, err := schedule.New(&loggingStore{Store: rs, name: name, f: f}, &schedule.Config{InstanceID: name, RescanInterval: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	fmt.Println("ready")
	err = <-errc
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := s.Shutdown(sctx); err == nil {
		err = serr
	}
	return err
}

// purge deletes every key of prefix (never FLUSHDB).
func purge(url, prefix string) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pat := range []string{"{" + prefix + ":*", prefix + ":*", prefix + "*"} {
		iter := c.Scan(ctx, 0, pat, 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
	}
}

// TestExactlyOnceOnRedis runs three Schedulers in three processes on one
// Redis store: a schedule every second for six runs is enqueued once per
// run time, by exactly one Enqueue call of one process, and no run time is
// missed.
func TestExactlyOnceOnRedis(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	prefix := "kst-" + hex.EncodeToString(rb[:])
	t.Cleanup(func() { purge(url, prefix) })
	st, err := redisstore.Open(t.Context(), url, &redisstore.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "enqueues")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var children []*exec.Cmd
	ready := make(chan string, 3)
	for i := range 3 {
		name := fmt.Sprintf("child-%d", i)
		cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envChild+"="+name, envPrefix+"="+prefix, envLog+"="+logPath)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children = append(children, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready <- name
				}
			}
		}()
	}
	defer func() {
		for _, c := range children {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range children {
			if err := c.Wait(); err != nil {
				t.Errorf("child: %v", err)
			}
		}
	}()
	for range 3 {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal("the children did not start")
		}
	}
	// The parent only creates the schedule; the children fire it.
	admin, err := schedule.New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
	const runs = 6
	if _, err := admin.Create(ctx, &schedule.Schedule{ID: "mp", Task: schedule.Task{Type: "tick"}, Every: "1s", StartAt: start, MaxRuns: runs}); err != nil {
		t.Fatal(err)
	}
	var got *schedule.Schedule
	for got == nil || got.Status == schedule.StatusActive {
		select {
		case <-ctx.Done():
			t.Fatalf("the schedule is not done after 60 s: %+v", got)
		case <-time.After(100 * time.Millisecond): // a bounded poll
		}
		if got, err = admin.Get(ctx, "default", "mp"); err != nil {
			t.Fatal(err)
		}
	}
	if got.Status != schedule.StatusDone || got.RunCount != runs || got.MissedRuns != 0 {
		t.Errorf("schedule %+v, want done after %d runs, none missed", got, runs)
	}
	var want []string
	for i := range runs {
		want = append(want, schedule.TaskID("mp", start.Add(time.Duration(i)*time.Second)))
	}
	slices.Sort(want)
	res, err := st.List(ctx, store.ListParams{Namespace: "default", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range res.Tasks {
		ids = append(ids, tk.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, want) {
		t.Errorf("tasks %v, want %v", ids, want)
	}
	// Each run time was enqueued by one call of one child: the claim, not
	// the store's duplicate check, kept the others off.
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string][]string{}
	by := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("log line %q", line)
		}
		calls[f[0]] = append(calls[f[0]], f[1]+":"+f[2])
		by[f[1]]++
	}
	for _, id := range want {
		if c := calls[id]; len(c) != 1 || !strings.HasSuffix(c[0], ":ok") {
			t.Errorf("task %s: enqueue calls %v, want one that succeeded", id, c)
		}
	}
	if len(calls) != runs {
		t.Errorf("enqueue calls for %d task ids, want %d: %v", len(calls), runs, calls)
	}
	t.Logf("runs enqueued per child: %v", by)
}
