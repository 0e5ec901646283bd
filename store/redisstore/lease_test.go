package redisstore

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// giveUpHook plays a Redis client that stops waiting for a reply once its
// context ends (as one with ContextTimeoutEnabled does): once armed, it
// ends the caller's context when the lease script's reply arrives, and
// then fails the command with the context's error if that context ended.
type giveUpHook struct {
	armed  atomic.Bool
	cancel context.CancelFunc
}

func (h *giveUpHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *giveUpHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if err == nil && h.armed.Load() && cmd.Name() == "evalsha" && len(args) > 1 && args[1] == leaseScript.Hash() {
			h.cancel()
			return ctx.Err()
		}
		return err
	}
}

func (h *giveUpHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// hookedClient returns a client of the test Redis with hook added, closed
// when the test ends.
func hookedClient(t *testing.T, hook redis.Hook) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(hook)
	return rdb
}

// TestLeaseReplyNotDropped: a Lease whose context ends while the lease
// script's reply is on its way returns the tasks the script leased instead
// of dropping them (they would stay active, their attempt counted, until
// their lease expired).
func TestLeaseReplyNotDropped(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	hook := &giveUpHook{cancel: cancel}
	rdb := hookedClient(t, hook)
	s, err := New(t.Context(), rdb, &Config{Prefix: newPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "n", Tasks: []store.TaskInput{{ID: "a", Type: "t", Queue: "q"}}}); err != nil {
		t.Fatal(err)
	}
	hook.armed.Store(true)
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: "n", Queues: []string{"q"}, Max: 1, Duration: time.Hour, Wait: time.Second})
	hook.armed.Store(false)
	if ctx.Err() == nil {
		t.Fatal("the hook did not end the context")
	}
	if err != nil || len(res.Tasks) != 1 || res.Tasks[0].ID != "a" {
		got, gerr := s.Get(t.Context(), store.GetParams{Namespace: "n", IDs: []string{"a"}})
		if gerr != nil {
			t.Fatal(gerr)
		}
		t.Fatalf("Lease whose context ended as the script's reply came = %d tasks, %v; the task is now %v attempt %d",
			len(res.Tasks), err, got.Tasks[0].State, got.Tasks[0].Attempt)
	}
}

// TestLeaseIdleEndsEarly: a lease that can find nothing (no queue asked for
// has ready tasks, nothing scheduled is due) ends after two reads, before
// the script makes its helpers; one that finds a ready task, or a due one,
// runs whole and leases it.
func TestLeaseIdleEndsEarly(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
	lease := func(ns string) ([]*store.Task, []string) {
		t.Helper()
		mon := startMonitor(t, opts.Addr)
		r, err := s.Lease(t.Context(), store.LeaseParams{Namespace: ns, Queues: []string{"q", "r"}, Max: 10, Duration: time.Minute, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, args := range mon.stop(t, c, "end-"+ns) {
			names = append(names, strings.ToUpper(args[0]))
		}
		return r.Tasks, names
	}
	enqueue := func(ns string, in store.TaskInput) {
		t.Helper()
		if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{in}}); err != nil {
			t.Fatal(err)
		}
	}
	idle := []string{"TIME", "EXISTS", "EXISTS", "ZRANGE"}

	if tasks, cmds := lease("empty"); len(tasks) != 0 || !slices.Equal(cmds, idle) {
		t.Errorf("lease of an empty namespace: %d tasks, commands %v; want none, %v", len(tasks), cmds, idle)
	}
	enqueue("later", store.TaskInput{ID: "l", Type: "t", Queue: "r", RunAt: time.Now().Add(time.Hour)})
	if tasks, cmds := lease("later"); len(tasks) != 0 || !slices.Equal(cmds, idle) {
		t.Errorf("lease with a task due in an hour: %d tasks, commands %v; want none, %v", len(tasks), cmds, idle)
	}
	enqueue("ready", store.TaskInput{ID: "a", Type: "t", Queue: "r"})
	if tasks, cmds := lease("ready"); len(tasks) != 1 || tasks[0].ID != "a" || !slices.Contains(cmds, "HSET") {
		t.Errorf("lease with a ready task: %d tasks, commands %v; want task a, leased", len(tasks), cmds)
	}
	enqueue("due", store.TaskInput{ID: "d", Type: "t", Queue: "q", RunAt: time.Now().Add(50 * time.Millisecond)})
	time.Sleep(100 * time.Millisecond) // until it is due: the store's clock is Redis'
	if tasks, _ := lease("due"); len(tasks) != 1 || tasks[0].ID != "d" {
		t.Errorf("lease with a task due: %d tasks; want task d, promoted and leased", len(tasks))
	}
}
