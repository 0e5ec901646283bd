package ironapi

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// MinRunEvery is the shortest run_every, in seconds (IronWorker's).
const MinRunEvery = 60

// timeoutMargin is added to a scheduled task's kiln timeout: the runner
// enforces the IronWorker timeout itself and must reach it first.
const timeoutMargin = time.Minute

// scheduleReq is one schedule of a create request. Unknown fields are
// ignored; cron and time_zone are kiln's extension (a cron expression
// instead of run_every).
type scheduleReq struct {
	CodeName string   `json:"code_name"`
	Name     string   `json:"name"`
	Payload  *string  `json:"payload"`
	StartAt  *string  `json:"start_at"`
	EndAt    *string  `json:"end_at"`
	RunEvery *float64 `json:"run_every"`
	RunTimes *float64 `json:"run_times"`
	Priority *int     `json:"priority"`
	Timeout  *float64 `json:"timeout"`
	Delay    *float64 `json:"delay"`
	Cluster  string   `json:"cluster"`
	Label    string   `json:"label"`
	Cron     string   `json:"cron"`
	TimeZone string   `json:"time_zone"`
}

// scheduleJSON is a schedule as the API shows it.
type scheduleJSON struct {
	ID          string     `json:"id"`
	ProjectID   string     `json:"project_id"`
	CodeName    string     `json:"code_name"`
	Name        string     `json:"name,omitempty"`
	Payload     string     `json:"payload"`
	Status      string     `json:"status"`
	Msg         string     `json:"msg,omitempty"`
	Priority    int        `json:"priority"`
	Timeout     int        `json:"timeout"`
	Delay       int        `json:"delay"`
	Label       string     `json:"label,omitempty"`
	Cluster     string     `json:"cluster"`
	RunEvery    int        `json:"run_every,omitempty"`
	Cron        string     `json:"cron,omitempty"`
	TimeZone    string     `json:"time_zone,omitempty"`
	RunTimes    int        `json:"run_times,omitempty"`
	RunCount    int64      `json:"run_count"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	StartAt     *time.Time `json:"start_at,omitempty"`
	EndAt       *time.Time `json:"end_at,omitempty"`
	NextStart   *time.Time `json:"next_start,omitempty"`
	LastRunTime *time.Time `json:"last_run_time,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (c *call) scheduleJSON(s *schedule.Schedule) scheduleJSON {
	var env hosted.Envelope
	_ = json.Unmarshal(s.Task.Payload, &env) // written by this API
	out := scheduleJSON{
		ID: s.ID, ProjectID: c.pid, CodeName: strings.TrimPrefix(s.Task.Type, hosted.TypePrefix), Name: env.ScheduleName,
		Payload: env.Payload, Priority: s.Task.Options.Priority, Timeout: env.Timeout, Delay: env.Delay,
		Label: env.Label, Cluster: env.Cluster, Cron: s.Cron, TimeZone: s.TimeZone, RunTimes: s.MaxRuns,
		RunCount: s.RunCount, CreatedAt: s.CreatedAt.UTC(), UpdatedAt: s.UpdatedAt.UTC(),
		StartAt: timePtr(s.StartAt), EndAt: timePtr(s.EndAt), NextStart: timePtr(s.NextStart), LastRunTime: timePtr(s.LastRunTime),
	}
	if out.Cluster == "" {
		out.Cluster = "default"
	}
	if d, err := time.ParseDuration(s.Every); err == nil {
		out.RunEvery = int(d / time.Second)
	}
	switch s.Status {
	case schedule.StatusActive:
		out.Status = "scheduled"
	case schedule.StatusDone:
		out.Status, out.Msg = "complete", "Ran max times."
	case schedule.StatusCancelled:
		out.Status = "cancelled"
	case schedule.StatusPaused:
		// IronWorker has no paused schedule; kiln's own word is shown.
		out.Status = "paused"
	default:
		out.Status = string(s.Status)
	}
	if s.LastError != "" {
		out.Msg = s.LastError
	}
	return out
}

func (a *API) noSchedules() error {
	return errStatus(http.StatusNotFound, "Schedules are not available on this server")
}

// createSchedules checks every schedule of the request, then creates them;
// if one is refused, the ones created before it are deleted again.
func (a *API) createSchedules(c *call) error {
	if a.cfg.Schedules == nil {
		return a.noSchedules()
	}
	b, err := readBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	var req struct {
		Schedules *[]scheduleReq `json:"schedules"`
	}
	if err := decodeJSON(b, &req); err != nil {
		return err
	}
	if req.Schedules == nil || len(*req.Schedules) == 0 {
		return badRequest("schedules is required: a list of at least one schedule")
	}
	if len(*req.Schedules) > 100 {
		return errStatus(http.StatusRequestEntityTooLarge, "at most 100 schedules in one request")
	}
	now := a.cfg.Clock.Now()
	var built []*schedule.Schedule
	var problems []string
	for i, r := range *req.Schedules {
		s, err := a.buildSchedule(c, r, now)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
				prefix := ""
				if len(*req.Schedules) > 1 {
					prefix = "schedules[" + strconv.Itoa(i) + "]: "
				}
				problems = append(problems, prefix+ae.msg)
				continue
			}
			return err
		}
		built = append(built, s)
	}
	if len(problems) > 0 {
		return badRequest("Invalid schedule: %s", strings.Join(problems, "; "))
	}
	out := make([]map[string]string, 0, len(built))
	for _, s := range built {
		created, err := a.cfg.Schedules.Create(c.ctx(), s)
		if err != nil {
			for _, m := range out { // all or nothing
				_ = a.cfg.Schedules.Delete(c.ctx(), c.pid, m["id"]) // best effort: the request fails anyway
			}
			if errors.Is(err, store.ErrInvalidName) || errors.Is(err, store.ErrInvalidOption) || errors.Is(err, store.ErrPayloadTooLarge) {
				return badRequest("Invalid schedule: %v", strings.TrimPrefix(err.Error(), "schedule: create: "))
			}
			return err
		}
		out = append(out, map[string]string{"id": created.ID})
	}
	return c.ok(map[string]any{"msg": "Scheduled", "schedules": out})
}

// buildSchedule turns one request into a schedule of the engine: it checks
// the request (its rule, checkScheduleRule, and its task's options), finds
// the code package, and builds the task each run enqueues (scheduleTask).
func (a *API) buildSchedule(c *call, r scheduleReq, now time.Time) (*schedule.Schedule, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, sprintf(format, args...)) }
	if r.CodeName == "" {
		bad("code_name is required")
	} else if err := hosted.CheckName(r.CodeName); err != nil {
		bad("%v", err)
	}
	if r.Payload == nil {
		bad("payload is required (a string)")
	}
	s := &schedule.Schedule{ID: "s" + ids.New(), Namespace: c.pid, Cron: r.Cron, TimeZone: r.TimeZone}
	checkScheduleRule(&r, s, now, bad)
	timeout, delay := checkRunOptions(r.Timeout, r.Delay, r.Priority, bad)
	if len(r.Label) > store.MaxNameLen || len(r.Cluster) > store.MaxNameLen || len(r.Name) > store.MaxNameLen {
		bad("name, label and cluster are at most %d bytes", store.MaxNameLen)
	}
	if len(errs) > 0 {
		return nil, badRequest("%s", strings.Join(errs, "; "))
	}
	p, err := a.latestPackage(c, r.CodeName)
	if err != nil {
		return nil, err
	}
	if s.Task, err = p.scheduleTask(&r, s.ID, timeout, delay); err != nil {
		return nil, err
	}
	return s, nil
}

// checkScheduleRule sets the start, end, rule and run count of s from r,
// reporting each problem to bad. A request with neither run_every nor cron
// runs once, at start_at.
func checkScheduleRule(r *scheduleReq, s *schedule.Schedule, now time.Time, bad func(format string, args ...any)) {
	parseTime := func(name string, v *string, dst *time.Time) {
		if v == nil || *v == "" {
			return
		}
		t, err := time.Parse(time.RFC3339Nano, *v)
		if err != nil {
			bad("%s %q is not an RFC 3339 time", name, trunc(*v))
			return
		}
		*dst = t
	}
	parseTime("start_at", r.StartAt, &s.StartAt)
	parseTime("end_at", r.EndAt, &s.EndAt)
	if !s.EndAt.IsZero() && (!s.EndAt.After(now) || !s.EndAt.After(s.StartAt)) {
		bad("end_at is not after start_at and now")
	}
	switch {
	case r.Cron != "" && r.RunEvery != nil:
		bad("give run_every or cron, not both")
	case r.RunEvery != nil:
		v := *r.RunEvery
		if math.IsNaN(v) || v != math.Trunc(v) || v < MinRunEvery || v > float64(schedule.MaxEvery/time.Second) {
			bad("run_every %v must be a whole number of seconds, at least %d", v, MinRunEvery)
		} else {
			s.Every = strconv.FormatInt(int64(v), 10) + "s"
		}
	case r.Cron == "":
		// No rule: the task runs once, at start_at.
		s.Every, s.MaxRuns = strconv.Itoa(MinRunEvery)+"s", 1
	}
	if r.RunTimes != nil {
		v := *r.RunTimes
		if math.IsNaN(v) || v != math.Trunc(v) || v < 1 || v > math.MaxInt32 {
			bad("run_times %v must be a positive integer", v)
		} else if s.MaxRuns != 1 {
			s.MaxRuns = int(v)
		}
	}
}

// scheduleTask builds the task each run of schedule scheduleID enqueues:
// its envelope names the package, not a revision, so each run takes the
// package's latest revision.
func (p codePackage) scheduleTask(r *scheduleReq, scheduleID string, timeout, delay int) (schedule.Task, error) {
	prio := p.rev.DefaultPriority
	if r.Priority != nil {
		prio = *r.Priority
	}
	env := hosted.Envelope{
		Payload: *r.Payload, CodeID: p.code.ID, CodeName: p.code.Name, Timeout: timeout, Delay: delay,
		Label: r.Label, Cluster: r.Cluster, RetriesDelay: p.rev.RetriesDelay, ScheduleID: scheduleID, ScheduleName: r.Name,
	}
	body, err := json.Marshal(env)
	if err != nil {
		return schedule.Task{}, err
	}
	if len(body) > schedule.MaxPayloadBytes {
		return schedule.Task{}, badRequest("payload is too large for a schedule: at most about %d bytes", schedule.MaxPayloadBytes-512)
	}
	return schedule.Task{Type: hosted.TaskType(p.code.Name), Payload: body, Options: kiln.TaskOptions{
		Queue: hosted.TaskType(p.code.Name), Priority: prio, MaxRetries: new(p.rev.Retries),
		Timeout: new(time.Duration(timeout)*time.Second + timeoutMargin), ProcessIn: time.Duration(delay) * time.Second,
	}}, nil
}

// schedule reads the route's schedule: 404 for a missing one and for a
// native schedule that is not a code package's.
func (c *call) schedule() (*schedule.Schedule, error) {
	if c.a.cfg.Schedules == nil {
		return nil, c.a.noSchedules()
	}
	id := c.r.PathValue("sid")
	if !store.ValidName(id) {
		return nil, notFound("Schedule not found")
	}
	s, err := c.a.cfg.Schedules.Get(c.ctx(), c.pid, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !strings.HasPrefix(s.Task.Type, hosted.TypePrefix)) {
		return nil, notFound("Schedule not found")
	}
	return s, err
}

func (a *API) listSchedules(c *call) error {
	if a.cfg.Schedules == nil {
		return a.noSchedules()
	}
	page, perPage, err := c.page()
	if err != nil {
		return err
	}
	all, err := a.cfg.Schedules.List(c.ctx(), c.pid)
	if err != nil {
		return err
	}
	out := []scheduleJSON{}
	skip := page * perPage
	for _, s := range all {
		if !strings.HasPrefix(s.Task.Type, hosted.TypePrefix) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if len(out) == perPage {
			break
		}
		out = append(out, c.scheduleJSON(s))
	}
	return c.ok(map[string]any{"schedules": out})
}

func (a *API) getSchedule(c *call) error {
	s, err := c.schedule()
	if err != nil {
		return err
	}
	return c.ok(c.scheduleJSON(s))
}

func (a *API) cancelSchedule(c *call) error {
	s, err := c.schedule()
	if err != nil {
		return err
	}
	// IronWorker answers a cancel of a schedule that has made all its runs
	// as any other: the schedule stays complete, and the cancel succeeds.
	if _, err := a.cfg.Schedules.Cancel(c.ctx(), c.pid, s.ID); err != nil && !errors.Is(err, store.ErrInvalidState) {
		return err
	}
	return c.ok(map[string]any{"msg": "Cancelled"})
}
