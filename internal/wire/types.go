package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Task is a task as the API returns it.
type Task struct {
	ID              string     `json:"id"`
	Type            string     `json:"type"`
	Queue           string     `json:"queue"`
	State           string     `json:"state"`
	Priority        int        `json:"priority"`
	Attempt         int        `json:"attempt"`
	MaxRetries      int        `json:"max_retries"`
	TimeoutMS       int64      `json:"timeout_ms"`
	Deadline        *time.Time `json:"deadline"`
	UniqueKey       string     `json:"unique_key"`
	UniqueTTLMS     int64      `json:"unique_ttl_ms"`
	RetentionMS     int64      `json:"retention_ms"`
	CreatedAt       *time.Time `json:"created_at"`
	RunAt           *time.Time `json:"run_at"`
	StartedAt       *time.Time `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at"`
	ExpiresAt       *time.Time `json:"expires_at"`
	LeaseID         uint64     `json:"lease_id,string"`
	LeaseExpiresAt  *time.Time `json:"lease_expires_at"`
	WorkerID        string     `json:"worker_id"`
	CancelRequested bool       `json:"cancel_requested"`
	Payload         []byte     `json:"payload"`
	Result          []byte     `json:"result"`
	LastError       string     `json:"last_error"`
	Progress        *Progress  `json:"progress"`

	// UniqueUntilSuccess: the unique key is released when the task
	// succeeds; absent means false.
	UniqueUntilSuccess bool `json:"unique_until_success,omitempty"`
	// TraceParent is the W3C trace context the task was enqueued with;
	// absent means none.
	TraceParent string `json:"traceparent,omitempty"`
	// Errors are the task's failed attempts, oldest first (the last
	// store.MaxAttemptErrors); absent means none failed.
	Errors []AttemptError `json:"errors,omitempty"`
	// ErrorsDropped counts the older failed attempts not in Errors;
	// absent means none.
	ErrorsDropped int `json:"errors_dropped,omitempty"`
}

// AttemptError is one failed attempt of a task.
type AttemptError struct {
	Attempt  int       `json:"attempt"`
	At       time.Time `json:"at"`
	Error    string    `json:"error"`
	WorkerID string    `json:"worker_id,omitempty"`
}

// Progress is what a handler reported while it ran.
type Progress struct {
	Percent int    `json:"percent"`
	Message string `json:"message"`
}

// TaskOptions are the options of one task to enqueue. A field that is
// absent (nil, or the zero value for the others) means the default that
// kiln.Client applies; a field that is present is taken as it is:
// "max_retries": 0 means no retries and "timeout_ms": 0 means no
// per-attempt timeout. store/remote sends every field (see
// OptionsFromInput) so that the store's own semantics hold.
type TaskOptions struct {
	ID          string     `json:"id,omitempty"`
	Queue       string     `json:"queue,omitempty"`
	Priority    int        `json:"priority,omitempty"`
	ProcessAt   *time.Time `json:"process_at,omitempty"`
	ProcessInMS int64      `json:"process_in_ms,omitempty"`
	MaxRetries  *int       `json:"max_retries,omitempty"`
	TimeoutMS   *int64     `json:"timeout_ms,omitempty"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	UniqueKey   string     `json:"unique_key,omitempty"`
	UniqueTTLMS int64      `json:"unique_ttl_ms,omitempty"`
	RetentionMS int64      `json:"retention_ms,omitempty"`

	// UniqueUntilSuccess releases the unique key when the task succeeds.
	UniqueUntilSuccess bool `json:"unique_until_success,omitempty"`
	// TraceParent is a W3C traceparent to carry to the handler (the
	// enqueuing span's); absent means the request's traceparent header,
	// if any.
	TraceParent string `json:"traceparent,omitempty"`
}

// TaskRequest is one task of an enqueue.
type TaskRequest struct {
	Type string `json:"type"`
	// Payload is the payload's bytes, a base64 string in JSON.
	Payload []byte `json:"payload,omitempty"`
	// PayloadJSON is the payload given as JSON, for requests written by
	// hand: any JSON value, whose compact text becomes the payload
	// ({"to": "a"} gives the bytes {"to":"a"}). A task gives Payload or
	// PayloadJSON, not both; see TaskRequest.PayloadBytes.
	PayloadJSON json.RawMessage `json:"payload_json,omitempty"`
	Options     *TaskOptions    `json:"options,omitempty"`
}

// PayloadBytes returns the task's payload: Payload, or the compact text of
// PayloadJSON. Both given is a conflicting_fields error, a PayloadJSON that
// is not one JSON value a bad_request error, both naming payload_json.
func (r *TaskRequest) PayloadBytes() ([]byte, error) {
	if r.PayloadJSON == nil {
		return r.Payload, nil
	}
	if r.Payload != nil {
		return nil, &Error{Code: CodeConflictingFields, Field: "payload_json",
			Message: "payload and payload_json are both given: send the payload once, as base64 bytes in payload or as JSON in payload_json"}
	}
	var b bytes.Buffer
	if err := json.Compact(&b, r.PayloadJSON); err != nil {
		return nil, &Error{Code: CodeBadRequest, Field: "payload_json",
			Message: fmt.Sprintf("payload_json is not one JSON value: %v", err)}
	}
	return b.Bytes(), nil
}

// EnqueueRequest is the body of POST /v1/projects/{p}/tasks.
type EnqueueRequest struct {
	Tasks []TaskRequest `json:"tasks"`
}

// EnqueueItem is the answer for one task of an enqueue.
type EnqueueItem struct {
	// ID is the new task's id, or with a "duplicate" error the id of the
	// task that holds the unique key (also in Error.ID).
	ID    string `json:"id"`
	State string `json:"state,omitempty"`
	Error *Error `json:"error"`
}

// EnqueueResponse is the answer of an enqueue: one item per task, in order.
type EnqueueResponse struct {
	Tasks []EnqueueItem `json:"tasks"`
}

// TaskList is the answer of GET /v1/projects/{p}/tasks.
type TaskList struct {
	Tasks      []*Task `json:"tasks"`
	NextCursor string  `json:"next_cursor"`
}

// IDsRequest names tasks: the body of tasks:batchGet, :cancel, :retry and
// :delete.
type IDsRequest struct {
	IDs []string `json:"ids"`
}

// BatchGetResponse has one task per id, in order; null where none has it.
type BatchGetResponse struct {
	Tasks []*Task `json:"tasks"`
}

// AdminItem is the answer for one task of a batch cancel, retry or delete.
type AdminItem struct {
	State string `json:"state,omitempty"`
	Error *Error `json:"error"`
}

// AdminResponse is the answer of a batch cancel, retry or delete.
type AdminResponse struct {
	Items []AdminItem `json:"items"`
}

// Queue is one queue with its counts per state.
type Queue struct {
	Queue  string           `json:"queue"`
	Paused bool             `json:"paused"`
	Counts map[string]int64 `json:"counts"`
	Total  int64            `json:"total"`
}

// QueueList is the answer of GET /v1/projects/{p}/queues.
type QueueList struct {
	Queues []Queue `json:"queues"`
}

// ProjectStats is one project's queues in GET /v1/stats.
type ProjectStats struct {
	Project string  `json:"project"`
	Queues  []Queue `json:"queues"`
}

// Whoami is the answer of GET /v1/whoami: what the token of the request
// is, so that a client given only a token knows its project.
type Whoami struct {
	// Admin is true for an admin token (every project).
	Admin bool `json:"admin"`
	// Project is a project token's project; empty for an admin token.
	Project string `json:"project"`
	// TokenID is the token's id (as in GET .../tokens), not its secret.
	TokenID string `json:"token_id"`
}

// ServerStats is the answer of GET /v1/stats.
type ServerStats struct {
	Projects []ProjectStats `json:"projects"`
	// EventsDropped counts events the event stream dropped because a
	// subscriber did not keep up.
	EventsDropped int64 `json:"events_dropped"`
	// EventStreams is the number of event streams open on this server.
	EventStreams int `json:"event_streams"`
}

// LeaseRequest is the body of POST /v1/projects/{p}/lease.
type LeaseRequest struct {
	Queues     []string `json:"queues"`
	Weights    []int    `json:"weights"`
	Types      []string `json:"types"`
	Max        int      `json:"max"`
	DurationMS int64    `json:"duration_ms"`
	WaitMS     int64    `json:"wait_ms"`
	// WorkerID names the lease holder when the caller holds a token; a
	// worker session's own id always wins.
	WorkerID string `json:"worker_id,omitempty"`
}

// LeaseResponse is the answer of a lease.
type LeaseResponse struct {
	Tasks []*Task `json:"tasks"`
}

// CancelsRequest is the body of POST /v1/projects/{p}/cancels:wait.
type CancelsRequest struct {
	// Cursor is the cursor of the previous answer; empty starts now.
	Cursor string `json:"cursor"`
	WaitMS int64  `json:"wait_ms"`
}

// ChangesRequest is the body of POST /v1/projects/{p}/changes:wait.
type ChangesRequest struct {
	// Cursor is the cursor of the previous answer, or the seq of the last
	// event seen; empty starts now.
	Cursor string `json:"cursor"`
	WaitMS int64  `json:"wait_ms"`
	// Max is the most events to answer; 0 means 1000.
	Max int `json:"max,omitempty"`
}

// ChangesResponse is the answer of changes:wait: the task changes of the
// project after the cursor, as events (each with its seq), in the order
// the store applied them.
type ChangesResponse struct {
	Events []Event `json:"events"`
	Cursor string  `json:"cursor"`
	Missed bool    `json:"missed"`
}

// LeaseRef names one lease.
type LeaseRef struct {
	ID      string `json:"id"`
	LeaseID uint64 `json:"lease_id,string"`
}

// CancelsResponse is the answer of cancels:wait: the leases asked to
// cancel since the cursor.
type CancelsResponse struct {
	Leases []LeaseRef `json:"leases"`
	Cursor string     `json:"cursor"`
	Missed bool       `json:"missed"`
}

// ExtendLease is one lease to renew.
type ExtendLease struct {
	ID       string    `json:"id"`
	LeaseID  uint64    `json:"lease_id,string"`
	Progress *Progress `json:"progress"`
}

// ExtendRequest is the body of POST /v1/projects/{p}/extend.
type ExtendRequest struct {
	Leases     []ExtendLease `json:"leases"`
	DurationMS int64         `json:"duration_ms"`
}

// ExtendItem is the answer for one lease.
type ExtendItem struct {
	ExpiresAt       *time.Time `json:"expires_at"`
	CancelRequested bool       `json:"cancel_requested"`
	Error           *Error     `json:"error"`
}

// ExtendResponse is the answer of an extend, one item per lease.
type ExtendResponse struct {
	Items []ExtendItem `json:"items"`
}

// Outcome is the end of one attempt.
type Outcome struct {
	ID      string `json:"id"`
	LeaseID uint64 `json:"lease_id,string"`
	// Kind is succeeded, retry, dead, cancelled or release.
	Kind       string     `json:"kind"`
	Result     []byte     `json:"result,omitempty"`
	Error      string     `json:"error,omitempty"`
	RetryAt    *time.Time `json:"retry_at,omitempty"`
	NotStarted bool       `json:"not_started,omitempty"`
}

// ReportRequest is the body of POST /v1/projects/{p}/report.
type ReportRequest struct {
	Outcomes []Outcome `json:"outcomes"`
}

// ReportResponse has one error (or null) per outcome, in order.
type ReportResponse struct {
	Errors []*Error `json:"errors"`
}

// SweepRequest is the (optional) body of POST /v1/admin/sweep.
type SweepRequest struct {
	Limit int `json:"limit,omitempty"`
}

// SweepResponse counts what a sweep changed.
type SweepResponse struct {
	Promoted  int `json:"promoted"`
	Recovered int `json:"recovered"`
	Dead      int `json:"dead"`
	Cancelled int `json:"cancelled"`
	Deleted   int `json:"deleted"`
}

// Project is a tenant of the server.
type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateProjectRequest is the body of POST /v1/projects.
type CreateProjectRequest struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// CreateProjectResponse is the answer of POST /v1/projects; the worker
// secret is shown only here (and by a rotation).
type CreateProjectResponse struct {
	Project      Project `json:"project"`
	WorkerSecret string  `json:"worker_secret"`
}

// ProjectList is the answer of GET /v1/projects.
type ProjectList struct {
	Projects []Project `json:"projects"`
}

// TokenRequest is the body of POST /v1/projects/{p}/tokens and
// POST /v1/admin/tokens.
type TokenRequest struct {
	Name string `json:"name,omitempty"`
}

// NewToken is a token just made: the only time its text is shown.
type NewToken struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// Token describes a token without its text.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// TokenList is the answer of GET /v1/projects/{p}/tokens.
type TokenList struct {
	Tokens []Token `json:"tokens"`
}

// WorkerSecret is the answer of POST /v1/projects/{p}/worker-secret.
type WorkerSecret struct {
	WorkerSecret string `json:"worker_secret"`
}

// RegisterRequest is the body of POST /v1/projects/{p}/workers/register.
type RegisterRequest struct {
	Name string `json:"name"`
}

// RegisterResponse carries the single-use challenge: base64 of 32 random
// bytes, to be answered before ExpiresAt.
type RegisterResponse struct {
	WorkerID  string    `json:"worker_id"`
	Challenge string    `json:"challenge"`
	ExpiresAt time.Time `json:"expires_at"`
}

// VerifyRequest is the body of POST /v1/projects/{p}/workers/verify:
// Response is the hex HMAC-SHA256 of the challenge's bytes under the
// project's worker secret (see Proof).
type VerifyRequest struct {
	WorkerID string `json:"worker_id"`
	Response string `json:"response"`
}

// Session is a worker session key (the answer of verify and refresh).
type Session struct {
	SessionKey string    `json:"session_key"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Worker describes a remote worker.
type Worker struct {
	ID               string     `json:"id"`
	Name             string     `json:"name"`
	State            string     `json:"state"` // registered, verified, expired (a verified worker whose session ended) or revoked
	CreatedAt        time.Time  `json:"created_at"`
	LastSeenAt       *time.Time `json:"last_seen_at"`
	SessionExpiresAt *time.Time `json:"session_expires_at"`
}

// WorkerList is the answer of GET /v1/projects/{p}/workers.
type WorkerList struct {
	Workers []Worker `json:"workers"`
}

// Event is the data of one event of the stream
// GET /v1/projects/{p}/events (its SSE "event:" line is Kind).
type Event struct {
	// Kind is task.enqueued, task.started, ..., worker.registered, ...
	Kind     string    `json:"kind"`
	Time     time.Time `json:"time"`
	Project  string    `json:"project"`
	TaskID   string    `json:"task_id,omitempty"`
	Type     string    `json:"type,omitempty"`
	Queue    string    `json:"queue,omitempty"`
	State    string    `json:"state,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	WorkerID string    `json:"worker_id,omitempty"`
	// Count is the number of tasks of a worker.work_taken event, or of
	// those handed back by a worker.lease_abandoned event.
	Count   int    `json:"count,omitempty"`
	Error   string `json:"error,omitempty"`
	Percent int    `json:"percent,omitempty"`
	Message string `json:"message,omitempty"`
	// Seq orders the task changes of a project as the store applied them
	// (also the event's SSE id); zero for the events the server raises
	// itself (worker.*, task.progress, task.timed_out).
	Seq uint64 `json:"seq,omitempty"`
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	// Status is "ok", "unavailable" (the store does not answer) or
	// "stopping" (the server is shutting down).
	Status string `json:"status"`
	// Code is, when not ok, the catalogue code that other routes answer
	// in the same situation: store_unavailable or unavailable.
	Code string `json:"code,omitempty"`
	// Error says why, when not ok.
	Error string `json:"error,omitempty"`
}

// CLIConfig is what the server writes to <data>/cli.json for the CLI.
type CLIConfig struct {
	URL     string `json:"url"`
	Project string `json:"project"`
	Token   string `json:"token"`
	// CACert, when set, is a PEM file of CA certificates the CLI trusts
	// for an https:// URL (relative to the file's folder). The server
	// never writes it; the operator may add it.
	CACert string `json:"ca_cert,omitempty"`
}
