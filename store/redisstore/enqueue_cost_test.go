package redisstore

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// TestEnqueueCommands: the Redis commands an Enqueue costs, scripts' own
// included, on a Redis of the test's own (INFO commandstats counts nothing
// else). The id check is one EXISTS per task, which looks at the task
// record and at a flow's held task of the same id together; a single
// enqueue is one round trip (one EVALSHA). While the change feed is read,
// it is one feed entry (one XADD), a batch one entry per changeEntryBytes
// of changes; while it is not, one XADD and one XDEL whatever the batch
// (the id the call takes, see changes.go).
func TestEnqueueCommands(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	ctx := t.Context()
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	c := redis.NewClient(must(redis.ParseURL(url)))
	defer func() { _ = c.Close() }()
	// A first call registers the namespace.
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: []store.TaskInput{{ID: "first", Type: "a"}}}); err != nil {
		t.Fatal(err)
	}
	for _, read := range []bool{false, true} {
		if read {
			if _, err := s.Changes(ctx, store.ChangesParams{Namespace: "n"}); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range []int{1, 100, 1000} {
			if err := c.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			tasks := make([]store.TaskInput, n)
			for i := range tasks {
				tasks[i] = store.TaskInput{ID: fmt.Sprintf("t%v%d-%d", read, n, i), Type: "a"}
			}
			res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: tasks})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range res.Items {
				if it.Err != nil {
					t.Fatal(it.Err)
				}
			}
			calls := commandCalls(t, c)
			var total int64
			for _, v := range calls {
				total += v
			}
			t.Logf("enqueue of %d tasks, feed read %v: %d commands: %v", n, read, total, calls)
			// One EXISTS per task (its record and held task), one per call
			// for the ids reserved by flows being written in parts (T:rvq),
			// and one for whether the feed is read (T:evw).
			if calls["evalsha"] != 1 || calls["exists"] != int64(n+2) {
				t.Errorf("enqueue of %d tasks: evalsha %d, exists %d; want 1 and %d", n, calls["evalsha"], calls["exists"], n+2)
			}
			if !read {
				if calls["xadd"] != 1 || calls["xdel"] != 1 {
					t.Errorf("enqueue of %d tasks, feed not read: xadd %d, xdel %d; want 1 and 1", n, calls["xadd"], calls["xdel"])
				}
				continue
			}
			// Each change is about 30 bytes here (ids of 6-9 bytes).
			if maxEntries := int64(n*30/changeEntryBytes + 1); calls["xadd"] < 1 || calls["xadd"] > maxEntries || calls["xdel"] != 0 {
				t.Errorf("enqueue of %d tasks, feed read: xadd %d, xdel %d; want 1 to %d and 0", n, calls["xadd"], calls["xdel"], maxEntries)
			}
		}
	}
}
