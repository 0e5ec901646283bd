package redisstore

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// lostReplyHook makes the first reply of the script (by default the
// enqueue script) that follows armed.Store(true) time out on the client's
// side, after Redis has run the script: the reply of a command that did
// reach Redis is lost, as under a network stall longer than the read
// timeout.
type lostReplyHook struct {
	armed  atomic.Bool
	script atomic.Pointer[redis.Script] // nil: the enqueue script
}

func (h *lostReplyHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &lostReplyConn{Conn: c, h: h}, nil
	}
}

func (h *lostReplyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *lostReplyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

type lostReplyConn struct {
	net.Conn
	h     *lostReplyHook
	stall bool // the last write was the enqueue script, while armed
}

func (c *lostReplyConn) Write(b []byte) (int, error) {
	sc := c.h.script.Load()
	if sc == nil {
		sc = enqueueScript
	}
	c.stall = c.h.armed.Load() && bytes.Contains(b, []byte(sc.Hash()))
	return c.Conn.Write(b)
}

func (c *lostReplyConn) Read(b []byte) (int, error) {
	if c.stall && c.h.armed.CompareAndSwap(true, false) {
		// Let the script run before its reply is "lost": read the whole
		// reply (a few bytes here) and drop it.
		if _, err := c.Conn.Read(make([]byte, 64<<10)); err != nil {
			return 0, err
		}
		return 0, replyTimeoutError{}
	}
	return c.Conn.Read(b)
}

// replyTimeoutError is the error of a read whose deadline passed.
type replyTimeoutError struct{}

func (replyTimeoutError) Error() string   { return "read: i/o timeout (test)" }
func (replyTimeoutError) Timeout() bool   { return true }
func (replyTimeoutError) Temporary() bool { return true }

// TestLostReplyNotResent: the store does not let go-redis resend a script
// whose reply was lost, whatever max_retries says (go-redis' own default is
// 3). Resent, an enqueue finds its own tasks and fails with ErrTaskExists
// (and a lease leases a second batch while the first waits for expiry and
// loses an attempt); not resent, the call fails with ErrUnavailable and the
// task is there once.
func TestLostReplyNotResent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, query string }{
		{"default", ""},
		{"max_retries=3", "max_retries=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			u := testenv.RedisURL(t)
			if tc.query != "" {
				sep := "?"
				if bytes.ContainsRune([]byte(u), '?') {
					sep = "&"
				}
				u += sep + tc.query
			}
			rdb, err := connect(u)
			if err != nil {
				t.Fatal(err)
			}
			h := &lostReplyHook{}
			rdb.AddHook(h)
			enqueueLostReply(t, rdb, h)
		})
	}
}

// enqueueLostReply opens a store on rdb, whose connections h wraps, and
// enqueues a task whose reply h makes time out: the call must fail with
// ErrUnavailable (not ErrTaskExists, as a resent script would), and the task
// must be there once (the script ran).
func enqueueLostReply(t *testing.T, rdb redis.UniversalClient, h *lostReplyHook) (*Store, store.TaskInput) {
	t.Helper()
	s, err := newStore(t.Context(), rdb, &Config{Prefix: newPrefix()}, true)
	if err != nil {
		_ = rdb.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	h.armed.Store(true)
	in := store.TaskInput{ID: "t-lost-reply", Type: "t", Queue: "default"}
	res, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{in}})
	if err == nil && len(res.Items) == 1 {
		err = res.Items[0].Err // a batch reports each task's own error
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("enqueue with a lost reply: %v, want %v (the script must not be sent again)", err, store.ErrUnavailable)
	}
	if h.armed.Load() {
		t.Fatal("the hook never saw the enqueue script: the test tested nothing")
	}
	got, err := s.Get(t.Context(), store.GetParams{Namespace: "ns", IDs: []string{in.ID}})
	if err != nil || len(got.Tasks) != 1 || got.Tasks[0] == nil {
		t.Fatalf("the script ran, so the task must be there: %+v, %v", got, err)
	}
	return s, in
}

// TestLostReplyNotResentCluster: on a Redis Cluster too, a script whose
// reply was lost is not sent again. go-redis' cluster client resends a
// command whose reply timed out or whose connection broke (up to
// MaxRedirects times, whatever MaxRetries says), so a resent enqueue
// found its own tasks (ErrTaskExists) and a resent lease leased a second
// batch (the task's first attempt was lost with its lease, the call
// returned nothing).
func TestLostReplyNotResentCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster: skipped with -short")
	}
	testenv.RedisURL(t)
	t.Parallel()
	rdb, err := connect(startCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &lostReplyHook{}
	rdb.(*redis.ClusterClient).OnNewNode(func(c *redis.Client) { c.AddHook(h) })
	s, in := enqueueLostReply(t, rdb, h)

	h.script.Store(leaseScript)
	h.armed.Store(true)
	lp := store.LeaseParams{Namespace: "ns", Queues: []string{"default"}, Max: 1, Duration: time.Minute, WorkerID: "w"}
	if lr, err := s.Lease(t.Context(), lp); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("lease with a lost reply on a cluster: %d tasks, %v; want %v (the script must not be sent again)", len(lr.Tasks), err, store.ErrUnavailable)
	}
	if h.armed.Load() {
		t.Fatal("the hook never saw the lease script")
	}
	got, err := s.Get(t.Context(), store.GetParams{Namespace: "ns", IDs: []string{in.ID}})
	if err != nil || len(got.Tasks) != 1 || got.Tasks[0] == nil {
		t.Fatalf("Get after the lease: %+v, %v", got, err)
	}
	if tk := got.Tasks[0]; tk.State != store.StateActive || tk.Attempt != 1 {
		t.Errorf("after one lease whose reply was lost: state %s, attempt %d; want active, 1 (leased once)", tk.State, tk.Attempt)
	}

	// The masters forget the scripts: the next call loads them on the
	// cluster and runs.
	cc := rdb.(*redis.ClusterClient)
	if err := cc.ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	in.ID = "t-after-flush"
	if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{in}}); err != nil {
		t.Fatalf("enqueue on a cluster after SCRIPT FLUSH: %v", err)
	}
}

// TestScriptsReloaded: after the server forgot the scripts (a restart
// without persistence, SCRIPT FLUSH), the next calls load them and run:
// NOSCRIPT says a script did not run, so sending it again is safe.
func TestScriptsReloaded(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	c := redis.NewClient(must(redis.ParseURL(url)))
	defer func() { _ = c.Close() }()
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	scriptsLost(t, c)
	in := store.TaskInput{ID: "t-reloaded", Type: "t", Queue: "default"}
	if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{in}}); err != nil {
		t.Fatalf("enqueue after SCRIPT FLUSH: %v", err)
	}
	scriptsLost(t, c)
	lr, err := s.Lease(t.Context(), store.LeaseParams{Namespace: "ns", Queues: []string{"default"}, Max: 1, Duration: time.Minute, WorkerID: "w"})
	if err != nil || len(lr.Tasks) != 1 || lr.Tasks[0].ID != in.ID {
		t.Fatalf("lease after SCRIPT FLUSH: %+v, %v; want the task", lr.Tasks, err)
	}
	scriptsLost(t, c)
	if _, err := s.Report(t.Context(), store.ReportParams{Namespace: "ns", Outcomes: []store.Outcome{{ID: in.ID, LeaseID: lr.Tasks[0].LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
		t.Fatalf("report after SCRIPT FLUSH: %v", err)
	}
	got, err := s.Get(t.Context(), store.GetParams{Namespace: "ns", IDs: []string{in.ID}})
	if err != nil || len(got.Tasks) != 1 || got.Tasks[0] == nil || got.Tasks[0].State != store.StateSucceeded || got.Tasks[0].Attempt != 1 {
		t.Fatalf("after enqueue, lease and report, each after SCRIPT FLUSH: %+v, %v; want succeeded at attempt 1", got.Tasks, err)
	}
}

// scriptsLost empties the server's script cache.
func scriptsLost(t *testing.T, c *redis.Client) {
	t.Helper()
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
}
