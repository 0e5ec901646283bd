package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// ScheduleRequest is the body of POST /v1/projects/{p}/schedules.
type ScheduleRequest struct {
	// ID names the schedule; empty means a new random id.
	ID string `json:"id,omitempty"`
	// Task is what each run enqueues: type, payload and the options of an
	// enqueue, except id, process_at and deadline.
	Task wire.TaskRequest `json:"task"`
	// Cron is a cron expression; exactly one of Cron and EveryMS is set.
	Cron string `json:"cron,omitempty"`
	// TimeZone is the IANA zone of Cron; empty means UTC.
	TimeZone string `json:"time_zone,omitempty"`
	// EveryMS is the interval in milliseconds: whole seconds, at least 1 s.
	EveryMS *int64 `json:"every_ms,omitempty"`
	// StartAt is the first possible run time; absent means now.
	StartAt *time.Time `json:"start_at,omitempty"`
	// EndAt ends the schedule; absent means never.
	EndAt *time.Time `json:"end_at,omitempty"`
	// MaxRuns caps the runs; absent means no limit, present must be > 0.
	MaxRuns *int `json:"max_runs,omitempty"`
}

// ScheduleUpdate is the body of PATCH /v1/projects/{p}/schedules/{id}:
// the fields present replace the schedule's, the others stay. The
// schedule keeps its id, status, run count and last run.
type ScheduleUpdate struct {
	// Task, when present, replaces the whole task (type, payload and
	// options).
	Task *wire.TaskRequest `json:"task,omitempty"`
	// Cron, when present, makes the schedule a cron schedule (its
	// every_ms goes); its time zone stays unless TimeZone is present.
	Cron *string `json:"cron,omitempty"`
	// TimeZone, when present, is the new zone of the cron expression.
	TimeZone *string `json:"time_zone,omitempty"`
	// EveryMS, when present, makes the schedule an interval schedule
	// (its cron and time zone go).
	EveryMS *int64 `json:"every_ms,omitempty"`
	// StartAt, when present, is the new start (intervals run on its grid).
	StartAt *time.Time `json:"start_at,omitempty"`
	// EndAt, when present, is the new end; null removes the end.
	EndAt Nullable[time.Time] `json:"end_at,omitzero"`
	// MaxRuns, when present, is the new cap (> 0, and more than the runs
	// made); null removes the cap.
	MaxRuns Nullable[int] `json:"max_runs,omitzero"`
}

// Nullable is a field of a PATCH body that is absent (Set false: the
// value stays), null (Null: the value is removed) or a value.
type Nullable[T any] struct {
	// Set is true when the field is present.
	Set bool
	// Null is true when the field is present as null.
	Null bool
	// Value is the field's value when it is present and not null.
	Value T
}

// Of returns a Nullable that holds v.
func Of[T any](v T) Nullable[T] { return Nullable[T]{Set: true, Value: v} }

// Null returns a Nullable that is present as null.
func Null[T any]() Nullable[T] { return Nullable[T]{Set: true, Null: true} }

// UnmarshalJSON reads null or a value of T.
func (n *Nullable[T]) UnmarshalJSON(b []byte) error {
	*n = Nullable[T]{Set: true}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		n.Null = true
		return nil
	}
	return json.Unmarshal(b, &n.Value)
}

// MarshalJSON writes null or the value.
func (n Nullable[T]) MarshalJSON() ([]byte, error) {
	if !n.Set || n.Null {
		return []byte("null"), nil
	}
	return json.Marshal(n.Value)
}

// IsZero reports an absent field, which `omitzero` leaves out.
func (n Nullable[T]) IsZero() bool { return !n.Set }

// Schedule is a schedule as the API returns it.
type Schedule struct {
	ID          string           `json:"id"`
	Project     string           `json:"project"`
	Task        wire.TaskRequest `json:"task"`
	Cron        string           `json:"cron"`
	TimeZone    string           `json:"time_zone"`
	EveryMS     int64            `json:"every_ms"`
	StartAt     *time.Time       `json:"start_at"`
	EndAt       *time.Time       `json:"end_at"`
	MaxRuns     int              `json:"max_runs"`
	Status      string           `json:"status"`
	RunCount    int64            `json:"run_count"`
	MissedRuns  int64            `json:"missed_runs"`
	NextStart   *time.Time       `json:"next_start"`
	LastRunTime *time.Time       `json:"last_run_time"`
	LastTaskID  string           `json:"last_task_id"`
	LastError   string           `json:"last_error"`
	CreatedAt   *time.Time       `json:"created_at"`
	UpdatedAt   *time.Time       `json:"updated_at"`
	// NextRuns are the coming run times, when asked for with ?next_runs=N.
	NextRuns []time.Time `json:"next_runs,omitempty"`
}

// ScheduleList is the answer of GET /v1/projects/{p}/schedules.
type ScheduleList struct {
	Schedules []*Schedule `json:"schedules"`
}

// storeMeta is a store whose Meta records are kept by meta.
type storeMeta struct {
	store.Store
	meta store.Meta
}

func (s storeMeta) MetaGet(ctx context.Context, p store.MetaGetParams) (store.MetaGetResult, error) {
	return s.meta.MetaGet(ctx, p)
}

func (s storeMeta) MetaPut(ctx context.Context, p store.MetaPutParams) (store.MetaPutResult, error) {
	return s.meta.MetaPut(ctx, p)
}

func (s storeMeta) MetaDelete(ctx context.Context, p store.MetaDeleteParams) (store.MetaDeleteResult, error) {
	return s.meta.MetaDelete(ctx, p)
}

func (s storeMeta) MetaList(ctx context.Context, p store.MetaListParams) (store.MetaListResult, error) {
	return s.meta.MetaList(ctx, p)
}

// Schedules returns the schedule engine the API manages schedules with.
func (a *API) Schedules() *schedule.Scheduler { return a.sched }

// ToSchedule turns a request into the schedule to create in project p.
func (req *ScheduleRequest) ToSchedule(p string) (*schedule.Schedule, error) {
	s := &schedule.Schedule{ID: req.ID, Namespace: p, Cron: req.Cron, TimeZone: req.TimeZone,
		StartAt: wire.TimeVal(req.StartAt), EndAt: wire.TimeVal(req.EndAt)}
	if req.EveryMS != nil {
		every, err := everyFromMS(*req.EveryMS)
		if err != nil {
			return nil, err
		}
		s.Every = every
	}
	if req.MaxRuns != nil {
		if *req.MaxRuns <= 0 {
			return nil, errf(wire.CodeInvalidOption, "max_runs", "%d is not positive; leave it out for no limit", *req.MaxRuns)
		}
		s.MaxRuns = *req.MaxRuns
	}
	t, err := toTask(&req.Task)
	if err != nil {
		return nil, err
	}
	s.Task = t
	return s, nil
}

// everyFromMS turns every_ms into the engine's interval text.
func everyFromMS(ms int64) (string, error) {
	switch {
	case ms <= 0:
		return "", errf(wire.CodeInvalidOption, "every_ms", "%d is not positive", ms)
	case ms%1000 != 0:
		return "", errf(wire.CodeInvalidOption, "every_ms", "%d is not a whole number of seconds", ms)
	case ms > schedule.MaxEvery.Milliseconds():
		return "", errf(wire.CodeInvalidOption, "every_ms", "%d is more than %d", ms, schedule.MaxEvery.Milliseconds())
	}
	return wire.Dur(ms).String(), nil
}

// toTask turns the task of a request into a schedule's task.
func toTask(req *wire.TaskRequest) (schedule.Task, error) {
	payload, err := req.PayloadBytes()
	if err != nil {
		return schedule.Task{}, err
	}
	t := schedule.Task{Type: req.Type, Payload: payload}
	if o := req.Options; o != nil {
		opts, err := taskOptions(o)
		if err != nil {
			return schedule.Task{}, err
		}
		t.Options = opts
	}
	return t, nil
}

// edit checks an update request and returns the change it makes to a
// schedule, or nil when it changes nothing.
func (req *ScheduleUpdate) edit() (func(s *schedule.Schedule), error) {
	if req.Cron != nil && req.EveryMS != nil {
		return nil, errf(wire.CodeInvalidOption, "every_ms", "give cron or every_ms, not both")
	}
	var every string
	if req.EveryMS != nil {
		var err error
		if every, err = everyFromMS(*req.EveryMS); err != nil {
			return nil, err
		}
	}
	if req.MaxRuns.Set && !req.MaxRuns.Null && req.MaxRuns.Value <= 0 {
		return nil, errf(wire.CodeInvalidOption, "max_runs", "%d is not positive; null removes the limit", req.MaxRuns.Value)
	}
	if req.EndAt.Set && !req.EndAt.Null && req.EndAt.Value.IsZero() {
		return nil, errf(wire.CodeInvalidOption, "end_at", "the zero time; null removes the end")
	}
	if req.StartAt != nil && req.StartAt.IsZero() {
		return nil, errf(wire.CodeInvalidOption, "start_at", "the zero time")
	}
	var task *schedule.Task
	if req.Task != nil {
		t, err := toTask(req.Task)
		if err != nil {
			return nil, err
		}
		task = &t
	}
	if task == nil && req.Cron == nil && req.TimeZone == nil && req.EveryMS == nil && req.StartAt == nil && !req.EndAt.Set && !req.MaxRuns.Set {
		return nil, nil
	}
	return func(s *schedule.Schedule) {
		if task != nil {
			s.Task = *task
		}
		if req.Cron != nil {
			s.Cron, s.Every = *req.Cron, ""
		}
		if req.EveryMS != nil {
			s.Every, s.Cron, s.TimeZone = every, "", ""
		}
		if req.TimeZone != nil {
			s.TimeZone = *req.TimeZone
		}
		if req.StartAt != nil {
			s.StartAt = *req.StartAt
		}
		if req.EndAt.Set {
			s.EndAt = req.EndAt.Value // the zero time when null
		}
		if req.MaxRuns.Set {
			s.MaxRuns = req.MaxRuns.Value // 0 when null
		}
	}, nil
}

// FromSchedule turns a stored schedule into its API form.
func FromSchedule(s *schedule.Schedule) *Schedule {
	o := s.Task.Options
	wo := &wire.TaskOptions{Queue: o.Queue, Priority: o.Priority, ProcessInMS: wire.MS(o.ProcessIn),
		UniqueKey: o.UniqueKey, UniqueTTLMS: wire.MS(o.UniqueTTL), UniqueUntilSuccess: o.UniqueUntilSuccess,
		RetentionMS: wire.MS(o.Retention)}
	if o.MaxRetries != nil {
		n := max(*o.MaxRetries, 0) // kiln.NoRetries, in schedules stored before, is 0
		wo.MaxRetries = &n
	}
	if o.Timeout != nil {
		ms := wire.MS(*o.Timeout)
		wo.TimeoutMS = &ms
	}
	var every int64
	if s.Every != "" {
		if d, err := schedule.ParseEvery(s.Every); err == nil {
			every = wire.MS(d)
		}
	}
	return &Schedule{
		ID: s.ID, Project: s.Namespace, Task: wire.TaskRequest{Type: s.Task.Type, Payload: s.Task.Payload, Options: wo},
		Cron: s.Cron, TimeZone: s.TimeZone, EveryMS: every, StartAt: wire.TimePtr(s.StartAt), EndAt: wire.TimePtr(s.EndAt),
		MaxRuns: s.MaxRuns, Status: string(s.Status), RunCount: s.RunCount, MissedRuns: s.MissedRuns,
		NextStart: wire.TimePtr(s.NextStart), LastRunTime: wire.TimePtr(s.LastRunTime), LastTaskID: s.LastTaskID,
		LastError: s.LastError, CreatedAt: wire.TimePtr(s.CreatedAt), UpdatedAt: wire.TimePtr(s.UpdatedAt),
	}
}

// scheduleError maps the engine's own errors to catalogue objects; store
// sentinels and validation errors map by themselves.
func scheduleError(err error) error {
	if errors.Is(err, schedule.ErrExists) {
		return wire.Errorf(wire.CodeConflict, "a schedule with that id exists (or was deleted less than an hour ago)")
	}
	if errors.Is(err, schedule.ErrFinished) {
		return wire.Errorf(wire.CodeInvalidState, "%s", strings.TrimPrefix(err.Error(), "schedule: "))
	}
	return err
}

func (c *call) scheduleID() (string, error) {
	id := c.r.PathValue("id")
	if err := checkScheduleID(id); err != nil {
		return "", err
	}
	return id, nil
}

func checkScheduleID(id string) error {
	if !validScheduleID(id) {
		return errf(wire.CodeInvalidName, "id", "%q must be 1-%d characters of [A-Za-z0-9._:-]", truncateID(id), schedule.MaxIDLen)
	}
	return nil
}

func validScheduleID(id string) bool {
	return len(id) <= schedule.MaxIDLen && store.ValidName(id)
}

func truncateID(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func (a *API) createSchedule(c *call) error {
	var req ScheduleRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	s, err := req.ToSchedule(c.ns())
	if err != nil {
		return err
	}
	out, err := a.sched.Create(c.ctx(), s)
	if err != nil {
		return scheduleError(err)
	}
	return c.json(http.StatusCreated, FromSchedule(out))
}

func (a *API) listSchedules(c *call) error {
	n, err := nextRuns(c)
	if err != nil {
		return err
	}
	all, err := a.sched.List(c.ctx(), c.ns())
	if err != nil {
		return err
	}
	out := ScheduleList{Schedules: make([]*Schedule, len(all))}
	for i, s := range all {
		out.Schedules[i] = withNextRuns(s, n)
	}
	return c.json(http.StatusOK, out)
}

// nextRuns reads ?next_runs=N (0..100): how many coming run times to add
// to each schedule of the answer.
func nextRuns(c *call) (int, error) {
	q, err := query(c.r, "next_runs")
	if err != nil {
		return 0, err
	}
	n, err := queryInt(q, "next_runs", 0, maxNextRuns)
	return int(n), err
}

// maxNextRuns caps ?next_runs.
const maxNextRuns = 100

// withNextRuns is FromSchedule with up to n coming run times.
func withNextRuns(s *schedule.Schedule, n int) *Schedule {
	out := FromSchedule(s)
	out.NextRuns = s.NextRuns(n)
	return out
}

func (a *API) getSchedule(c *call) error {
	n, err := nextRuns(c)
	if err != nil {
		return err
	}
	id, err := c.scheduleID()
	if err != nil {
		return err
	}
	s, err := a.sched.Get(c.ctx(), c.ns(), id)
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, withNextRuns(s, n))
}

// changeSchedule answers a route that changes one schedule with no body:
// cancel, pause, resume.
func (a *API) changeSchedule(c *call, change func(ctx context.Context, ns, id string) (*schedule.Schedule, error)) error {
	id, err := c.scheduleID()
	if err != nil {
		return err
	}
	if err := c.noBody(); err != nil {
		return err
	}
	s, err := change(c.ctx(), c.ns(), id)
	if err != nil {
		return scheduleError(err)
	}
	return c.json(http.StatusOK, FromSchedule(s))
}

func (a *API) cancelSchedule(c *call) error { return a.changeSchedule(c, a.sched.Cancel) }

func (a *API) pauseSchedule(c *call) error { return a.changeSchedule(c, a.sched.Pause) }

func (a *API) resumeSchedule(c *call) error { return a.changeSchedule(c, a.sched.Resume) }

func (a *API) updateSchedule(c *call) error {
	if _, err := query(c.r); err != nil {
		return err
	}
	id, err := c.scheduleID()
	if err != nil {
		return err
	}
	var req ScheduleUpdate
	if err := c.decode(&req, false); err != nil {
		return err
	}
	edit, err := req.edit()
	if err != nil {
		return err
	}
	var s *schedule.Schedule
	if edit == nil {
		s, err = a.sched.Get(c.ctx(), c.ns(), id)
	} else {
		s, err = a.sched.Update(c.ctx(), c.ns(), id, edit)
	}
	if err != nil {
		return scheduleError(err)
	}
	return c.json(http.StatusOK, FromSchedule(s))
}

func (a *API) deleteSchedule(c *call) error {
	id, err := c.scheduleID()
	if err != nil {
		return err
	}
	if err := c.noBody(); err != nil {
		return err
	}
	if err := a.sched.Delete(c.ctx(), c.ns(), id); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
