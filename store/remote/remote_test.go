package remote_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/server/api" //nolint:depguard // the tests serve the API in-process to test the client against it; the package itself talks HTTP only
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/remote"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) {
	if runRole() { // a child process of TestMultiProcess
		return
	}
	goleak.VerifyTestMain(testenv.BenchMain(m))
}

// adminToken is the admin token of every test server.
const adminToken = "kiln_test-admin-token-0123456789abcdefghijklmnop"

// testServer is a kiln API on an embedded store, served on loopback.
type testServer struct {
	dir   string
	clock store.Clock
	cfg   func(*api.Config)

	mu  sync.Mutex
	emb *embedded.Store
	api *api.API
	srv *httptest.Server
}

// startServer opens an embedded store in a fresh folder and serves the API
// on it with an admin token; cfg, when not nil, adjusts the API's config.
func startServer(t testing.TB, clock store.Clock, cfg func(*api.Config)) *testServer {
	t.Helper()
	ts := &testServer{dir: t.TempDir(), clock: clock, cfg: cfg}
	ts.start(t)
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) start(t testing.TB) {
	t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	emb, err := embedded.Open(ts.dir, &embedded.Config{Clock: ts.clock})
	if err != nil {
		t.Fatalf("embedded.Open: %v", err)
	}
	c := api.Config{Store: emb, Meta: emb, Clock: ts.clock}
	if ts.cfg != nil {
		ts.cfg(&c)
	}
	a, err := api.New(c)
	if err != nil {
		_ = emb.Close()
		t.Fatalf("api.New: %v", err)
	}
	hook.AutoCreateProjects(a)
	if _, err := a.AddToken(context.Background(), "", "test", adminToken); err != nil {
		_ = emb.Close()
		t.Fatalf("AddToken: %v", err)
	}
	ts.emb, ts.api, ts.srv = emb, a, httptest.NewServer(a)
}

// stop ends the long polls, closes the listener (waiting for requests in
// flight) and closes the store. It may be called more than once.
func (ts *testServer) stop() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.srv == nil {
		return
	}
	ts.api.Stop()
	ts.srv.Close()
	_ = ts.emb.Close() // the test is over or reopens; nothing to report
	ts.srv, ts.api, ts.emb = nil, nil, nil
}

func (ts *testServer) url() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.srv.URL
}

// open returns a remote store with the admin token, closed at cleanup.
func (ts *testServer) open(t testing.TB, cfg *remote.Config) *remote.Store {
	t.Helper()
	if cfg == nil {
		cfg = &remote.Config{Token: adminToken}
	}
	s, err := remote.Open(t.Context(), ts.url(), cfg)
	if err != nil {
		t.Fatalf("remote.Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() }) // the suite may have closed it
	return s
}

// TestConformance runs the store suite through the API twice: with the
// binary encoding of the worker routes (the default) and in JSON only.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, jsonOnly := range []bool{false, true} {
		name := "binary"
		if jsonOnly {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := &remote.Config{Token: adminToken, JSONOnly: jsonOnly}
			storetest.Run(t, storetest.Harness{
				New: func(t testing.TB, clock store.Clock) (store.Store, func() store.Store) {
					t.Helper()
					ts := startServer(t, clock, nil)
					s := ts.open(t, cfg)
					var cur store.Store = s
					reopen := func() store.Store {
						_ = cur.Close() // reopen replaces it
						ts.stop()
						ts.start(t)
						cur = ts.open(t, cfg)
						return cur
					}
					return s, reopen
				},
			})
		})
	}
}

// TestServerDownIsUnavailable: a call to a server that is gone (the
// connection is refused) fails with store.ErrUnavailable, so that callers
// can tell an outage from a wrong call; a closed store still says
// ErrClosed.
func TestServerDownIsUnavailable(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, nil)
	s := ts.open(t, nil)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ts.stop()
	_, err := s.Get(t.Context(), store.GetParams{Namespace: "p", IDs: []string{"x"}})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed) {
		t.Errorf("Get with the server gone: %v; want store.ErrUnavailable", err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping with the server gone: %v; want store.ErrUnavailable", err)
	}
	_ = s.Close()
	if _, err := s.Get(t.Context(), store.GetParams{Namespace: "p", IDs: []string{"x"}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v; want store.ErrClosed", err)
	}
}
