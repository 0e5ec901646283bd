package redisstore

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// storeAndClient opens a Store on the test Redis and a plain client of
// the same Redis, both closed when t ends.
func storeAndClient(t *testing.T, cfg *Config) (*Store, *redis.Client) {
	t.Helper()
	url := testenv.RedisURL(t)
	s := mustOpen(t, url, cfg)
	t.Cleanup(func() { _ = s.Close() })
	c := redis.NewClient(must(redis.ParseURL(url)))
	t.Cleanup(func() { _ = c.Close() })
	return s, c
}

// TestExpiryFieldsNotWritten: a lease writes no lease expiry (le) into the
// task's record, nor does Extend, and a report or a cancel no expiry (ea):
// they are the task's scores in T:l and T:x. Get still reports both,
// LeaseExpiresAt from T:l and ExpiresAt as FinishedAt plus the task's
// retention (or the default), equal to the T:x score.
func TestExpiryFieldsNotWritten(t *testing.T) {
	t.Parallel()
	s, c := storeAndClient(t, &Config{Prefix: newPrefix()})
	ctx := t.Context()
	const ns = "n"
	tag := s.tag(ns)
	in := []store.TaskInput{
		{ID: "plain", Type: "t"},
		{ID: "kept", Type: "t", Retention: 2 * time.Hour},
		{ID: "cut", Type: "t", Retention: time.Hour + 1500*time.Nanosecond},
		{ID: "dropped", Type: "t"},
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 3, Duration: time.Hour, WorkerID: "w"})
	if err != nil || len(res.Tasks) != 3 {
		t.Fatalf("Lease = %d tasks, %v; want 3", len(res.Tasks), err)
	}
	noField := func(id, field string) {
		t.Helper()
		if ok, err := c.HExists(ctx, tag+":t:"+id, field).Result(); err != nil || ok {
			t.Errorf("task %s: field %s in its record (%v), want none", id, field, err)
		}
	}
	get := func(id string) *store.Task {
		t.Helper()
		g, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{id}})
		if err != nil || g.Tasks[0] == nil {
			t.Fatalf("Get(%s) = %v, %v", id, g.Tasks, err)
		}
		return g.Tasks[0]
	}
	score := func(key, id string) time.Time {
		t.Helper()
		us, err := c.ZScore(ctx, tag+key, id).Result()
		if err != nil {
			t.Fatalf("ZSCORE %s %s: %v", key, id, err)
		}
		return time.UnixMicro(int64(us)).UTC()
	}
	for _, tk := range res.Tasks {
		noField(tk.ID, "le")
		got := get(tk.ID)
		if !got.LeaseExpiresAt.Equal(tk.LeaseExpiresAt) || !got.LeaseExpiresAt.Equal(score(":l", tk.ID)) {
			t.Errorf("task %s: Get's LeaseExpiresAt %v, want the lease's %v, its score in T:l", tk.ID, got.LeaseExpiresAt, tk.LeaseExpiresAt)
		}
	}
	ext, err := s.Extend(ctx, store.ExtendParams{Namespace: ns, Duration: 2 * time.Hour, Leases: []store.ExtendLease{
		{LeaseRef: store.LeaseRef{ID: res.Tasks[0].ID, LeaseID: res.Tasks[0].LeaseID}, Progress: &store.Progress{Percent: 50}},
		{LeaseRef: store.LeaseRef{ID: res.Tasks[1].ID, LeaseID: res.Tasks[1].LeaseID}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range ext.Items {
		id := res.Tasks[i].ID
		noField(id, "le")
		if got := get(id); it.Err != nil || !got.LeaseExpiresAt.Equal(it.ExpiresAt) || !it.ExpiresAt.After(res.Tasks[i].LeaseExpiresAt) {
			t.Errorf("task %s: extended to %v (%v), Get's LeaseExpiresAt %v", id, it.ExpiresAt, it.Err, got.LeaseExpiresAt)
		}
	}
	outs := make([]store.Outcome, len(res.Tasks))
	for i, tk := range res.Tasks {
		outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
	}
	if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs}); err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report = %v, %v", rep, err)
	}
	if _, err := s.Cancel(ctx, store.IDsParams{Namespace: ns, IDs: []string{"dropped"}}); err != nil {
		t.Fatal(err)
	}
	// plain, of the default retention, is in the report's group (T:xg,
	// named by its lease id, the first of the call's); the others, and
	// dropped, which Cancel ended, in T:x.
	plain := strconv.FormatUint(res.Tasks[0].LeaseID, 10)
	for id, keep := range map[string]time.Duration{"plain": store.RetentionDefault, "kept": 2 * time.Hour, "cut": time.Hour + time.Microsecond, "dropped": store.RetentionDefault} {
		noField(id, "ea")
		got := get(id)
		if !got.State.Terminal() || got.LeaseExpiresAt != (time.Time{}) {
			t.Errorf("task %s: state %s, LeaseExpiresAt %v; want terminal, none", id, got.State, got.LeaseExpiresAt)
		}
		key, member := ":x", id
		if id == "plain" {
			key, member = ":xg", plain
		}
		if want := got.FinishedAt.Add(keep); !got.ExpiresAt.Equal(want) || !got.ExpiresAt.Equal(score(key, member)) {
			t.Errorf("task %s: ExpiresAt %v, want FinishedAt+%s = %v, its score in T%s %v", id, got.ExpiresAt, keep, want, key, score(key, member))
		}
	}
	if ids, err := c.HGet(ctx, tag+":xgi", plain).Result(); err != nil || ids != "plain" {
		t.Errorf("group %s: %q, %v; want [plain]", plain, ids, err)
	}
}

// TestExpiryFieldsOfEarlierRelease: records written by an earlier release
// hold le and ea; Get reports those.
func TestExpiryFieldsOfEarlierRelease(t *testing.T) {
	t.Parallel()
	s, c := storeAndClient(t, &Config{Prefix: newPrefix()})
	ctx := t.Context()
	const ns = "n"
	key := s.tag(ns) + ":t:a"
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "a", Type: "t"}}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Hour, WorkerID: "w"})
	if err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %d tasks, %v", len(res.Tasks), err)
	}
	le := time.UnixMicro(1_900_000_000_000_000).UTC()
	c.HSet(ctx, key, "le", le.UnixMicro())
	if g, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"a"}}); err != nil || !g.Tasks[0].LeaseExpiresAt.Equal(le) {
		t.Fatalf("Get = %+v, %v; want LeaseExpiresAt %v from field le", g.Tasks[0], err, le)
	}
	tk := res.Tasks[0]
	if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: "a", LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report = %v, %v", rep, err)
	}
	c.HSet(ctx, key, "ea", le.UnixMicro())
	if g, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"a"}}); err != nil || !g.Tasks[0].ExpiresAt.Equal(le) || !g.Tasks[0].LeaseExpiresAt.IsZero() {
		t.Fatalf("Get = %+v, %v; want ExpiresAt %v from field ea, no LeaseExpiresAt", g.Tasks[0], err, le)
	}
}

// TestLeaseExpiryWithoutZScore: a Redis user granted what an earlier
// release needed (no ZSCORE) still reads active tasks, without their
// LeaseExpiresAt.
func TestLeaseExpiryWithoutZScore(t *testing.T) {
	t.Parallel()
	prefix := newPrefix()
	s := mustOpen(t, aclUser(t, testenv.RedisURL(t), prefix, "ZSCORE"), &Config{Prefix: prefix})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: []store.TaskInput{{ID: "a", Type: "t"}}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: "n", Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Hour, WorkerID: "w"})
	if err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %d tasks, %v", len(res.Tasks), err)
	}
	g, err := s.Get(ctx, store.GetParams{Namespace: "n", IDs: []string{"a"}})
	if err != nil || g.Tasks[0] == nil || g.Tasks[0].State != store.StateActive || !g.Tasks[0].LeaseExpiresAt.IsZero() {
		t.Fatalf("Get = %+v, %v; want the active task without LeaseExpiresAt", g.Tasks, err)
	}
}

// TestExpiryGroups: the tasks of the default retention one report call
// ends expire as one group (T:xg). Sweep deletes them when it falls due, at
// most Limit at a time, the rest of the group kept for the next call; a
// task that left its group (retried: pending again, or ended again since
// with a later expiry; or deleted) is not deleted with it.
func TestExpiryGroups(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s, c := storeAndClient(t, &Config{Prefix: newPrefix(), Clock: clock})
	const ns = "n"
	tag := s.tag(ns)
	// run leases every pending task and reports them, dead for the ids in
	// dead, succeeded for the others, in one call.
	run := func(dead ...string) {
		t.Helper()
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 100, Duration: time.Minute, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, tk := range res.Tasks {
			outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
			if slices.Contains(dead, tk.ID) {
				outs[i].Kind, outs[i].Error = store.OutcomeDead, "no"
			}
		}
		if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs}); err != nil || slices.ContainsFunc(rep.Errs, func(e error) bool { return e != nil }) {
			t.Fatalf("Report = %v, %v", rep, err)
		}
	}
	var in []store.TaskInput
	for i := range 10 {
		in = append(in, store.TaskInput{ID: fmt.Sprintf("t%d", i), Type: "x"})
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
		t.Fatal(err)
	}
	run("t0", "t1")
	if n := must(c.ZCard(ctx, tag+":xg").Result()); n != 1 {
		t.Fatalf("groups after one report: %d, want 1", n)
	}
	if n, _ := c.Exists(ctx, tag+":x").Result(); n != 0 {
		t.Fatalf("T:x exists after a report of default-retention tasks only")
	}
	// t0 is retried and stays pending; t1 is retried and ends again an
	// hour later, in a group of its own; t2 is deleted.
	if _, err := s.Retry(ctx, store.IDsParams{Namespace: ns, IDs: []string{"t0", "t1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, store.IDsParams{Namespace: ns, IDs: []string{"t2"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Minute, WorkerID: "w"})
	if err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %v, %v", res.Tasks, err)
	}
	again := res.Tasks[0].ID // t0 or t1, whichever came first; the other stays pending
	if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: again, LeaseID: res.Tasks[0].LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report = %v, %v", rep, err)
	}
	pending := "t0"
	if again == "t0" {
		pending = "t1"
	}
	clock.Advance(store.RetentionDefault - time.Hour + time.Millisecond) // the first group is due
	states := func() map[string]store.State {
		t.Helper()
		var ids []string
		for _, tk := range in {
			ids = append(ids, tk.ID)
		}
		g, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]store.State{}
		for i, tk := range g.Tasks {
			if tk != nil {
				out[ids[i]] = tk.State
			}
		}
		return out
	}
	// The group's ids are in lease order: a sweep of 4 looks at t0, t1,
	// t2 and t3, and deletes only t3 of them.
	sw, err := s.Sweep(ctx, store.SweepParams{Limit: 4})
	if err != nil || sw.Deleted != 1 {
		t.Fatalf("Sweep(Limit 4) = %+v, %v; want 1 deleted (t3; t0, t1, t2 left the group)", sw, err)
	}
	if got := states(); len(got) != 8 || got[pending] != store.StatePending || got[again] != store.StateSucceeded || got["t3"] != 0 {
		t.Fatalf("after the first sweep: %v; want t2 and t3 gone, %s pending, %s succeeded, t4..t9 kept", got, pending, again)
	}
	sw, err = s.Sweep(ctx, store.SweepParams{})
	if err != nil || sw.Deleted != 6 {
		t.Fatalf("Sweep = %+v, %v; want the rest of the group, 6 tasks", sw, err)
	}
	if got := states(); len(got) != 2 || got[pending] != store.StatePending || got[again] != store.StateSucceeded {
		t.Fatalf("after the group: %v; want %s pending and %s succeeded only", got, pending, again)
	}
	if n := must(c.ZCard(ctx, tag+":xg").Result()); n != 1 {
		t.Fatalf("groups after the first one's sweep: %d, want 1 (%s's)", n, again)
	}
	clock.Advance(time.Hour) // the second group is due
	if sw, err := s.Sweep(ctx, store.SweepParams{}); err != nil || sw.Deleted != 1 {
		t.Fatalf("Sweep = %+v, %v; want %s deleted", sw, err, again)
	}
	if got := states(); len(got) != 1 || got[pending] != store.StatePending {
		t.Fatalf("at the end: %v; want %s pending only", got, pending)
	}
	for _, k := range []string{":xg", ":xgi"} {
		if n, _ := c.Exists(ctx, tag+k).Result(); n != 0 {
			t.Errorf("%s left after every group was swept", k)
		}
	}
}
