package ironapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store"
)

// publish raises an event, when the server listens.
func (a *API) publish(ev wire.Event) {
	if a.cfg.EventFunc != nil {
		a.cfg.EventFunc(ev)
	}
}

// The IronWorker task statuses.
const (
	statusQueued    = "queued"
	statusRunning   = "running"
	statusComplete  = "complete"
	statusError     = "error"
	statusCancelled = "cancelled"
	statusTimeout   = "timeout"
)

// statusOf maps a kiln task to its IronWorker status and message.
func statusOf(t *store.Task) (status, msg string) {
	switch t.State {
	case store.StateScheduled, store.StatePending:
		return statusQueued, ""
	case store.StateRetry:
		_, msg = hosted.ParseLastError(t.LastError)
		return statusQueued, msg
	case store.StateActive:
		return statusRunning, ""
	case store.StateSucceeded:
		return statusComplete, ""
	case store.StateDead:
		return hosted.ParseLastError(t.LastError)
	case store.StateCancelled:
		return statusCancelled, t.LastError
	}
	return statusError, t.LastError
}

// taskJSON is a task as the API shows it: integers as integers, times in
// RFC 3339, unset times absent.
type taskJSON struct {
	ID            string     `json:"id"`
	ProjectID     string     `json:"project_id"`
	CodeID        string     `json:"code_id"`
	CodeHistoryID string     `json:"code_history_id"`
	CodeName      string     `json:"code_name"`
	CodeRev       string     `json:"code_rev"`
	Status        string     `json:"status"`
	Msg           string     `json:"msg,omitempty"`
	Payload       string     `json:"payload"`
	Priority      int        `json:"priority"`
	Timeout       int        `json:"timeout"`
	Delay         int        `json:"delay"`
	Label         string     `json:"label,omitempty"`
	Cluster       string     `json:"cluster"`
	ScheduleID    string     `json:"schedule_id,omitempty"`
	RetryCount    int        `json:"retry_count"`
	RunTimes      int        `json:"run_times"`
	Percent       int        `json:"percent"`
	Duration      int64      `json:"duration,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	StartTime     *time.Time `json:"start_time,omitempty"`
	EndTime       *time.Time `json:"end_time,omitempty"`
}

// isCodeTask reports whether t is a task of a code package.
func isCodeTask(t *store.Task) bool { return t != nil && strings.HasPrefix(t.Type, hosted.TypePrefix) }

func (c *call) taskJSON(t *store.Task, withPayload bool) taskJSON {
	var env hosted.Envelope
	_ = json.Unmarshal(t.Payload, &env) // written by this API; a task without one shows empty fields
	status, msg := statusOf(t)
	out := taskJSON{
		ID: t.ID, ProjectID: c.pid, CodeID: env.CodeID, CodeHistoryID: historyID(env.CodeID, env.Rev),
		CodeName: strings.TrimPrefix(t.Type, hosted.TypePrefix), CodeRev: strconv.Itoa(env.Rev),
		Status: status, Msg: msg, Priority: t.Priority, Timeout: env.Timeout, Delay: env.Delay,
		Label: env.Label, Cluster: env.Cluster, ScheduleID: env.ScheduleID,
		RetryCount: max(t.Attempt-1, 0), RunTimes: t.Attempt, CreatedAt: t.CreatedAt.UTC(),
	}
	if out.Cluster == "" {
		out.Cluster = "default"
	}
	if withPayload {
		out.Payload = env.Payload
	}
	out.UpdatedAt = out.CreatedAt
	if !t.StartedAt.IsZero() {
		s := t.StartedAt.UTC()
		out.StartTime, out.UpdatedAt = &s, s
	}
	if !t.FinishedAt.IsZero() {
		e := t.FinishedAt.UTC()
		out.EndTime, out.UpdatedAt = &e, e
		if out.StartTime != nil {
			out.Duration = e.Sub(*out.StartTime).Milliseconds()
		}
	}
	if env.Rev == 0 { // a schedule's task: the revision it ran, once it has
		out.CodeRev, out.CodeHistoryID = "", ""
	}
	if status == statusComplete {
		var res struct {
			DurationMS int64 `json:"duration_ms"`
			Rev        int   `json:"rev"`
		}
		if json.Unmarshal(t.Result, &res) == nil {
			if res.DurationMS > 0 {
				out.Duration = res.DurationMS
			}
			if env.Rev == 0 && res.Rev > 0 {
				out.CodeRev, out.CodeHistoryID = strconv.Itoa(res.Rev), historyID(env.CodeID, res.Rev)
			}
		}
	}
	if t.ProgressPercent > 0 {
		out.Percent = t.ProgressPercent
	}
	return out
}

// task reads the route's task: 404 for a missing task, another project's
// and a task that is not a code package's.
func (c *call) task() (*store.Task, error) {
	id := c.r.PathValue("tid")
	if !store.ValidName(id) {
		return nil, notFound("Task not found")
	}
	res, err := c.a.st.Get(c.ctx(), store.GetParams{Namespace: c.pid, IDs: []string{id}})
	if err != nil {
		return nil, err
	}
	if len(res.Tasks) != 1 || !isCodeTask(res.Tasks[0]) {
		return nil, notFound("Task not found")
	}
	return res.Tasks[0], nil
}

func (a *API) getTask(c *call) error {
	t, err := c.task()
	if err != nil {
		return err
	}
	out := c.taskJSON(t, true)
	if p, found, err := a.reg.Progress(c.ctx(), c.pid, t.ID); err != nil {
		return err
	} else if found {
		out.Percent = p.Percent
		if out.Msg == "" {
			out.Msg = p.Msg
		}
	}
	return c.ok(out)
}

// taskLog answers the log as text/plain: 404 while a task that has not
// finished has written nothing (the clients' WaitForTaskLog retries on
// 404), an empty log once it has.
func (a *API) taskLog(c *call) error {
	t, err := c.task()
	if err != nil {
		return err
	}
	b, found, err := a.reg.ReadLog(c.ctx(), c.pid, t.ID)
	if err != nil {
		return err
	}
	if !found && !t.State.Terminal() {
		return notFound("Log not found: the task has not written any output yet")
	}
	h := c.w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	c.w.WriteHeader(http.StatusOK)
	_, _ = c.w.Write(b) // a failed write means the client left
	return nil
}

func (a *API) cancelTask(c *call) error {
	t, err := c.task()
	if err != nil {
		return err
	}
	res, err := a.st.Cancel(c.ctx(), store.IDsParams{Namespace: c.pid, IDs: []string{t.ID}})
	if err != nil {
		return err
	}
	if e := res.Items[0].Err; errors.Is(e, store.ErrInvalidState) {
		status, _ := statusOf(t)
		return badRequest("Task is already finished (%s)", status)
	} else if errors.Is(e, store.ErrNotFound) {
		return notFound("Task not found")
	} else if e != nil {
		return e
	}
	a.publish(wire.Event{Kind: wire.EventTaskCancelled, Project: c.pid, TaskID: t.ID, Type: t.Type, Queue: t.Queue, State: res.Items[0].State.String()})
	return c.ok(map[string]any{"msg": "Cancelled"})
}

func (a *API) setProgress(c *call) error {
	t, err := c.task()
	if err != nil {
		return err
	}
	var req struct {
		Percent *float64 `json:"percent"`
		Msg     string   `json:"msg"`
	}
	b, err := readBody(c, MaxPayloadBytes)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := decodeJSON(b, &req); err != nil {
			return err
		}
	}
	p := hosted.Progress{Msg: req.Msg}
	if req.Percent != nil {
		v := *req.Percent
		if math.IsNaN(v) || v < 0 || v > 100 || v != math.Trunc(v) {
			return badRequest("percent must be an integer in 0..100")
		}
		p.Percent = int(v)
	}
	if len(p.Msg) > 4096 {
		return badRequest("msg is longer than 4096 bytes")
	}
	if err := a.reg.SetProgress(c.ctx(), c.pid, t.ID, p); err != nil {
		return err
	}
	a.publish(wire.Event{Kind: wire.EventTaskProgress, Project: c.pid, TaskID: t.ID, Percent: p.Percent, Message: p.Msg})
	return c.ok(map[string]any{"msg": "Progress set"})
}

// retryTask queues a new task with the finished task's code package,
// payload and options (IronWorker makes a new task), after "delay"
// seconds.
func (a *API) retryTask(c *call) error {
	t, err := c.task()
	if err != nil {
		return err
	}
	if !t.State.Terminal() {
		return badRequest("Task is not finished: only a finished task can be retried")
	}
	var req struct {
		Delay *float64 `json:"delay"`
	}
	b, err := readBody(c, MaxPayloadBytes)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		if err := decodeJSON(b, &req); err != nil {
			return err
		}
	}
	var env hosted.Envelope
	if err := json.Unmarshal(t.Payload, &env); err != nil {
		return err
	}
	q := queueReq{CodeName: env.CodeName, Payload: &env.Payload, Priority: &t.Priority, Label: env.Label, Cluster: env.Cluster}
	to := float64(env.Timeout)
	q.Timeout = &to
	q.Delay = req.Delay
	idList, err := a.queue(c, []queueReq{q})
	if err != nil {
		return err
	}
	return c.ok(map[string]any{"msg": "Queued up", "tasks": []map[string]string{{"id": idList[0]}}})
}

// queueReq is one task of a queue request. Unknown fields are ignored.
type queueReq struct {
	CodeName string   `json:"code_name"`
	Payload  *string  `json:"payload"`
	Priority *int     `json:"priority"`
	Timeout  *float64 `json:"timeout"`
	Delay    *float64 `json:"delay"`
	Label    string   `json:"label"`
	Cluster  string   `json:"cluster"`
}

// readBody reads the request's body up to limit bytes. A declared
// Content-Length beyond it is refused (413) before a byte is read, so that
// a client waiting on "Expect: 100-continue" gets the answer, not a reset.
func readBody(c *call, limit int64) ([]byte, error) {
	if err := checkLength(c, limit); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, limit))
	if err != nil {
		return nil, asBodyError(err, "cannot read the request body: %v", err)
	}
	return b, nil
}

func (a *API) queueTasks(c *call) error {
	b, err := readBody(c, MaxBodyBytes)
	if err != nil {
		return err
	}
	var req struct {
		Tasks *[]queueReq `json:"tasks"`
	}
	if err := decodeJSON(b, &req); err != nil {
		return err
	}
	if req.Tasks == nil || len(*req.Tasks) == 0 {
		return badRequest("tasks is required: a list of at least one task")
	}
	if len(*req.Tasks) > MaxBatch {
		return errStatus(http.StatusRequestEntityTooLarge, "at most %d tasks in one request, not %d", MaxBatch, len(*req.Tasks))
	}
	idList, err := a.queue(c, *req.Tasks)
	if err != nil {
		return err
	}
	out := make([]map[string]string, len(idList))
	for i, id := range idList {
		out[i] = map[string]string{"id": id}
	}
	return c.ok(map[string]any{"msg": "Queued up", "tasks": out})
}

// queueWebhook queues one task whose payload is the raw request body;
// the options come from the query (code_name, priority, delay, timeout,
// cluster, label).
func (a *API) queueWebhook(c *call) error {
	q := c.r.URL.Query()
	b, err := readBody(c, MaxPayloadBytes)
	if err != nil {
		return err
	}
	payload := string(b)
	req := queueReq{CodeName: q.Get("code_name"), Payload: &payload, Label: q.Get("label"), Cluster: q.Get("cluster")}
	num := func(name string) (*float64, error) {
		s := q.Get(name)
		if s == "" {
			return nil, nil
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, badRequest("%s must be a number", name)
		}
		return &v, nil
	}
	if req.Timeout, err = num("timeout"); err != nil {
		return err
	}
	if req.Delay, err = num("delay"); err != nil {
		return err
	}
	if p, err := num("priority"); err != nil {
		return err
	} else if p != nil {
		if *p != math.Trunc(*p) {
			return badRequest("priority must be 0, 1 or 2")
		}
		v := int(*p)
		req.Priority = &v
	}
	idList, err := a.queue(c, []queueReq{req})
	if err != nil {
		return err
	}
	return c.ok(map[string]any{"id": idList[0], "msg": "Queued up."})
}

// queue checks every task, then enqueues them all in one store call; an
// invalid task fails the request and nothing is queued. The request's W3C
// traceparent header, when valid, is every task's trace context (as on
// the native API); an invalid one is ignored.
func (a *API) queue(c *call, reqs []queueReq) ([]string, error) {
	now := a.cfg.Clock.Now()
	traceParent := c.r.Header.Get("traceparent")
	if !store.ValidTraceParent(traceParent) {
		traceParent = ""
	}
	pkgs := make(map[string]codePackage)
	inputs := make([]store.TaskInput, 0, len(reqs))
	var problems []string
	for i, r := range reqs {
		bad := func(format string, args ...any) {
			if len(problems) < 10 {
				prefix := ""
				if len(reqs) > 1 {
					prefix = "tasks[" + strconv.Itoa(i) + "]: "
				}
				problems = append(problems, prefix+sprintf(format, args...))
			}
		}
		n := len(problems)
		timeout, delay := checkQueueReq(&r, bad)
		if len(problems) > n {
			continue
		}
		p, ok := pkgs[r.CodeName]
		if !ok {
			var err error
			if p, err = a.latestPackage(c, r.CodeName); err != nil {
				return nil, err
			}
			pkgs[r.CodeName] = p
		}
		in, err := p.taskInput(&r, timeout, delay, now)
		if err != nil {
			return nil, err
		}
		in.TraceParent = traceParent
		if err := in.Validate(a.cfg.Limits, now); err != nil {
			bad("%v", err)
			continue
		}
		inputs = append(inputs, in)
	}
	if len(problems) > 0 {
		return nil, badRequest("Invalid task: %s", strings.Join(problems, "; "))
	}
	return a.enqueueInputs(c, inputs)
}

// codePackage is a code package and the revision its new tasks run.
type codePackage struct {
	code *hosted.Code
	rev  *hosted.Revision
}

// checkQueueReq reports every problem of one task of a queue request to
// bad and returns its timeout and delay in whole seconds (defaults:
// MaxTimeout and none).
func checkQueueReq(r *queueReq, bad func(format string, args ...any)) (timeout, delay int) {
	if r.CodeName == "" {
		bad("code_name is required")
	} else if err := hosted.CheckName(r.CodeName); err != nil {
		bad("%v", err)
	}
	if r.Payload == nil {
		bad("payload is required (a string)")
	} else if len(*r.Payload) > MaxPayloadBytes {
		bad("payload is %d bytes, more than %d", len(*r.Payload), MaxPayloadBytes)
	}
	timeout, delay = checkRunOptions(r.Timeout, r.Delay, r.Priority, bad)
	if len(r.Label) > store.MaxNameLen || len(r.Cluster) > store.MaxNameLen {
		bad("label and cluster are at most %d bytes", store.MaxNameLen)
	}
	return timeout, delay
}

// checkRunOptions checks the timeout, delay and priority of a task or a
// schedule, reporting each problem to bad, and returns the timeout and
// delay in whole seconds (defaults: MaxTimeout and none).
func checkRunOptions(timeoutSec, delaySec *float64, priority *int, bad func(format string, args ...any)) (timeout, delay int) {
	timeout = MaxTimeout
	if timeoutSec != nil {
		v := *timeoutSec
		if math.IsNaN(v) || v <= 0 || v > MaxTimeout {
			bad("timeout %v is outside 1..%d seconds", v, MaxTimeout)
		} else {
			timeout = int(math.Ceil(v))
		}
	}
	if delaySec != nil {
		v := *delaySec
		if math.IsNaN(v) || v < 0 || v > MaxDelay {
			bad("delay %v is outside 0..%d seconds", v, MaxDelay)
		} else {
			delay = int(math.Ceil(v))
		}
	}
	if priority != nil && (*priority < 0 || *priority > 2) {
		bad("priority %d is outside 0..2", *priority)
	}
	return timeout, delay
}

// latestPackage finds the code package named name in c's project and its
// latest revision; a missing one is IronWorker's "Code not found".
func (a *API) latestPackage(c *call, name string) (codePackage, error) {
	code, err := a.reg.Lookup(c.ctx(), c.pid, name)
	if errors.Is(err, hosted.ErrNotFound) {
		return codePackage{}, notFound("Code not found: no code package named %q in project %s", trunc(name), c.pid)
	}
	if err != nil {
		return codePackage{}, err
	}
	rev, err := a.reg.Latest(c.ctx(), c.pid, code.ID)
	if errors.Is(err, hosted.ErrNotFound) {
		return codePackage{}, notFound("Code not found: no code package named %q in project %s", trunc(name), c.pid)
	}
	if err != nil {
		return codePackage{}, err
	}
	return codePackage{code, rev}, nil
}

// taskInput builds the store input of a checked task of p: its envelope
// as payload, the package's priority and retries unless the task names
// them, and its delay.
func (p codePackage) taskInput(r *queueReq, timeout, delay int, now time.Time) (store.TaskInput, error) {
	prio := p.rev.DefaultPriority
	if r.Priority != nil {
		prio = *r.Priority
	}
	env := hosted.Envelope{
		Payload: *r.Payload, CodeID: p.code.ID, CodeName: p.code.Name, Rev: p.rev.Rev,
		Timeout: timeout, Delay: delay, Label: r.Label, Cluster: r.Cluster, RetriesDelay: p.rev.RetriesDelay,
	}
	body, err := json.Marshal(env)
	if err != nil {
		return store.TaskInput{}, err
	}
	in := store.TaskInput{
		ID: ids.New(), NewID: true, Type: hosted.TaskType(p.code.Name), Queue: hosted.TaskType(p.code.Name),
		Payload: body, Priority: prio, MaxRetries: p.rev.Retries,
	}
	if delay > 0 {
		in.RunAt = now.Add(time.Duration(delay) * time.Second)
	}
	return in, nil
}

// enqueueInputs enqueues checked tasks in one store call, raises their
// task.enqueued events and returns their ids.
func (a *API) enqueueInputs(c *call, inputs []store.TaskInput) ([]string, error) {
	ctx, span := a.startEnqueue(c, inputs)
	res, err := a.st.Enqueue(ctx, store.EnqueueParams{Namespace: c.pid, Tasks: inputs})
	tracing.End(span, err)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(inputs))
	for i, it := range res.Items {
		if it.Err != nil {
			return nil, it.Err
		}
		out[i] = it.ID
		a.publish(wire.Event{Kind: wire.EventTaskEnqueued, Project: c.pid, TaskID: it.ID, Type: inputs[i].Type, Queue: inputs[i].Queue, State: it.State.String()})
	}
	return out, nil
}

// startEnqueue starts the kiln.enqueue span of an enqueue, when tracing is
// on (Config.TracerProvider): the child of the request's server span, else
// of its valid traceparent header; every task takes the span's trace
// context. Without tracing it returns the request's context and a nil
// span.
func (a *API) startEnqueue(c *call, inputs []store.TaskInput) (context.Context, trace.Span) {
	ctx := c.ctx()
	if a.tracer == nil {
		return ctx, nil
	}
	if h := c.r.Header.Get("traceparent"); !trace.SpanContextFromContext(ctx).IsValid() && store.ValidTraceParent(h) {
		ctx = tracing.WithTraceParent(ctx, h)
	}
	return tracing.StartEnqueue(ctx, a.tracer, inputs, true)
}

// maxListCalls bounds the store List calls of one task listing: each
// examines at most store.MaxListScan tasks (and returns at most
// store.MaxListLimit), so one request examines at most 120,000 tasks and
// can skip at least 12,000 (page 100 of 100 is 10,000).
const maxListCalls = 12

// listTasks lists the project's code package tasks, newest first, with
// IronWorker's filters: code_name (empty: all), label, the status flags
// (any value but "", "0" and "false" turns one on; several are OR-ed;
// none means all), from_time and to_time (Unix seconds, created after and
// before) and paging.
func (a *API) listTasks(c *call) error {
	q := c.r.URL.Query()
	page, perPage, err := c.page()
	if err != nil {
		return err
	}
	p := store.ListParams{Namespace: c.pid, Newest: true, WithPayload: true, Limit: store.MaxListLimit}
	if name := q.Get("code_name"); name != "" {
		if hosted.CheckName(name) != nil {
			return c.ok(map[string]any{"tasks": []taskJSON{}})
		}
		p.Type = hosted.TaskType(name)
	}
	for _, bound := range []struct {
		name string
		dst  *time.Time
	}{{"from_time", &p.CreatedAfter}, {"to_time", &p.CreatedBefore}} {
		if s := q.Get(bound.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return badRequest("%s must be Unix seconds", bound.name)
			}
			*bound.dst = time.Unix(v, 0)
		}
	}
	want := statusFilter(q)
	label := q.Get("label")
	skip := page * perPage
	out := []taskJSON{}
	for calls := 0; len(out) < perPage && calls < maxListCalls; calls++ {
		res, err := a.st.List(c.ctx(), p)
		if err != nil {
			return err
		}
		for _, t := range res.Tasks {
			if !isCodeTask(t) {
				continue
			}
			tj := c.taskJSON(t, false)
			if want != nil && !want[tj.Status] {
				continue
			}
			if label != "" && tj.Label != label {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, tj)
			if len(out) == perPage {
				break
			}
		}
		if res.NextCursor == "" {
			break
		}
		p.Cursor = res.NextCursor
	}
	return c.ok(map[string]any{"tasks": out})
}

// statusFilter returns the statuses asked for, or nil for all. The Go
// client sends "<status>=%!d(bool=true)": any value but "", "0" and
// "false" counts as on.
func statusFilter(q url.Values) map[string]bool {
	var want map[string]bool
	for _, s := range []string{statusQueued, "preparing", statusRunning, statusComplete, statusError, statusCancelled, statusTimeout, "killed"} {
		v, ok := q[s]
		if !ok || len(v) == 0 {
			continue
		}
		switch strings.ToLower(v[0]) {
		case "", "0", "false":
			continue
		}
		if want == nil {
			want = make(map[string]bool)
		}
		switch s {
		case "killed":
			want[statusCancelled] = true
		case "preparing":
			want[statusQueued] = true
		default:
			want[s] = true
		}
	}
	return want
}
