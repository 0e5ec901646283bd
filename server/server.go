package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/server/dashboard"
	"github.com/kilnhq/kiln/server/ironapi"
	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	AddrDefault             = "127.0.0.1:7878"
	SweepIntervalDefault    = time.Second
	ShutdownTimeoutDefault  = 30 * time.Second
	BootstrapProjectDefault = "default"
	// handshakeGCEvery is how many sweeps pass between two collections of
	// expired handshakes.
	handshakeGCEvery = 30
)

// Event is what Config.EventFunc sees: a task event (Kind "task.*") or a
// remote worker event (Kind "worker.*"), the same as the event stream
// (GET /v1/projects/{p}/events) sends as JSON. The kinds are listed in
// docs/api.md. It is plain data.
type Event struct {
	// Kind is task.enqueued, task.started, ..., worker.registered, ...
	Kind string `json:"kind"`
	// Time is when the server raised the event.
	Time time.Time `json:"time"`
	// Project is the project of the task or worker; empty for a sweep's
	// worker.work_timed_out, which counts every project's.
	Project string `json:"project"`
	// TaskID, Type, Queue, State and Attempt describe the task of a task
	// event.
	TaskID  string `json:"task_id,omitempty"`
	Type    string `json:"type,omitempty"`
	Queue   string `json:"queue,omitempty"`
	State   string `json:"state,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// WorkerID names the remote worker.
	WorkerID string `json:"worker_id,omitempty"`
	// Count is the number of tasks of a worker.work_taken event, or of
	// those handed back by a worker.lease_abandoned event.
	Count int `json:"count,omitempty"`
	// Error says what went wrong, for the events of failures.
	Error string `json:"error,omitempty"`
	// Percent and Message are a task.progress event's progress (Message
	// is also a worker's name on worker.registered and worker.verified).
	Percent int    `json:"percent,omitempty"`
	Message string `json:"message,omitempty"`
	// Seq is the store's sequence of a task change read from its change
	// feed; the events of the hook have none (zero).
	Seq uint64 `json:"seq,omitempty"`
}

// eventFunc adapts a hook of Events to the API's events; nil stays nil.
func eventFunc(f func(Event)) func(wire.Event) {
	if f == nil {
		return nil
	}
	return func(ev wire.Event) { f(eventFromWire(ev)) }
}

// eventFromWire copies an event of the API into an Event.
func eventFromWire(ev wire.Event) Event {
	return Event{
		Kind: ev.Kind, Time: ev.Time, Project: ev.Project, TaskID: ev.TaskID, Type: ev.Type,
		Queue: ev.Queue, State: ev.State, Attempt: ev.Attempt, WorkerID: ev.WorkerID,
		Count: ev.Count, Error: ev.Error, Percent: ev.Percent, Message: ev.Message, Seq: ev.Seq,
	}
}

// taskEventKinds are the event kinds of the code runner's task events.
var taskEventKinds = map[kiln.EventKind]string{
	kiln.EventEnqueued:  wire.EventTaskEnqueued,
	kiln.EventStarted:   wire.EventTaskStarted,
	kiln.EventSucceeded: wire.EventTaskSucceeded,
	kiln.EventFailed:    wire.EventTaskFailed,
	kiln.EventRetrying:  wire.EventTaskRetrying,
	kiln.EventDead:      wire.EventTaskDead,
	kiln.EventTimedOut:  wire.EventTaskTimedOut,
	kiln.EventCancelled: wire.EventTaskCancelled,
	kiln.EventLeaseLost: wire.EventTaskLeaseLost,
	kiln.EventReleased:  wire.EventTaskReleased,
}

// Config configures a Server. Store is required; the zero value of every
// other field means its default.
type Config struct {
	// Store holds tasks and, through store.Meta, the server's records. The
	// caller opens and closes it.
	Store store.Store
	// Addr is where Run listens; default AddrDefault (127.0.0.1:7878).
	Addr string
	// TLSCertFile and TLSKeyFile, both or neither, make Run and Serve speak
	// TLS (1.2 or later) with the PEM certificate (chain) and private key of
	// these files. The files are looked at again at most once a second, at
	// a TLS handshake, and loaded again when either changed, so a renewed
	// certificate is served without a restart; a new pair that does not
	// load leaves the previous one in service and is logged as an error.
	// The pair must load when New is called.
	TLSCertFile, TLSKeyFile string
	// AllowInsecureWorkers lets the worker routes (register, verify,
	// refresh, lease, extend, report) be used over plain HTTP when the
	// server listens on an address other than loopback. Without TLS they
	// are refused there with 403 tls_required, because they carry session
	// keys and tasks; on 127.0.0.0/8 and ::1 they are always allowed. Set it
	// behind a proxy that terminates TLS on another host (one on the same
	// host reaches kiln on loopback and needs nothing).
	AllowInsecureWorkers bool
	// Clock tells the server's own times (handshake deadlines, session
	// expiry, the "now" of enqueue validation); nil means the system
	// clock. Tests pass the fake clock their store uses.
	Clock store.Clock
	// Limits are the store's limits; the zero value means store defaults.
	Limits store.Limits
	// Logger receives structured logs; nil discards them. Tokens, secrets
	// and session keys are never logged, nor are query strings.
	Logger *slog.Logger
	// EventFunc, when set, is called for every event of every project,
	// synchronously: it must be fast and safe for concurrent use.
	EventFunc func(Event)
	// MaxBodyBytes caps request bodies; default 8 MiB.
	MaxBodyBytes int64
	// HandshakeTimeout is how long a remote worker has to answer its
	// challenge; default 30 s.
	HandshakeTimeout time.Duration
	// SessionTTL is how long a worker session key lasts; default 1 h.
	SessionTTL time.Duration
	// HandshakeRate and HandshakeBurst limit the remote worker handshake
	// requests (register and verify) of one client address: on average
	// per second, and at once; defaults 10 and 20; a negative rate means
	// no limit. The address is the TCP peer's (IPv6 by /64):
	// X-Forwarded-For is not trusted, so behind a proxy every client
	// shares the proxy's bucket. Beyond it: 429 rate_limited, Retry-After.
	HandshakeRate  float64
	HandshakeBurst int
	// ProjectHandshakeRate and ProjectHandshakeBurst are the same for all
	// the handshake requests of one project; defaults 100 and 200.
	ProjectHandshakeRate  float64
	ProjectHandshakeBurst int
	// MaxOpenHandshakes caps a project's open handshakes (registered, not
	// verified, not expired); default 1000; negative means no cap.
	MaxOpenHandshakes int
	// HeartbeatInterval is how often the event stream sends a comment;
	// default 15 s.
	HeartbeatInterval time.Duration
	// EventBuffer is how far an event-stream subscriber may fall behind
	// before its events are dropped (and counted); default 256.
	EventBuffer int
	// MaxStreams caps the event streams open at once, of every project;
	// one more is refused with 429 too_many_streams. Default 1000.
	MaxStreams int
	// MaxProjectStreams caps the event streams of one project; default 100.
	MaxProjectStreams int
	// StreamWriteTimeout bounds each write of an event stream: a client
	// that does not read for that long is dropped; default 10 s.
	StreamWriteTimeout time.Duration
	// SweepInterval is how often the server sweeps the store; default 1 s;
	// negative disables the sweeper (tests sweep with POST /v1/admin/sweep).
	SweepInterval time.Duration
	// ShutdownTimeout bounds the graceful stop of Run; default 30 s.
	ShutdownTimeout time.Duration
	// BootstrapProject is the project made on the first start; default
	// "default". KILN_BOOTSTRAP_PROJECT in the command.
	BootstrapProject string
	// BootstrapToken, when set, is the admin token to accept (at least 32
	// characters): it is recorded on every start, and nothing is printed.
	// KILN_BOOTSTRAP_TOKEN in the command.
	BootstrapToken string
	// DisableBootstrap makes no project and no token (tests that create
	// their own).
	DisableBootstrap bool
	// CLIFile, when set, is where the first start writes the URL, project
	// and admin token for the CLI (mode 0600); an existing file is kept.
	CLIFile string
	// Stdout receives the one-time message with a new admin token; nil
	// discards it.
	Stdout io.Writer
	// DisableMetrics turns the Prometheus metrics off (docs/metrics.md):
	// no collectors, and GET /metrics answers 404. By default the server
	// counts its tasks, store errors and HTTP requests, and serves them at
	// GET /metrics to admin tokens.
	DisableMetrics bool
	// MetricsAddr, when set, is a second address where Run and Serve
	// serve GET /metrics without a token, for a Prometheus server that
	// reaches it on a private network; nothing else is served there.
	MetricsAddr string
	// TracerProvider, when set, turns OpenTelemetry tracing on
	// (docs/metrics.md): a server span per HTTP request, named after its
	// route ("POST /v1/projects/{p}/tasks", never the raw path) and child
	// of the request's W3C traceparent header; a kiln.enqueue span per
	// enqueue request, child of it and the trace context of the tasks; and,
	// unless Runner sets its own, the code runner's kiln.lease, kiln.handle
	// and kiln.code.run spans. No header, token or query string goes into
	// a span. Nil: no spans (the traceparent header is still stored with
	// the tasks). The caller owns the provider (flushes and shuts it down).
	TracerProvider trace.TracerProvider
	// MaxCodeBytes caps a code package zip uploaded through the
	// IronWorker API (/2/); default ironapi.MaxCodeBytesDefault (64 MiB).
	MaxCodeBytes int64
	// DisableDashboard turns the web dashboard off: GET /, /assets/ and
	// /ui/ are then the API's (404). By default the server serves it
	// (server/dashboard; docs/dashboard.md).
	DisableDashboard bool
	// Runner, when set, makes the server run the tasks of code packages
	// itself (runner/hosted) while it serves; its Store and Logger are the
	// server's. Nil: no runner here (other kiln processes sharing the store
	// may run them). A binary that sets it must call runner.Main first
	// thing in main. CLIFile is added to its Runner's Hide: a task in the
	// sandbox never sees the admin token's file.
	Runner *hosted.Config
}

// Server is a kiln server. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	api     *api.API
	iron    *ironapi.API
	hosted  *hosted.Hosted
	handler http.Handler
	log     *slog.Logger

	mu       sync.Mutex
	http     *http.Server
	sweepers sync.WaitGroup
	stopOnce sync.Once
	stop     chan struct{}
	boot     *wire.CLIConfig
	certs    *certReloader // nil without TLS

	metrics     *metrics.Set // nil when metrics are off
	metricsHTTP http.Handler // GET /metrics; nil when metrics are off
	metricsAddr net.Addr     // where MetricsAddr is served, once it is

	tracer trace.Tracer // nil without Config.TracerProvider
}

// New checks cfg, bootstraps the first project and admin token when the
// store has none, and returns the server (not yet serving).
func New(cfg *Config) (*Server, error) {
	if cfg == nil || cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	c := *cfg
	meta, ok := c.Store.(store.Meta)
	if !ok {
		return nil, fmt.Errorf("server: the store %T cannot keep server records (it does not implement store.Meta)", c.Store)
	}
	if c.Addr == "" {
		c.Addr = AddrDefault
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = SweepIntervalDefault
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = ShutdownTimeoutDefault
	}
	if c.BootstrapProject == "" {
		c.BootstrapProject = BootstrapProjectDefault
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	var errs []error
	if err := api.CheckProjectID(c.BootstrapProject); err != nil {
		errs = append(errs, fmt.Errorf("server: bootstrap project: %w", err))
	}
	if c.BootstrapToken != "" && (len(c.BootstrapToken) < api.MinTokenLen || strings.HasPrefix(c.BootstrapToken, api.SessionKeyPrefix) || strings.ContainsAny(c.BootstrapToken, " \t\r\n")) {
		errs = append(errs, fmt.Errorf("server: the bootstrap token must be at least %d characters without white space", api.MinTokenLen))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("server: TLS needs both a certificate file and a key file (--tls-cert and --tls-key), or neither"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var certs *certReloader
	if c.TLSCertFile != "" {
		var err error
		if certs, err = newCertReloader(c.TLSCertFile, c.TLSKeyFile, c.Logger); err != nil {
			return nil, err
		}
	}
	var met *metrics.Set
	var metricsHTTP http.Handler
	var feed store.Feed
	if !c.DisableMetrics {
		var err error
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if met, err = metrics.New(reg); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
		// Every caller of the store (the API, the IronWorker API, the
		// scheduler, the code runner, the sweeper) goes through the
		// counting wrapper: remote workers report through it.
		feed, _ = c.Store.(store.Feed) // the wrapper hides it: the API takes it apart
		c.Store = met.Store(c.Store)
		meta = c.Store.(store.Meta) // the wrapper keeps the interfaces of the store
		metricsHTTP = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(c.Logger.Handler(), slog.LevelWarn)})
	}
	sched, err := schedule.New(c.Store, &schedule.Config{Clock: c.Clock, Limits: c.Limits, Logger: c.Logger, IndexNamespace: api.SystemNamespace, TracerProvider: c.TracerProvider})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	a, err := api.New(api.Config{
		Store: c.Store, Meta: meta, Clock: c.Clock, Limits: c.Limits, Logger: c.Logger, Schedules: sched,
		EventFunc: eventFunc(c.EventFunc), MaxBodyBytes: c.MaxBodyBytes, HandshakeTimeout: c.HandshakeTimeout,
		SessionTTL: c.SessionTTL, HeartbeatInterval: c.HeartbeatInterval, EventBuffer: c.EventBuffer,
		MaxStreams: c.MaxStreams, MaxProjectStreams: c.MaxProjectStreams, StreamWriteTimeout: c.StreamWriteTimeout,
		HandshakeRate: c.HandshakeRate, HandshakeBurst: c.HandshakeBurst,
		ProjectHandshakeRate: c.ProjectHandshakeRate, ProjectHandshakeBurst: c.ProjectHandshakeBurst,
		MaxOpenHandshakes: c.MaxOpenHandshakes, Metrics: metricsHTTP, Feed: feed, TracerProvider: c.TracerProvider,
		TaskDefaults: hosted.NewRegistry(meta, c.Clock).TaskDefaults,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: c, api: a, log: c.Logger, stop: make(chan struct{}), certs: certs, metrics: met, metricsHTTP: metricsHTTP}
	if met != nil {
		met.AddDepth(s.queueDepth)
	}
	if c.TracerProvider != nil {
		s.tracer = c.TracerProvider.Tracer("github.com/kilnhq/kiln/server")
	}
	if c.Runner != nil {
		if s.hosted, err = newHosted(&c, a.Publish); err != nil {
			return nil, err
		}
	}
	ironCfg := ironapi.Config{Store: c.Store, Authorize: a.AuthorizeToken, Clock: c.Clock, Limits: c.Limits, Logger: c.Logger, MaxCodeBytes: c.MaxCodeBytes, Schedules: sched, EventFunc: a.Publish, TracerProvider: c.TracerProvider}
	if s.hosted != nil {
		ironCfg.OnUpload = s.hosted.Kick
	}
	if s.iron, err = ironapi.New(ironCfg); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	apis := http.NewServeMux()
	apis.Handle("/2/", s.iron)
	apis.Handle("/", a)
	var root http.Handler = apis
	if !c.DisableDashboard {
		// The sessions are records of the store: every server sharing it
		// knows them.
		dash, err := dashboard.New(dashboard.Config{
			Backend: apis, Identify: a.Identify, Secure: certs != nil, Logger: c.Logger,
			Meta: meta, MetaNamespace: api.SystemNamespace,
		})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		// The dashboard's paths go to it, every other to the APIs: a
		// prefix test, so that an API request pays nothing for it.
		root = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if dashboard.Owns(r) {
				dash.ServeHTTP(w, r)
				return
			}
			apis.ServeHTTP(w, r)
		})
	}
	s.handler = s.logRequests(root)
	if !c.DisableBootstrap {
		if err := s.bootstrap(context.Background()); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// newHosted starts the code runner of c.Runner on the server's store, with
// its logger and clock; CLIFile is hidden from every task, and the runner's
// task events are published as the API's.
func newHosted(c *Config, publish func(wire.Event)) (*hosted.Hosted, error) {
	rc := *c.Runner
	rc.Store, rc.Logger = c.Store, c.Logger
	if rc.TracerProvider == nil {
		rc.TracerProvider = c.TracerProvider
	}
	if c.CLIFile != "" {
		// The admin token's file: never visible to a task.
		var run runner.Config
		if rc.Runner != nil {
			run = *rc.Runner
		}
		abs, err := filepath.Abs(c.CLIFile)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		run.Hide = append(slices.Clone(run.Hide), abs)
		rc.Runner = &run
	}
	if rc.Clock == nil {
		rc.Clock = c.Clock
	}
	rc.EventFunc = func(project string, e kiln.Event) {
		ev := wire.Event{Kind: taskEventKinds[e.Kind], Project: project, TaskID: e.TaskID, Type: e.Type, Queue: e.Queue, Attempt: e.Attempt}
		if e.Err != nil {
			ev.Error = e.Err.Error()
		}
		publish(ev)
	}
	h, err := hosted.New(&rc)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return h, nil
}

// API returns the server's API (route list, project and token helpers).
func (s *Server) API() *api.API { return s.api }

// IronAPI returns the server's IronWorker API (mounted under /2/).
func (s *Server) IronAPI() *ironapi.API { return s.iron }

// Handler returns the server's HTTP handler: every route of the API, with
// request logging. It does not refuse the worker routes on plain HTTP:
// Serve and Run decide that from their listener (Config.AllowInsecureWorkers).
func (s *Server) Handler() http.Handler { return s.handler }

// URL returns the URL that clients on this machine reach the server at, as
// written to Config.CLIFile: https:// with TLS, else http://, and the host
// of Config.Addr; for an empty or unspecified host (":7878", "0.0.0.0"),
// with TLS the first DNS name of the certificate (else its first IP
// address), without TLS 127.0.0.1.
func (s *Server) URL() string {
	scheme := "http://"
	if s.certs != nil {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return scheme + s.cfg.Addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if s.certs != nil {
			host = certHost(s.certs.leaf(), host)
		}
	}
	return scheme + net.JoinHostPort(host, port)
}

// certHost returns the first DNS name of a certificate that is not a
// wildcard, else its first IP address, else def.
func certHost(leaf *x509.Certificate, def string) string {
	for _, n := range leaf.DNSNames {
		if !strings.HasPrefix(n, "*") {
			return n
		}
	}
	if len(leaf.IPAddresses) > 0 {
		return leaf.IPAddresses[0].String()
	}
	return def
}

// Bootstrap is what a server's first start made: the first project and an
// admin token, with the URL to reach the server by. It is plain data.
type Bootstrap struct {
	// URL is the server's URL as the command line reaches it.
	URL string
	// Project is the first project (Config.BootstrapProject).
	Project string
	// Token is the new admin token, shown only this once.
	Token string
}

// Bootstrapped returns what the first start made (URL, project, admin
// token), or nil when this New did not bootstrap or the token was given.
func (s *Server) Bootstrapped() *Bootstrap {
	if s.boot == nil {
		return nil
	}
	return &Bootstrap{URL: s.boot.URL, Project: s.boot.Project, Token: s.boot.Token}
}

// bootstrap makes the first project and admin token.
func (s *Server) bootstrap(ctx context.Context) error {
	c := s.cfg
	if err := s.api.EnsureProject(ctx, c.BootstrapProject); err != nil {
		return fmt.Errorf("server: bootstrap project: %w", err)
	}
	url := s.URL()
	if c.BootstrapToken != "" {
		if _, err := s.api.AddToken(ctx, "", "bootstrap", c.BootstrapToken); err != nil {
			return fmt.Errorf("server: bootstrap token: %w", err)
		}
		if _, err := s.api.MarkBootstrapped(ctx); err != nil {
			return err
		}
		return s.writeCLIFile(&wire.CLIConfig{URL: url, Project: c.BootstrapProject, Token: c.BootstrapToken})
	}
	first, err := s.api.MarkBootstrapped(ctx)
	if err != nil || !first {
		return err
	}
	tok, err := s.api.CreateToken(ctx, "", "bootstrap")
	if err != nil {
		return fmt.Errorf("server: bootstrap token: %w", err)
	}
	s.boot = &wire.CLIConfig{URL: url, Project: c.BootstrapProject, Token: tok.Token}
	where := ""
	if c.CLIFile != "" {
		where = fmt.Sprintf("\nIt is saved in %s (mode 0600), where the kiln CLI finds it.", c.CLIFile)
	}
	_, _ = fmt.Fprintf(c.Stdout, "kiln: first start: created project %q and an admin token; it is shown only this once:\n\n    %s\n%s\n\n",
		c.BootstrapProject, tok.Token, where) // the token is in the CLI file too; a failed print loses nothing
	s.log.Info("bootstrap: created the first project and an admin token", "project", c.BootstrapProject, "token_id", tok.ID)
	return s.writeCLIFile(s.boot)
}

// writeCLIFile writes cfg to Config.CLIFile unless it exists.
func (s *Server) writeCLIFile(cfg *wire.CLIConfig) error {
	path := s.cfg.CLIFile
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: the CLI file's path is the operator's choice by design
	if errors.Is(err, os.ErrExist) {
		s.checkCLIFile(path, cfg.URL)
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("server: writing %s: %w", path, err)
	}
	return nil
}

// checkCLIFile warns when an existing CLI file names the server with the
// other scheme (TLS was turned on or off since it was written): the CLI
// would fail to talk to the server with it.
func (s *Server) checkCLIFile(path, url string) {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the CLI file's path is the operator's choice by design
	if err != nil {
		return
	}
	var old wire.CLIConfig
	if json.Unmarshal(b, &old) != nil {
		return
	}
	if strings.HasPrefix(old.URL, "https://") != strings.HasPrefix(url, "https://") {
		s.log.Warn("the CLI file names the server with another scheme; edit its url or pass --url to the CLI", "file", path, "url", old.URL, "want", url)
	}
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs each request: method, path (never the query string,
// never a header), status and duration; counts it (metrics) and records
// its server span (tracing).
func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		var span trace.Span
		if s.tracer != nil {
			r, span = tracing.StartServer(s.tracer, r)
		}
		h.ServeHTTP(sw, r)
		if span != nil {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			tracing.EndServer(span, r, status)
		}
		if s.metrics != nil {
			// r.Pattern is the route the API's mux matched (it sets it on
			// this request): a bounded set, never a raw path.
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			s.metrics.HTTPRequest(route, status)
		}
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelWarn
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

// maxDepthProjects bounds the projects whose queues the queue depth gauge
// counts.
const maxDepthProjects = 100

// queueDepth counts the queues of the server's projects (at most
// maxDepthProjects) from the store's counts, for the queue depth gauge.
func (s *Server) queueDepth(ctx context.Context) ([]metrics.Depth, error) {
	projects, err := s.api.ProjectIDs(ctx, maxDepthProjects)
	if err != nil {
		return nil, err
	}
	var out []metrics.Depth
	for _, p := range projects {
		ds, err := metrics.StoreDepth(s.cfg.Store, p, nil)(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

// MetricsHandler returns the handler of the Prometheus metrics (GET
// /metrics, without authentication), or nil when Config.DisableMetrics is
// set. The API serves it to admin tokens, and Config.MetricsAddr to all.
func (s *Server) MetricsHandler() http.Handler { return s.metricsHTTP }

// MetricsAddr returns the address Config.MetricsAddr is served on, once
// Serve or Run listens there; nil before, or without MetricsAddr.
func (s *Server) MetricsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metricsAddr
}

// serveMetrics listens on Config.MetricsAddr, when set, and serves GET
// /metrics there without a token until the returned function is called.
func (s *Server) serveMetrics(ctx context.Context) (stop func(), err error) {
	if s.cfg.MetricsAddr == "" || s.metricsHTTP == nil {
		return func() {}, nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("server: metrics address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHTTP)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	s.metricsAddr = ln.Addr()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { // ends when hs is closed by stop
		defer close(done)
		_ = hs.Serve(ln) // returns ErrServerClosed once stopped
	}()
	s.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		_ = hs.Close() // a scrape in flight is cut: it is retried at the next interval
		<-done
	}, nil
}

// Run listens on Config.Addr and serves until ctx is done, then shuts
// down gracefully within Config.ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then shuts down gracefully within
// Config.ShutdownTimeout. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.mu.Lock()
	if s.http != nil {
		s.mu.Unlock()
		_ = ln.Close() // not served; the error is the one that matters
		return errors.New("server: already serving")
	}
	s.http = hs
	s.mu.Unlock()
	addr := ln.Addr().String()
	switch {
	case s.certs != nil:
		hs.TLSConfig = s.certs.tlsConfig()
	case isLoopback(ln.Addr()):
	case s.cfg.AllowInsecureWorkers:
		s.log.Warn("serving plain HTTP on a non-loopback address, and worker routes are allowed (--allow-insecure-workers): session keys and tasks cross the network unencrypted unless a proxy adds TLS", "addr", addr)
	default:
		s.api.RefuseWorkerRoutes("the server listens on " + addr + " without TLS: remote workers must not send session keys and tasks in the clear; serve TLS (--tls-cert and --tls-key), listen on loopback, or allow it with --allow-insecure-workers")
		s.log.Warn("serving plain HTTP on a non-loopback address: the worker routes are refused (tls_required); serve TLS with --tls-cert and --tls-key, or allow them with --allow-insecure-workers", "addr", addr)
	}
	stopMetrics, err := s.serveMetrics(ctx)
	if err != nil {
		s.mu.Lock()
		s.http = nil
		s.mu.Unlock()
		_ = ln.Close() // not served; the error is the one that matters
		return err
	}
	defer stopMetrics()
	s.startSweeper()
	s.startScheduler()
	s.startRunner()
	s.log.Info("serving", "addr", addr, "tls", s.certs != nil)
	errc := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			errc <- hs.ServeTLS(ln, "", "") // the certificate comes from TLSConfig.GetCertificate
			return
		}
		errc <- hs.Serve(ln)
	}()
	select {
	case err := <-errc:
		s.stopSweeper()
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err = s.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Shutdown stops the server gracefully: no new connections, long polls
// and event streams end at once, other requests finish until ctx is done,
// the code runner's running tasks finish until ctx is done (then they are
// cancelled and handed back), then the sweeper and the scheduler stop.
// Shutdown returns by ctx's deadline whatever is still running; tasks it
// could not hand back run again when their leases expire (the log says
// so). The store stays open.
func (s *Server) Shutdown(ctx context.Context) error {
	s.log.Info("shutting down")
	s.api.Stop()
	s.mu.Lock()
	hs := s.http
	s.mu.Unlock()
	// The code runner's tasks stop while the requests finish, both within
	// ctx.
	hostedErr := make(chan error, 1)
	if s.hosted != nil {
		go func() { hostedErr <- s.hosted.Shutdown(ctx) }() // bounded by ctx, waited for below
	} else {
		hostedErr <- nil
	}
	var err error
	if hs != nil {
		err = hs.Shutdown(ctx)
	}
	if herr := <-hostedErr; herr != nil {
		s.log.Error("shutdown: the code runner's tasks did not all finish in time; those not handed back run again when their leases expire", "err", herr)
		err = errors.Join(err, herr)
	}
	stopped := make(chan struct{})
	go func() { // ends when the sweeper, scheduler and runner loops have returned
		s.stopSweeper()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		s.log.Error("shutdown: background loops did not stop in time", "err", ctx.Err())
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("server: shutdown: %w", err)
	}
	return nil
}

// startRunner runs the code package runner, when configured, until stop.
func (s *Server) startRunner() {
	if s.hosted == nil {
		return
	}
	s.sweepers.Add(1)
	go func() {
		defer s.sweepers.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-s.stop
			cancel()
		}()
		_ = s.hosted.Run(ctx) // returns nil once stopped
	}()
}

// startScheduler fires the schedules of every project until stop; any
// number of servers may share the store (each run is claimed once).
func (s *Server) startScheduler() {
	s.sweepers.Add(1)
	go func() {
		defer s.sweepers.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-s.stop
			cancel()
		}()
		if err := s.api.Schedules().Run(ctx); err != nil {
			s.log.Warn("scheduler not started", "err", err)
		}
	}()
}

func (s *Server) startSweeper() {
	if s.cfg.SweepInterval < 0 {
		return
	}
	s.sweepers.Add(1)
	go func() {
		defer s.sweepers.Done()
		s.sweepLoop()
	}()
}

func (s *Server) stopSweeper() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.sweepers.Wait()
}

// sweepLoop sweeps the store every SweepInterval and collects expired
// handshakes every handshakeGCEvery sweeps, until stop.
func (s *Server) sweepLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	full := false // the store's disk is full: said once, not every sweep
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.cfg.Store.Sweep(ctx, store.SweepParams{})
		if errors.Is(err, store.ErrStorageFull) {
			if !full {
				full = true
				s.log.Warn("sweeps wait until the store's disk has space again", "err", err)
			}
			continue
		}
		full = false
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("sweep failed", "err", err)
		case err == nil && res.Recovered+res.Dead+res.Cancelled > 0:
			// Sweeps span every project; hooks see the count, the
			// per-project streams see lease losses when workers report.
			s.api.Publish(wire.Event{Kind: wire.EventWorkerWorkTimedOut, Count: res.Recovered + res.Dead + res.Cancelled})
		}
		if n%handshakeGCEvery == 0 {
			if _, err := s.api.CollectHandshakes(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("collecting expired handshakes failed", "err", err)
			}
		}
	}
}
