package ironclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ScheduleOptions say when a schedule runs its task, and with what
// options. Without RunEvery or Cron the task runs once, at StartAt.
type ScheduleOptions struct {
	// Name names the schedule (shown, not unique).
	Name string
	// StartAt is the first run time; zero means now.
	StartAt time.Time
	// EndAt ends the schedule; zero means never.
	EndAt time.Time
	// RunEvery is the interval between runs: whole seconds, at least a
	// minute.
	RunEvery time.Duration
	// Cron is a cron expression instead of RunEvery (a kiln extension),
	// read in TimeZone (an IANA name; empty means UTC).
	Cron, TimeZone string
	// RunTimes caps the number of runs; 0 means no cap.
	RunTimes int
	// Priority is 0, 1 or 2; nil means the package's default.
	Priority *int
	// Timeout and Delay are each run's task's, as in TaskOptions.
	Timeout, Delay time.Duration
	// Label and Cluster are each run's task's.
	Label, Cluster string
}

// Schedule is a schedule as the server shows it.
type Schedule struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	CodeName  string `json:"code_name"`
	Name      string `json:"name"`
	Payload   string `json:"payload"`
	// Status is "scheduled", "complete" (ran its run_times or passed
	// end_at) or "cancelled".
	Status      string     `json:"status"`
	Msg         string     `json:"msg"`
	Priority    int        `json:"priority"`
	Timeout     int        `json:"timeout"`
	Delay       int        `json:"delay"`
	Label       string     `json:"label"`
	Cluster     string     `json:"cluster"`
	RunEvery    int        `json:"run_every"` // seconds
	Cron        string     `json:"cron"`
	TimeZone    string     `json:"time_zone"`
	RunTimes    int        `json:"run_times"`
	RunCount    int64      `json:"run_count"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	StartAt     *time.Time `json:"start_at,omitempty"`
	EndAt       *time.Time `json:"end_at,omitempty"`
	NextStart   *time.Time `json:"next_start,omitempty"`
	LastRunTime *time.Time `json:"last_run_time,omitempty"`
}

// scheduleItem is one schedule of the API's create request.
type scheduleItem struct {
	CodeName string `json:"code_name"`
	Name     string `json:"name,omitempty"`
	Payload  string `json:"payload"`
	StartAt  string `json:"start_at,omitempty"`
	EndAt    string `json:"end_at,omitempty"`
	RunEvery int64  `json:"run_every,omitempty"`
	RunTimes int    `json:"run_times,omitempty"`
	Priority *int   `json:"priority,omitempty"`
	Timeout  int64  `json:"timeout,omitempty"`
	Delay    int64  `json:"delay,omitempty"`
	Label    string `json:"label,omitempty"`
	Cluster  string `json:"cluster,omitempty"`
	Cron     string `json:"cron,omitempty"`
	TimeZone string `json:"time_zone,omitempty"`
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Schedule creates a schedule that queues a task of codeName with payload
// (as in Queue) at the times opts says, and returns its id.
func (c *Client) Schedule(ctx context.Context, codeName string, payload any, opts ScheduleOptions) (string, error) {
	p, err := payloadString(payload)
	if err != nil {
		return "", err
	}
	if opts.RunEvery%time.Second != 0 {
		return "", fmt.Errorf("ironclient: RunEvery %v is not a whole number of seconds", opts.RunEvery)
	}
	item := scheduleItem{
		CodeName: codeName, Name: opts.Name, Payload: p, StartAt: rfc3339(opts.StartAt), EndAt: rfc3339(opts.EndAt),
		RunEvery: int64(opts.RunEvery / time.Second), RunTimes: opts.RunTimes, Priority: opts.Priority,
		Timeout: seconds(opts.Timeout), Delay: seconds(opts.Delay), Label: opts.Label, Cluster: opts.Cluster,
		Cron: opts.Cron, TimeZone: opts.TimeZone,
	}
	var out struct {
		Schedules []struct {
			ID string `json:"id"`
		} `json:"schedules"`
	}
	if err := c.doJSON(ctx, http.MethodPost, "/schedules", map[string]any{"schedules": []scheduleItem{item}}, &out); err != nil {
		return "", err
	}
	if len(out.Schedules) != 1 {
		return "", fmt.Errorf("ironclient: POST /schedules: %d ids for one schedule", len(out.Schedules))
	}
	return out.Schedules[0].ID, nil
}

// ScheduleInfo reads a schedule.
func (c *Client) ScheduleInfo(ctx context.Context, id string) (*Schedule, error) {
	var s Schedule
	if err := c.doJSON(ctx, http.MethodGet, "/schedules/"+url.PathEscape(id), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Schedules lists the project's schedules (one page of at most 100).
func (c *Client) Schedules(ctx context.Context) ([]Schedule, error) {
	var out struct {
		Schedules []Schedule `json:"schedules"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/schedules?per_page=100", nil, &out); err != nil {
		return nil, err
	}
	return out.Schedules, nil
}

// CancelSchedule cancels a schedule: it queues no more tasks; the tasks it
// queued stay.
func (c *Client) CancelSchedule(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodPost, "/schedules/"+url.PathEscape(id)+"/cancel", nil, nil)
}
