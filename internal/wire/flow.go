package wire

import (
	"time"

	"github.com/kilnhq/kiln/store"
)

// FlowTask is one task of a workflow on the wire: every option present, so
// the server applies no default of its own.
type FlowTask struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	Queue       string     `json:"queue"`
	Payload     []byte     `json:"payload,omitempty"`
	Priority    int        `json:"priority"`
	MaxRetries  int        `json:"max_retries"`
	TimeoutMS   int64      `json:"timeout_ms"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	RunAt       *time.Time `json:"run_at,omitempty"`
	RetentionMS int64      `json:"retention_ms"`
	// UniqueKey is refused by the store (tasks of a workflow cannot have
	// one); it travels so that the refusal is the store's.
	UniqueKey string `json:"unique_key,omitempty"`
	// TraceParent is the W3C trace context to carry to the task's handler
	// (the enqueuing span's), if any.
	TraceParent string `json:"traceparent,omitempty"`
	// After, for a held task, lists the tasks it waits for.
	After []string `json:"after,omitempty"`
}

// FlowRequest is the body of POST /v1/projects/{p}/workflows.
type FlowRequest struct {
	ID    string     `json:"id"`
	Spec  []byte     `json:"spec,omitempty"`
	Tasks []FlowTask `json:"tasks"`
	Held  []FlowTask `json:"held,omitempty"`
}

// Flow is the stored record of a workflow, as GET
// /v1/projects/{p}/workflows/{id} answers it.
type Flow struct {
	ID        string    `json:"id"`
	Spec      []byte    `json:"spec,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Held lists the held tasks not yet released.
	Held []string `json:"held"`
	// Members, when the server can read the spec, lists every task of the
	// workflow with its state ("waiting" for a held task).
	Members []FlowMember `json:"members,omitempty"`
	// State is the whole workflow's state, and Size its number of
	// tasks, when the server can read the spec.
	State string `json:"state,omitempty"`
	Size  int    `json:"size,omitempty"`
}

// FlowList is the answer of GET /v1/projects/{p}/workflows.
type FlowList struct {
	Workflows  []Flow `json:"workflows"`
	NextCursor string `json:"next_cursor"`
}

// FlowMember is one task of a workflow with its state.
type FlowMember struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// FromFlowTask converts a task input to send.
func FromFlowTask(in *store.TaskInput, after []string) FlowTask {
	return FlowTask{
		ID: in.ID, Type: in.Type, Queue: in.Queue, Payload: in.Payload, Priority: in.Priority,
		MaxRetries: in.MaxRetries, TimeoutMS: MS(in.Timeout), Deadline: TimePtr(in.Deadline),
		RunAt: TimePtr(in.RunAt), RetentionMS: MS(in.Retention), UniqueKey: in.UniqueKey, TraceParent: in.TraceParent, After: after,
	}
}

// Input converts a received task to the store's input.
func (t *FlowTask) Input() store.TaskInput {
	return store.TaskInput{
		ID: t.ID, Type: t.Type, Queue: t.Queue, Payload: t.Payload, Priority: t.Priority,
		MaxRetries: t.MaxRetries, Timeout: Dur(t.TimeoutMS), Deadline: TimeVal(t.Deadline),
		RunAt: TimeVal(t.RunAt), Retention: Dur(t.RetentionMS), UniqueKey: t.UniqueKey, TraceParent: t.TraceParent,
	}
}

// ToFlowParams converts a received workflow to the store's input.
func (r *FlowRequest) ToFlowParams(ns string) store.FlowParams {
	p := store.FlowParams{Namespace: ns, ID: r.ID, Spec: r.Spec, Tasks: make([]store.TaskInput, len(r.Tasks)), Held: make([]store.HeldTask, len(r.Held))}
	for i := range r.Tasks {
		p.Tasks[i] = r.Tasks[i].Input()
	}
	for i := range r.Held {
		p.Held[i] = store.HeldTask{Task: r.Held[i].Input(), After: r.Held[i].After}
	}
	return p
}

// FromFlowParams converts a workflow to send.
func FromFlowParams(p *store.FlowParams) FlowRequest {
	r := FlowRequest{ID: p.ID, Spec: p.Spec, Tasks: make([]FlowTask, len(p.Tasks)), Held: make([]FlowTask, len(p.Held))}
	for i := range p.Tasks {
		r.Tasks[i] = FromFlowTask(&p.Tasks[i], nil)
	}
	for i := range p.Held {
		r.Held[i] = FromFlowTask(&p.Held[i].Task, p.Held[i].After)
	}
	return r
}
