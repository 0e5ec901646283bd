package kiln

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/kilnhq/kiln/internal/flowspec"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/store"
)

// Signature describes one task of a workflow: its type, its own arguments
// and options, and the callbacks to run after it. It is plain data.
//
// The task's payload is the JSON of its arguments followed by its input
// (the result of the step before it in a chain, or the list of results of
// a group before it), unless Immutable: nothing for a task with neither
// (JSON null), the value alone for one, else a JSON array of them all. So
// NewSignature("double") after a task that returned 21 gets 21, and
// NewSignature("add", 1) after it gets [1, 21].
type Signature struct {
	// Type names the handler; required.
	Type string
	// Args are the task's own arguments, each encoded as JSON.
	Args []any
	// Immutable makes the task ignore the results of the steps before it:
	// it gets its own arguments only (machinery's Immutable).
	Immutable bool
	// Options are the task's options. ID is set by the workflow (each
	// task's id is the workflow's id, a dot and its position); UniqueKey
	// and ProcessAt/ProcessIn are not allowed.
	Options TaskOptions
	// OnSuccess lists tasks run after this one succeeded, each with this
	// task's result as its input (unless Immutable).
	OnSuccess []*Signature
	// OnError lists tasks run once when this one failed for good (dead),
	// each with the error message (a JSON string) as its input (unless
	// Immutable). They are not run when it succeeded or was cancelled.
	OnError []*Signature
}

// NewSignature returns the signature of a task of type typ with arguments.
func NewSignature(typ string, args ...any) *Signature {
	return &Signature{Type: typ, Args: args}
}

// Step is a part of a workflow: a *Signature or a *Workflow (a chain, a
// group or a chord).
type Step interface {
	workflow() *Workflow
}

type wfKind uint8

const (
	wfTask wfKind = iota
	wfChain
	wfGroup
	wfChord
)

// Workflow is a chain, a group or a chord of steps, built with Chain,
// Group and Chord, and enqueued with Client.EnqueueWorkflow. It is plain
// data; enqueueing it does not change it.
type Workflow struct {
	kind     wfKind
	sig      *Signature
	parts    []*Workflow
	callback *Workflow
	onError  []*Signature
}

func (s *Signature) workflow() *Workflow { return &Workflow{kind: wfTask, sig: s} }
func (w *Workflow) workflow() *Workflow  { return w }

func toWorkflows(in []Step) []*Workflow {
	out := make([]*Workflow, len(in))
	for i, s := range in {
		if s != nil {
			out[i] = s.workflow()
		}
	}
	return out
}

// Chain runs steps one after another; each gets the result of the one
// before it as its input (see Signature). The chain's result is its last
// step's.
func Chain(s ...Step) *Workflow { return &Workflow{kind: wfChain, parts: toWorkflows(s)} }

// Group runs steps in parallel. Its result is the list of its steps'
// results, in the order given.
func Group(s ...Step) *Workflow { return &Workflow{kind: wfGroup, parts: toWorkflows(s)} }

// Chord runs group, then callback with the group's results as its input
// (a JSON array, in the group's order). The last member to finish releases
// the callback; a member that fails for good fails the callback, once.
func Chord(group Step, callback Step) *Workflow {
	var g, c *Workflow
	if group != nil {
		g = group.workflow()
	}
	if callback != nil {
		c = callback.workflow()
	}
	return &Workflow{kind: wfChord, parts: []*Workflow{g}, callback: c}
}

// OnError adds error callbacks to the whole workflow: they run once if the
// workflow fails (a member fails for good), with the failed member's
// error message as their input. It returns w.
func (w *Workflow) OnError(sigs ...*Signature) *Workflow {
	w.onError = append(w.onError, sigs...)
	return w
}

// WorkflowOptions are the options of EnqueueWorkflow.
type WorkflowOptions struct {
	// ID is the workflow's id; empty means a new one. Its tasks' ids are
	// the id, a dot and a number.
	ID string
	// Retention is how long each task and its result are kept once it
	// finished, unless its own options say otherwise; 0 means 7 days,
	// so that a workflow's results outlive its slowest member.
	Retention time.Duration
}

// WorkflowRetentionDefault is the default WorkflowOptions.Retention.
const WorkflowRetentionDefault = 7 * 24 * time.Hour

// MaxWorkflowDepth bounds the nesting of a workflow.
const MaxWorkflowDepth = 64

// compiler turns a workflow into the store's flow.
type compiler struct {
	id     string
	now    time.Time
	limits store.Limits
	ret    time.Duration
	p      store.FlowParams
	spec   flowspec.Spec
	errs   []error
}

func (c *compiler) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// task adds sig waiting for the tasks of prev (nil: a first task), with
// input the results in shape in (nil: none), run under policy runIf.
func (c *compiler) task(sig *Signature, prev *flowspec.Shape, in *flowspec.Shape, runIf string, callback bool) string {
	var num [20]byte
	id := c.id + "." + string(strconv.AppendInt(num[:0], int64(len(c.spec.Members)), 10)) // one allocation
	c.spec.Members = append(c.spec.Members, flowspec.Member{ID: id, Type: sig.Type, Callback: callback})
	o := sig.Options
	if o.ID != "" || o.UniqueKey != "" || !o.ProcessAt.IsZero() || o.ProcessIn != 0 {
		c.errorf("task %s (%s): a workflow task cannot set ID, UniqueKey, ProcessAt or ProcessIn", id, sig.Type)
	}
	o.ID, o.UniqueKey, o.UniqueTTL, o.ProcessAt, o.ProcessIn = id, "", 0, time.Time{}, 0
	if o.Retention == 0 {
		o.Retention = c.ret
	}
	args := make([]json.RawMessage, len(sig.Args))
	for i, a := range sig.Args {
		b, err := json.Marshal(a)
		if err != nil {
			c.errorf("task %s (%s): argument %d: %w", id, sig.Type, i, err)
			continue
		}
		args[i] = b
	}
	var payload []byte
	var after []string
	if prev != nil {
		after = prev.IDs()
	}
	if sig.Immutable {
		in = nil
	}
	if len(after) == 0 {
		payload = flowspec.Payload(args, nil)
	} else {
		env := flowspec.Envelope{Flow: c.id, Args: args, In: in, After: after, RunIf: runIf}
		b, err := env.Encode()
		if err != nil {
			c.errorf("task %s (%s): %w", id, sig.Type, err)
		}
		payload = b
	}
	input, err := o.taskInput(sig.Type, payload, c.limits, c.now)
	if err != nil {
		c.errorf("task %s (%s): %w", id, sig.Type, err)
	}
	if len(after) == 0 {
		c.p.Tasks = append(c.p.Tasks, input)
	} else {
		c.p.Held = append(c.p.Held, store.HeldTask{Task: input, After: after})
	}
	me := flowspec.Shape{ID: id}
	for _, s := range sig.OnSuccess {
		if s != nil {
			c.task(s, &me, &me, flowspec.RunIfOK, true)
		}
	}
	for _, s := range sig.OnError {
		if s != nil {
			c.task(s, &me, nil, flowspec.RunIfFailed, true)
		}
	}
	return id
}

// step adds w after prev and returns the shape of its result.
func (c *compiler) step(w *Workflow, prev *flowspec.Shape, depth int) flowspec.Shape {
	if depth > MaxWorkflowDepth {
		c.errorf("workflow nested deeper than %d", MaxWorkflowDepth)
		return flowspec.Shape{IsList: true}
	}
	if w == nil {
		c.errorf("nil step in a workflow")
		return flowspec.Shape{IsList: true}
	}
	switch w.kind {
	case wfTask:
		if w.sig == nil {
			c.errorf("nil signature in a workflow")
			return flowspec.Shape{IsList: true}
		}
		return flowspec.Shape{ID: c.task(w.sig, prev, prev, flowspec.RunIfOK, false)}
	case wfChain:
		if len(w.parts) == 0 {
			c.errorf("empty chain")
		}
		cur := prev
		var out flowspec.Shape
		for _, p := range w.parts {
			out = c.step(p, cur, depth+1)
			o := out
			cur = &o
		}
		return out
	case wfGroup:
		if len(w.parts) == 0 {
			c.errorf("empty group")
		}
		out := flowspec.Shape{IsList: true, List: make([]flowspec.Shape, 0, len(w.parts))}
		for _, p := range w.parts {
			out.List = append(out.List, c.step(p, prev, depth+1))
		}
		return out
	case wfChord:
		if w.parts[0] == nil || w.callback == nil {
			c.errorf("a chord needs a group and a callback")
			return flowspec.Shape{IsList: true}
		}
		g := c.step(w.parts[0], prev, depth+1)
		return c.step(w.callback, &g, depth+1)
	}
	return flowspec.Shape{IsList: true}
}

// countTasks returns the number of tasks of w (with their callbacks), or
// limit once it reaches limit; a tree too deep or with nil steps counts
// what it can (compiling it reports the problem).
func countTasks(w *Workflow, depth, limit int) int {
	if w == nil || depth > MaxWorkflowDepth || limit <= 0 {
		return 0
	}
	n := 0
	if w.kind == wfTask {
		n = countSigs(w.sig, depth, limit)
	}
	for _, p := range w.parts {
		n += countTasks(p, depth+1, limit-n)
	}
	if w.callback != nil {
		n += countTasks(w.callback, depth+1, limit-n)
	}
	for _, s := range w.onError {
		n += countSigs(s, depth, limit-n)
	}
	return min(n, limit)
}

// countSigs counts s and its callbacks, up to limit.
func countSigs(s *Signature, depth, limit int) int {
	if s == nil || depth > MaxWorkflowDepth || limit <= 0 {
		return 0
	}
	n := 1
	for _, cb := range s.OnSuccess {
		n += countSigs(cb, depth+1, limit-n)
	}
	for _, cb := range s.OnError {
		n += countSigs(cb, depth+1, limit-n)
	}
	return min(n, limit)
}

// compileWorkflow turns w into the store's flow and its spec.
func compileWorkflow(w *Workflow, id string, ret time.Duration, l store.Limits, now time.Time) (store.FlowParams, error) {
	c := &compiler{id: id, now: now, limits: l, ret: ret}
	c.p.ID = id
	// Room for every task up front: a big group appends many.
	n := countTasks(w, 1, store.MaxFlowTasks+1)
	c.spec.Members = make([]flowspec.Member, 0, n)
	c.p.Tasks = make([]store.TaskInput, 0, n)
	if w.kind == wfChain {
		cur := (*flowspec.Shape)(nil)
		for _, p := range w.parts {
			s := c.step(p, cur, 1)
			c.spec.Top = append(c.spec.Top, s)
			cur = &s
		}
		if len(w.parts) == 0 {
			c.errorf("empty chain")
		} else {
			c.spec.Final = c.spec.Top[len(c.spec.Top)-1]
		}
	} else {
		c.spec.Final = c.step(w, nil, 1)
		if w.kind == wfGroup {
			c.spec.Top = c.spec.Final.List
		} else {
			c.spec.Top = []flowspec.Shape{c.spec.Final}
		}
	}
	if len(w.onError) > 0 && len(c.errs) == 0 {
		final := c.spec.Final
		for _, s := range w.onError {
			if s != nil {
				c.task(s, &final, nil, flowspec.RunIfFailed, true)
			}
		}
	}
	if len(c.errs) > 0 {
		return store.FlowParams{}, errors.Join(c.errs...)
	}
	if len(c.p.Tasks)+len(c.p.Held) > store.MaxFlowTasks {
		return store.FlowParams{}, fmt.Errorf("%d tasks; a workflow has at most %d: %w", len(c.p.Tasks)+len(c.p.Held), store.MaxFlowTasks, ErrInvalidOption)
	}
	spec, err := flowspec.EncodeSpec(id, &c.spec)
	if err != nil {
		return store.FlowParams{}, err
	}
	c.p.Spec = spec
	return c.p, nil
}

// EnqueueWorkflow writes the whole workflow to the store in one atomic
// step and returns its handle; nil opts means the defaults. The workflow
// is then driven by the workers alone: the store enqueues each step in the
// same atomic step that records the outcome of the task that completes the
// one before it, so the client may exit at once, and no task waits for
// another while holding a worker slot.
//
// It needs a store that keeps workflows (store.Flows: the embedded, Redis
// and remote stores). A bad workflow fails before the store is called,
// with every problem joined.
func (c *Client) EnqueueWorkflow(ctx context.Context, wf Step, opts *WorkflowOptions) (*WorkflowResult, error) {
	fl, ok := c.s.(store.Flows)
	if !ok {
		return nil, fmt.Errorf("kiln: enqueue workflow: the store does not keep workflows: %w", errors.ErrUnsupported)
	}
	if wf == nil {
		return nil, fmt.Errorf("kiln: enqueue workflow: nil workflow: %w", ErrInvalidOption)
	}
	var o WorkflowOptions
	if opts != nil {
		o = *opts
	}
	fresh := o.ID == ""
	if fresh {
		o.ID = ids.New()
	}
	if o.Retention == 0 {
		o.Retention = WorkflowRetentionDefault
	}
	p, err := compileWorkflow(wf.workflow(), o.ID, o.Retention, c.limits, time.Now())
	if err != nil {
		return nil, fmt.Errorf("kiln: enqueue workflow: %w", err)
	}
	if fresh {
		// Every task's id is "<workflow id>.<position>" and the workflow's
		// id was just made from fresh random bits: no stored task can have
		// one, so the store may skip the reads that look for them.
		for i := range p.Tasks {
			p.Tasks[i].NewID = true
		}
		for i := range p.Held {
			p.Held[i].Task.NewID = true
		}
	}
	p.Namespace = c.ns
	// With a TracerProvider, one enqueue span for the whole workflow, and
	// its trace context on every task of it (held ones too), as Enqueue
	// does for the tasks of a batch.
	ctx, span := startEnqueue(ctx, c.tracer, p.Tasks)
	if tp := tracing.TraceParent(ctx); tp != "" && span != nil {
		span.SetAttributes(attribute.String("kiln.workflow.id", o.ID), attribute.Int("kiln.workflow.held_count", len(p.Held)))
		for i := range p.Held {
			p.Held[i].Task.TraceParent = tp
		}
	}
	err = fl.EnqueueFlow(ctx, p)
	endSpan(span, err)
	if err != nil {
		if c.met != nil {
			c.met.StoreError(metrics.OpEnqueue)
		}
		return nil, fmt.Errorf("kiln: enqueue workflow %s: %w", o.ID, err)
	}
	if c.met != nil {
		for _, t := range p.Tasks {
			c.met.Series(t.Queue, t.Type).Enqueued.Inc()
		}
		for _, h := range p.Held {
			c.met.Series(h.Task.Queue, h.Task.Type).Enqueued.Inc()
		}
	}
	return c.Workflow(o.ID), nil
}

// Workflow returns a handle on the workflow with the given id, for a
// workflow enqueued elsewhere. It does not call the store.
func (c *Client) Workflow(id string) *WorkflowResult { return &WorkflowResult{c: c, id: id} }

// WorkflowResult is a handle on an enqueued workflow. It is safe for
// concurrent use.
type WorkflowResult struct {
	c  *Client
	id string
}

// ID returns the workflow's id.
func (r *WorkflowResult) ID() string { return r.id }

// WorkflowState is a snapshot of a workflow.
type WorkflowState struct {
	ID string `json:"id"`
	// State is "pending" (nothing started), "running", "succeeded",
	// "failed" (a member failed for good) or "cancelled".
	State string `json:"state"`
	// Members lists every task of the workflow in the order it was built.
	Members []MemberState `json:"members"`
}

// MemberState is one task of a workflow.
type MemberState struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	// State is a task state, "waiting" for a task that waits for others
	// (not enqueued yet), or "gone" for a task deleted.
	State string `json:"state"`
	// Error is the last error of the task; a task that did not run
	// because a task before it failed says "upstream ...", a callback
	// that was not called for says "skipped: ...".
	Error string `json:"error,omitempty"`
	// Callback marks an OnSuccess or OnError callback.
	Callback bool `json:"callback,omitempty"`
	// Result is the task's result, once it succeeded.
	Result []byte `json:"result,omitempty"`
}

func (r *WorkflowResult) flows() (store.Flows, error) {
	fl, ok := r.c.s.(store.Flows)
	if !ok {
		return nil, fmt.Errorf("kiln: workflow %s: the store does not keep workflows: %w", r.id, errors.ErrUnsupported)
	}
	return fl, nil
}

// read returns the spec, the held ids and the tasks of the workflow.
func (r *WorkflowResult) read(ctx context.Context) (*flowspec.Spec, []string, map[string]*store.Task, error) {
	fl, err := r.flows()
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := fl.GetFlow(ctx, store.FlowGetParams{Namespace: r.c.ns, ID: r.id})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kiln: workflow %s: %w", r.id, err)
	}
	spec, err := flowspec.DecodeSpec(r.id, f.Spec)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kiln: workflow %s: not a workflow of this version of kiln (%w)", r.id, err)
	}
	idl := make([]string, len(spec.Members))
	for i, m := range spec.Members {
		idl[i] = m.ID
	}
	tasks, err := getTasks(ctx, r.c.s, r.c.ns, idl, false)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kiln: workflow %s: %w", r.id, err)
	}
	return spec, f.Held, tasks, nil
}

// getTasks reads tasks by id, in batches of 1000, up to 4 at once (a
// chord's callback reads every member); with outcomes, only what
// GetParams.Outcomes names is needed.
func getTasks(ctx context.Context, s store.Reader, ns string, idl []string, outcomes bool) (map[string]*store.Task, error) {
	const chunk, parallel = 1000, 4
	n := (len(idl) + chunk - 1) / chunk
	res := make([][]*store.Task, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: idl[i*chunk : min((i+1)*chunk, len(idl))], Outcomes: outcomes})
			res[i], errs[i] = r.Tasks, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make(map[string]*store.Task, len(idl))
	for _, ts := range res {
		for _, t := range ts {
			if t != nil {
				out[t.ID] = t
			}
		}
	}
	return out, nil
}

// State returns a snapshot of the workflow and of each member.
func (r *WorkflowResult) State(ctx context.Context) (*WorkflowState, error) {
	spec, held, tasks, err := r.read(ctx)
	if err != nil {
		return nil, err
	}
	st, ms := flowspec.Summarize(spec, tasks, held)
	out := &WorkflowState{ID: r.id, State: st, Members: make([]MemberState, len(ms))}
	for i, m := range ms {
		out.Members[i] = MemberState{ID: m.ID, Type: m.Type, State: m.State, Error: m.Error, Callback: m.Callback}
		if m.Task != nil && m.Task.State == store.StateSucceeded {
			out.Members[i].Result = m.Task.Result
		}
	}
	return out, nil
}

// WorkflowError is the error of a workflow that failed or was cancelled.
// It matches ErrTaskDead or ErrTaskCancelled (errors.Is) as its cause
// does.
type WorkflowError struct {
	// ID is the workflow's id; State is "failed" or "cancelled".
	ID, State string
	// Cause is the member that made it fail or stop, when known.
	Cause *TaskError
}

// Error names the workflow and the member that failed.
func (e *WorkflowError) Error() string {
	if e.Cause == nil {
		return fmt.Sprintf("kiln: workflow %s %s", e.ID, e.State)
	}
	return fmt.Sprintf("kiln: workflow %s %s: task %s (%s): %s", e.ID, e.State, e.Cause.ID, e.Cause.Type, e.Cause.Message)
}

// Unwrap returns the member's error.
func (e *WorkflowError) Unwrap() error {
	if e.Cause == nil {
		return nil
	}
	return e.Cause
}

// Is matches ErrTaskDead for a failed workflow and ErrTaskCancelled for a
// cancelled one.
func (e *WorkflowError) Is(target error) bool {
	switch target {
	case ErrTaskDead:
		return e.State == flowspec.StateFailed
	case ErrTaskCancelled:
		return e.State == flowspec.StateCancelled
	}
	return false
}

// Wait waits until every task of the workflow has finished (or ctx is
// done) and returns its final state; for a workflow that failed or was
// cancelled it also returns a *WorkflowError. It polls the store, every
// millisecond at first and slowing to every 100 ms.
func (r *WorkflowResult) Wait(ctx context.Context) (*WorkflowState, error) {
	ws, _, err := r.wait(ctx)
	return ws, err
}

func (r *WorkflowResult) wait(ctx context.Context) (*WorkflowState, *flowspec.Spec, error) {
	delay := time.Millisecond
	var timer *time.Timer
	var cached *flowspec.Spec
	for {
		// Cheap polls first: the workflow's record and its result's
		// tasks; the whole workflow is read once they are done.
		if done, err := r.finalDone(ctx, &cached); err != nil {
			return nil, nil, err
		} else if !done {
			if err := sleepPoll(ctx, &timer, &delay, r.id); err != nil {
				return nil, nil, err
			}
			continue
		}
		spec, held, tasks, err := r.read(ctx)
		if err != nil {
			return nil, nil, err
		}
		st, ms := flowspec.Summarize(spec, tasks, held)
		if st != flowspec.StatePending && st != flowspec.StateRunning {
			ws := &WorkflowState{ID: r.id, State: st, Members: make([]MemberState, len(ms))}
			for i, m := range ms {
				ws.Members[i] = MemberState{ID: m.ID, Type: m.Type, State: m.State, Error: m.Error, Callback: m.Callback}
				if m.Task != nil && m.Task.State == store.StateSucceeded {
					ws.Members[i].Result = m.Task.Result
				}
			}
			if st == flowspec.StateSucceeded {
				return ws, spec, nil
			}
			we := &WorkflowError{ID: r.id, State: st}
			if rc := flowspec.RootCause(ms); rc != nil {
				te := &TaskError{ID: rc.ID, Type: rc.Type, State: StateCancelled, Message: rc.Error}
				if rc.Task != nil {
					te.State, te.Attempt = rc.Task.State, rc.Task.Attempt
				} else {
					te.State, te.Message = StateDead, "the task is gone (deleted, or past its retention)"
				}
				we.Cause = te
			}
			return ws, spec, we
		}
		if err := sleepPoll(ctx, &timer, &delay, r.id); err != nil {
			return nil, nil, err
		}
	}
}

// sleepPoll waits *delay (doubling it up to 100 ms) or until ctx is done.
func sleepPoll(ctx context.Context, timer **time.Timer, delay *time.Duration, id string) error {
	const most = 100 * time.Millisecond
	if *timer == nil {
		*timer = time.NewTimer(*delay)
	} else {
		(*timer).Reset(*delay)
	}
	select {
	case <-ctx.Done():
		(*timer).Stop()
		return fmt.Errorf("kiln: wait for workflow %s: %w", id, context.Cause(ctx))
	case <-(*timer).C:
	}
	*delay = min(*delay*2, most)
	return nil
}

// finalDone reports whether no task of the workflow is held any more and
// the tasks of its result have finished, reading the spec once.
func (r *WorkflowResult) finalDone(ctx context.Context, cached **flowspec.Spec) (bool, error) {
	fl, err := r.flows()
	if err != nil {
		return false, err
	}
	spec := *cached
	f, err := fl.GetFlow(ctx, store.FlowGetParams{Namespace: r.c.ns, ID: r.id, WithoutSpec: spec != nil})
	if err != nil {
		return false, fmt.Errorf("kiln: workflow %s: %w", r.id, err)
	}
	if len(f.Held) > 0 {
		return false, nil
	}
	if spec == nil {
		spec, err = flowspec.DecodeSpec(r.id, f.Spec)
		if err != nil {
			return false, fmt.Errorf("kiln: workflow %s: not a workflow of this version of kiln (%w)", r.id, err)
		}
		*cached = spec
	}
	tasks, err := getTasks(ctx, r.c.s, r.c.ns, spec.Final.IDs(), true)
	if err != nil {
		return false, fmt.Errorf("kiln: workflow %s: %w", r.id, err)
	}
	for _, t := range tasks {
		if !t.State.Terminal() {
			return false, nil
		}
	}
	return true, nil
}

// Get waits for the workflow like Wait and decodes its result into out: a
// chain's is its last step's result, a group's the list of its members'
// results in order, a chord's its callback's. A nil out only waits.
func (r *WorkflowResult) Get(ctx context.Context, out any) error {
	ws, spec, err := r.wait(ctx)
	if err != nil {
		return err
	}
	return decodeShape(r.id, spec.Final, ws, out)
}

// GetAll waits for the workflow like Wait and decodes into out (a pointer
// to a slice) the results of its top-level steps, in order: for a group,
// each member's result; for a chain, each step's (a group step's is a
// list).
func (r *WorkflowResult) GetAll(ctx context.Context, out any) error {
	ws, spec, err := r.wait(ctx)
	if err != nil {
		return err
	}
	return decodeShape(r.id, flowspec.Shape{IsList: true, List: spec.Top}, ws, out)
}

func decodeShape(id string, s flowspec.Shape, ws *WorkflowState, out any) error {
	if out == nil {
		return nil
	}
	results := make(map[string][]byte, len(ws.Members))
	for _, m := range ws.Members {
		results[m.ID] = m.Result
	}
	if err := json.Unmarshal(s.Render(results), out); err != nil {
		return fmt.Errorf("kiln: decode result of workflow %s: %w", id, err)
	}
	return nil
}

// Cancel cancels the workflow: every member not yet finished is cancelled
// (a running one is asked to stop: its handler's context is cancelled with
// cause ErrTaskCancelled), and the members that wait for cancelled ones are
// cancelled by the workers as they are released. Cancel returns once no
// member is pending any more; members still running, and those that wait
// for them, stop as their handlers return. A handler that returns success
// although it was asked to stop lets the steps after it run.
func (r *WorkflowResult) Cancel(ctx context.Context) error {
	for {
		spec, _, tasks, err := r.read(ctx)
		if err != nil {
			return err
		}
		var cancel []string
		for _, m := range spec.Members {
			if t := tasks[m.ID]; t != nil && !t.State.Terminal() && !t.CancelRequested {
				cancel = append(cancel, m.ID)
			}
		}
		if len(cancel) == 0 {
			return nil
		}
		for start := 0; start < len(cancel); start += store.MaxBatch {
			end := min(start+store.MaxBatch, len(cancel))
			if _, err := r.c.s.Cancel(ctx, store.IDsParams{Namespace: r.c.ns, IDs: cancel[start:end]}); err != nil {
				return fmt.Errorf("kiln: cancel workflow %s: %w", r.id, err)
			}
		}
	}
}

// flowSkipError is the error of a workflow task that does not run: a task
// before it failed or was cancelled, or (for an error callback) nothing
// failed. The worker records the task cancelled, or dead (dead is true),
// with the message, and never retries it.
type flowSkipError struct {
	msg  string
	dead bool
}

func (e *flowSkipError) Error() string { return e.msg }

// Unwrap makes a dead skip match SkipRetry.
func (e *flowSkipError) Unwrap() error {
	if e.dead {
		return SkipRetry
	}
	return nil
}

// isFlowCancel reports whether err is a flowSkipError that cancels its task.
func isFlowCancel(err error) bool {
	var fs *flowSkipError
	return errors.As(err, &fs) && !fs.dead
}

// flowHandler wraps h: it puts the task in the handler's context (see
// TaskFromContext) and, for tasks of workflows that wait for others,
// reads the tasks waited for, applies the task's policy, and hands h the
// payload made of the task's arguments and the results it takes. Other
// tasks go to h unchanged.
func (w *Worker) flowHandler(h Handler) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		if got, _ := ctx.Value(taskKey{}).(*Task); got != t {
			// The worker's handler context (taskCtx) holds the task already;
			// wrapping it would cost its derived contexts a goroutine each.
			ctx = context.WithValue(ctx, taskKey{}, t) // TaskFromContext
		}
		if !flowspec.IsEnvelope(t.Payload) {
			return h.ProcessTask(ctx, t)
		}
		env, err := flowspec.DecodeEnvelope(t.Payload)
		if err != nil {
			return fmt.Errorf("kiln: task %s: %w (%w)", t.ID, err, SkipRetry)
		}
		// A store that counted the tasks waited for as each finished
		// (store.Task.Upstream) may have counted every one as succeeded,
		// without a result where the task takes their results: then there
		// is nothing to read (a chord of 10,000 members would read 10,000
		// records). A task counted twice in After, or any not counted (an
		// older store, a flow written before), makes it read them.
		var tasks map[string]*store.Task // nil: all succeeded, none with a result taken
		var failed, cancelled *store.Task
		var gone string
		if u := t.upstream; u == nil || u.OK != len(env.After) || (env.In != nil && u.NoResult != len(env.After)) {
			tasks, err = getTasks(ctx, w.s, w.cfg.Namespace, env.After, true)
			if err != nil {
				return fmt.Errorf("kiln: task %s: read the tasks it waits for: %w", t.ID, err)
			}
			for _, id := range env.After {
				p := tasks[id]
				switch {
				case p == nil:
					if gone == "" {
						gone = id
					}
				case p.State == store.StateDead && failed == nil:
					failed = p
				case p.State == store.StateCancelled && cancelled == nil:
					cancelled = p
				}
			}
		}
		var input []byte
		switch env.RunIf {
		case flowspec.RunIfFailed:
			switch {
			case failed != nil:
				input, _ = json.Marshal(failed.LastError)
			case gone != "":
				input, _ = json.Marshal("task " + gone + " is gone")
			default:
				return &flowSkipError{msg: flowspec.Skipped + "nothing it watches failed"}
			}
		default:
			switch {
			case failed != nil:
				return &flowSkipError{dead: true, msg: flowspec.Upstream + "task " + failed.ID + " (" + failed.Type + ") failed: " + trimUpstream(failed.LastError)}
			case gone != "":
				return &flowSkipError{dead: true, msg: flowspec.Upstream + "task " + gone + " is gone (deleted, or past its retention)"}
			case cancelled != nil:
				return &flowSkipError{msg: flowspec.Upstream + "task " + cancelled.ID + " (" + cancelled.Type + ") was cancelled"}
			}
			if env.In != nil {
				input = env.In.RenderWith(func(id string) []byte {
					if p := tasks[id]; p != nil {
						return p.Result
					}
					return nil
				})
			}
		}
		t.Payload = flowspec.Payload(env.Args, input)
		return h.ProcessTask(ctx, t)
	})
}

// trimUpstream shortens a chain of "upstream ... failed: " prefixes to
// the last one's message, so that a long chain does not grow the error.
func trimUpstream(msg string) string {
	for strings.HasPrefix(msg, flowspec.Upstream) {
		i := strings.Index(msg, " failed: ")
		if i < 0 {
			break
		}
		msg = msg[i+len(" failed: "):]
	}
	return msg
}
