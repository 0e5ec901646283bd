package kiln

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/store"
)

// Client enqueues tasks and reads, waits for and cancels them. It is safe for
// concurrent use and holds no resources of its own: closing the store is
// enough.
type Client struct {
	s      store.Store
	ns     string
	limits store.Limits
	log    *slog.Logger
	event  func(Event)
	met    *metrics.Set // nil: no metrics
	tracer trace.Tracer // nil: no tracing
}

// NewClient returns a client of s. A nil cfg means every default. It returns
// every problem of cfg at once, joined.
func NewClient(s store.Store, cfg *ClientConfig) (*Client, error) {
	if s == nil {
		return nil, errors.New("kiln: NewClient: nil store")
	}
	var c ClientConfig
	if cfg != nil {
		c = *cfg
	}
	var err error
	if c.Namespace, err = scopedNamespace(s, c.Namespace); err != nil {
		return nil, fmt.Errorf("kiln: client config: %w", err)
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("kiln: client config: %w", err)
	}
	cl := &Client{s: s, ns: c.Namespace, limits: c.Limits.WithDefaults(), log: c.Logger, event: c.EventFunc, tracer: tracerOf(c.TracerProvider)}
	if c.Metrics != nil {
		cl.met = c.Metrics.set
	}
	return cl, nil
}

// scopedNamespace is the namespace of a worker or client of s whose config
// names ns: a store that reaches one namespace only (store.Scoped, a
// remote store with a worker secret) gives it when ns is empty, and
// another ns is refused, since every call would be refused.
func scopedNamespace(s store.Store, ns string) (string, error) {
	sc, ok := s.(store.Scoped)
	if !ok {
		return ns, nil
	}
	scope := sc.ScopedNamespace()
	switch {
	case scope == "" || ns == scope:
		return ns, nil
	case ns == "":
		return scope, nil
	}
	return "", &ValidationError{Field: "namespace", Err: ErrInvalidOption,
		Reason: fmt.Sprintf("%q is not the store's project %q: a remote worker's store reaches its own project only (leave Namespace empty to use it)", ns, scope)}
}

// TaskRequest is one task of a batch given to EnqueueMany. It is plain data.
type TaskRequest struct {
	// Type names the handler; required.
	Type string `json:"type"`
	// Payload is handed to the handler unchanged.
	Payload []byte `json:"payload,omitempty"`
	// Options are the task's options; the zero value means the defaults.
	Options TaskOptions `json:"options,omitzero"`
}

// Enqueue adds a task of type typ with the given payload; nil opts means the
// defaults. The returned Result waits for and reads the task's outcome.
//
// Invalid input fails with an error that matches ErrInvalidName,
// ErrInvalidOption or ErrPayloadTooLarge (and is a *ValidationError naming
// the field) before the store is called. When the unique key is taken the
// error matches ErrDuplicate and the Result, which is then not nil, is the
// task that holds the key.
func (c *Client) Enqueue(ctx context.Context, typ string, payload []byte, opts *TaskOptions) (*Result, error) {
	var o TaskOptions
	if opts != nil {
		o = *opts
	}
	res, err := c.EnqueueMany(ctx, []TaskRequest{{Type: typ, Payload: payload, Options: o}})
	if err != nil {
		var be *BatchError
		if errors.As(err, &be) {
			err = be.Errs[0]
		}
		if res != nil && res[0] != nil && errors.Is(err, ErrDuplicate) {
			return res[0], err
		}
		return nil, err
	}
	return res[0], nil
}

// EnqueueJSON is Enqueue with a payload made by encoding args as JSON, the
// form the typed handlers made by Func and FuncCtx decode.
func (c *Client) EnqueueJSON(ctx context.Context, typ string, args any, opts *TaskOptions) (*Result, error) {
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("kiln: enqueue %s: encode arguments: %w", typ, err)
	}
	return c.Enqueue(ctx, typ, b, opts)
}

// EnqueueMany adds a batch of tasks in one call to the store (or a few, for
// batches larger than store.MaxBatch).
//
// The whole batch is validated first: if any request is invalid, nothing is
// enqueued and the error joins one error per invalid request, each naming
// its index. Otherwise the returned slice has one Result per request, in
// order. When the store refuses some of them (ErrDuplicate, ErrTaskExists),
// the error is a *BatchError: the Results of the refused requests are nil,
// except for ErrDuplicate, where the Result is the task that holds the key.
func (c *Client) EnqueueMany(ctx context.Context, reqs []TaskRequest) ([]*Result, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	now := time.Now()
	inputs := make([]store.TaskInput, len(reqs))
	var errs []error
	for i := range reqs {
		in, err := reqs[i].Options.taskInput(reqs[i].Type, reqs[i].Payload, c.limits, now)
		if err != nil {
			if len(reqs) == 1 {
				errs = append(errs, fmt.Errorf("kiln: enqueue %q: %w", reqs[i].Type, err))
			} else {
				errs = append(errs, fmt.Errorf("kiln: enqueue task %d (%q): %w", i, reqs[i].Type, err))
			}
		}
		inputs[i] = in
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	ctx, span := startEnqueue(ctx, c.tracer, inputs)
	res, err := c.enqueueInputs(ctx, reqs, inputs)
	endSpan(span, err)
	return res, err
}

func (c *Client) enqueueInputs(ctx context.Context, reqs []TaskRequest, inputs []store.TaskInput) ([]*Result, error) {
	results := make([]*Result, len(reqs))
	made := make([]Result, len(reqs)) // what results point to, in one allocation
	var failed []error
	for start := 0; start < len(inputs); start += store.MaxBatch {
		end := min(start+store.MaxBatch, len(inputs))
		out, err := c.s.Enqueue(ctx, store.EnqueueParams{Namespace: c.ns, Tasks: inputs[start:end]})
		if err != nil {
			if c.met != nil {
				c.met.StoreError(metrics.OpEnqueue)
			}
			if start == 0 {
				return nil, fmt.Errorf("kiln: enqueue: %w", err)
			}
			// Earlier chunks are in: report the rest as failed.
			if failed == nil {
				failed = make([]error, len(reqs))
			}
			for i := start; i < len(inputs); i++ {
				failed[i] = fmt.Errorf("kiln: enqueue: %w", err)
			}
			break
		}
		if len(out.Items) != end-start {
			return nil, fmt.Errorf("kiln: enqueue: store returned %d results for %d tasks", len(out.Items), end-start)
		}
		for j, it := range out.Items {
			i := start + j
			if it.Err != nil {
				if failed == nil {
					failed = make([]error, len(reqs))
				}
				failed[i] = fmt.Errorf("kiln: enqueue %q: %w", reqs[i].Type, it.Err)
				if errors.Is(it.Err, store.ErrDuplicate) && it.ID != "" {
					made[i] = Result{c: c, id: it.ID}
					results[i] = &made[i]
				}
				continue
			}
			made[i] = Result{c: c, id: it.ID}
			results[i] = &made[i]
			if c.met != nil {
				c.met.Series(inputs[i].Queue, inputs[i].Type).Enqueued.Inc()
			}
			if c.event != nil {
				c.event(Event{Kind: EventEnqueued, TaskID: it.ID, Type: inputs[i].Type, Queue: inputs[i].Queue})
			}
		}
	}
	if failed != nil {
		return results, &BatchError{Errs: failed}
	}
	return results, nil
}

// BatchError reports the requests of a batch that the store refused. It
// matches (errors.Is, errors.As) each of the errors it holds.
type BatchError struct {
	// Errs has one entry per request, in order: nil where the request was
	// enqueued.
	Errs []error
}

// Error lists the failed requests.
func (e *BatchError) Error() string {
	var b strings.Builder
	n := 0
	for i, err := range e.Errs {
		if err == nil {
			continue
		}
		if n > 0 {
			b.WriteString("; ")
		}
		if n == 5 {
			b.WriteString("...")
			break
		}
		fmt.Fprintf(&b, "task %d: %v", i, err)
		n++
	}
	return b.String()
}

// Unwrap returns the errors of the failed requests.
func (e *BatchError) Unwrap() []error {
	var out []error
	for _, err := range e.Errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Info returns a snapshot of the task with the given id, with its payload and
// result. A missing task gives an error that matches ErrNotFound.
func (c *Client) Info(ctx context.Context, id string) (*TaskInfo, error) {
	t, err := c.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return infoFromStore(t), nil
}

func (c *Client) get(ctx context.Context, id string) (*store.Task, error) {
	out, err := c.s.Get(ctx, store.GetParams{Namespace: c.ns, IDs: []string{id}})
	if err != nil {
		return nil, fmt.Errorf("kiln: get task %s: %w", id, err)
	}
	if len(out.Tasks) != 1 || out.Tasks[0] == nil {
		return nil, fmt.Errorf("kiln: task %s: %w", id, ErrNotFound)
	}
	return out.Tasks[0], nil
}

// Cancel cancels the task with the given id. A task that waits (pending,
// scheduled or retry) is cancelled at once. An active task is marked: the
// store pushes the request to its worker, which cancels the handler's
// context (cause ErrTaskCancelled) within milliseconds, and the task ends
// cancelled once the handler returns.
//
// A task that already finished is not changed: the error matches
// ErrTaskFinished (and ErrInvalidState) and names the state it ended in, so
// the caller can tell that the cancel came too late. A handler that returns
// success before it notices the cancel also ends succeeded (done is done);
// Result.Wait then answers a succeeded task whose CancelRequested is true.
// A cancelled task gives ErrInvalidState; a missing one, ErrNotFound.
func (c *Client) Cancel(ctx context.Context, id string) error {
	out, err := c.s.Cancel(ctx, store.IDsParams{Namespace: c.ns, IDs: []string{id}})
	if err != nil {
		return fmt.Errorf("kiln: cancel task %s: %w", id, err)
	}
	if len(out.Items) != 1 {
		return fmt.Errorf("kiln: cancel task %s: store returned %d results", id, len(out.Items))
	}
	if it := out.Items[0]; it.Err != nil {
		if errors.Is(it.Err, ErrTaskFinished) {
			return fmt.Errorf("kiln: cancel task %s: the task already ended %s, the cancel came too late: %w", id, it.State, it.Err)
		}
		return fmt.Errorf("kiln: cancel task %s: %w", id, it.Err)
	}
	return nil
}

// Result returns a handle on the task with the given id, for a task enqueued
// elsewhere. It does not call the store.
func (c *Client) Result(id string) *Result { return &Result{c: c, id: id} }

// Result is a handle on an enqueued task: it reads the task's state and waits
// for its outcome. It is safe for concurrent use.
type Result struct {
	c  *Client
	id string
}

// ID returns the task's id.
func (r *Result) ID() string { return r.id }

// Info returns a snapshot of the task (see Client.Info).
func (r *Result) Info(ctx context.Context) (*TaskInfo, error) { return r.c.Info(ctx, r.id) }

// State returns the task's current state.
func (r *Result) State(ctx context.Context) (State, error) {
	t, err := r.c.get(ctx, r.id)
	if err != nil {
		return 0, err
	}
	return t.State, nil
}

// Cancel cancels the task (see Client.Cancel).
func (r *Result) Cancel(ctx context.Context) error { return r.c.Cancel(ctx, r.id) }

// Wait waits until the task has finished, or ctx is done, and returns its
// final snapshot. For a dead or cancelled task it returns the snapshot and a
// *TaskError that matches ErrTaskDead or ErrTaskCancelled. It polls the
// store, starting every millisecond and slowing to every 100 ms.
func (r *Result) Wait(ctx context.Context) (*TaskInfo, error) {
	const first, most = time.Millisecond, 100 * time.Millisecond
	delay := first
	var timer *time.Timer
	for {
		t, err := r.c.get(ctx, r.id)
		if err != nil {
			return nil, err
		}
		if t.State.Terminal() {
			info := infoFromStore(t)
			if t.State == StateSucceeded {
				return info, nil
			}
			return info, &TaskError{ID: t.ID, Type: t.Type, State: t.State, Attempt: t.Attempt, Message: t.LastError}
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kiln: wait for task %s: %w", r.id, context.Cause(ctx))
		case <-timer.C:
		}
		delay = min(delay*2, most)
	}
}

// Get waits for the task like Wait and decodes its JSON result into out, as
// the handlers made by Func and FuncCtx store it. A nil out, or an empty
// result, leaves out unchanged.
func (r *Result) Get(ctx context.Context, out any) error {
	info, err := r.Wait(ctx)
	if err != nil {
		return err
	}
	if out == nil || len(info.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(info.Result, out); err != nil {
		return fmt.Errorf("kiln: decode result of task %s: %w", r.id, err)
	}
	return nil
}
