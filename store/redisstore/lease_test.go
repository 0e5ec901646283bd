package redisstore

import (
	"context"
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
