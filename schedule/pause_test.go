package schedule_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

// TestPausedNeverFires: a paused schedule fires nothing, on the instance
// that paused it or on any other, however long it stays paused.
func TestPausedNeverFires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.create(schedule.Schedule{ID: "p", Task: schedule.Task{Type: "p"}, Every: "10s"})
	other := b.scheduler("other")
	b.fire(other) // other knows the schedule, active, before the pause
	p, err := b.sch.Pause(ctx, "default", "p")
	if err != nil || p.Status != schedule.StatusPaused || !p.NextStart.IsZero() || p.RunCount != 1 {
		t.Fatalf("Pause = %+v, %v; want paused, no next start, 1 run", p, err)
	}
	if again, err := b.sch.Pause(ctx, "default", "p"); err != nil || again.Version != p.Version {
		t.Errorf("a second Pause = %+v, %v; want no change", again, err)
	}
	if runs := p.NextRuns(5); runs != nil {
		t.Errorf("NextRuns of a paused schedule = %v", runs)
	}
	for range 30 {
		b.clock.Advance(10 * time.Second)
		for _, s := range []*schedule.Scheduler{b.sch, other, b.scheduler("fresh")} {
			if n := b.fire(s); n != 0 {
				t.Fatalf("a scheduler fired %d runs of a paused schedule at %s", n, b.clock.Now())
			}
		}
	}
	if got, want := b.taskIDs("default"), wantIDs("p", t0); !slices.Equal(got, want) {
		t.Errorf("tasks %v, want the run before the pause only: %v", got, want)
	}
	if got := b.get("p"); got.Status != schedule.StatusPaused || got.RunCount != 1 || got.MissedRuns != 0 {
		t.Errorf("after 5 paused minutes: %+v", got)
	}
}

// TestResumeDoesNotBackfill: a resumed schedule continues with the first
// run time from now on; the run times that passed while it was paused
// are neither made nor counted as missed.
func TestResumeDoesNotBackfill(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.create(schedule.Schedule{ID: "r", Task: schedule.Task{Type: "r"}, Every: "10s", MaxRuns: 3})
	b.fire(b.sch)
	if _, err := b.sch.Pause(ctx, "default", "r"); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(95 * time.Second)
	r, err := b.sch.Resume(ctx, "default", "r")
	want := t0.Add(100 * time.Second) // the interval's grid from start_at, first from now on
	if err != nil || r.Status != schedule.StatusActive || !r.NextStart.Equal(want) || r.RunCount != 1 || r.MissedRuns != 0 {
		t.Fatalf("Resume = %+v, %v; want active, next %s", r, err, want)
	}
	if runs := r.NextRuns(5); !slices.Equal(runs, []time.Time{want, want.Add(10 * time.Second)}) {
		t.Errorf("NextRuns = %v, want the two runs max_runs leaves", runs)
	}
	if again, err := b.sch.Resume(ctx, "default", "r"); err != nil || again.Version != r.Version {
		t.Errorf("a second Resume = %+v, %v; want no change", again, err)
	}
	if n := b.fire(b.sch); n != 0 {
		t.Fatalf("fired %d right after the resume: the paused runs were made up", n)
	}
	b.clock.Set(want)
	if n := b.fire(b.scheduler("other")); n != 1 {
		t.Fatalf("fired %d at the first run after the resume, want 1", n)
	}
	b.clock.Advance(10 * time.Second)
	b.fire(b.sch)
	if got, wantT := b.taskIDs("default"), wantIDs("r", t0, want, want.Add(10*time.Second)); !slices.Equal(got, wantT) {
		t.Errorf("tasks %v, want %v", got, wantT)
	}
	if got := b.get("r"); got.Status != schedule.StatusDone || got.RunCount != 3 || got.MissedRuns != 0 {
		t.Errorf("after the last run: %+v, want done with 3 runs, none missed", got)
	}

	// A schedule whose end passed while it was paused is done on resume.
	b.create(schedule.Schedule{ID: "end", Task: schedule.Task{Type: "e"}, Every: "10s", EndAt: b.clock.Now().Add(time.Minute)})
	if _, err := b.sch.Pause(ctx, "default", "end"); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(2 * time.Minute)
	if got, err := b.sch.Resume(ctx, "default", "end"); err != nil || got.Status != schedule.StatusDone || !got.NextStart.IsZero() {
		t.Errorf("Resume after the end = %+v, %v; want done", got, err)
	}
}

// TestPauseResumeErrors: done and cancelled schedules cannot be paused,
// resumed or updated; a paused one can be cancelled.
func TestPauseResumeErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.create(schedule.Schedule{ID: "done", Task: schedule.Task{Type: "d"}, Every: "1s", MaxRuns: 1})
	b.create(schedule.Schedule{ID: "cancelled", Task: schedule.Task{Type: "c"}, Every: "1s"})
	b.create(schedule.Schedule{ID: "paused", Task: schedule.Task{Type: "p"}, Every: "1s"})
	b.fire(b.sch)
	if _, err := b.sch.Cancel(ctx, "default", "cancelled"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"done", "cancelled"} {
		for name, f := range map[string]func() (*schedule.Schedule, error){
			"Pause":  func() (*schedule.Schedule, error) { return b.sch.Pause(ctx, "default", id) },
			"Resume": func() (*schedule.Schedule, error) { return b.sch.Resume(ctx, "default", id) },
			"Update": func() (*schedule.Schedule, error) {
				return b.sch.Update(ctx, "default", id, func(s *schedule.Schedule) { s.Every = "2s" })
			},
		} {
			s, err := f()
			if !errors.Is(err, schedule.ErrFinished) || !errors.Is(err, store.ErrInvalidState) || s != nil {
				t.Errorf("%s of %s = %+v, %v; want ErrFinished (and ErrInvalidState)", name, id, s, err)
			}
		}
	}
	for name, f := range map[string]func() (*schedule.Schedule, error){
		"Pause":  func() (*schedule.Schedule, error) { return b.sch.Pause(ctx, "default", "nope") },
		"Resume": func() (*schedule.Schedule, error) { return b.sch.Resume(ctx, "default", "nope") },
		"Update": func() (*schedule.Schedule, error) {
			return b.sch.Update(ctx, "default", "nope", func(*schedule.Schedule) {})
		},
	} {
		if _, err := f(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s of a missing schedule: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := b.sch.Pause(ctx, "default", "a/b"); !errors.Is(err, store.ErrInvalidName) {
		t.Errorf("Pause of a bad id: %v", err)
	}
	if _, err := b.sch.Pause(ctx, "default", "paused"); err != nil {
		t.Fatal(err)
	}
	if s, err := b.sch.Cancel(ctx, "default", "paused"); err != nil || s.Status != schedule.StatusCancelled {
		t.Errorf("Cancel of a paused schedule = %+v, %v", s, err)
	}
}

// TestUpdate changes a schedule in place: same id, runs kept, the next
// run recomputed from the new rule, every instance firing the new rule.
func TestUpdate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	orig := b.create(schedule.Schedule{ID: "u", Task: schedule.Task{Type: "u", Payload: []byte("1")}, Every: "10s"})
	other := b.scheduler("other")
	b.fire(other) // run 1 at t0; other caches the 10 s rule
	b.clock.Advance(10 * time.Second)
	b.fire(other) // run 2 at t0+10s
	b.clock.Advance(3 * time.Second)

	// Only the task changes: the next run stays.
	s, err := b.sch.Update(ctx, "default", "u", func(s *schedule.Schedule) {
		s.Task.Payload = []byte("2")
		s.RunCount, s.ID, s.Status = 99, "other-id", schedule.StatusDone // ignored
	})
	if err != nil || s.ID != "u" || s.Status != schedule.StatusActive || s.RunCount != 2 || string(s.Task.Payload) != "2" ||
		!s.NextStart.Equal(t0.Add(20*time.Second)) || !s.CreatedAt.Equal(orig.CreatedAt) || !s.LastRunTime.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("Update of the payload = %+v, %v", s, err)
	}

	// The rule changes: cron every 30 s. The next run is the new rule's
	// first from now on.
	s, err = b.sch.Update(ctx, "default", "u", func(s *schedule.Schedule) { s.Every, s.Cron = "", "*/30 * * * * *" })
	if err != nil || s.Cron != "*/30 * * * * *" || s.Every != "" || !s.NextStart.Equal(t0.Add(30*time.Second)) || s.RunCount != 2 {
		t.Fatalf("Update of the rule = %+v, %v; want next %s", s, err, t0.Add(30*time.Second))
	}
	b.clock.Set(t0.Add(20 * time.Second))
	if n := b.fire(other); n != 0 {
		t.Fatalf("the other instance fired %d at the old rule's run time", n)
	}
	b.clock.Set(t0.Add(30 * time.Second))
	if n := b.fire(other); n != 1 {
		t.Fatalf("the other instance fired %d at the new rule's run time, want 1", n)
	}
	got := b.get("u")
	if got.RunCount != 3 || !got.NextStart.Equal(t0.Add(60*time.Second)) || got.LastTaskID != schedule.TaskID("u", t0.Add(30*time.Second)) {
		t.Errorf("after a run of the new rule: %+v, want next %s", got, t0.Add(60*time.Second))
	}
	res, err := b.st.Get(ctx, store.GetParams{Namespace: "default", IDs: []string{got.LastTaskID}})
	if err != nil || res.Tasks[0] == nil || string(res.Tasks[0].Payload) != "2" {
		t.Errorf("the run's task: %+v, %v; want the new payload", res, err)
	}

	// Invalid changes store nothing and name the field.
	for _, tc := range []struct {
		name   string
		edit   func(s *schedule.Schedule)
		field  string
		target error
	}{
		{"bad cron", func(s *schedule.Schedule) { s.Cron = "61 * * * *" }, "cron", store.ErrInvalidOption},
		{"both rules", func(s *schedule.Schedule) { s.Every = "1m" }, "every", store.ErrInvalidOption},
		{"max runs made", func(s *schedule.Schedule) { s.MaxRuns = 3 }, "max_runs", store.ErrInvalidOption},
		{"end in the past", func(s *schedule.Schedule) { s.EndAt = t0 }, "end_at", store.ErrInvalidOption},
		{"task id", func(s *schedule.Schedule) { s.Task.Options.ID = "x" }, "task.options.id", store.ErrInvalidOption},
		{"payload", func(s *schedule.Schedule) { s.Task.Payload = make([]byte, schedule.MaxPayloadBytes+1) }, "task.payload", store.ErrPayloadTooLarge},
	} {
		_, err := b.sch.Update(ctx, "default", "u", tc.edit)
		var ve *store.ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, tc.target) || (ve.Field != tc.field && tc.name != "both rules") {
			t.Errorf("%s: %v, want a ValidationError on %s matching %v", tc.name, err, tc.field, tc.target)
		}
	}
	if after := b.get("u"); after.Version != got.Version {
		t.Errorf("invalid updates stored version %d (was %d)", after.Version, got.Version)
	}

	// A paused schedule stays paused through an update, and resumes
	// with the new rule.
	if _, err := b.sch.Pause(ctx, "default", "u"); err != nil {
		t.Fatal(err)
	}
	s, err = b.sch.Update(ctx, "default", "u", func(s *schedule.Schedule) { s.Cron, s.Every, s.MaxRuns = "", "1m", 10 })
	if err != nil || s.Status != schedule.StatusPaused || !s.NextStart.IsZero() || s.Every != "1m" || s.MaxRuns != 10 {
		t.Fatalf("Update of a paused schedule = %+v, %v", s, err)
	}
	s, err = b.sch.Resume(ctx, "default", "u")
	if err != nil || !s.NextStart.Equal(t0.Add(time.Minute)) {
		t.Errorf("Resume after the update = %+v, %v; want next %s", s, err, t0.Add(time.Minute))
	}
}

// hookStore calls before, once, when the scheduler enqueues a run's task:
// after the run was claimed and before the schedule is advanced.
type hookStore struct {
	*embedded.Store
	before atomic.Pointer[func()]
}

func (h *hookStore) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	if f := h.before.Swap(nil); f != nil {
		(*f)()
	}
	return h.Store.Enqueue(ctx, p)
}

// TestChangeWhileFiring: a pause or an update stored while a run is
// being fired (claimed, not yet counted) wins over the run's advance: the
// run's task is enqueued and counted, and the schedule keeps the pause
// or follows the new rule.
func TestChangeWhileFiring(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	hs := &hookStore{Store: b.st}
	firing, err := schedule.New(hs, &schedule.Config{Clock: b.clock, InstanceID: "firing"})
	if err != nil {
		t.Fatal(err)
	}
	b.create(schedule.Schedule{ID: "p", Task: schedule.Task{Type: "p"}, Every: "10s"})
	b.create(schedule.Schedule{ID: "u", Task: schedule.Task{Type: "u"}, Every: "10s", StartAt: t0.Add(5 * time.Second)})

	pause := func() {
		if _, err := b.sch.Pause(ctx, "default", "p"); err != nil {
			t.Error(err)
		}
	}
	hs.before.Store(&pause)
	if n := b.fire(firing); n != 1 {
		t.Fatalf("fired %d, want the run being paused", n)
	}
	if got := b.get("p"); got.Status != schedule.StatusPaused || !got.NextStart.IsZero() || got.RunCount != 1 || !got.LastRunTime.Equal(t0) {
		t.Errorf("paused during its run: %+v, want paused with the run counted", got)
	}

	b.clock.Set(t0.Add(5 * time.Second))
	update := func() {
		if _, err := b.sch.Update(ctx, "default", "u", func(s *schedule.Schedule) { s.Every = "1m" }); err != nil {
			t.Error(err)
		}
	}
	hs.before.Store(&update)
	if n := b.fire(firing); n != 1 {
		t.Fatalf("fired %d, want the run being updated", n)
	}
	got := b.get("u")
	if got.Every != "1m" || got.RunCount != 1 || !got.NextStart.Equal(t0.Add(65*time.Second)) || got.Status != schedule.StatusActive {
		t.Errorf("updated during its run: %+v, want every 1m, next %s (the new rule's, not the old one's %s)", got, t0.Add(65*time.Second), t0.Add(15*time.Second))
	}
	b.clock.Set(t0.Add(15 * time.Second))
	if n := b.fire(firing); n != 0 {
		t.Errorf("the firing instance fired %d at the old rule's next run", n)
	}
	if got, want := b.taskIDs("default"), append(wantIDs("p", t0), wantIDs("u", t0.Add(5*time.Second))...); !slices.Equal(got, want) {
		t.Errorf("tasks %v, want %v", got, want)
	}

	// The run at 30 s is fired late (at 31.5 s). While it is being fired,
	// an update moves the schedule to every second, and another instance
	// fires the new rule's first run (32 s) before the late run is
	// counted: both runs count, and the last run stays the later one.
	b.create(schedule.Schedule{ID: "o", Task: schedule.Task{Type: "o"}, Every: "30s", StartAt: t0.Add(30 * time.Second)})
	b.clock.Set(t0.Add(31500 * time.Millisecond))
	overtake := func() {
		if _, err := b.sch.Update(ctx, "default", "o", func(s *schedule.Schedule) { s.Every = "1s" }); err != nil {
			t.Error(err)
		}
		b.clock.Set(t0.Add(32 * time.Second))
		if n := b.fire(b.scheduler("other")); n != 1 {
			t.Errorf("the other instance fired %d, want the new rule's first run", n)
		}
	}
	hs.before.Store(&overtake)
	if n := b.fire(firing); n != 1 {
		t.Fatalf("fired %d, want the late run", n)
	}
	o := b.get("o")
	if o.RunCount != 2 || !o.LastRunTime.Equal(t0.Add(32*time.Second)) || !o.NextStart.Equal(t0.Add(33*time.Second)) {
		t.Errorf("overtaken run: %+v, want 2 runs, the last at 32 s, next at 33 s", o)
	}
	var oTasks []string
	for _, id := range b.taskIDs("default") {
		if strings.HasPrefix(id, "sched.o.") {
			oTasks = append(oTasks, id)
		}
	}
	if want := wantIDs("o", t0.Add(30*time.Second), t0.Add(32*time.Second)); !slices.Equal(oTasks, want) {
		t.Errorf("tasks of o %v, want %v", oTasks, want)
	}
}

// TestConcurrentUpdateAndFire races three firing schedulers against
// updates, pauses and resumes at every step of a fake clock, then checks
// that the record is consistent: one run per task, the run count equal to
// the tasks enqueued, the last run the latest task, and the next run on
// the final rule's grid after the last run.
func TestConcurrentUpdateAndFire(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.create(schedule.Schedule{ID: "c", Task: schedule.Task{Type: "c"}, Every: "1s"})
	scheds := []*schedule.Scheduler{b.scheduler("a"), b.scheduler("b"), b.scheduler("c")}
	rules := []string{"1s", "2s", "3s"}
	var total atomic.Int64
	for step := range 120 {
		var wg sync.WaitGroup
		for _, s := range scheds {
			wg.Go(func() {
				n, err := s.FireDue(ctx)
				if err != nil {
					t.Errorf("FireDue: %v", err)
				}
				total.Add(int64(n))
			})
		}
		wg.Go(func() {
			var err error
			switch step % 7 {
			case 3:
				_, err = b.sch.Pause(ctx, "default", "c")
			case 5:
				_, err = b.sch.Resume(ctx, "default", "c")
			default:
				_, err = b.sch.Update(ctx, "default", "c", func(s *schedule.Schedule) {
					s.Every = rules[step%len(rules)]
					s.Task.Options = kiln.TaskOptions{Priority: step % 10}
				})
			}
			if err != nil {
				t.Errorf("step %d: %v", step, err)
			}
		})
		wg.Wait()
		b.clock.Advance(500 * time.Millisecond)
	}
	if _, err := b.sch.Resume(ctx, "default", "c"); err != nil {
		t.Fatal(err)
	}
	got := b.get("c")
	tasks := b.taskIDs("default")
	if int64(len(tasks)) != got.RunCount || total.Load() != got.RunCount || got.RunCount < 10 {
		t.Errorf("run_count %d, %d tasks, %d enqueues reported; want them equal (and some runs)", got.RunCount, len(tasks), total.Load())
	}
	if got.LastTaskID != tasks[len(tasks)-1] || got.LastTaskID != schedule.TaskID("c", got.LastRunTime) {
		t.Errorf("last task %s at %s, want the latest run's, %s", got.LastTaskID, got.LastRunTime, tasks[len(tasks)-1])
	}
	if !slices.Contains(tasks, got.LastTaskID) {
		t.Errorf("last task %s is not among the tasks %v", got.LastTaskID, tasks)
	}
	r, err := got.Rule()
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != schedule.StatusActive || !got.NextStart.After(got.LastRunTime) || !r.Next(got.NextStart.Add(-time.Nanosecond)).Equal(got.NextStart) {
		t.Errorf("final record %+v: want active, the next run after the last and on the every-%s grid", got, got.Every)
	}
}
