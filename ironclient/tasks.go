package ironclient

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Task statuses.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusComplete  = "complete"
	StatusError     = "error"
	StatusCancelled = "cancelled"
	StatusTimeout   = "timeout"
)

// Final reports whether status is a final one: complete, error, cancelled
// or timeout.
func Final(status string) bool {
	switch status {
	case StatusComplete, StatusError, StatusCancelled, StatusTimeout:
		return true
	}
	return false
}

// Priority returns a pointer to p, for TaskOptions.Priority and
// ScheduleOptions.Priority.
func Priority(p int) *int { return &p }

// TaskOptions are the options of a queued task; the zero value takes the
// server's and the package's defaults.
type TaskOptions struct {
	// Timeout bounds the task's run, rounded up to whole seconds (1 s to
	// 1 h); 0 means the server's default (1 h).
	Timeout time.Duration
	// Priority is 0, 1 or 2 (higher runs first); nil means the package's
	// default_priority.
	Priority *int
	// Delay holds the task back this long (up to 7 days), rounded up to
	// whole seconds.
	Delay time.Duration
	// Label tags the task (list filter).
	Label string
	// Cluster is kept and shown; kiln runs every task on its runners.
	Cluster string
}

// TaskRequest is one task of QueueBatch.
type TaskRequest struct {
	// CodeName is the code package to run.
	CodeName string
	// Payload is given to the task as its -payload file: a string, []byte
	// or json.RawMessage as it is, anything else as JSON.
	Payload any
	TaskOptions
}

// queueItem is one task of the API's queue request.
type queueItem struct {
	CodeName string `json:"code_name"`
	Payload  string `json:"payload"`
	Priority *int   `json:"priority,omitempty"`
	Timeout  int64  `json:"timeout,omitempty"`
	Delay    int64  `json:"delay,omitempty"`
	Label    string `json:"label,omitempty"`
	Cluster  string `json:"cluster,omitempty"`
}

// Queue queues one task of the package codeName and returns its id.
// payload is a string, []byte or json.RawMessage sent as it is, or a value
// sent as JSON.
func (c *Client) Queue(ctx context.Context, codeName string, payload any, opts TaskOptions) (string, error) {
	ids, err := c.QueueBatch(ctx, []TaskRequest{{CodeName: codeName, Payload: payload, TaskOptions: opts}})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// QueueBatch queues tasks and returns their ids in order. Each request of
// at most MaxBatch tasks is all or nothing: one invalid task fails it and
// queues none of it. A larger batch is sent MaxBatch at a time; if a
// request fails, the ids of the tasks queued by the requests before it are
// returned with the error.
func (c *Client) QueueBatch(ctx context.Context, tasks []TaskRequest) ([]string, error) {
	if len(tasks) == 0 {
		return nil, nil
	}
	items := make([]queueItem, len(tasks))
	for i, t := range tasks {
		p, err := payloadString(t.Payload)
		if err != nil {
			return nil, fmt.Errorf("ironclient: task %d: %w", i, err)
		}
		items[i] = queueItem{
			CodeName: t.CodeName, Payload: p, Priority: t.Priority, Timeout: seconds(t.Timeout),
			Delay: seconds(t.Delay), Label: t.Label, Cluster: t.Cluster,
		}
	}
	ids := make([]string, 0, len(items))
	for len(items) > 0 {
		n := min(len(items), MaxBatch)
		var out struct {
			Tasks []struct {
				ID string `json:"id"`
			} `json:"tasks"`
		}
		if err := c.doJSON(ctx, http.MethodPost, "/tasks", map[string]any{"tasks": items[:n]}, &out); err != nil {
			return ids, err
		}
		if len(out.Tasks) != n {
			return ids, fmt.Errorf("ironclient: POST /tasks: %d ids for %d tasks", len(out.Tasks), n)
		}
		for _, t := range out.Tasks {
			ids = append(ids, t.ID)
		}
		items = items[n:]
	}
	return ids, nil
}

// Task is a task as the server shows it.
type Task struct {
	ID            string `json:"id"`
	ProjectID     string `json:"project_id"`
	CodeID        string `json:"code_id"`
	CodeName      string `json:"code_name"`
	CodeRev       string `json:"code_rev"`
	CodeHistoryID string `json:"code_history_id"`
	// Status is one of the Status constants.
	Status string `json:"status"`
	// Msg says why a task failed ("exit status 3"), or its progress
	// message.
	Msg        string `json:"msg"`
	Payload    string `json:"payload"`
	Priority   int    `json:"priority"`
	Timeout    int    `json:"timeout"` // seconds
	Delay      int    `json:"delay"`   // seconds
	Label      string `json:"label"`
	Cluster    string `json:"cluster"`
	ScheduleID string `json:"schedule_id"`
	RetryCount int    `json:"retry_count"`
	RunTimes   int    `json:"run_times"`
	Percent    int    `json:"percent"`
	// Duration is the run time in milliseconds.
	Duration  int64      `json:"duration"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	StartTime *time.Time `json:"start_time,omitempty"`
	EndTime   *time.Time `json:"end_time,omitempty"`
}

// Final reports whether the task has finished.
func (t *Task) Final() bool { return Final(t.Status) }

// TaskInfo reads a task.
func (c *Client) TaskInfo(ctx context.Context, id string) (*Task, error) {
	var t Task
	if err := c.doJSON(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id), nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// WaitForTask polls the task until its status is final and returns it. The
// interval doubles from Config.PollMin to Config.PollMax; the wait ends
// with ctx, or after Config.MaxWait when ctx has no deadline. A failed
// task is not an error: look at its Status and Msg.
func (c *Client) WaitForTask(ctx context.Context, id string) (*Task, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.MaxWait)
		defer cancel()
	}
	interval := c.cfg.PollMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ironclient: waiting for task %s: %w", id, ctx.Err())
		case <-timer.C:
		}
		t, err := c.TaskInfo(ctx, id)
		if err != nil {
			return nil, err
		}
		if t.Final() {
			return t, nil
		}
		timer.Reset(interval)
		interval = min(interval*2, c.cfg.PollMax)
	}
}

// Log returns the task's output (stdout and stderr together). A running
// task's log is what it has written so far; a task that has written
// nothing yet and has not finished is a 404 (IsNotFound).
func (c *Client) Log(ctx context.Context, id string) (string, error) {
	b, err := c.do(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id)+"/log", "", nil, nil)
	return string(b), err
}

// Cancel cancels a task: a queued task at once, a running one's process
// group within seconds. Cancelling a finished task is a 400 error.
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodPost, "/tasks/"+url.PathEscape(id)+"/cancel", nil, nil)
}

// SetProgress sets a task's progress (percent 0-100 and a message); a
// task can report its own with the id it was given (-id, TASK_ID).
func (c *Client) SetProgress(ctx context.Context, id string, percent int, msg string) error {
	return c.doJSON(ctx, http.MethodPost, "/tasks/"+url.PathEscape(id)+"/progress", map[string]any{"percent": percent, "msg": msg}, nil)
}

// TaskFilter selects tasks for Tasks; the zero value lists the newest
// page of every package's tasks.
type TaskFilter struct {
	// CodeName is the package; empty means all.
	CodeName string
	// Statuses keeps only tasks in these statuses; empty means all.
	Statuses []string
	// Label keeps only tasks with this label.
	Label string
	// From and To bound the creation time (whole seconds).
	From, To time.Time
	// Page (0-100) and PerPage (1-100; 0 means 30) page through the
	// tasks, newest first.
	Page, PerPage int
}

// Tasks lists one page of the project's tasks, newest first.
func (c *Client) Tasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	q := url.Values{}
	if f.CodeName != "" {
		q.Set("code_name", f.CodeName)
	}
	for _, s := range f.Statuses {
		q.Set(s, "1")
	}
	if f.Label != "" {
		q.Set("label", f.Label)
	}
	if !f.From.IsZero() {
		q.Set("from_time", strconv.FormatInt(f.From.Unix(), 10))
	}
	if !f.To.IsZero() {
		q.Set("to_time", strconv.FormatInt(f.To.Unix(), 10))
	}
	if f.Page > 0 {
		q.Set("page", strconv.Itoa(f.Page))
	}
	if f.PerPage > 0 {
		q.Set("per_page", strconv.Itoa(f.PerPage))
	}
	var out struct {
		Tasks []Task `json:"tasks"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/tasks?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out.Tasks, nil
}
