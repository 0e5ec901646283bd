package api

import (
	"context"
	"errors"
	"net/http"
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
		ms := *req.EveryMS
		switch {
		case ms <= 0:
			return nil, errf(wire.CodeInvalidOption, "every_ms", "%d is not positive", ms)
		case ms%1000 != 0:
			return nil, errf(wire.CodeInvalidOption, "every_ms", "%d is not a whole number of seconds", ms)
		case ms > schedule.MaxEvery.Milliseconds():
			return nil, errf(wire.CodeInvalidOption, "every_ms", "%d is more than %d", ms, schedule.MaxEvery.Milliseconds())
		}
		s.Every = wire.Dur(ms).String()
	}
	if req.MaxRuns != nil {
		if *req.MaxRuns <= 0 {
			return nil, errf(wire.CodeInvalidOption, "max_runs", "%d is not positive; leave it out for no limit", *req.MaxRuns)
		}
		s.MaxRuns = *req.MaxRuns
	}
	payload, err := req.Task.PayloadBytes()
	if err != nil {
		return nil, err
	}
	s.Task = schedule.Task{Type: req.Task.Type, Payload: payload}
	if o := req.Task.Options; o != nil {
		opts, err := taskOptions(o)
		if err != nil {
			return nil, err
		}
		s.Task.Options = opts
	}
	return s, nil
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
	if _, err := query(c.r); err != nil {
		return err
	}
	all, err := a.sched.List(c.ctx(), c.ns())
	if err != nil {
		return err
	}
	out := ScheduleList{Schedules: make([]*Schedule, len(all))}
	for i, s := range all {
		out.Schedules[i] = FromSchedule(s)
	}
	return c.json(http.StatusOK, out)
}

func (a *API) getSchedule(c *call) error {
	if _, err := query(c.r); err != nil {
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
	return c.json(http.StatusOK, FromSchedule(s))
}

func (a *API) cancelSchedule(c *call) error {
	id, err := c.scheduleID()
	if err != nil {
		return err
	}
	if err := c.noBody(); err != nil {
		return err
	}
	s, err := a.sched.Cancel(c.ctx(), c.ns(), id)
	if err != nil {
		return err
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
