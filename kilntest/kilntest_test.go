package kilntest_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

// The server answers at URL; the admin token reaches every project through
// Remote; the registered worker is known; a second remote worker joins with
// the worker secret and leases what the admin enqueued.
func TestStartServer(t *testing.T) {
	t.Parallel()
	s := kilntest.StartServer(t, nil)
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") || s.Project != "default" || s.AdminToken == "" || s.Token == "" ||
		s.WorkerID == "" || s.WorkerSecret == "" {
		t.Fatalf("server = %+v", s)
	}
	admin := s.Remote(t)
	c, err := kiln.NewClient(admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Enqueue(t.Context(), "ping", []byte(`"x"`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := s.WorkerStore(t)
	if ws.WorkerID() == "" || ws.WorkerID() == s.WorkerID {
		t.Errorf("second worker id %q (first %q)", ws.WorkerID(), s.WorkerID)
	}
	w, err := kiln.NewWorker(ws, &kiln.WorkerConfig{Namespace: s.Project, LeaseWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("ping", kiln.FuncCtx(func(_ context.Context, s string) (string, error) { return s + "!", nil }))
	kilntest.Drain(t, w, admin, s.Project)
	var got string
	if err := res.Get(t.Context(), &got); err != nil || got != "x!" {
		t.Fatalf("result %q, %v", got, err)
	}
	if !strings.Contains(s.Logs(), `"msg":"serving"`) {
		t.Errorf("the server's log has no start line:\n%s", s.Logs())
	}
}

// A fake clock given to the server's store decides when a delayed task is
// due.
func TestFakeClock(t *testing.T) {
	t.Parallel()
	clock := kilntest.NewFakeClock(time.Time{})
	if !clock.Now().Equal(kilntest.Epoch) {
		t.Fatalf("clock starts at %v", clock.Now())
	}
	st := kilntest.Embedded(t, &kilntest.StoreOptions{Clock: clock})
	res, err := st.Enqueue(t.Context(), store.EnqueueParams{Namespace: store.DefaultNamespace,
		Tasks: []store.TaskInput{{ID: "t1", Type: "later", Queue: "default", RunAt: clock.Now().Add(time.Hour)}}})
	if err != nil {
		t.Fatal(err)
	}
	lease := func() int {
		r, err := st.Lease(t.Context(), store.LeaseParams{Namespace: store.DefaultNamespace, WorkerID: "w",
			Queues: []string{"default"}, Types: []string{"later"}, Max: 1, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Tasks)
	}
	if n := lease(); n != 0 {
		t.Fatalf("leased %d tasks before the delay passed", n)
	}
	clock.Advance(time.Hour)
	if n := lease(); n != 1 {
		t.Fatalf("leased %d tasks after the delay, want 1 (%+v)", n, res)
	}
}

// Drain waits for a task that retries, and returns once it is done.
func TestDrainWaitsForRetries(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	c, err := kiln.NewClient(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Enqueue(t.Context(), "flaky", nil, &kiln.TaskOptions{MaxRetries: new(3)})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kiln.NewWorker(st, &kiln.WorkerConfig{LeaseWait: 20 * time.Millisecond,
		RetryDelayFunc: func(int, error, *kiln.Task) time.Duration { return 10 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	w.Handle("flaky", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}))
	kilntest.Drain(t, w, st, "")
	if st, err := res.State(t.Context()); err != nil || st != kiln.StateSucceeded || calls.Load() != 3 {
		t.Fatalf("state %v, %v after %d calls; want succeeded after 3", st, err, calls.Load())
	}
}

// Two Redis stores do not see each other's tasks, and a test's keys are
// gone when it ends.
func TestRedisStoresApart(t *testing.T) {
	t.Parallel()
	u := kilntest.RedisURL(t)
	inner := &cleanupTB{TB: t}
	prefix := kilntest.RedisPrefix(inner, u)
	a := kilntest.RedisAt(inner, u, prefix, nil)
	b := kilntest.Redis(inner, nil)
	if _, err := a.Enqueue(t.Context(), store.EnqueueParams{Namespace: "default",
		Tasks: []store.TaskInput{{ID: "t1", Type: "x", Queue: "default"}}}); err != nil {
		t.Fatal(err)
	}
	res, err := b.Stats(t.Context(), store.StatsParams{Namespace: "default"})
	if err != nil || len(res.Queues) != 0 {
		t.Fatalf("the other store's stats: %+v, %v", res, err)
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	defer func() { _ = rc.Close() }()
	keys := func() []string {
		var all []string
		for _, pattern := range []string{prefix + "*", "{" + prefix + "*"} {
			k, err := rc.Keys(t.Context(), pattern).Result()
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, k...)
		}
		return all
	}
	if len(keys()) == 0 {
		t.Fatal("no keys under the prefix after an enqueue: the check below would prove nothing")
	}
	inner.end()
	if k := keys(); len(k) != 0 {
		t.Errorf("keys left after the test: %v", k)
	}
}

// cleanupTB runs its cleanups when told to (end), not when the test ends.
type cleanupTB struct {
	testing.TB
	fns []func()
}

func (c *cleanupTB) Cleanup(f func()) { c.fns = append(c.fns, f) }

func (c *cleanupTB) end() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}
