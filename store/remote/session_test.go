package remote_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln" //nolint:depguard // the test runs kiln.Client and kiln.Worker on the remote store, as users do; the package itself does not import kiln
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server/api" //nolint:depguard // the tests serve the API in-process to test the client against it; the package itself talks HTTP only
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
	"github.com/kilnhq/kiln/store/storetest"
)

// newProject creates a project on ts and returns its worker secret.
func newProject(t *testing.T, ts *testServer, id string) string {
	t.Helper()
	ts.mu.Lock()
	a := ts.api
	ts.mu.Unlock()
	_, secret, err := a.CreateProject(t.Context(), id, id)
	if err != nil {
		t.Fatalf("CreateProject: %v", err)
	}
	return secret
}

// TestWorkerEndToEnd runs a kiln.Client with a token and a kiln.Worker with
// the worker handshake, both over HTTP, on one project.
func TestWorkerEndToEnd(t *testing.T) {
	t.Parallel()
	ts := startServer(t, store.SystemClock{}, nil)
	secret := newProject(t, ts, "acme")
	cs := ts.open(t, nil)
	ws := ts.open(t, &remote.Config{Project: "acme", WorkerSecret: secret, WorkerName: "test-worker"})
	if ws.WorkerID() == "" {
		t.Fatal("WorkerID after the handshake is empty")
	}
	client, err := kiln.NewClient(cs, &kiln.ClientConfig{Namespace: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kiln.NewWorker(ws, &kiln.WorkerConfig{Namespace: "acme", Concurrency: 8, LeaseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("double", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
		if string(tk.Payload) == "fail" {
			return fmt.Errorf("told to fail: %w", kiln.SkipRetry)
		}
		tk.SetResult(append(append([]byte(nil), tk.Payload...), tk.Payload...))
		return nil
	}))
	testenv.RunBackground(t, w)

	var results []*kiln.Result
	for i := range 40 {
		r, err := client.Enqueue(t.Context(), "double", fmt.Appendf(nil, "%d", i), nil)
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		results = append(results, r)
	}
	failing, err := client.Enqueue(t.Context(), "double", []byte("fail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer wcancel()
	for i, r := range results {
		info, err := r.Wait(wctx)
		if err != nil {
			t.Fatalf("Wait(task %d): %v", i, err)
		}
		if want := fmt.Sprintf("%d%d", i, i); string(info.Result) != want {
			t.Errorf("task %d: result %q, want %q", i, info.Result, want)
		}
	}
	if _, err := failing.Wait(wctx); !errors.Is(err, kiln.ErrTaskDead) {
		t.Errorf("Wait(failing task): got %v, want %v", err, kiln.ErrTaskDead)
	}
	// The same sentinels remotely as locally.
	if _, err := client.Info(t.Context(), "no-such-task"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Info(missing): got %v, want %v", err, store.ErrNotFound)
	}
	if err := failing.Cancel(t.Context()); !errors.Is(err, store.ErrInvalidState) {
		t.Errorf("Cancel(dead task): got %v, want %v", err, store.ErrInvalidState)
	}
	_, err = client.Enqueue(t.Context(), "double", nil, &kiln.TaskOptions{ID: results[0].ID()})
	if !errors.Is(err, store.ErrTaskExists) {
		t.Errorf("Enqueue(existing id): got %v, want %v", err, store.ErrTaskExists)
	}
	// A worker session may not reach another project, nor read tasks.
	if _, err := ws.Get(t.Context(), store.GetParams{Namespace: "other", IDs: []string{"x"}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get in another project with a session key: got %v, want %v", err, store.ErrNotFound)
	}
}

func TestOpenWrongSecret(t *testing.T) {
	t.Parallel()
	ts := startServer(t, store.SystemClock{}, nil)
	newProject(t, ts, "acme")
	s, err := remote.Open(t.Context(), ts.url(), &remote.Config{Project: "acme", WorkerSecret: "not-the-secret"})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with a wrong worker secret succeeded")
	}
	if code := apiclient.CodeOf(err); code != wire.CodeVerifyFailed {
		t.Errorf("Open with a wrong secret: got %v (code %q), want code %q", err, code, wire.CodeVerifyFailed)
	}
	if _, err := remote.Open(t.Context(), ts.url(), &remote.Config{Project: "nope", WorkerSecret: "x"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Open for an unknown project: got %v, want %v", err, store.ErrNotFound)
	}
}

func TestOpenBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []*remote.Config{
		nil,
		{Token: "t", Project: "p", WorkerSecret: "s"},
		{Project: "p"},
		{WorkerSecret: "s"},
		{Project: "bad project", WorkerSecret: "s"},
		{Token: "t", RequestTimeout: -1},
		{Token: "t", CAFile: "ca.pem", HTTPClient: &http.Client{}},
	} {
		if s, err := remote.Open(t.Context(), "http://127.0.0.1:1", cfg); !errors.Is(err, store.ErrInvalidOption) && !errors.Is(err, store.ErrInvalidName) {
			if s != nil {
				_ = s.Close()
			}
			t.Errorf("Open(%+v): got %v, want an invalid option or name", cfg, err)
		}
	}
	if _, err := remote.Open(t.Context(), "ftp://x", &remote.Config{Token: "t"}); err == nil {
		t.Error("Open(ftp://x) succeeded")
	}
	if _, err := remote.Open(t.Context(), "https://127.0.0.1:1", &remote.Config{Token: "t", CAFile: filepath.Join(t.TempDir(), "none.pem")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open with a missing CAFile: got %v, want %v", err, os.ErrNotExist)
	}
}

// TestSessionExpired: when the server's clock passes the session's expiry
// the store redoes the handshake and the call succeeds.
func TestSessionExpired(t *testing.T) {
	t.Parallel()
	clock := storetest.NewFakeClock(storetest.Epoch)
	ts := startServer(t, clock, func(c *api.Config) { c.SessionTTL = time.Hour })
	secret := newProject(t, ts, "acme")
	ws := ts.open(t, &remote.Config{Project: "acme", WorkerSecret: secret})
	lease := func() error {
		_, err := ws.Lease(t.Context(), store.LeaseParams{Namespace: "acme", Queues: []string{"q"}, Max: 1, Duration: time.Minute})
		return err
	}
	if err := lease(); err != nil {
		t.Fatalf("Lease: %v", err)
	}
	first := ws.WorkerID()
	clock.Advance(2 * time.Hour)
	if err := lease(); err != nil {
		t.Fatalf("Lease after the session expired: %v", err)
	}
	if second := ws.WorkerID(); second == first {
		t.Errorf("WorkerID after a new handshake = %q, the same as before", second)
	}
}

// TestSessionRefresh: a session past three quarters of its life is
// refreshed before it is used.
func TestSessionRefresh(t *testing.T) {
	t.Parallel()
	ts := startServer(t, store.SystemClock{}, func(c *api.Config) { c.SessionTTL = 2 * time.Second })
	secret := newProject(t, ts, "acme")
	var refreshed, registered atomic.Int64
	hc := &http.Client{Transport: countPaths{next: http.DefaultTransport, counts: map[string]*atomic.Int64{"/refresh": &refreshed, "/register": &registered}}}
	t.Cleanup(hc.CloseIdleConnections)
	ws := ts.open(t, &remote.Config{Project: "acme", WorkerSecret: secret, HTTPClient: hc})
	tick := time.NewTicker(20 * time.Millisecond) // a bounded poll: Ping until the store has refreshed
	defer tick.Stop()
	deadline := time.After(testenv.WaitLimit)
	for refreshed.Load() == 0 {
		if err := ws.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		select {
		case <-deadline:
			t.Fatalf("no refresh within %s", testenv.WaitLimit)
		case <-tick.C:
		}
	}
	if n := registered.Load(); n != 1 {
		t.Errorf("handshakes: got %d, want 1 (the refresh should have kept the session)", n)
	}
}

// countPaths counts the requests whose path ends in each key.
type countPaths struct {
	next   http.RoundTripper
	counts map[string]*atomic.Int64
}

func (c countPaths) RoundTrip(r *http.Request) (*http.Response, error) {
	for suffix, n := range c.counts {
		if strings.HasSuffix(r.URL.Path, suffix) {
			n.Add(1)
		}
	}
	return c.next.RoundTrip(r)
}

// TestRevoked: a revoked worker's calls fail with unauthorized.
func TestRevoked(t *testing.T) {
	t.Parallel()
	ts := startServer(t, store.SystemClock{}, nil)
	secret := newProject(t, ts, "acme")
	ws := ts.open(t, &remote.Config{Project: "acme", WorkerSecret: secret})
	admin, err := apiclient.New(ts.url(), &apiclient.Config{Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(t.Context(), apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", "acme", "workers", ws.WorkerID(), "revoke")}, nil); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err = ws.Lease(t.Context(), store.LeaseParams{Namespace: "acme", Queues: []string{"q"}, Max: 1, Duration: time.Minute})
	if code := apiclient.CodeOf(err); code != wire.CodeUnauthorized {
		t.Errorf("Lease after revoke: got %v (code %q), want code %q", err, code, wire.CodeUnauthorized)
	}
}

// TestWorkerTakesItsProject: a kiln.Worker and a kiln.Client on a remote
// store with a worker secret and no Namespace use the store's project (they
// used the namespace "default", where the session may do nothing, so the
// worker ran without error while the project's tasks stayed pending); one
// with another Namespace is refused at once with an error that says why.
func TestWorkerTakesItsProject(t *testing.T) {
	t.Parallel()
	ts := startServer(t, store.SystemClock{}, nil)
	secret := newProject(t, ts, "acme")
	cs := ts.open(t, nil)
	ws := ts.open(t, &remote.Config{Project: "acme", WorkerSecret: secret, WorkerName: "test-worker"})

	client, err := kiln.NewClient(cs, &kiln.ClientConfig{Namespace: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kiln.NewWorker(ws, &kiln.WorkerConfig{LeaseWait: time.Second})
	if err != nil {
		t.Fatalf("NewWorker without a Namespace: %v", err)
	}
	w.Handle("echo", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
		tk.SetResult(tk.Payload)
		return nil
	}))
	testenv.RunBackground(t, w)
	r, err := client.Enqueue(t.Context(), "echo", []byte("hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer cancel()
	info, err := r.Wait(wctx)
	if err != nil {
		t.Fatalf("the task of acme: %v (the worker did not serve its project)", err)
	}
	if string(info.Result) != "hi" {
		t.Fatalf("the task of acme: result %q, want \"hi\"", info.Result)
	}
	if _, err := kiln.NewClient(ws, nil); err != nil {
		t.Fatalf("NewClient without a Namespace on the worker's store: %v", err)
	}

	for _, ns := range []string{"default", "other"} {
		_, err := kiln.NewWorker(ws, &kiln.WorkerConfig{Namespace: ns})
		if !errors.Is(err, kiln.ErrInvalidOption) || !strings.Contains(err.Error(), `"acme"`) || !strings.Contains(err.Error(), strconv.Quote(ns)) {
			t.Errorf("NewWorker with Namespace %q on acme's worker store: %v; want ErrInvalidOption naming both", ns, err)
		}
		if _, err := kiln.NewClient(ws, &kiln.ClientConfig{Namespace: ns}); !errors.Is(err, kiln.ErrInvalidOption) {
			t.Errorf("NewClient with Namespace %q on acme's worker store: %v; want ErrInvalidOption", ns, err)
		}
	}
	// A store with a token reaches any project: no namespace is imposed.
	if _, err := kiln.NewWorker(cs, &kiln.WorkerConfig{Namespace: "other"}); err != nil {
		t.Errorf("NewWorker on a token store: %v", err)
	}
}
