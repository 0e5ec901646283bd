package ironapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// Defaults and limits.
const (
	// MaxCodeBytesDefault caps an uploaded zip.
	MaxCodeBytesDefault = 64 << 20
	// MaxPayloadBytes caps a task's payload and a package's config
	// (IronWorker's 64 KB).
	MaxPayloadBytes = 64 << 10
	// MaxBatch is the most tasks one queue request may hold.
	MaxBatch = 1000
	// MaxBodyBytes caps a JSON request body.
	MaxBodyBytes = 8 << 20
	// MaxTimeout is the longest task timeout, in seconds, and the default.
	MaxTimeout = 3600
	// MaxDelay is the longest task delay, in seconds (7 days).
	MaxDelay = 604800
	// MaxRetries caps a package's retries.
	MaxRetries = 10
	// MaxRetriesDelay caps a package's retries_delay, in seconds.
	MaxRetriesDelay = 604800
	// maxDataBytes caps the multipart "data" field of an upload.
	maxDataBytes = 256 << 10
)

// Config configures the API. Store and Authorize are required.
type Config struct {
	// Store holds tasks (each IronWorker project is a kiln project, a store
	// namespace) and, through store.Meta, the code packages.
	Store store.Store
	// Authorize checks that a token may use a project (the native API's
	// AuthorizeToken). Its errors are catalogue errors (internal/wire).
	Authorize func(ctx context.Context, token, project string) error
	// Clock is the store's clock; nil means the system clock.
	Clock store.Clock
	// Limits are the store's limits; zero means store defaults.
	Limits store.Limits
	// Logger receives the errors that become 500 answers; nil discards
	// them. Tokens and payloads are never logged.
	Logger *slog.Logger
	// MaxCodeBytes caps an uploaded zip; default MaxCodeBytesDefault.
	MaxCodeBytes int64
	// OnUpload, when set, is called after a package revision is stored
	// (the server kicks its runner with it).
	OnUpload func()
	// EventFunc, when set, receives the events of this API's changes
	// (task.enqueued, task.cancelled, task.progress) for the server's event
	// stream; it must be fast and safe for concurrent use.
	EventFunc func(wire.Event)
	// Schedules is the schedule engine the schedule routes use; nil makes
	// them answer 404.
	Schedules *schedule.Scheduler
	// TracerProvider, when set, makes each request that queues tasks
	// record a kiln.enqueue span, child of the request's span (or of its
	// W3C traceparent header), which becomes the tasks' trace context.
	TracerProvider trace.TracerProvider
}

// API is the IronWorker API v2 as an http.Handler serving /2/... It is
// safe for concurrent use.
type API struct {
	cfg  Config
	st   store.Store
	meta store.Meta
	reg  *hosted.Registry
	log  *slog.Logger
	mux  *http.ServeMux
	// tracer is nil without Config.TracerProvider.
	tracer trace.Tracer
}

// New returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil || cfg.Authorize == nil {
		return nil, errors.New("ironapi: Config.Store and Config.Authorize are required")
	}
	meta, ok := cfg.Store.(store.Meta)
	if !ok {
		return nil, fmt.Errorf("ironapi: the store %T does not implement store.Meta", cfg.Store)
	}
	if cfg.Clock == nil {
		cfg.Clock = store.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxCodeBytes <= 0 {
		cfg.MaxCodeBytes = MaxCodeBytesDefault
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	a := &API{cfg: cfg, st: cfg.Store, meta: meta, reg: hosted.NewRegistry(meta, cfg.Clock), log: cfg.Logger, mux: http.NewServeMux()}
	if cfg.TracerProvider != nil {
		a.tracer = cfg.TracerProvider.Tracer("github.com/kilnhq/kiln/server/ironapi")
	}
	for _, rt := range a.routes() {
		a.mux.Handle(rt.pattern, a.wrap(rt.h))
	}
	return a, nil
}

type route struct {
	pattern string
	h       func(*call) error
}

// Patterns returns the route patterns ("METHOD /2/..."), for tests and docs.
func (a *API) Patterns() []string {
	var out []string
	for _, rt := range a.routes() {
		out = append(out, rt.pattern)
	}
	return out
}

func (a *API) routes() []route {
	const p = "/2/projects/{pid}"
	return []route{
		{"GET " + p + "/codes", a.listCodes},
		{"POST " + p + "/codes", a.uploadCode},
		{"GET " + p + "/codes/{cid}", a.getCode},
		{"DELETE " + p + "/codes/{cid}", a.deleteCode},
		{"GET " + p + "/codes/{cid}/download", a.downloadCode},
		{"GET " + p + "/codes/{cid}/revisions", a.codeRevisions},
		{"GET " + p + "/codes/{cid}/stats", a.codeStats},
		{"POST " + p + "/codes/{cid}/pause_task_queue", a.pauseCode},
		{"POST " + p + "/codes/{cid}/resume_task_queue", a.resumeCode},
		{"POST " + p + "/codes/{cid}/cancel_all", a.cancelAllCode},
		{"GET " + p + "/tasks", a.listTasks},
		{"POST " + p + "/tasks", a.queueTasks},
		{"POST " + p + "/tasks/webhook", a.queueWebhook},
		{"GET " + p + "/tasks/{tid}", a.getTask},
		{"GET " + p + "/tasks/{tid}/log", a.taskLog},
		{"GET " + p + "/tasks/{tid}/outlog", a.taskLog}, // the Ruby and Node clients' stdout log: kiln keeps one log
		{"POST " + p + "/tasks/{tid}/cancel", a.cancelTask},
		{"POST " + p + "/tasks/{tid}/progress", a.setProgress},
		{"POST " + p + "/tasks/{tid}/retry", a.retryTask},
		{"GET " + p + "/schedules", a.listSchedules},
		{"POST " + p + "/schedules", a.createSchedules},
		{"GET " + p + "/schedules/{sid}", a.getSchedule},
		{"POST " + p + "/schedules/{sid}/cancel", a.cancelSchedule},
	}
}

// apiError is an error with an IronWorker status code.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errStatus(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return errStatus(http.StatusBadRequest, format, args...)
}

func notFound(format string, args ...any) error {
	return errStatus(http.StatusNotFound, format, args...)
}

// call is one request.
type call struct {
	a   *API
	w   http.ResponseWriter
	r   *http.Request
	pid string
}

func (c *call) ctx() context.Context { return c.r.Context() }

// ServeHTTP serves the API; unknown routes get IronWorker's 404 and wrong
// methods its 405, both as {"msg": ...}.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		// Let the mux decide between 404 and 405.
		rec := &probeWriter{h: http.Header{}}
		a.mux.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.h.Get("Allow"))
			writeMsg(w, http.StatusMethodNotAllowed, "Method not allowed")
			return
		}
		writeMsg(w, http.StatusNotFound, "Not found")
		return
	}
	a.mux.ServeHTTP(w, r)
}

// probeWriter records the mux's own answer without sending it.
type probeWriter struct {
	h      http.Header
	status int
}

func (p *probeWriter) Header() http.Header         { return p.h }
func (p *probeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (p *probeWriter) WriteHeader(status int)      { p.status = status }

// token returns the request's token: "Authorization: OAuth <token>" (the
// scheme in any case; "Bearer" is accepted too), else the oauth query
// parameter.
func token(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || (!strings.EqualFold(scheme, "OAuth") && !strings.EqualFold(scheme, "Bearer")) {
			return "", errStatus(http.StatusUnauthorized, "Invalid authentication: the Authorization header must be \"OAuth <token>\"")
		}
		return strings.TrimSpace(tok), nil
	}
	if tok := r.URL.Query().Get("oauth"); tok != "" {
		return tok, nil
	}
	return "", errStatus(http.StatusUnauthorized, "Invalid authentication: no token (Authorization: OAuth <token> or ?oauth=<token>)")
}

func (a *API) wrap(h func(*call) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{a: a, w: w, r: r, pid: r.PathValue("pid")}
		err := a.admit(c)
		if err == nil {
			err = h(c)
		}
		if err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *API) admit(c *call) error {
	tok, err := token(c.r)
	if err != nil {
		return err
	}
	if err := a.cfg.Authorize(c.ctx(), tok, c.pid); err != nil {
		return err
	}
	return nil
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeMsg(w, ae.status, ae.msg)
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeMsg(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body too large: more than %d bytes", mbe.Limit))
		return
	}
	if e := wire.Object(err); e != nil && e.Code != wire.CodeInternal {
		status, obj := wire.ErrorFor(err)
		if obj.Code == wire.CodeStoreUnavailable {
			a.log.WarnContext(r.Context(), "ironapi: request failed: the store is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		if s := wire.RetryAfter(obj.Code); s > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(s))
		}
		switch status {
		case http.StatusUnauthorized:
			writeMsg(w, status, "Invalid authentication: "+obj.Message)
		case http.StatusNotFound:
			writeMsg(w, status, "Project not found")
		default:
			writeMsg(w, status, obj.Message)
		}
		return
	}
	a.log.ErrorContext(r.Context(), "ironapi: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeMsg(w, http.StatusInternalServerError, "Internal error")
}

func writeMsg(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"msg": msg})
}

// writeJSON answers v as JSON. Responses are never compressed: the Go
// clients set Accept-Encoding by hand and would not decompress.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"msg":"Internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left
}

func (c *call) ok(v any) error {
	writeJSON(c.w, http.StatusOK, v)
	return nil
}
