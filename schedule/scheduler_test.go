package schedule_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

// t0 is when every test's fake clock starts: a whole minute.
var t0 = time.Date(2031, time.March, 14, 15, 9, 0, 0, time.UTC)

type bundle struct {
	t     *testing.T
	st    *embedded.Store
	clock *storetest.FakeClock
	sch   *schedule.Scheduler
}

func setup(t *testing.T) *bundle {
	t.Helper()
	clock := storetest.NewFakeClock(t0)
	st, err := embedded.Open(t.TempDir(), &embedded.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := &bundle{t: t, st: st, clock: clock}
	b.sch = b.scheduler("main")
	return b
}

func (b *bundle) scheduler(name string) *schedule.Scheduler {
	b.t.Helper()
	s, err := schedule.New(b.st, &schedule.Config{Clock: b.clock, InstanceID: name})
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

func (b *bundle) create(s schedule.Schedule) *schedule.Schedule {
	b.t.Helper()
	out, err := b.sch.Create(context.Background(), &s)
	if err != nil {
		b.t.Fatalf("Create: %v", err)
	}
	return out
}

func (b *bundle) get(id string) *schedule.Schedule {
	b.t.Helper()
	s, err := b.sch.Get(context.Background(), store.DefaultNamespace, id)
	if err != nil {
		b.t.Fatal(err)
	}
	return s
}

func (b *bundle) fire(s *schedule.Scheduler) int {
	b.t.Helper()
	n, err := s.FireDue(context.Background())
	if err != nil {
		b.t.Fatalf("FireDue: %v", err)
	}
	return n
}

// taskIDs returns the ids of every task of namespace ns, sorted.
func (b *bundle) taskIDs(ns string) []string {
	b.t.Helper()
	var out []string
	p := store.ListParams{Namespace: ns, Limit: store.MaxListLimit}
	for {
		res, err := b.st.List(context.Background(), p)
		if err != nil {
			b.t.Fatal(err)
		}
		for _, t := range res.Tasks {
			out = append(out, t.ID)
		}
		if res.NextCursor == "" {
			break
		}
		p.Cursor = res.NextCursor
	}
	slices.Sort(out)
	return out
}

// metaKeys returns the meta keys of ns with prefix.
func (b *bundle) metaKeys(ns, prefix string) []string {
	b.t.Helper()
	res, err := b.st.MetaList(context.Background(), store.MetaListParams{Namespace: ns, Prefix: prefix})
	if err != nil {
		b.t.Fatal(err)
	}
	var out []string
	for _, it := range res.Items {
		out = append(out, it.Key)
	}
	return out
}

func wantIDs(id string, times ...time.Time) []string {
	var out []string
	for _, t := range times {
		out = append(out, schedule.TaskID(id, t))
	}
	slices.Sort(out)
	return out
}

func TestIntervalScheduleFires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.create(schedule.Schedule{ID: "tick", Task: schedule.Task{Type: "tick", Payload: []byte(`{"n":1}`), Options: kiln.TaskOptions{Queue: "q", Priority: 3}}, Every: "10s", MaxRuns: 3})
	if s.Status != schedule.StatusActive || !s.NextStart.Equal(t0) || !s.StartAt.Equal(t0) || s.Version != 1 {
		t.Fatalf("created %+v, want active, next_start = start_at = %s", s, t0)
	}
	if n := b.fire(b.sch); n != 1 {
		t.Fatalf("fired %d at the start, want 1", n)
	}
	if n := b.fire(b.sch); n != 0 {
		t.Fatalf("fired %d again at the same time, want 0", n)
	}
	got := b.get("tick")
	if got.RunCount != 1 || !got.LastRunTime.Equal(t0) || !got.NextStart.Equal(t0.Add(10*time.Second)) || got.LastTaskID != schedule.TaskID("tick", t0) {
		t.Fatalf("after one run: %+v", got)
	}
	task, err := b.st.Get(context.Background(), store.GetParams{Namespace: "default", IDs: []string{got.LastTaskID}})
	if err != nil || task.Tasks[0] == nil {
		t.Fatalf("the run's task: %v %v", task, err)
	}
	if tk := task.Tasks[0]; tk.Type != "tick" || tk.Queue != "q" || tk.Priority != 3 || string(tk.Payload) != `{"n":1}` || tk.MaxRetries != kiln.MaxRetriesDefault {
		t.Errorf("the run's task = %+v", tk)
	}
	b.clock.Advance(9 * time.Second)
	if n := b.fire(b.sch); n != 0 {
		t.Fatalf("fired %d before the second run time", n)
	}
	for range 4 {
		b.clock.Advance(time.Second)
		b.fire(b.sch)
		b.clock.Advance(9 * time.Second)
	}
	got = b.get("tick")
	if got.RunCount != 3 || got.Status != schedule.StatusDone || !got.NextStart.IsZero() {
		t.Errorf("after max_runs: %+v, want done with 3 runs", got)
	}
	if ids, want := b.taskIDs("default"), wantIDs("tick", t0, t0.Add(10*time.Second), t0.Add(20*time.Second)); !slices.Equal(ids, want) {
		t.Errorf("tasks %v, want %v", ids, want)
	}
}

func TestCronScheduleBounds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Every 15 s from t0+20s until t0+80s: runs at :30, :45, :00, :15 (t0 is :00).
	b.create(schedule.Schedule{ID: "c", Task: schedule.Task{Type: "c"}, Cron: "*/15 * * * * *", TimeZone: "Europe/Paris",
		StartAt: t0.Add(20 * time.Second), EndAt: t0.Add(80 * time.Second)})
	for range 120 {
		b.fire(b.sch)
		b.clock.Advance(time.Second)
	}
	want := wantIDs("c", t0.Add(30*time.Second), t0.Add(45*time.Second), t0.Add(60*time.Second), t0.Add(75*time.Second))
	if ids := b.taskIDs("default"); !slices.Equal(ids, want) {
		t.Errorf("tasks %v, want %v", ids, want)
	}
	if got := b.get("c"); got.Status != schedule.StatusDone || got.RunCount != 4 {
		t.Errorf("after end_at: %+v, want done after 4 runs", got)
	}
}

func TestMissedRunsFireOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(schedule.Schedule{ID: "m", Task: schedule.Task{Type: "m"}, Every: "10s"})
	b.fire(b.sch)
	// Every scheduler is down for ten minutes.
	b.clock.Advance(10*time.Minute + 3*time.Second)
	if n := b.fire(b.sch); n != 1 {
		t.Fatalf("fired %d after the downtime, want 1", n)
	}
	got := b.get("m")
	latest := t0.Add(10 * time.Minute)
	if !got.LastRunTime.Equal(latest) || got.RunCount != 2 || got.MissedRuns != 59 || !got.NextStart.Equal(latest.Add(10*time.Second)) {
		t.Errorf("after the downtime: %+v, want the latest run %s, 59 missed", got, latest)
	}
	// Within the grace every run fires, late or not.
	b.clock.Advance(35 * time.Second)
	if n := b.fire(b.sch); n != 1 {
		t.Fatalf("fired %d", n)
	}
	for n := 1; n > 0; {
		n = b.fire(b.sch) // each call fires one late run
	}
	if got := b.get("m"); got.RunCount != 5 || got.MissedRuns != 59 {
		t.Errorf("late runs within the grace: %+v, want 5 runs", got)
	}
}

// TestExactlyOnceInProcess runs three Schedulers on one store and fires
// them together at each step of a fake clock: each run time is enqueued
// once.
func TestExactlyOnceInProcess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(schedule.Schedule{ID: "every", Task: schedule.Task{Type: "e"}, Every: "1s", MaxRuns: 40})
	b.create(schedule.Schedule{ID: "cron", Task: schedule.Task{Type: "c"}, Cron: "*/3 * * * * *"})
	b.create(schedule.Schedule{ID: "other", Namespace: "other", Task: schedule.Task{Type: "o"}, Every: "2s"})
	scheds := []*schedule.Scheduler{b.scheduler("a"), b.scheduler("b"), b.scheduler("c")}
	const steps = 180 // 250 ms each: 45 s
	total := 0
	var mu sync.Mutex
	for range steps {
		var wg sync.WaitGroup
		for _, s := range scheds {
			wg.Go(func() {
				n, err := s.FireDue(context.Background())
				if err != nil {
					t.Errorf("FireDue: %v", err)
				}
				mu.Lock()
				total += n
				mu.Unlock()
			})
		}
		wg.Wait()
		b.clock.Advance(250 * time.Millisecond)
	}
	end := t0.Add(steps * 250 * time.Millisecond)
	var every, cron, other []time.Time
	for i := range 40 {
		every = append(every, t0.Add(time.Duration(i)*time.Second))
	}
	for at := t0; at.Before(end); at = at.Add(3 * time.Second) {
		cron = append(cron, at)
	}
	for at := t0; at.Before(end); at = at.Add(2 * time.Second) {
		other = append(other, at)
	}
	want := append(wantIDs("every", every...), wantIDs("cron", cron...)...)
	slices.Sort(want)
	if got := b.taskIDs("default"); !slices.Equal(got, want) {
		t.Errorf("tasks of default: %d, want %d\n got %v\nwant %v", len(got), len(want), got, want)
	}
	if got, want := b.taskIDs("other"), wantIDs("other", other...); !slices.Equal(got, want) {
		t.Errorf("tasks of other: %v, want %v", got, want)
	}
	if n := len(every) + len(cron) + len(other); total != n {
		t.Errorf("FireDue reported %d enqueues, want %d", total, n)
	}
	for _, tc := range []struct {
		ns, id string
		runs   int
	}{{"default", "every", len(every)}, {"default", "cron", len(cron)}, {"other", "other", len(other)}} {
		s, err := b.sch.Get(context.Background(), tc.ns, tc.id)
		if err != nil || s.RunCount != int64(tc.runs) {
			t.Errorf("%s: %+v %v, want run_count %d", tc.id, s, err, tc.runs)
		}
	}
}

// TestRepairAfterCrash: an instance claimed a run and died before it
// enqueued the task; another finishes the run after RepairAfter. One that
// died after the enqueue is finished without a second task.
func TestRepairAfterCrash(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.create(schedule.Schedule{ID: "r", Task: schedule.Task{Type: "r"}, Every: "1m"})
	claimKey := fmt.Sprintf("schedule-fire/r/%020d", t0.UnixNano())
	dead, _ := json.Marshal(map[string]any{"by": "dead", "at": t0})
	if _, err := b.st.MetaPut(context.Background(), store.MetaPutParams{Namespace: "default", Key: claimKey, Value: dead, IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	if n := b.fire(b.sch); n != 0 {
		t.Fatalf("fired %d over a fresh claim of another instance", n)
	}
	b.clock.Advance(schedule.RepairAfterDefault + time.Second)
	if n := b.fire(b.sch); n != 1 {
		t.Fatalf("fired %d after RepairAfter, want 1 (the repair)", n)
	}
	if got := b.get("r"); got.RunCount != 1 || !got.LastRunTime.Equal(t0) {
		t.Errorf("after the repair: %+v", got)
	}
	// The second run: enqueued, then the instance died before it advanced
	// the schedule.
	b.clock.Set(t0.Add(time.Minute))
	at := t0.Add(time.Minute)
	if _, err := b.st.Enqueue(context.Background(), store.EnqueueParams{Namespace: "default", Tasks: []store.TaskInput{{ID: schedule.TaskID("r", at), Type: "r"}}}); err != nil {
		t.Fatal(err)
	}
	done, _ := json.Marshal(map[string]any{"by": "dead", "at": at, "enqueued": true})
	if _, err := b.st.MetaPut(context.Background(), store.MetaPutParams{Namespace: "default", Key: fmt.Sprintf("schedule-fire/r/%020d", at.UnixNano()), Value: done, IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(schedule.RepairAfterDefault + time.Second)
	if n := b.fire(b.sch); n != 0 {
		t.Fatalf("fired %d for a run that was enqueued, want 0", n)
	}
	if got := b.get("r"); got.RunCount != 2 || !got.LastRunTime.Equal(at) {
		t.Errorf("after the second repair: %+v", got)
	}
	if got, want := b.taskIDs("default"), wantIDs("r", t0, at); !slices.Equal(got, want) {
		t.Errorf("tasks %v, want %v", got, want)
	}
}

func TestCancelDeleteAndCleanup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.create(schedule.Schedule{ID: "a", Task: schedule.Task{Type: "a"}, Every: "1s"})
	b.create(schedule.Schedule{ID: "b", Task: schedule.Task{Type: "b"}, Every: "1s", MaxRuns: 1})
	b.fire(b.sch)
	s, err := b.sch.Cancel(ctx, "default", "a")
	if err != nil || s.Status != schedule.StatusCancelled || !s.NextStart.IsZero() {
		t.Fatalf("Cancel = %+v, %v", s, err)
	}
	if _, err := b.sch.Cancel(ctx, "default", "a"); err != nil {
		t.Errorf("a second Cancel: %v, want nil", err)
	}
	if _, err := b.sch.Cancel(ctx, "default", "b"); !errors.Is(err, store.ErrInvalidState) {
		t.Errorf("Cancel of a done schedule: %v, want ErrInvalidState", err)
	}
	if _, err := b.sch.Cancel(ctx, "default", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Cancel of a missing schedule: %v, want ErrNotFound", err)
	}
	b.clock.Advance(5 * time.Second)
	if n := b.fire(b.sch); n != 0 {
		t.Errorf("fired %d after cancel", n)
	}
	if err := b.sch.Delete(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.sch.Get(ctx, "default", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := b.sch.Delete(ctx, "default", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a second Delete: %v, want ErrNotFound", err)
	}
	if _, err := b.sch.Create(ctx, &schedule.Schedule{ID: "a", Task: schedule.Task{Type: "a"}, Every: "1s"}); !errors.Is(err, schedule.ErrExists) {
		t.Errorf("Create over a tombstone: %v, want ErrExists", err)
	}
	list, err := b.sch.List(ctx, "default")
	if err != nil || len(list) != 1 || list[0].ID != "b" {
		t.Errorf("List = %+v, %v; want b only", list, err)
	}
	if keys := b.metaKeys("default", "schedule-fire/"); len(keys) != 2 {
		t.Errorf("claims %v, want the two runs", keys)
	}
	// After Retain the claims and the tombstone go, and only the newest
	// version of each schedule is left.
	b.clock.Advance(2 * schedule.RetainDefault)
	b.fire(b.scheduler("fresh"))
	if keys := b.metaKeys("default", "schedule-fire/"); len(keys) != 0 {
		t.Errorf("claims after Retain: %v", keys)
	}
	if keys := b.metaKeys("default", "schedule/"); len(keys) != 1 || !strings.HasPrefix(keys[0], "schedule/b/") {
		t.Errorf("records after Retain: %v, want b's current version", keys)
	}
	if _, err := b.sch.Create(ctx, &schedule.Schedule{ID: "a", Task: schedule.Task{Type: "a"}, Every: "1s"}); err != nil {
		t.Errorf("Create after the tombstone went: %v", err)
	}
	if keys := b.metaKeys("_kiln", "schedule-ns/"); !slices.Equal(keys, []string{"schedule-ns/default"}) {
		t.Errorf("index %v", keys)
	}
}

func TestValidation(t *testing.T) { //nolint:tparallel // the rows share one scheduler and the test checks the store after them: they run in order
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ok := schedule.Schedule{Task: schedule.Task{Type: "t"}, Every: "1m"}
	for _, tc := range []struct {
		name   string
		mod    func(s *schedule.Schedule)
		field  string
		target error
	}{
		{"bad cron", func(s *schedule.Schedule) { s.Every, s.Cron = "", "* * *" }, "cron", store.ErrInvalidOption},
		{"step zero", func(s *schedule.Schedule) { s.Every, s.Cron = "", "*/0 * * * *" }, "cron", store.ErrInvalidOption},
		{"out of range", func(s *schedule.Schedule) { s.Every, s.Cron = "", "0 0 32 * *" }, "cron", store.ErrInvalidOption},
		{"never fires", func(s *schedule.Schedule) { s.Every, s.Cron = "", "0 0 30 2 *" }, "cron", store.ErrInvalidOption},
		{"never fires, 31 April", func(s *schedule.Schedule) { s.Every, s.Cron = "", "0 0 31 4 *" }, "cron", store.ErrInvalidOption},
		{"unknown zone", func(s *schedule.Schedule) { s.Every, s.Cron, s.TimeZone = "", "@daily", "Nowhere/Town" }, "time_zone", store.ErrInvalidOption},
		{"end before start", func(s *schedule.Schedule) { s.StartAt, s.EndAt = t0.Add(time.Hour), t0.Add(time.Minute) }, "end_at", store.ErrInvalidOption},
		{"end in the past", func(s *schedule.Schedule) { s.StartAt, s.EndAt = t0.Add(-time.Hour), t0.Add(-time.Minute) }, "end_at", store.ErrInvalidOption},
		{"no run before the end", func(s *schedule.Schedule) { s.Every, s.Cron, s.EndAt = "", "0 0 1 1 *", t0.Add(time.Hour) }, "end_at", store.ErrInvalidOption},
		{"negative max runs", func(s *schedule.Schedule) { s.MaxRuns = -1 }, "max_runs", store.ErrInvalidOption},
		{"interval below the minimum", func(s *schedule.Schedule) { s.Every = "500ms" }, "every", store.ErrInvalidOption},
		{"interval overflow", func(s *schedule.Schedule) { s.Every = "9223372036854775807s" }, "every", store.ErrInvalidOption},
		{"10 KB cron", func(s *schedule.Schedule) { s.Every, s.Cron = "", strings.Repeat("1", 10<<10) }, "cron", store.ErrInvalidOption},
		{"bad id", func(s *schedule.Schedule) { s.ID = "a/b" }, "id", store.ErrInvalidName},
		{"long id", func(s *schedule.Schedule) { s.ID = strings.Repeat("x", 201) }, "id", store.ErrInvalidName},
		{"bad namespace", func(s *schedule.Schedule) { s.Namespace = "a b" }, "namespace", store.ErrInvalidName},
		{"bad type", func(s *schedule.Schedule) { s.Task.Type = "" }, "type", store.ErrInvalidName},
		{"bad queue", func(s *schedule.Schedule) { s.Task.Options.Queue = "q/1" }, "queue", store.ErrInvalidName},
		{"bad priority", func(s *schedule.Schedule) { s.Task.Options.Priority = 10 }, "priority", store.ErrInvalidOption},
		{"task id", func(s *schedule.Schedule) { s.Task.Options.ID = "x" }, "task.options.id", store.ErrInvalidOption},
		{"process_at", func(s *schedule.Schedule) { s.Task.Options.ProcessAt = t0.Add(time.Hour) }, "task.options.process_at", store.ErrInvalidOption},
		{"deadline", func(s *schedule.Schedule) { s.Task.Options.Deadline = t0.Add(time.Hour) }, "task.options.deadline", store.ErrInvalidOption},
		{"payload too large", func(s *schedule.Schedule) { s.Task.Payload = make([]byte, schedule.MaxPayloadBytes+1) }, "task.payload", store.ErrPayloadTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mod(&s)
			_, err := b.sch.Create(ctx, &s)
			var ve *store.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, tc.target) || ve.Field != tc.field {
				t.Errorf("Create: %v, want a ValidationError on %s matching %v", err, tc.field, tc.target)
			}
		})
	}
	if keys := b.metaKeys("default", ""); len(keys) != 0 {
		t.Errorf("records after invalid creates: %v", keys)
	}
	if keys := b.metaKeys("_kiln", ""); len(keys) != 0 {
		t.Errorf("index after invalid creates: %v", keys)
	}
	// Several problems are reported at once.
	_, err := b.sch.Create(ctx, &schedule.Schedule{ID: "a b", Task: schedule.Task{Type: ""}, Every: "1m", MaxRuns: -2})
	for _, f := range []string{"id", "type", "max_runs"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("joined error %v does not name %s", err, f)
		}
	}
	// A duplicate id.
	b.create(schedule.Schedule{ID: "dup", Task: schedule.Task{Type: "t"}, Every: "1m"})
	if _, err := b.sch.Create(ctx, &schedule.Schedule{ID: "dup", Task: schedule.Task{Type: "t"}, Every: "1m"}); !errors.Is(err, schedule.ErrExists) {
		t.Errorf("duplicate id: %v, want ErrExists", err)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := schedule.New(b.st, &schedule.Config{MinEvery: 500 * time.Millisecond, MaxSchedules: -1, RescanInterval: -1, Namespaces: []string{"a b"}}); err == nil ||
		!strings.Contains(err.Error(), "min_every") || !strings.Contains(err.Error(), "max_schedules") || !strings.Contains(err.Error(), "rescan_interval") || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("New with a bad config: %v, want every problem", err)
	}
	s, err := schedule.New(b.st, &schedule.Config{Clock: b.clock, MaxSchedules: 2, MinEvery: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Create(ctx, &schedule.Schedule{Task: schedule.Task{Type: "t"}, Every: "30s"}); !errors.Is(err, store.ErrInvalidOption) {
		t.Errorf("30s under a 1m minimum: %v", err)
	}
	for range 2 {
		if _, err := s.Create(ctx, &schedule.Schedule{Task: schedule.Task{Type: "t"}, Every: "1m"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create(ctx, &schedule.Schedule{Task: schedule.Task{Type: "t"}, Every: "1m"}); !errors.Is(err, store.ErrInvalidOption) {
		t.Errorf("a third schedule over MaxSchedules 2: %v", err)
	}
}

// TestRunAndShutdown runs a Scheduler on the real clock until it fired
// twice, then stops it.
func TestRunAndShutdown(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	s, err := schedule.New(st, &schedule.Config{RescanInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	if _, err := s.Create(ctx, &schedule.Schedule{ID: "r", Task: schedule.Task{Type: "r"}, Every: "1s", MaxRuns: 2}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := s.Get(ctx, "default", "r")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == schedule.StatusDone {
			if got.RunCount != 2 {
				t.Errorf("done with %d runs, want 2", got.RunCount)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not done after 30 s: %+v", got)
		}
		select {
		case err := <-errc:
			t.Fatalf("Run returned %v", err)
		case <-time.After(20 * time.Millisecond): // a bounded poll
		}
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Run = %v", err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("a second Shutdown: %v", err)
	}
	if err := s.Run(ctx); err == nil {
		t.Error("Run after Shutdown returned nil")
	}
}
