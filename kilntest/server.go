package kilntest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
)

// MetaStore is a store a server can run on: every kiln store (embedded,
// Redis) is one.
type MetaStore interface {
	store.Store
	store.Meta
}

// ServerOptions configures StartServer. The zero value (or nil) is a server
// on a fresh embedded store, without a code runner.
type ServerOptions struct {
	// Store is the server's store, which the caller closes; nil means a
	// fresh embedded store ([Embedded]) on Clock.
	Store MetaStore
	// Clock is the server's clock (and its store's, when StartServer opens
	// the store); nil means the wall clock.
	Clock store.Clock
	// Runner starts the server's code runner, tuned for tests: two task
	// processes, short polls and leases. The test binary must call
	// runner.Main() in TestMain (see the package documentation).
	Runner bool
	// Projects are more projects to create at the start, beside the
	// first one (Project): a server knows only the projects made on it,
	// and a store reaching it over HTTP can use no other namespace.
	Projects []string
	// Listen is the address to listen on; empty means "127.0.0.1:0", a
	// free loopback port.
	Listen string
	// Bare leaves the server as its first start made it: no project token
	// and no registered worker (Token, WorkerID and WorkerSecret stay
	// empty), for tests that count what the store holds.
	Bare bool
	// Configure, when set, has the last word on the server's configuration
	// (after the test defaults above are filled in): a test's own event
	// hook, limits, runner settings.
	Configure func(*server.Config)
}

// Server is a kiln server serving on a loopback port for one test, stopped
// when the test ends.
type Server struct {
	// URL is where the server listens: "http://127.0.0.1:port" (https://
	// when the configuration gives the server a certificate).
	URL string
	// Addr is the listener's host and port, "127.0.0.1:port" by default.
	Addr string
	// AdminToken is the server's admin token (bootstrap token).
	AdminToken string
	// Project is the server's first project ("default" unless configured).
	Project string
	// Token is a project token of Project (not an admin token).
	Token string
	// WorkerID and WorkerSecret are a remote worker registered in Project
	// (the handshake is done) and the project's worker secret, with which
	// more remote workers can join ([Server.WorkerStore]).
	WorkerID     string
	WorkerSecret string
	// Server is the server itself.
	Server *server.Server
	// Store is the server's store.
	Store MetaStore

	logs *testenv.Buffer
}

// StartServer starts a kiln server on a loopback port with opts (nil: the
// defaults), and stops it when the test ends (checking that it stopped
// cleanly). Its log, at debug level, is in [Server.Logs], and written to the
// test's log when the test failed.
func StartServer(tb testing.TB, opts *ServerOptions) *Server {
	tb.Helper()
	var o ServerOptions
	if opts != nil {
		o = *opts
	}
	st := o.Store
	if st == nil {
		st = Embedded(tb, &StoreOptions{Clock: o.Clock})
	}
	s := &Server{Store: st, logs: &testenv.Buffer{}}
	cfg := &server.Config{
		Store: st, Clock: o.Clock,
		BootstrapToken:  "kilntest-admin-" + rand.Text(),
		SweepInterval:   100 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
		Logger:          slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.Runner {
		cfg.Runner = &hosted.Config{
			WorkDir: tb.TempDir(), Concurrency: 2, PollInterval: 100 * time.Millisecond,
			LeaseDuration: 900 * time.Millisecond, LeaseWait: 200 * time.Millisecond,
			Runner: &runner.Config{KillGrace: 500 * time.Millisecond}, SlotPoll: 20 * time.Millisecond,
		}
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	s.AdminToken, s.Project = cfg.BootstrapToken, cfg.BootstrapProject
	if s.Project == "" {
		s.Project = server.BootstrapProjectDefault
	}
	srv, err := server.New(cfg)
	if err != nil {
		tb.Fatalf("kilntest: server.New: %v", err)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		tb.Fatalf("kilntest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(tb.Context()))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("kilntest: the server's Serve: %v", err)
		}
		if tb.Failed() {
			tb.Logf("kilntest: the server's log:\n%s", s.Logs())
		}
	})
	scheme := "http://"
	if cfg.TLSCertFile != "" {
		scheme = "https://"
	}
	s.Server, s.Addr, s.URL = srv, ln.Addr().String(), scheme+ln.Addr().String()
	for _, p := range o.Projects {
		if _, _, err := srv.API().CreateProject(ctx, p, p); err != nil {
			tb.Fatalf("kilntest: project %q: %v", p, err)
		}
	}
	if o.Bare || cfg.BootstrapToken == "" || cfg.DisableBootstrap {
		return s
	}
	tok, err := srv.API().CreateToken(ctx, s.Project, "kilntest")
	if err != nil {
		tb.Fatalf("kilntest: a project token: %v", err)
	}
	s.Token = tok.Token
	var ws wire.WorkerSecret
	s.call(tb, http.MethodPost, "/v1/projects/"+s.Project+"/worker-secret", nil, &ws)
	s.WorkerSecret = ws.WorkerSecret
	s.WorkerID = s.WorkerStore(tb).WorkerID()
	return s
}

// Client returns an HTTP client for requests to the server.
func (s *Server) Client() *http.Client { return http.DefaultClient }

// Logs returns what the server logged so far (JSON lines, debug level and
// up), for a failure message.
func (s *Server) Logs() string { return s.logs.String() }

// Remote opens a store that reaches the server over HTTP with the admin
// token: a client and a worker in one, in any project. It is closed when the
// test ends.
func (s *Server) Remote(tb testing.TB) *remote.Store {
	tb.Helper()
	return s.open(tb, &remote.Config{Token: s.AdminToken})
}

// WorkerStore opens a store that reaches the server over HTTP as a remote
// worker of Project: it has done the worker handshake with WorkerSecret,
// and may lease, extend, report and read in Project. It is closed when the
// test ends.
func (s *Server) WorkerStore(tb testing.TB) *remote.Store {
	tb.Helper()
	return s.open(tb, &remote.Config{Project: s.Project, WorkerSecret: s.WorkerSecret, WorkerName: "kilntest"})
}

func (s *Server) open(tb testing.TB, cfg *remote.Config) *remote.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	st, err := remote.Open(ctx, s.URL, cfg)
	if err != nil {
		tb.Fatalf("kilntest: remote.Open: %v\nserver log:\n%s", err, s.Logs())
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// Do sends a request to the server (path from its root, "/v1/stats") with
// header and body (nil: none), bounded by WaitLimit, and returns the status
// and the whole answer. It fails the test when the request cannot be sent
// or the answer read.
func (s *Server) Do(tb testing.TB, method, path string, header http.Header, body io.Reader) (int, []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		tb.Fatalf("kilntest: %s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("kilntest: %s %s: reading the answer: %v", method, path, err)
	}
	return resp.StatusCode, data
}

// call sends a JSON request with the admin token and decodes a 2xx answer
// into out.
func (s *Server) call(tb testing.TB, method, path string, body, out any) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	status, data := s.Do(tb, method, path, http.Header{"Authorization": {"Bearer " + s.AdminToken}, "Content-Type": {"application/json"}}, r)
	if status/100 != 2 {
		tb.Fatalf("kilntest: %s %s = %d %s", method, path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			tb.Fatalf("kilntest: %s %s: %v in %s", method, path, err, data)
		}
	}
}
