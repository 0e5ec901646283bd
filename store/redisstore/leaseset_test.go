package redisstore

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// TestLeaseSetSkiplist: the lease set T:l is a skiplist from the first
// lease on, also when an earlier release made it a listpack, and its
// sentinel is never taken for a lease: a sweep long after every lease has
// ended recovers nothing, the tasks' outcomes are recorded, Get shows each
// active task's own lease expiry, and the set keeps the sentinel alone.
func TestLeaseSetSkiplist(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	c := redis.NewClient(must(redis.ParseURL(url)))
	t.Cleanup(func() { _ = c.Close() })
	for _, earlier := range []bool{false, true} {
		t.Run(fmt.Sprintf("earlier=%v", earlier), func(t *testing.T) {
			t.Parallel()
			clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			ctx := t.Context()
			prefix := newPrefix()
			s := mustOpen(t, url, &Config{Prefix: prefix, Clock: clock})
			defer func() { _ = s.Close() }()
			lkey := "{" + prefix + ":n}:l"
			if earlier {
				// A lease set as an earlier release left it: a listpack
				// holding a lease of a task that is not there any more, due
				// in a year.
				far := float64(clock.Now().Add(365 * 24 * time.Hour).UnixMicro())
				if err := c.ZAdd(ctx, lkey, redis.Z{Score: far, Member: "old"}).Err(); err != nil {
					t.Fatal(err)
				}
				if enc := must(c.ObjectEncoding(ctx, lkey).Result()); enc != "listpack" {
					t.Fatalf("the earlier release's lease set is a %s, want listpack", enc)
				}
			}
			tasks := make([]store.TaskInput, 3)
			for i := range tasks {
				tasks[i] = store.TaskInput{ID: fmt.Sprintf("t%d", i), Type: "noop"}
			}
			if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: tasks}); err != nil {
				t.Fatal(err)
			}
			res, err := s.Lease(ctx, store.LeaseParams{Namespace: "n", Queues: []string{store.DefaultQueue}, Max: 3, Duration: time.Minute, WorkerID: "w"})
			if err != nil || len(res.Tasks) != 3 {
				t.Fatalf("lease: %d tasks, %v; want 3", len(res.Tasks), err)
			}
			if enc := must(c.ObjectEncoding(ctx, lkey).Result()); enc != "skiplist" {
				t.Errorf("after a lease, the lease set is a %s, want skiplist", enc)
			}
			if sc, err := c.ZScore(ctx, lkey, leaseSetSentinel).Result(); err != nil || !math.IsInf(sc, 1) {
				t.Errorf("the sentinel's score = %v, %v; want +inf", sc, err)
			}
			for _, tk := range res.Tasks {
				g, err := s.Get(ctx, store.GetParams{Namespace: "n", IDs: []string{tk.ID}})
				if err != nil || len(g.Tasks) != 1 || g.Tasks[0].State != store.StateActive || !g.Tasks[0].LeaseExpiresAt.Equal(tk.LeaseExpiresAt) {
					t.Errorf("Get(%s) = %+v, %v; want active until %v", tk.ID, g.Tasks, err, tk.LeaseExpiresAt)
				}
			}
			outs := make([]store.Outcome, len(res.Tasks))
			for i, tk := range res.Tasks {
				outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
			}
			rep, err := s.Report(ctx, store.ReportParams{Namespace: "n", Outcomes: outs})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range rep.Errs {
				if e != nil {
					t.Errorf("report of %s: %v", outs[i].ID, e)
				}
			}
			// Two years on: every lease but the sentinel would be due.
			clock.Advance(2 * 365 * 24 * time.Hour)
			sw, err := s.Sweep(ctx, store.SweepParams{})
			if err != nil {
				t.Fatal(err)
			}
			if sw.Recovered+sw.Dead+sw.Cancelled != 0 {
				t.Errorf("sweep took %d leases for expired, want 0: %+v", sw.Recovered+sw.Dead+sw.Cancelled, sw)
			}
			members := must(c.ZRange(ctx, lkey, 0, -1).Result())
			if len(members) != 1 || members[0] != leaseSetSentinel {
				t.Errorf("lease set after the sweep = %q, want the sentinel alone", members)
			}
			if enc := must(c.ObjectEncoding(ctx, lkey).Result()); enc != "skiplist" {
				t.Errorf("after the sweep, the lease set is a %s, want skiplist", enc)
			}
		})
	}
}
