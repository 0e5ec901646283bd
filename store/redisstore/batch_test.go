package redisstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// holdSlots takes every enqueue slot of the default namespace, so that the
// next Enqueue calls wait in a shared call; the returned func frees them.
func holdSlots(s *Store) func() {
	g := s.group(store.DefaultNamespace)
	for range enqueueInflight {
		g.slots <- struct{}{}
	}
	return func() {
		for range enqueueInflight {
			<-g.slots
		}
	}
}

func enqueueOne(ctx context.Context, s *Store, id string) (store.EnqueueItem, error) {
	res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: store.DefaultNamespace, Tasks: []store.TaskInput{{ID: id, Type: "t"}}})
	if err != nil {
		return store.EnqueueItem{}, err
	}
	return res.Items[0], nil
}

// TestSharedEnqueue: callers that wait for a slot share one script call
// and each gets its own result; a caller whose context ends while it
// waits alone withdraws its task, and one whose call others joined ends
// at once while the call still goes for the others.
func TestSharedEnqueue(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()

	// Alone and cancelled: nothing is sent.
	free := holdSlots(s)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := enqueueOne(cctx, s, "withdrawn")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue waiting for a slot past its deadline: %v; want %v", err, context.DeadlineExceeded)
	}
	free()
	if got, err := s.Get(ctx, store.GetParams{Namespace: store.DefaultNamespace, IDs: []string{"withdrawn"}}); err != nil || got.Tasks[0] != nil {
		t.Fatalf("Get(withdrawn) = %+v, %v; want no task", got, err)
	}

	// A leader whose context ends, and callers that joined it (one of
	// them with the id of another: ErrTaskExists).
	free = holdSlots(s)
	lctx, lcancel := context.WithCancel(ctx)
	leaderErr := make(chan error, 1)
	go func() {
		_, err := enqueueOne(lctx, s, "leader")
		leaderErr <- err
	}()
	g := s.group(store.DefaultNamespace)
	for { // wait until the leader's call is pending
		s.groupMu.Lock()
		p := g.pending
		s.groupMu.Unlock()
		if p != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ids := []string{"j1", "j2", "j1"}
	items := make([]store.EnqueueItem, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { items[i], errs[i] = enqueueOne(ctx, s, id) })
	}
	for { // wait until all three joined
		s.groupMu.Lock()
		n := g.pending.n
		s.groupMu.Unlock()
		if n == 4 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	lcancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: %v; want %v", err, context.Canceled)
	}
	free()
	wg.Wait()
	exists := 0
	for i, it := range items {
		switch {
		case errs[i] != nil:
			t.Errorf("joined Enqueue(%s): %v", ids[i], errs[i])
		case errors.Is(it.Err, store.ErrTaskExists):
			exists++
		case it.Err != nil || it.ID != ids[i] || it.State != store.StatePending:
			t.Errorf("joined Enqueue(%s) = %+v; want it pending", ids[i], it)
		}
	}
	if exists != 1 {
		t.Errorf("%d of the two calls with id j1 got ErrTaskExists; want 1", exists)
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: store.DefaultNamespace, IDs: []string{"j1", "j2"}})
	if err != nil || got.Tasks[0] == nil || got.Tasks[1] == nil {
		t.Fatalf("Get(j1, j2) = %+v, %v; want both", got, err)
	}
}
