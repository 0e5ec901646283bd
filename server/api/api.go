package api

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/ratelimit"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	MaxBodyBytesDefault      = 8 << 20
	HandshakeTimeoutDefault  = 30 * time.Second
	SessionTTLDefault        = time.Hour
	HeartbeatIntervalDefault = 15 * time.Second
	EventBufferDefault       = 256
	// The limits of the worker handshake routes (register and verify):
	// token buckets per client address and per project, and a cap on a
	// project's open handshakes. Config.HandshakeRate and its siblings.
	HandshakeRateDefault         = 10.0
	HandshakeBurstDefault        = 20
	ProjectHandshakeRateDefault  = 100.0
	ProjectHandshakeBurstDefault = 200
	MaxOpenHandshakesDefault     = 1000
	// limiterKeys bounds how many client addresses (and projects) have a
	// token bucket at a time; the one used least recently is forgotten
	// first. An entry is a few hundred bytes.
	limiterKeys = 10000
	// openRecount is how often a server counts a project's open
	// handshakes in the store; in between it counts its own registrations.
	openRecount = time.Second
	// MaxStreamsDefault caps the open event streams of the server, and
	// MaxProjectStreamsDefault those of one project.
	MaxStreamsDefault        = 1000
	MaxProjectStreamsDefault = 100
	// StreamWriteTimeoutDefault is how long one write of an event stream
	// may wait for a client that does not read before it is dropped.
	StreamWriteTimeoutDefault = 10 * time.Second
	ResultPollDefault         = time.Second
	// MaxWait bounds the long polls of lease (wait_ms) and result (wait_ms).
	MaxLeaseWait  = 30 * time.Second
	MaxResultWait = 60 * time.Second
)

// SystemNamespace is the store namespace that holds the server's own
// records (projects, tokens, sessions). No project may take its name.
const SystemNamespace = "_kiln"

//go:embed errors.json
var catalogueJSON []byte

// CatalogueEntry is one entry of errors.json.
type CatalogueEntry struct {
	// Code is the stable name of the error.
	Code string `json:"code"`
	// Status is the HTTP status of an answer that fails with it.
	Status int `json:"status"`
	// Sentinel names the store error that errors.Is matches (ErrNotFound
	// for store.ErrNotFound), or is empty.
	Sentinel string `json:"sentinel,omitempty"`
	// Match orders the codes with a sentinel: an error that matches several
	// sentinels gets the code of the lowest.
	Match int `json:"match,omitempty"`
	// RetryAfter is the Retry-After seconds of an answer that fails with
	// the code, or 0.
	RetryAfter int `json:"retry_after,omitempty"`
	// Message describes the error, for people.
	Message string `json:"message"`
}

// Catalogue returns the error catalogue embedded from errors.json.
func Catalogue() []CatalogueEntry {
	var c []CatalogueEntry
	if err := json.Unmarshal(catalogueJSON, &c); err != nil {
		panic("api: errors.json is not valid: " + err.Error()) // a build-time mistake, caught by the tests
	}
	return c
}

// Config configures the API. Store and Meta are required; the zero value
// of every other field means its default.
type Config struct {
	// Store holds the tasks; each project is a namespace of it.
	Store store.Store
	// Meta holds the server's records; usually Store itself.
	Meta store.Meta
	// Clock tells the server's own times (handshake deadlines, session
	// expiry, the "now" of enqueue validation); nil means the system clock.
	// Tests pass the store's fake clock.
	Clock store.Clock
	// Limits are the store's limits; the zero value means store defaults.
	Limits store.Limits
	// Logger receives request and error logs; nil discards them. Tokens,
	// secrets and session keys are never logged.
	Logger *slog.Logger
	// EventFunc, when set, is called for every event (the event stream's
	// events of every project), synchronously on the request's goroutine:
	// it must be fast and safe for concurrent use.
	EventFunc func(wire.Event)
	// Feed is the store's change feed, which the event streams read; nil
	// takes Store's own when it has one (store.Feed). A server that wraps
	// its store (to count its calls) passes the store's feed here.
	Feed store.Feed
	// TaskDefaults, when set, sees every valid task of a native enqueue
	// before it is stored and may set what its type decides (a code
	// package's task takes the package's queue, unless queueGiven, and its
	// retries; see hosted.Registry.TaskDefaults). An error fails the
	// request.
	TaskDefaults func(ctx context.Context, project string, in *store.TaskInput, queueGiven bool) error
	// Metrics, when set, serves GET /metrics (Prometheus metrics) to admin
	// tokens; nil answers that route 404 not_found.
	Metrics http.Handler
	// TracerProvider, when set, makes each enqueue request record a
	// kiln.enqueue span, child of the request's span (or of its W3C
	// traceparent header), which becomes the trace context of the tasks
	// that bring none of their own. Nil: the header's traceparent is
	// stored as it is.
	TracerProvider trace.TracerProvider
	// MaxBodyBytes caps request bodies; default MaxBodyBytesDefault (8 MiB).
	MaxBodyBytes int64
	// HandshakeTimeout is how long a worker has to answer its challenge;
	// default 30 s.
	HandshakeTimeout time.Duration
	// SessionTTL is how long a worker session key lasts; default 1 h.
	SessionTTL time.Duration
	// HeartbeatInterval is how often the event stream sends a comment line;
	// default 15 s.
	HeartbeatInterval time.Duration
	// EventBuffer is how many events a slow event-stream subscriber may
	// fall behind before events are dropped (and counted); default 256.
	EventBuffer int
	// MaxStreams caps the event streams open at once, of every project;
	// one more is refused with 429 too_many_streams. Default
	// MaxStreamsDefault (1000).
	MaxStreams int
	// MaxProjectStreams caps the event streams of one project; default
	// MaxProjectStreamsDefault (100).
	MaxProjectStreams int
	// StreamWriteTimeout bounds each write of an event stream: a client
	// that does not read for that long is dropped, freeing its slot.
	// Default StreamWriteTimeoutDefault (10 s).
	StreamWriteTimeout time.Duration
	// ResultPoll is how often a result wait re-reads the task besides the
	// events it sees; default 1 s.
	ResultPoll time.Duration
	// Schedules is the schedule engine of the schedule routes; nil means
	// one over Store with this Config's Clock, Limits and Logger (the
	// server passes the one it runs).
	Schedules *schedule.Scheduler
	// HandshakeRate is how many handshake requests (register and verify
	// together) one client address may make a second, on average, and
	// HandshakeBurst how many at once; beyond them the answer is 429
	// rate_limited with a Retry-After header. The address is the TCP peer's
	// (an IPv6 address counts by its /64); X-Forwarded-For is not trusted.
	// Defaults 10 and 20; a negative rate means no limit.
	HandshakeRate  float64
	HandshakeBurst int
	// ProjectHandshakeRate and ProjectHandshakeBurst are the same for all
	// the handshake requests of one project, from any address; defaults
	// 100 and 200; a negative rate means no limit.
	ProjectHandshakeRate  float64
	ProjectHandshakeBurst int
	// MaxOpenHandshakes caps a project's open handshakes (registered, not
	// verified, challenge not expired): beyond it register answers 429
	// rate_limited. Each server counts them in the store at most once a
	// second and its own registrations in between, so servers sharing a
	// store may together overshoot by what they accept within a second.
	// Default 1000; negative means no cap.
	MaxOpenHandshakes int
}

func init() { hook.SetAutoCreateProjects(func(a *API) { a.autoCreate.Store(true) }) }

// API is the native JSON API: an http.Handler with every route of
// docs/api.md. It is safe for concurrent use.
type API struct {
	cfg Config
	// autoCreate makes an admin token create a project on its first use
	// of a project URL: for kiln's own tests only, turned on through
	// internal/hook (store/remote runs the store conformance suite, which
	// invents namespaces, through it).
	autoCreate atomic.Bool
	st         store.Store
	meta       store.Meta
	clock      store.Clock
	log        *slog.Logger
	hub        *hub
	feed       store.Feed // the store's change feed, or nil
	mux        *http.ServeMux
	routes     []Route
	projects   sync.Map // project id -> *projectRecord, found once
	sched      *schedule.Scheduler
	tracer     trace.Tracer // nil without Config.TracerProvider

	stopOnce sync.Once
	stopping chan struct{}
	seenMu   sync.Mutex
	seen     map[string]time.Time // worker id -> last time last_seen_at was written
	// refuseWorkers, when set, is the message the worker routes answer
	// with tls_required (RefuseWorkerRoutes).
	refuseWorkers atomic.Pointer[string]

	addrLimit    *ratelimit.Keyed // handshake requests per client address; nil: no limit
	projectLimit *ratelimit.Keyed // handshake requests per project; nil: no limit
	openMu       sync.Mutex
	open         map[string]*openCount // project -> its open handshakes
}

// New returns the API over cfg.Store.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil || cfg.Meta == nil {
		return nil, errors.New("api: Config.Store and Config.Meta are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = store.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxBodyBytesDefault
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = HandshakeTimeoutDefault
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = SessionTTLDefault
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = HeartbeatIntervalDefault
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = EventBufferDefault
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = MaxStreamsDefault
	}
	if cfg.MaxProjectStreams <= 0 {
		cfg.MaxProjectStreams = MaxProjectStreamsDefault
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = StreamWriteTimeoutDefault
	}
	if cfg.ResultPoll <= 0 {
		cfg.ResultPoll = ResultPollDefault
	}
	if cfg.HandshakeRate == 0 {
		cfg.HandshakeRate = HandshakeRateDefault
	}
	if cfg.HandshakeBurst <= 0 {
		cfg.HandshakeBurst = HandshakeBurstDefault
	}
	if cfg.ProjectHandshakeRate == 0 {
		cfg.ProjectHandshakeRate = ProjectHandshakeRateDefault
	}
	if cfg.ProjectHandshakeBurst <= 0 {
		cfg.ProjectHandshakeBurst = ProjectHandshakeBurstDefault
	}
	if cfg.MaxOpenHandshakes == 0 {
		cfg.MaxOpenHandshakes = MaxOpenHandshakesDefault
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Schedules == nil {
		sc, err := schedule.New(storeMeta{cfg.Store, cfg.Meta}, &schedule.Config{Clock: cfg.Clock, Limits: cfg.Limits, Logger: cfg.Logger, IndexNamespace: SystemNamespace})
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		cfg.Schedules = sc
	}
	a := &API{
		cfg: cfg, st: cfg.Store, meta: cfg.Meta, clock: cfg.Clock, log: cfg.Logger,
		hub:      newHub(cfg.EventBuffer, cfg.MaxStreams, cfg.MaxProjectStreams, cfg.EventFunc),
		mux:      http.NewServeMux(),
		stopping: make(chan struct{}),
		seen:     make(map[string]time.Time),
		sched:    cfg.Schedules,
		open:     make(map[string]*openCount),
	}
	if cfg.TracerProvider != nil {
		a.tracer = cfg.TracerProvider.Tracer("github.com/kilnhq/kiln/server/api")
	}
	if cfg.Feed != nil {
		a.feed = cfg.Feed
	} else if fd, ok := cfg.Store.(store.Feed); ok {
		a.feed = fd
	}
	a.hub.fromStore = a.feed != nil
	if cfg.HandshakeRate > 0 {
		a.addrLimit = ratelimit.New(cfg.HandshakeRate, cfg.HandshakeBurst, limiterKeys)
	}
	if cfg.ProjectHandshakeRate > 0 {
		a.projectLimit = ratelimit.New(cfg.ProjectHandshakeRate, cfg.ProjectHandshakeBurst, limiterKeys)
	}
	a.routes = a.table()
	for _, rt := range a.routes {
		a.mux.Handle(rt.Method+" "+rt.Path, a.wrap(rt))
	}
	return a, nil
}

// Access says who may call a route.
type Access uint8

// The kinds of access.
const (
	// Public routes need no credential (/healthz).
	Public Access = iota + 1
	// Handshake routes are authenticated by the worker handshake itself.
	Handshake
	// Any valid credential: admin or project token, or session key.
	Any
	// Token: an admin or project token (a project token only for its
	// own project).
	Token
	// WorkerOrToken: a token, or a session key of the route's project.
	WorkerOrToken
	// Admin: admin tokens only.
	Admin
	// Probe (/readyz) checks the store before the credential, since the
	// credentials live in the store: while the store does not answer,
	// anyone gets 503 saying so. It needs no credential (a load balancer
	// has none); a credential that is given must be valid, as with Any.
	Probe
	// TokenOrSession: a token, or a session key of the route's project,
	// for reads a worker needs besides its leases (tasks:batchGet: a
	// workflow step reads the states and results of the tasks it waits
	// for). Unlike WorkerOrToken, only a session key is refused where the
	// worker routes need TLS (RefuseWorkerRoutes); tokens are not.
	TokenOrSession
)

// Route is one route of the API.
type Route struct {
	Method string
	Path   string
	Access Access
	h      func(*call) error
}

// Routes returns every route of the API, in registration order.
func (a *API) Routes() []Route { return append([]Route(nil), a.routes...) }

// Stop ends the long polls (lease waits, result waits) and the event
// streams, so that a graceful shutdown is not held up by them. Requests
// that change tasks finish normally. It is safe to call more than once.
func (a *API) Stop() {
	a.stopOnce.Do(func() {
		close(a.stopping)
		a.hub.close()
	})
}

// RefuseWorkerRoutes makes the worker routes (register, verify, refresh,
// lease, extend, report, cancels:wait: those of Access Handshake and WorkerOrToken) answer
// 403 tls_required with msg as the message, whoever calls them, before any
// credential is read. The server calls it when it serves plain HTTP on a
// non-loopback address (docs/api.md, "Transport security"). An empty msg
// lets them through again.
func (a *API) RefuseWorkerRoutes(msg string) {
	if msg == "" {
		a.refuseWorkers.Store(nil)
		return
	}
	a.refuseWorkers.Store(&msg)
}

// EventsDropped returns how many events were dropped for slow
// subscribers of the event stream.
func (a *API) EventsDropped() int64 { return a.hub.dropped.Load() }

// EventStreams returns how many event streams are open.
func (a *API) EventStreams() int { return a.hub.streamCount() }

// Publish raises an event to the hooks and the event stream.
func (a *API) Publish(ev wire.Event) { a.publish(ev) }

func (a *API) publish(ev wire.Event) {
	if ev.Time.IsZero() {
		ev.Time = a.clock.Now().UTC()
	}
	a.hub.publish(ev)
}

// ServeHTTP serves the API. Unknown paths and wrong methods get the
// catalogue's not_found and method_not_allowed objects.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := a.mux.Handler(r); pattern == "" {
		a.mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w}, r)
		return
	}
	a.mux.ServeHTTP(w, r)
}

// muxErrorWriter turns the mux's own plain-text 404 and 405 answers into
// catalogue objects; redirects pass through.
type muxErrorWriter struct {
	http.ResponseWriter
	swallow bool
}

func (m *muxErrorWriter) WriteHeader(status int) {
	switch status {
	case http.StatusNotFound:
		m.swallow = true
		writeJSON(m.ResponseWriter, status, wire.ErrorBody{Error: wire.Errorf(wire.CodeNotFound, "no such route")})
	case http.StatusMethodNotAllowed:
		m.swallow = true
		writeJSON(m.ResponseWriter, status, wire.ErrorBody{Error: wire.Errorf(wire.CodeMethodNotAllowed, "the route does not accept this method (allowed: %s)", m.Header().Get("Allow"))})
	default:
		m.ResponseWriter.WriteHeader(status)
	}
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.swallow {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

// call is one request being served.
type call struct {
	a       *API
	w       http.ResponseWriter
	r       *http.Request
	who     *principal
	project *projectRecord // the route's project, when it has one
}

func (c *call) ctx() context.Context { return c.r.Context() }

func (c *call) ns() string { return c.project.ID }

// decode reads and strictly decodes the body into v.
func (c *call) decode(v any, allowEmpty bool) error {
	b, err := readBody(c.w, c.r, c.a.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	return Decode(b, v, allowEmpty)
}

// noBody rejects a request body on a route that takes none.
func (c *call) noBody() error {
	b, err := readBody(c.w, c.r, 1<<10)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) > 0 {
		return wire.Errorf(wire.CodeBadRequest, "this route takes no request body")
	}
	return nil
}

func (c *call) json(status int, v any) error {
	writeJSON(c.w, status, v)
	return nil
}

// deliver answers 200 with body and makes sure it left: it is written with
// its length within timeout and flushed to the connection, and the first
// failure is returned (the client left, the connection broke, the time ran
// out). A writer that cannot flush or take a deadline (a test recorder) is
// taken as delivered. Data that reached the kernel's buffers counts as
// delivered: a client that dies after that cannot be detected here.
func (c *call) deliver(contentType string, body []byte, timeout time.Duration) error {
	rc := http.NewResponseController(c.w)
	if err := rc.SetWriteDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	h := c.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if contentType != "application/json" {
		h.Set("Vary", "Accept")
	}
	c.w.WriteHeader(http.StatusOK)
	if _, err := c.w.Write(body); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n')) // a failed write means the client left
}

// writeError answers err as a catalogue object; internal errors are logged
// with their text, which never reaches the client.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var le *limitedError
	if errors.As(err, &le) {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(max(le.after, time.Second).Seconds())), 10))
	}
	status, obj := wire.ErrorFor(err)
	switch {
	case status >= 500 && obj.Code == wire.CodeInternal:
		a.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	case obj.Code == wire.CodeStoreUnavailable:
		a.log.WarnContext(r.Context(), "request failed: the store is unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	setRetryAfter(w, obj.Code)
	writeJSON(w, status, wire.ErrorBody{Error: obj})
}

// setRetryAfter sets the Retry-After header of an answer failing with
// code, when the catalogue gives it one.
func setRetryAfter(w http.ResponseWriter, code string) {
	if s := wire.RetryAfter(code); s > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(s))
	}
}

// wrap authenticates and authorizes a request for rt, then runs it.
func (a *API) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{a: a, w: w, r: r}
		if msg := a.refuseWorkers.Load(); msg != nil && (rt.Access == Handshake || rt.Access == WorkerOrToken) {
			a.writeError(w, r, wire.Errorf(wire.CodeTLSRequired, "%s", *msg))
			return
		}
		if rt.Access == Handshake {
			// Before any store read: the routes need no credential.
			if err := a.limitAddr(r); err != nil {
				a.writeError(w, r, err)
				return
			}
		}
		if rt.Access == Probe && !a.probe(c) {
			return
		}
		if err := a.admit(c, rt); err != nil {
			a.writeError(w, r, err)
			return
		}
		if msg := a.refuseWorkers.Load(); msg != nil && rt.Access == TokenOrSession && c.who != nil && c.who.session {
			a.writeError(w, r, wire.Errorf(wire.CodeTLSRequired, "%s", *msg))
			return
		}
		if rt.Access == Handshake {
			if err := a.limitProject(c); err != nil {
				a.writeError(w, r, err)
				return
			}
		}
		if err := rt.h(c); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *API) admit(c *call, rt Route) error {
	r := c.r
	// A probe without a credential (a load balancer's) is answered; one
	// with a credential checks it, as the remote store's Ping relies on.
	anonymousProbe := rt.Access == Probe && r.Header.Get("Authorization") == ""
	if rt.Access != Public && rt.Access != Handshake && !anonymousProbe {
		who, err := a.authenticate(r)
		if err != nil {
			return err
		}
		c.who = who
	}
	p := r.PathValue("p")
	if p != "" || strings.Contains(rt.Path, "{p}") {
		if err := store.CheckName("project", p); err != nil {
			return err
		}
	}
	who := c.who
	switch rt.Access {
	case Public, Any, Probe:
	case Admin:
		if !who.admin {
			return wire.Errorf(wire.CodeForbidden, "this route needs an admin token")
		}
	case Token, WorkerOrToken, TokenOrSession:
		if who.session {
			if p == "" || who.project != p {
				if p != "" {
					return notFoundProject(p)
				}
				return wire.Errorf(wire.CodeForbidden, "a worker session key may only lease, extend, report, wait for cancels, read its project's tasks by id and refresh")
			}
			if rt.Access == Token {
				return wire.Errorf(wire.CodeForbidden, "a worker session key may only lease, extend, report, wait for cancels, read its project's tasks by id and refresh")
			}
		} else if !who.admin && p != "" && who.project != p {
			return notFoundProject(p)
		}
	case Handshake:
	}
	if p != "" {
		pr, err := a.project(c.ctx(), p, who != nil && who.admin && a.autoCreate.Load())
		if err != nil {
			return err
		}
		c.project = pr
	}
	return nil
}

func notFoundProject(p string) error {
	return wire.Errorf(wire.CodeNotFound, "project %q not found", p)
}

// randomText returns n random bytes from crypto/rand as lower-case base32
// without padding.
func randomText(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics instead)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// randomID returns prefix and 12 random bytes in hex.
func randomID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails
	return prefix + hex.EncodeToString(b)
}

// errf is a shorthand for a wire error with a field.
func errf(code, field, format string, args ...any) error {
	return &wire.Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}
