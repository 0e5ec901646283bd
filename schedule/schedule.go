package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/store"
)

// Status is the state of a schedule.
type Status string

// The states of a schedule.
const (
	// StatusActive: the schedule fires at its run times.
	StatusActive Status = "active"
	// StatusDone: the schedule ran MaxRuns times or passed EndAt (or its
	// rule has no run time left); it fires no more.
	StatusDone Status = "done"
	// StatusCancelled: the schedule was cancelled; it fires no more.
	StatusCancelled Status = "cancelled"
	// StatusPaused: the schedule was paused; it fires nothing until
	// Scheduler.Resume, and its NextStart is zero. The run times that
	// pass while it is paused are skipped, not made up later.
	StatusPaused Status = "paused"
	// statusDeleted marks the tombstone a Delete leaves for a while.
	statusDeleted Status = "deleted"
)

// Limits of a schedule.
const (
	// MaxIDLen is the longest schedule id: the task ids of its runs,
	// "sched.<id>.<unix seconds>", must fit store.MaxNameLen.
	MaxIDLen = 200
	// MaxPayloadBytes caps the payload of a schedule's task: the schedule
	// is one store.Meta record, at most store.MaxMetaValueLen.
	MaxPayloadBytes = 32 << 10
)

// Task is the task a schedule enqueues at each run time. It is plain data.
type Task struct {
	// Type names the handler; required.
	Type string `json:"type"`
	// Payload is handed to the handler unchanged; at most MaxPayloadBytes.
	Payload []byte `json:"payload,omitempty"`
	// Options are the options of each run's task, with the defaults of
	// kiln.Client.Enqueue. ID, ProcessAt and Deadline must be empty: each
	// run gets its own id, and runs are timed by the schedule. ProcessIn
	// delays each run's task after its run time.
	Options kiln.TaskOptions `json:"options,omitzero"`
}

// Schedule is a rule that enqueues a task at run times: a cron expression
// in a time zone, or an interval, bounded by StartAt, EndAt and MaxRuns.
// It is plain data: it is stored as JSON in store.Meta, and the fields
// after MaxRuns are the state that the Scheduler keeps.
type Schedule struct {
	// ID names the schedule in its namespace: 1 to MaxIDLen characters of
	// [A-Za-z0-9._:-]. Empty at Create means a new random id.
	ID string `json:"id"`
	// Namespace is where the schedule and its tasks live; empty at Create
	// means store.DefaultNamespace.
	Namespace string `json:"namespace"`
	// Task is what each run enqueues.
	Task Task `json:"task"`

	// Cron is a cron expression: five fields (minute hour day-of-month
	// month day-of-week), or six with a seconds field first, or one of
	// @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly.
	// Exactly one of Cron and Every is set.
	Cron string `json:"cron,omitempty"`
	// TimeZone is the IANA zone whose wall clock Cron is read on; empty
	// means UTC. See Rule.Next for daylight saving time.
	TimeZone string `json:"time_zone,omitempty"`
	// Every is an interval in Go's duration syntax ("90s", "1h"): a whole
	// number of seconds, at least Config.MinEvery. The runs are at
	// StartAt, StartAt+Every, ...
	Every string `json:"every,omitempty"`
	// StartAt is when the schedule starts; zero at Create means now. It is
	// rounded up to a whole second.
	StartAt time.Time `json:"start_at,omitzero"`
	// EndAt, when not zero, is when the schedule ends: no run after it.
	EndAt time.Time `json:"end_at,omitzero"`
	// MaxRuns, when positive, is how many runs the schedule makes; 0 means
	// no limit.
	MaxRuns int `json:"max_runs,omitempty"`

	// Status is the schedule's state.
	Status Status `json:"status"`
	// RunCount is how many runs were enqueued.
	RunCount int64 `json:"run_count"`
	// NextStart is the next run time; zero when the schedule fires no more.
	NextStart time.Time `json:"next_start,omitzero"`
	// LastRunTime is the run time of the last run.
	LastRunTime time.Time `json:"last_run_time,omitzero"`
	// LastTaskID is the id of the last run's task.
	LastTaskID string `json:"last_task_id,omitempty"`
	// LastError says why the last run enqueued no task (the store refused
	// the task as invalid), or is empty.
	LastError string `json:"last_error,omitempty"`
	// MissedRuns counts run times that were skipped because no scheduler
	// ran at the time (see Config.MissedGrace).
	MissedRuns int64 `json:"missed_runs,omitempty"`
	// CreatedAt and UpdatedAt are when the schedule was created and last
	// changed.
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Version counts the changes of the record, from 1.
	Version int64 `json:"version"`
}

// Clone returns a deep copy of s.
func (s *Schedule) Clone() *Schedule {
	if s == nil {
		return nil
	}
	c := *s
	if s.Task.Payload != nil {
		c.Task.Payload = append([]byte(nil), s.Task.Payload...)
	}
	return &c
}

// Rule parses the schedule's timing rule.
func (s *Schedule) Rule() (*Rule, error) {
	return NewRule(s.Cron, s.TimeZone, s.Every, s.StartAt)
}

// TaskID returns the id of the task of the run at time at of schedule id:
// "sched.<id>.<unix seconds>". Every instance computes the same id, so a
// run enqueued twice is refused by the store with store.ErrTaskExists.
func TaskID(id string, at time.Time) string {
	return "sched." + id + "." + strconv.FormatInt(at.Unix(), 10)
}

// NextRuns returns up to n of the schedule's coming run times, from
// NextStart on, within EndAt and the runs MaxRuns leaves. It returns
// nothing for a schedule that is not active (a paused one included) or
// whose rule does not parse. A run noticed late by every scheduler
// (see Config.MissedGrace) may fire later than the time given here.
func (s *Schedule) NextRuns(n int) []time.Time {
	if s.Status != StatusActive || s.NextStart.IsZero() || n <= 0 {
		return nil
	}
	if s.MaxRuns > 0 {
		n = int(min(int64(n), max(int64(s.MaxRuns)-s.RunCount, 0)))
	}
	r, err := s.Rule()
	if err != nil {
		return nil
	}
	var out []time.Time
	for t := s.NextStart; len(out) < n && !t.IsZero() && (s.EndAt.IsZero() || !t.After(s.EndAt)); t = r.Next(t) {
		out = append(out, t)
	}
	return out
}

// validate checks a schedule given to Create at time now against the
// limits and minimum interval, fills StartAt and returns the rule and
// every problem at once.
func validate(s *Schedule, l store.Limits, minEvery time.Duration, now time.Time) (*Rule, error) {
	return validateFrom(s, l, minEvery, now, time.Time{})
}

// validateFrom is validate for a schedule whose runs may not come before
// after (non-zero for Update: the last run already made).
func validateFrom(s *Schedule, l store.Limits, minEvery time.Duration, now, after time.Time) (*Rule, error) {
	var errs []error
	if s.ID != "" {
		if err := store.CheckName("id", s.ID); err != nil {
			errs = append(errs, err)
		} else if len(s.ID) > MaxIDLen {
			errs = append(errs, &store.ValidationError{Field: "id", Reason: fmt.Sprintf("longer than %d bytes", MaxIDLen), Err: store.ErrInvalidName})
		}
	}
	if err := store.CheckNamespace(s.Namespace); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, validateTask(&s.Task, l, now)...)
	if s.MaxRuns < 0 {
		errs = append(errs, invalid("max_runs", "%d is negative; 0 means no limit", s.MaxRuns))
	}
	if s.StartAt.IsZero() {
		s.StartAt = now
	}
	s.StartAt = ceilSecond(s.StartAt).UTC()
	if !s.EndAt.IsZero() {
		s.EndAt = s.EndAt.UTC()
		switch {
		case !s.EndAt.After(s.StartAt):
			errs = append(errs, invalid("end_at", "%s is not after start_at %s", s.EndAt.Format(time.RFC3339), s.StartAt.Format(time.RFC3339)))
		case !s.EndAt.After(now):
			errs = append(errs, invalid("end_at", "%s is in the past", s.EndAt.Format(time.RFC3339)))
		}
	}
	r, err := s.Rule()
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	if r.every != 0 && r.every < minEvery {
		errs = append(errs, invalid("every", "%s is shorter than the minimum of %s", r.every, minEvery))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	first := nextRun(r, s.StartAt, now, after)
	switch {
	case first.IsZero():
		field := "cron"
		if !r.IsCron() {
			field = "every"
		}
		return nil, invalid(field, "never fires: no run time within %d years of %s", int(Horizon/(366*24*time.Hour)), s.StartAt.Format(time.RFC3339))
	case !s.EndAt.IsZero() && first.After(s.EndAt):
		return nil, invalid("end_at", "no run time between start_at and end_at (the first is %s)", first.Format(time.RFC3339))
	}
	return r, nil
}

// firstRun is the first run time at or after max(start, now).
func firstRun(r *Rule, start, now time.Time) time.Time {
	from := start
	if n := ceilSecond(now); n.After(from) {
		from = n
	}
	return r.Next(from.Add(-time.Nanosecond))
}

// nextRun is firstRun, and after last when last is not zero: the run
// time a schedule resumed or changed at now continues with, so that the
// run last made is not made again and none that passed is made up.
func nextRun(r *Rule, start, now, last time.Time) time.Time {
	t := firstRun(r, start, now)
	if !last.IsZero() && !t.IsZero() && !t.After(last) {
		t = r.Next(last)
	}
	return t
}

func validateTask(t *Task, l store.Limits, now time.Time) []error {
	var errs []error
	o := t.Options
	if o.ID != "" {
		errs = append(errs, invalid("task.options.id", "must be empty: each run's task id is made from the schedule's id and run time"))
	}
	if !o.ProcessAt.IsZero() {
		errs = append(errs, invalid("task.options.process_at", "must be empty: runs are timed by the schedule (process_in delays each run)"))
	}
	if !o.Deadline.IsZero() {
		errs = append(errs, invalid("task.options.deadline", "must be empty: a fixed deadline would fail every later run"))
	}
	if len(t.Payload) > MaxPayloadBytes {
		errs = append(errs, &store.ValidationError{Field: "task.payload", Reason: fmt.Sprintf("%d bytes is more than the %d a schedule may hold", len(t.Payload), MaxPayloadBytes), Err: store.ErrPayloadTooLarge})
	}
	if len(errs) > 0 {
		return errs
	}
	o.ID = "sched.x.0" // any valid id: only the other options are checked here
	if _, err := hook.TaskInput(&o, t.Type, t.Payload, l, now); err != nil {
		errs = append(errs, err)
	}
	return errs
}
