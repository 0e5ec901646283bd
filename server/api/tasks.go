package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/store"
)

// TaskInput turns one task of an enqueue into the store's input, with the
// defaults and validation of kiln.Client (see wire.TaskOptions for absent
// and present options), judged at time now against l.
func TaskInput(req *wire.TaskRequest, l store.Limits, now time.Time) (store.TaskInput, error) {
	var o wire.TaskOptions
	if req.Options != nil {
		o = *req.Options
	}
	opts, err := taskOptions(&o)
	if err != nil {
		return store.TaskInput{}, err
	}
	payload, err := req.PayloadBytes()
	if err != nil {
		return store.TaskInput{}, err
	}
	in, err := hook.TaskInput(&opts, req.Type, payload, l, now)
	if err == nil && o.TraceParent != "" {
		if !store.ValidTraceParent(o.TraceParent) {
			return in, errf(wire.CodeInvalidOption, "traceparent", "%q is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)", o.TraceParent)
		}
		in.TraceParent = o.TraceParent
	}
	return in, err
}

// taskOptions turns the options of a request into kiln's, by the one rule
// of docs/decisions/005-option-defaults.md: an absent option stays unset
// (kiln applies its default), a present one is taken as given, 0 included.
func taskOptions(o *wire.TaskOptions) (kiln.TaskOptions, error) {
	if err := o.CheckDurations(); err != nil {
		return kiln.TaskOptions{}, err
	}
	opts := kiln.TaskOptions{
		ID: o.ID, Queue: o.Queue, Priority: o.Priority, ProcessAt: wire.TimeVal(o.ProcessAt),
		ProcessIn: wire.Dur(o.ProcessInMS), Deadline: wire.TimeVal(o.Deadline), UniqueKey: o.UniqueKey,
		UniqueTTL: wire.Dur(o.UniqueTTLMS), UniqueUntilSuccess: o.UniqueUntilSuccess, Retention: wire.Dur(o.RetentionMS),
	}
	if o.MaxRetries != nil {
		n := *o.MaxRetries
		if n < 0 {
			return kiln.TaskOptions{}, errf(wire.CodeInvalidOption, "max_retries", "%d is negative (0 means no retries)", n)
		}
		opts.MaxRetries = &n
	}
	if o.TimeoutMS != nil {
		d := wire.Dur(*o.TimeoutMS)
		opts.Timeout = &d
	}
	return opts, nil
}

func (a *API) enqueue(c *call) error {
	var req wire.EnqueueRequest
	if isContentType(c.r, wirebin.EnqueueType) {
		b, err := readBody(c.w, c.r, a.cfg.MaxBodyBytes)
		if err != nil {
			return err
		}
		if req.Tasks, err = wirebin.DecodeEnqueue(b); err != nil {
			return wire.Errorf(wire.CodeBadRequest, "%v", err)
		}
	} else if err := c.decode(&req, false); err != nil {
		return err
	}
	// Say that the binary body is welcome (docs/api.md, "Binary encoding
	// for workers").
	c.w.Header().Set("Accept-Post", "application/json, "+wirebin.EnqueueType)
	if len(req.Tasks) == 0 || len(req.Tasks) > store.MaxBatch {
		return errf(wire.CodeInvalidOption, "tasks", "%d tasks; a batch has 1..%d", len(req.Tasks), store.MaxBatch)
	}
	now := a.clock.Now()
	// The request's W3C trace context, for the tasks that bring none of
	// their own; one that is not valid is ignored, as the W3C says.
	header := c.r.Header.Get("traceparent")
	if !store.ValidTraceParent(header) {
		header = ""
	}
	out := make([]wire.EnqueueItem, len(req.Tasks))
	inputs := make([]store.TaskInput, 0, len(req.Tasks))
	index := make([]int, 0, len(req.Tasks))
	for i := range req.Tasks {
		in, err := TaskInput(&req.Tasks[i], a.cfg.Limits, now)
		if err != nil {
			out[i] = wire.EnqueueItem{ID: in.ID, Error: wire.Object(err)}
			continue
		}
		if f := a.cfg.TaskDefaults; f != nil {
			o := req.Tasks[i].Options
			if err := f(c.ctx(), c.ns(), &in, o != nil && o.Queue != ""); err != nil {
				return err
			}
		}
		if in.TraceParent == "" {
			in.TraceParent = header
		}
		inputs = append(inputs, in)
		index = append(index, i)
	}
	if len(inputs) > 0 {
		ctx, span := a.startEnqueue(c, inputs)
		res, err := a.st.Enqueue(ctx, store.EnqueueParams{Namespace: c.ns(), Tasks: inputs})
		tracing.End(span, err)
		if err != nil {
			return err
		}
		for j, it := range res.Items {
			i := index[j]
			item := wire.EnqueueItem{ID: it.ID, Error: wire.Object(it.Err)}
			if it.Err == nil {
				item.State = it.State.String()
				a.publish(wire.Event{Kind: wire.EventTaskEnqueued, Project: c.ns(), TaskID: it.ID, Type: inputs[j].Type, Queue: inputs[j].Queue, State: item.State})
			} else if item.Error.Code == wire.CodeDuplicate {
				item.Error.ID = it.ID
			}
			out[i] = item
		}
	}
	return c.json(http.StatusOK, wire.EnqueueResponse{Tasks: out})
}

// startEnqueue starts the kiln.enqueue span of an enqueue request, when
// tracing is on: the child of the request's server span, else of its
// traceparent header. The tasks that bring no trace context of their own
// (or only the header's) take the span's. Without tracing it returns the
// request's context and a nil span.
func (a *API) startEnqueue(c *call, inputs []store.TaskInput) (context.Context, trace.Span) {
	ctx := c.ctx()
	if a.tracer == nil {
		return ctx, nil
	}
	header := c.r.Header.Get("traceparent")
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = tracing.WithTraceParent(ctx, header)
	}
	if header != "" {
		for i := range inputs {
			if inputs[i].TraceParent == header {
				inputs[i].TraceParent = ""
			}
		}
	}
	return tracing.StartEnqueue(ctx, a.tracer, inputs, false)
}

// query checks a request's query parameters against the allowed names
// (each at most once) and returns them.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "malformed query string: %v", err)
	}
	for k, v := range q {
		ok := false
		for _, n := range allowed {
			ok = ok || n == k
		}
		if !ok {
			return nil, errf(wire.CodeBadRequest, k, "unknown query parameter %q", k)
		}
		if len(v) > 1 {
			return nil, errf(wire.CodeBadRequest, k, "query parameter %q given more than once", k)
		}
	}
	return q, nil
}

func queryInt(q url.Values, name string, lo, hi int64) (int64, error) {
	s := q.Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errf(wire.CodeBadRequest, name, "%q is not an integer", s)
	}
	if n < lo || n > hi {
		return 0, errf(wire.CodeInvalidOption, name, "%d is outside %d..%d", n, lo, hi)
	}
	return n, nil
}

func queryTime(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errf(wire.CodeBadRequest, name, "%q is not an RFC 3339 time", s)
	}
	return t, nil
}

func queryBool(q url.Values, name string) (bool, error) {
	switch s := q.Get(name); s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errf(wire.CodeBadRequest, name, "%q is not true or false", s)
	}
}

func (a *API) listTasks(c *call) error {
	q, err := query(c.r, "queue", "type", "state", "created_after", "created_before", "limit", "cursor", "order", "payload")
	if err != nil {
		return err
	}
	p := store.ListParams{Namespace: c.ns(), Queue: q.Get("queue"), Type: q.Get("type"), Cursor: q.Get("cursor")}
	if p.Queue != "" {
		if err := store.CheckName("queue", p.Queue); err != nil {
			return err
		}
	}
	if p.Type != "" {
		if err := store.CheckName("type", p.Type); err != nil {
			return err
		}
	}
	if s := q.Get("state"); s != "" {
		for _, name := range strings.Split(s, ",") {
			st, err := store.ParseState(name)
			if err != nil {
				return errf(wire.CodeInvalidOption, "state", "%q is not a state", name)
			}
			p.States = append(p.States, st)
		}
	}
	if p.CreatedAfter, err = queryTime(q, "created_after"); err != nil {
		return err
	}
	if p.CreatedBefore, err = queryTime(q, "created_before"); err != nil {
		return err
	}
	limit, err := queryInt(q, "limit", 0, store.MaxListLimit)
	if err != nil {
		return err
	}
	p.Limit = int(limit)
	switch o := q.Get("order"); o {
	case "", "oldest":
	case "newest":
		p.Newest = true
	default:
		return errf(wire.CodeInvalidOption, "order", "%q is not oldest or newest", o)
	}
	if p.WithPayload, err = queryBool(q, "payload"); err != nil {
		return err
	}
	res, err := a.st.List(c.ctx(), p)
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.TaskList{Tasks: wire.FromTasks(res.Tasks), NextCursor: res.NextCursor})
}

// taskID returns the {id} of the route, validated.
func (c *call) taskID() (string, error) {
	id := c.r.PathValue("id")
	return id, store.CheckName("id", id)
}

// getOne reads one task; a missing one is not_found.
func (c *call) getOne(id string) (*store.Task, error) {
	res, err := c.a.st.Get(c.ctx(), store.GetParams{Namespace: c.ns(), IDs: []string{id}})
	if err != nil {
		return nil, err
	}
	if len(res.Tasks) != 1 || res.Tasks[0] == nil {
		return nil, errf(wire.CodeNotFound, "id", "task %q not found", id)
	}
	return res.Tasks[0], nil
}

func (a *API) getTask(c *call) error {
	if _, err := query(c.r); err != nil {
		return err
	}
	id, err := c.taskID()
	if err != nil {
		return err
	}
	t, err := c.getOne(id)
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.FromTask(t))
}

// adminOne runs an admin call on the route's task and answers the task.
func (a *API) adminOne(c *call, op func(store.IDsParams) (store.AdminResult, error), kind string) error {
	if err := c.noBody(); err != nil {
		return err
	}
	id, err := c.taskID()
	if err != nil {
		return err
	}
	res, err := op(store.IDsParams{Namespace: c.ns(), IDs: []string{id}})
	if err != nil {
		return err
	}
	if len(res.Items) == 1 && res.Items[0].Err != nil {
		return res.Items[0].Err
	}
	if kind == "delete" {
		c.w.WriteHeader(http.StatusNoContent)
		return nil
	}
	t, err := c.getOne(id)
	if err != nil {
		return err
	}
	if kind == "cancel" && t.State == store.StateCancelled {
		a.publish(wire.Event{Kind: wire.EventTaskCancelled, Project: c.ns(), TaskID: id, Type: t.Type, Queue: t.Queue, State: t.State.String()})
	}
	return c.json(http.StatusOK, wire.FromTask(t))
}

// cancelTask cancels the route's task and answers it. A finished task
// answers 409 task_finished: the cancel came too late. With wait_ms, the
// answer for an active task waits (up to wait_ms, at most MaxLeaseWait) for
// the task to end, so that the caller learns how: cancelled (200), or
// 409 task_finished when its handler returned before it saw the cancel.
func (a *API) cancelTask(c *call) error {
	q, err := query(c.r, "wait_ms")
	if err != nil {
		return err
	}
	waitMS, err := queryInt(q, "wait_ms", 0, MaxLeaseWait.Milliseconds())
	if err != nil {
		return err
	}
	if err := c.noBody(); err != nil {
		return err
	}
	id, err := c.taskID()
	if err != nil {
		return err
	}
	res, err := a.st.Cancel(c.ctx(), store.IDsParams{Namespace: c.ns(), IDs: []string{id}})
	if err != nil {
		return err
	}
	if len(res.Items) == 1 && res.Items[0].Err != nil {
		if it := res.Items[0]; errors.Is(it.Err, store.ErrTaskFinished) {
			return wire.Errorf(wire.CodeTaskFinished, "the task already ended %s: the cancel came too late", it.State)
		}
		return res.Items[0].Err
	}
	t, err := c.getOne(id)
	if err != nil {
		return err
	}
	if waitMS > 0 && t.State == store.StateActive {
		if t, err = a.waitEnd(c, id, time.Duration(waitMS)*time.Millisecond); err != nil {
			return err
		}
	}
	// The cancel marked an active task, which has ended otherwise since
	// (during the wait, or even before it was read back).
	if t.State == store.StateSucceeded || t.State == store.StateDead {
		return wire.Errorf(wire.CodeTaskFinished, "the task ended %s before its handler saw the cancel: the cancel came too late", t.State)
	}
	if t.State == store.StateCancelled {
		a.publish(wire.Event{Kind: wire.EventTaskCancelled, Project: c.ns(), TaskID: id, Type: t.Type, Queue: t.Queue, State: t.State.String()})
	}
	return c.json(http.StatusOK, wire.FromTask(t))
}

// waitEnd reads the task until it is no longer active, wait passes, the
// client leaves or the server stops, and returns its last state.
func (a *API) waitEnd(c *call, id string, wait time.Duration) (*store.Task, error) {
	end := time.Now().Add(wait)
	delay := time.Millisecond
	for {
		t, err := c.getOne(id)
		if err != nil || t.State != store.StateActive || !time.Now().Before(end) {
			return t, err
		}
		timer := time.NewTimer(min(delay, time.Until(end)))
		select {
		case <-timer.C:
		case <-c.ctx().Done():
			timer.Stop()
			return t, nil
		case <-a.stopping:
			timer.Stop()
			return t, nil
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func (a *API) retryTask(c *call) error {
	return a.adminOne(c, func(p store.IDsParams) (store.AdminResult, error) { return a.st.Retry(c.ctx(), p) }, "retry")
}

func (a *API) deleteTask(c *call) error {
	return a.adminOne(c, func(p store.IDsParams) (store.AdminResult, error) { return a.st.Delete(c.ctx(), p) }, "delete")
}

// decodeIDs reads an {"ids":[...]} body of 1..MaxBatch ids. Invalid ids
// are left to the store, which answers each in its slot.
func (c *call) decodeIDs() ([]string, error) {
	var req wire.IDsRequest
	if err := c.decode(&req, false); err != nil {
		return nil, err
	}
	if len(req.IDs) == 0 || len(req.IDs) > store.MaxBatch {
		return nil, errf(wire.CodeInvalidOption, "ids", "%d ids; a batch has 1..%d", len(req.IDs), store.MaxBatch)
	}
	return req.IDs, nil
}

func (a *API) batchGet(c *call) error {
	ids, err := c.decodeIDs()
	if err != nil {
		return err
	}
	res, err := a.st.Get(c.ctx(), store.GetParams{Namespace: c.ns(), IDs: ids})
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.BatchGetResponse{Tasks: wire.FromTasks(res.Tasks)})
}

func (a *API) batchAdmin(c *call, op func(store.IDsParams) (store.AdminResult, error)) error {
	ids, err := c.decodeIDs()
	if err != nil {
		return err
	}
	res, err := op(store.IDsParams{Namespace: c.ns(), IDs: ids})
	if err != nil {
		return err
	}
	out := wire.AdminResponse{Items: make([]wire.AdminItem, len(res.Items))}
	for i, it := range res.Items {
		out.Items[i] = wire.AdminItem{Error: wire.Object(it.Err)}
		if it.State.Valid() {
			out.Items[i].State = it.State.String()
		}
	}
	return c.json(http.StatusOK, out)
}

func (a *API) batchCancel(c *call) error {
	return a.batchAdmin(c, func(p store.IDsParams) (store.AdminResult, error) { return a.st.Cancel(c.ctx(), p) })
}

func (a *API) batchRetry(c *call) error {
	return a.batchAdmin(c, func(p store.IDsParams) (store.AdminResult, error) { return a.st.Retry(c.ctx(), p) })
}

func (a *API) batchDelete(c *call) error {
	return a.batchAdmin(c, func(p store.IDsParams) (store.AdminResult, error) { return a.st.Delete(c.ctx(), p) })
}

// result answers the task as soon as it is terminal or wait_ms passed.
func (a *API) result(c *call) error {
	q, err := query(c.r, "wait_ms")
	if err != nil {
		return err
	}
	waitMS, err := queryInt(q, "wait_ms", 0, MaxResultWait.Milliseconds())
	if err != nil {
		return err
	}
	id, err := c.taskID()
	if err != nil {
		return err
	}
	var sub *subscriber
	if waitMS > 0 {
		if sub, err = a.hub.subscribe(c.ns(), id); err != nil {
			return err
		}
		defer a.hub.unsubscribe(sub)
	}
	t, err := c.getOne(id)
	if err != nil || waitMS == 0 || t.State.Terminal() {
		if err != nil {
			return err
		}
		return c.json(http.StatusOK, wire.FromTask(t))
	}
	timer := time.NewTimer(wire.Dur(waitMS))
	defer timer.Stop()
	poll := time.NewTicker(a.cfg.ResultPoll)
	defer poll.Stop()
	for !t.State.Terminal() {
		select {
		case <-timer.C:
			return c.json(http.StatusOK, wire.FromTask(t))
		case <-c.ctx().Done():
			return c.ctx().Err()
		case <-a.stopping:
			return c.json(http.StatusOK, wire.FromTask(t))
		case <-sub.ch:
		case <-poll.C:
		}
		if t, err = c.getOne(id); err != nil {
			return err
		}
	}
	return c.json(http.StatusOK, wire.FromTask(t))
}

func (a *API) listQueues(c *call) error {
	q, err := query(c.r, "queue")
	if err != nil {
		return err
	}
	p := store.StatsParams{Namespace: c.ns()}
	if s := q.Get("queue"); s != "" {
		p.Queues = strings.Split(s, ",")
		for _, name := range p.Queues {
			if err := store.CheckName("queue", name); err != nil {
				return err
			}
		}
	}
	res, err := a.st.Stats(c.ctx(), p)
	if err != nil {
		return err
	}
	return c.json(http.StatusOK, wire.QueueList{Queues: queues(res.Queues)})
}

// setPaused pauses or resumes a queue. A queue the store does not know (no
// task in any state, not paused) is refused with not_found: pausing a name
// nothing uses is almost always a typo, and it would stay behind in the
// queue list as an empty paused queue. ?create=true takes such a queue
// anyway: pause makes it (paused before its first task arrives), resume
// does nothing; store/remote sends it, for the store's own semantics.
func (a *API) setPaused(c *call, paused bool) error {
	q, err := query(c.r, "create")
	if err != nil {
		return err
	}
	create := false
	if v := q.Get("create"); v != "" {
		if create, err = strconv.ParseBool(v); err != nil {
			return errf(wire.CodeBadRequest, "create", "%q is not true or false", v)
		}
	}
	if err := c.noBody(); err != nil {
		return err
	}
	name := c.r.PathValue("q")
	if err := store.CheckName("queue", name); err != nil {
		return err
	}
	if !create {
		res, err := a.st.Stats(c.ctx(), store.StatsParams{Namespace: c.ns(), Queues: []string{name}})
		if err != nil {
			return err
		}
		known := false
		for _, qs := range res.Queues {
			// Stats answers for every queue it is asked about, an unknown
			// one with zero counts.
			known = known || qs.Queue == name && (qs.Total() > 0 || qs.Paused)
		}
		if !known {
			hint := ""
			if paused {
				hint = " (?create=true pauses it before its first task)"
			}
			return wire.Errorf(wire.CodeNotFound, "queue %q not found: it has no tasks and is not paused%s", name, hint)
		}
	}
	if err := a.st.SetQueuePaused(c.ctx(), store.QueuePauseParams{Namespace: c.ns(), Queue: name, Paused: paused}); err != nil {
		return err
	}
	res, err := a.st.Stats(c.ctx(), store.StatsParams{Namespace: c.ns(), Queues: []string{name}})
	if err != nil {
		return err
	}
	out := wire.Queue{Queue: name, Paused: paused, Counts: map[string]int64{}}
	for _, qs := range res.Queues {
		if qs.Queue == name {
			out = wire.FromQueueStats(qs)
		}
	}
	return c.json(http.StatusOK, out)
}

func (a *API) pauseQueue(c *call) error  { return a.setPaused(c, true) }
func (a *API) resumeQueue(c *call) error { return a.setPaused(c, false) }
