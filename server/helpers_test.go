package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

// TestMain: the test binary is also the trampoline of the code runner's
// task processes (TestShutdownKeepsDeadlineWithRunningCode).
func TestMain(m *testing.M) { kilntest.Main(m) }

// adminToken is the bootstrap admin token of every test server.
const adminToken = "kiln_test-admin-token-0123456789abcdef"

// bundle is one test's server.
type bundle struct {
	t      *testing.T
	st     *embedded.Store // nil on another store
	clock  *kilntest.FakeClock
	srv    *server.Server
	ts     *kilntest.Server
	events chan server.Event
}

// setup starts a server on a fresh embedded store with a fake clock, the
// admin token adminToken and project "default".
func setup(t *testing.T, mod ...func(*server.Config)) *bundle {
	t.Helper()
	clock := kilntest.NewFakeClock(time.Time{})
	st := kilntest.Embedded(t, &kilntest.StoreOptions{Clock: clock})
	b := serveOn(t, st, clock, mod...)
	b.st, b.clock = st, clock
	return b
}

// serveOn starts a server on st (nil clock: the wall clock) with the
// settings of every test of the package: the admin token adminToken, no
// sweeper, no project token or worker, events on b.events; mod has the
// last word.
func serveOn(t *testing.T, st kilntest.MetaStore, clock store.Clock, mod ...func(*server.Config)) *bundle {
	t.Helper()
	return serveWith(t, &kilntest.ServerOptions{Store: st, Clock: clock}, mod...)
}

// serveWith is serveOn with kilntest's options (Bare and Configure are
// set here).
func serveWith(t *testing.T, opts *kilntest.ServerOptions, mod ...func(*server.Config)) *bundle {
	t.Helper()
	b := &bundle{t: t, events: make(chan server.Event, 1024)}
	opts.Bare = true
	opts.Configure = func(cfg *server.Config) {
		cfg.BootstrapToken, cfg.SweepInterval = adminToken, -1
		cfg.EventFunc = func(ev server.Event) {
			select {
			case b.events <- ev:
			default:
			}
		}
		for _, f := range mod {
			f(cfg)
		}
	}
	b.ts = kilntest.StartServer(t, opts)
	b.srv = b.ts.Server
	return b
}

// do sends a request and returns the status and body.
func (b *bundle) do(method, path, token string, body any) (int, []byte) {
	b.t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	case []byte:
		r = bytes.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			b.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return b.ts.Do(b.t, method, path, h, r)
}

// ok sends a request that must answer want and decodes the answer into out.
func (b *bundle) ok(want int, method, path, token string, body, out any) {
	b.t.Helper()
	status, resp := b.do(method, path, token, body)
	if status != want {
		b.t.Fatalf("%s %s = %d %s, want %d", method, path, status, resp, want)
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			b.t.Fatalf("%s %s: decoding %s: %v", method, path, resp, err)
		}
	}
}

// fail sends a request that must fail with code (and its status), and
// returns the error's message.
func (b *bundle) fail(code, method, path, token string, body any) string {
	b.t.Helper()
	status, resp := b.do(method, path, token, body)
	var eb wire.ErrorBody
	if err := json.Unmarshal(resp, &eb); err != nil || eb.Error == nil {
		b.t.Fatalf("%s %s = %d %s: not an error object", method, path, status, resp)
	}
	if eb.Error.Code != code || status != wire.Status(code) {
		b.t.Fatalf("%s %s = %d %s, want %d %s", method, path, status, resp, wire.Status(code), code)
	}
	return eb.Error.Message
}

// project creates a project and a project token for it.
func (b *bundle) project(id string) (token, secret string) {
	b.t.Helper()
	var p wire.CreateProjectResponse
	b.ok(http.StatusCreated, "POST", "/v1/projects", adminToken, wire.CreateProjectRequest{ID: id}, &p)
	var tok wire.NewToken
	b.ok(http.StatusCreated, "POST", "/v1/projects/"+id+"/tokens", adminToken, wire.TokenRequest{Name: "t"}, &tok)
	return tok.Token, p.WorkerSecret
}

// enqueue adds one task to project p and returns its id.
func (b *bundle) enqueue(p, token string, req wire.TaskRequest) string {
	b.t.Helper()
	var res wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/"+p+"/tasks", token, wire.EnqueueRequest{Tasks: []wire.TaskRequest{req}}, &res)
	if len(res.Tasks) != 1 || res.Tasks[0].Error != nil {
		b.t.Fatalf("enqueue: %+v", res)
	}
	return res.Tasks[0].ID
}

// counts returns the total of tasks of project p, by the store.
func (b *bundle) counts(p string) int64 {
	b.t.Helper()
	res, err := b.st.Stats(context.Background(), store.StatsParams{Namespace: p})
	if err != nil {
		b.t.Fatal(err)
	}
	var n int64
	for _, q := range res.Queues {
		n += q.Total()
	}
	return n
}

// handshake registers a worker in project p and verifies it with secret.
func (b *bundle) handshake(p, secret string) (workerID, sessionKey string) {
	b.t.Helper()
	var reg wire.RegisterResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/"+p+"/workers/register", "", wire.RegisterRequest{Name: "host-1"}, &reg)
	proof, err := wire.Proof(secret, reg.Challenge)
	if err != nil {
		b.t.Fatal(err)
	}
	var sess wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/"+p+"/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof}, &sess)
	return reg.WorkerID, sess.SessionKey
}

// waitEvent waits for an event of kind from the hook.
func (b *bundle) waitEvent(kind string) server.Event {
	b.t.Helper()
	timeout := time.After(kilntest.WaitLimit)
	for {
		select {
		case ev := <-b.events:
			if ev.Kind == kind {
				return ev
			}
		case <-timeout:
			b.t.Fatalf("no %s event", kind)
		}
	}
}
