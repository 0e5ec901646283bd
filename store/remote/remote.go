package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	// RequestTimeoutDefault bounds every request but the long polls.
	RequestTimeoutDefault = apiclient.RequestTimeoutDefault
	// MaxWaitPerRequest is the longest wait one long-poll request asks the
	// server for (the API's cap); a Lease that waits longer asks again.
	MaxWaitPerRequest = 30 * time.Second
	// RefreshFractionDefault: a worker session is refreshed once this
	// fraction of its lifetime has passed.
	RefreshFractionDefault = 0.75
)

// Config configures a remote store. Exactly one way to authenticate must be
// set: Token, or Project with WorkerSecret.
type Config struct {
	// Token is an API token (an admin token, or a project token that can
	// reach its own project only), sent as a bearer token.
	Token string
	// Project and WorkerSecret make the store authenticate as a remote
	// worker of the project: it registers, answers the server's challenge
	// with HMAC-SHA256(WorkerSecret, challenge), and uses the session key
	// it gets back, refreshing it before it expires and redoing the
	// handshake when the server says the session expired. A worker session
	// may lease, extend and report (and read) in its own project only, so
	// the Namespace of every call must be Project.
	Project      string
	WorkerSecret string
	// WorkerName names the worker to operators (`kiln worker ls`); empty
	// means "hostname-pid".
	WorkerName string
	// HTTPClient sends the requests; nil means a pooled keep-alive client
	// of the store's own (closed by Close). Its Timeout, if any, must be
	// longer than MaxWaitPerRequest plus apiclient.LongPollSlack.
	HTTPClient *http.Client
	// CAFile, for an https:// URL, is a PEM file of the CA certificates
	// to trust for the server's certificate instead of the system's roots
	// (a server with a certificate of a private CA; docs/api.md,
	// "Transport security"). It is read once, by Open. It cannot be
	// combined with HTTPClient, whose transport has its own TLS settings.
	CAFile string
	// RequestTimeout bounds each request that is not a long poll; 0 means
	// RequestTimeoutDefault (30 s). Long polls get their wait plus 15 s.
	RequestTimeout time.Duration
	// JSONOnly makes the store speak JSON on every route. By default Lease
	// asks for the compact binary answer (application/x-kiln-tasks) and
	// Report sends its outcomes in binary (application/x-kiln-outcomes)
	// once the server answered a lease in binary, see "Binary encoding for
	// workers" in docs/api.md. A server that does not know the binary
	// encoding answers leases in JSON, which the store reads as well, and
	// then gets JSON reports. Enqueue likewise sends its batches in binary
	// (application/x-kiln-enqueue) once an enqueue answer said the server
	// takes them.
	JSONOnly bool
	// Logger receives the store's few log lines (handshakes, refreshes);
	// nil discards them.
	Logger *slog.Logger
	// TracerProvider, when set, makes every call to the server a client
	// span "kiln.remote <operation>" (child of the caller's span, if any)
	// and sends its trace context as the request's traceparent header, so
	// the server's spans of the request are its children. Nil traces
	// nothing and sends no traceparent.
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	if c.WorkerName == "" && c.WorkerSecret != "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		c.WorkerName = host + "-" + strconv.Itoa(os.Getpid())
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = RequestTimeoutDefault
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Config) validate() error {
	var errs []error
	opt := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", store.ErrInvalidOption, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Token != "" && (c.Project != "" || c.WorkerSecret != ""):
		opt("set either Token or Project and WorkerSecret, not both")
	case c.Token == "" && c.Project == "" && c.WorkerSecret == "":
		opt("no credentials: set Token, or Project and WorkerSecret")
	case c.Token == "" && (c.Project == "" || c.WorkerSecret == ""):
		opt("Project and WorkerSecret go together")
	}
	if c.Project != "" {
		if err := store.CheckNamespace(c.Project); err != nil {
			errs = append(errs, err)
		}
	}
	if c.RequestTimeout < 0 {
		opt("RequestTimeout %s is negative", c.RequestTimeout)
	}
	if c.CAFile != "" && c.HTTPClient != nil {
		opt("set either CAFile or HTTPClient (with the CA in its transport's TLS settings), not both")
	}
	return errors.Join(errs...)
}

// ScopedNamespace implements store.Scoped: the project of a worker
// session (Config.Project), the only namespace it can reach, or "" for a
// store with a token. kiln.NewWorker and kiln.NewClient use it as their
// namespace when their config names none.
func (s *Store) ScopedNamespace() string {
	if s.cfg.WorkerSecret != "" {
		return s.cfg.Project
	}
	return ""
}

// Store is a store.Store served by a kiln server over its native HTTP API.
// It is safe for concurrent use.
type Store struct {
	api     *apiclient.Client
	tracer  trace.Tracer // nil without Config.TracerProvider
	cfg     Config
	ownHTTP bool
	log     *slog.Logger
	// noSweep is set once the server refused a sweep to this token.
	noSweep atomic.Bool
	// binReport is set once the server answered a lease in binary: it
	// knows the binary encoding, so reports go in binary too.
	binReport atomic.Bool
	// binEnqueue is set once the server listed the binary enqueue body in
	// the Accept-Post header of an enqueue answer.
	binEnqueue atomic.Bool

	// mu guards closed and inflight: the cancel functions of the calls in
	// progress, which Close cancels.
	mu       sync.Mutex
	closed   bool
	nextCall uint64
	inflight map[uint64]context.CancelFunc

	// sessMu guards sess and serialises handshakes and refreshes. Lock
	// order: sessMu, then mu.
	sessMu sync.Mutex
	sess   *session
}

// session is a worker session key and its lifetime on the local clock.
type session struct {
	key       string
	workerID  string
	refreshAt time.Time
	expiresAt time.Time
}

// Open returns a store served by the kiln server at url ("http://host:7878",
// or "https://host:7878" for a server that serves TLS).
// With worker credentials it performs the handshake before returning, so a
// wrong secret fails here; with a token it checks nothing (see Ping).
func Open(ctx context.Context, url string, cfg *Config) (*Store, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("remote: config: %w", err)
	}
	s := &Store{cfg: c, log: c.Logger, inflight: map[uint64]context.CancelFunc{}}
	if c.TracerProvider != nil {
		s.tracer = c.TracerProvider.Tracer("github.com/kilnhq/kiln/store/remote")
	}
	hc := c.HTTPClient
	if hc == nil {
		var tc *tls.Config
		if c.CAFile != "" {
			var err error
			if tc, err = apiclient.LoadCAFile(c.CAFile); err != nil {
				return nil, fmt.Errorf("remote: config: %w", err)
			}
		}
		hc, s.ownHTTP = apiclient.NewHTTPClientTLS(tc), true
	}
	api, err := apiclient.New(url, &apiclient.Config{HTTPClient: hc, Token: c.Token, RequestTimeout: c.RequestTimeout, UserAgent: "kiln-remote"})
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	s.api = api
	if c.WorkerSecret != "" {
		if _, err := s.sessionKey(ctx); err != nil {
			_ = s.Close() // the handshake's error is the one to report
			return nil, err
		}
	}
	return s, nil
}

// WorkerID returns the server's id of this worker session ("" with a token).
func (s *Store) WorkerID() string {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess == nil {
		return ""
	}
	return s.sess.workerID
}

// Close cancels the calls in progress (they return store.ErrClosed) and
// closes idle connections. Calls after Close return store.ErrClosed. Close
// may be called more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, cancel := range s.inflight {
		cancel()
	}
	clear(s.inflight)
	s.mu.Unlock()
	if s.ownHTTP {
		s.api.HTTPClient().CloseIdleConnections()
	}
	return nil
}

var errClosed = fmt.Errorf("remote: %w", store.ErrClosed)

// begin registers a call: the returned context is cancelled by Close.
func (s *Store) begin(ctx context.Context) (context.Context, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	id := s.nextCall
	s.nextCall++
	s.inflight[id] = cancel
	return ctx, func() {
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		cancel()
	}, nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// call sends one request with the store's credentials, redoing the worker
// handshake once when the server says the session expired, and maps the
// failure to the store's errors.
func (s *Store) call(ctx context.Context, op string, r apiclient.Request, out any) (err error) {
	ctx, done, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer done()
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.tracer.Start(ctx, "kiln.remote "+op, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("kiln.remote.operation", op), attribute.String("http.request.method", r.Method)))
		r.TraceParent = tracing.TraceParent(ctx)
		defer func() { tracing.End(span, err) }()
	}
	for attempt := 0; ; attempt++ {
		if s.cfg.WorkerSecret != "" {
			key, err := s.sessionKey(ctx)
			if err != nil {
				return s.fail(ctx, op, err)
			}
			r.Token = key
		}
		err := s.api.Do(ctx, r, out)
		if err == nil {
			return nil
		}
		if attempt == 0 && s.cfg.WorkerSecret != "" && apiclient.CodeOf(err) == wire.CodeSessionExpired {
			s.log.Info("remote: session expired; redoing the handshake")
			s.dropSession(r.Token)
			continue
		}
		return s.fail(ctx, op, err)
	}
}

// fail wraps a call's error: a call cut short by Close is ErrClosed; a
// request that got no answer (refused, reset, timed out) while the caller
// still waited is store.ErrUnavailable.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if s.isClosed() && ctx.Err() != nil {
		return errClosed
	}
	var te *apiclient.TransportError
	var ne net.Error
	if ctx.Err() == nil && errors.As(err, &te) && (errors.As(te.Err, &ne) || errors.Is(te.Err, io.EOF) || errors.Is(te.Err, io.ErrUnexpectedEOF)) {
		return fmt.Errorf("remote: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("remote: %s: %w", op, err)
}

func projectPath(ns string, rest ...string) string {
	return apiclient.Path(append([]string{"v1", "projects", ns}, rest...)...)
}
