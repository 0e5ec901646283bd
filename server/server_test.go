package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

// routeURL fills a route's wildcards with valid names.
func routeURL(path string) string {
	return strings.NewReplacer("{p}", "default", "{id}", "x1", "{q}", "q1").Replace(path)
}

func TestEveryRouteRequiresAToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	routes := b.srv.API().Routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	bad := []string{"", "Basic " + adminToken, "Bearer", "Bearer ", "bearer x y", "Bearer kiln_unknown-token-0123456789abcdef", "Bearer kiln_ws_unknown"}
	for _, rt := range routes {
		if rt.Access == api.Public || rt.Access == api.Handshake {
			continue // TestHealthz and TestHandshake* test these
		}
		for _, h := range bad {
			if rt.Access == api.Probe && h == "" {
				continue // /readyz needs no token (TestReadyzWithoutToken); a bad one is refused
			}
			req, err := http.NewRequestWithContext(context.Background(), rt.Method, b.ts.URL+routeURL(rt.Path), strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			resp, err := b.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var eb wire.ErrorBody
			err = json.NewDecoder(resp.Body).Decode(&eb)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusUnauthorized || eb.Error == nil || eb.Error.Code != wire.CodeUnauthorized {
				t.Errorf("%s %s with Authorization %q = %d %+v, want 401 unauthorized", rt.Method, rt.Path, h, resp.StatusCode, eb.Error)
			}
		}
	}
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var h wire.Health
	b.ok(http.StatusOK, "GET", "/healthz", "", nil, &h)
	if h.Status != "ok" {
		t.Errorf("healthz = %+v", h)
	}
	b.ok(http.StatusOK, "GET", "/readyz", adminToken, nil, &h)
	b.fail(wire.CodeNotFound, "GET", "/nope", adminToken, nil)
	b.fail(wire.CodeMethodNotAllowed, "PUT", "/healthz", "", nil)
}

func TestCrossProjectIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tokA, _ := b.project("a")
	tokB, secretB := b.project("b")
	idB := b.enqueue("b", tokB, wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{Queue: "qb"}})
	_, sessB := b.handshake("b", secretB)

	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/projects/b/tasks/" + idB},
		{"GET", "/v1/projects/b/tasks"},
		{"POST", "/v1/projects/b/tasks/" + idB + "/cancel"},
		{"POST", "/v1/projects/b/tasks/" + idB + "/retry"},
		{"DELETE", "/v1/projects/b/tasks/" + idB},
		{"GET", "/v1/projects/b/tasks/" + idB + "/result"},
		{"GET", "/v1/projects/b/queues"},
		{"POST", "/v1/projects/b/queues/qb/pause"},
		{"GET", "/v1/projects/b/events"},
		{"GET", "/v1/projects/b/workers"},
		{"GET", "/v1/projects/b/tokens"},
		{"POST", "/v1/projects/b/worker-secret"},
		{"GET", "/v1/projects/a/tasks/" + idB}, // B's id in A's project
		{"GET", "/v1/projects/nope/tasks"},     // a project that does not exist
	} {
		b.fail(wire.CodeNotFound, tc.method, tc.path, tokA, nil)
	}
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/b/tasks:batchGet", tokA, wire.IDsRequest{IDs: []string{idB}})
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/b/tasks", tokA, wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t"}}})
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/b/lease", tokA, wire.LeaseRequest{Queues: []string{"qb"}, Max: 1, DurationMS: 1000})
	// B's worker session in A's project.
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/a/lease", sessB, wire.LeaseRequest{Queues: []string{"qb"}, Max: 1, DurationMS: 1000})
	// An unknown project for an admin, too.
	b.fail(wire.CodeNotFound, "GET", "/v1/projects/nope/queues", adminToken, nil)
	// A project token is no admin.
	b.fail(wire.CodeForbidden, "POST", "/v1/projects", tokA, wire.CreateProjectRequest{ID: "c"})
	b.fail(wire.CodeForbidden, "POST", "/v1/admin/sweep", tokA, nil)

	var ps wire.ProjectList
	b.ok(http.StatusOK, "GET", "/v1/projects", tokA, nil, &ps)
	if len(ps.Projects) != 1 || ps.Projects[0].ID != "a" {
		t.Errorf("projects seen by a = %+v, want only a", ps.Projects)
	}
	var st wire.ServerStats
	b.ok(http.StatusOK, "GET", "/v1/stats", tokA, nil, &st)
	if len(st.Projects) != 1 || st.Projects[0].Project != "a" {
		t.Errorf("stats seen by a = %+v, want only a", st.Projects)
	}
	// B's task is untouched.
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/b/tasks/"+idB, tokB, nil, &task)
	if task.State != "pending" {
		t.Errorf("B's task is %s, want pending", task.State)
	}
}

func TestTaskLifecycleOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "email:send", Payload: []byte{0, 1, 2}})
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
	if task.MaxRetries != 25 || task.TimeoutMS != (30*time.Minute).Milliseconds() || task.Queue != "default" {
		t.Errorf("defaults: %+v, want max_retries 25, timeout 30m, queue default", task)
	}
	zero, zeroT := 0, int64(0)
	id2 := b.enqueue("p", tok, wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{MaxRetries: &zero, TimeoutMS: &zeroT}})
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id2, tok, nil, &task)
	if task.MaxRetries != 0 || task.TimeoutMS != 0 {
		t.Errorf("explicit zeros: %+v, want max_retries 0, timeout 0", task)
	}

	var lease wire.LeaseResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", tok, wire.LeaseRequest{Queues: []string{"default"}, Max: 10, DurationMS: 60000, WorkerID: "w1"}, &lease)
	if len(lease.Tasks) != 2 {
		t.Fatalf("leased %d tasks, want 2", len(lease.Tasks))
	}
	var ext wire.ExtendResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/extend", tok, wire.ExtendRequest{DurationMS: 60000, Leases: []wire.ExtendLease{{ID: lease.Tasks[0].ID, LeaseID: lease.Tasks[0].LeaseID, Progress: &wire.Progress{Percent: 50}}}}, &ext)
	if len(ext.Items) != 1 || ext.Items[0].Error != nil {
		t.Fatalf("extend: %+v", ext)
	}
	var rep wire.ReportResponse
	outs := []wire.Outcome{
		{ID: lease.Tasks[0].ID, LeaseID: lease.Tasks[0].LeaseID, Kind: "succeeded", Result: []byte("ok")},
		{ID: lease.Tasks[1].ID, LeaseID: lease.Tasks[1].LeaseID + 1, Kind: "succeeded"},
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: outs}, &rep)
	if rep.Errors[0] != nil || rep.Errors[1] == nil || rep.Errors[1].Code != wire.CodeLeaseLost {
		t.Fatalf("report errors = %+v %+v, want nil and lease_lost", rep.Errors[0], rep.Errors[1])
	}
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+lease.Tasks[0].ID+"/result?wait_ms=10", tok, nil, &task)
	if task.State != "succeeded" || string(task.Result) != "ok" {
		t.Errorf("result = %+v", task)
	}
	b.fail(wire.CodeTaskFinished, "POST", "/v1/projects/p/tasks/"+task.ID+"/cancel", tok, nil)

	var list wire.TaskList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks?state=succeeded&payload=true&limit=5", tok, nil, &list)
	if len(list.Tasks) != 1 || list.Tasks[0].ID != task.ID {
		t.Errorf("list = %+v", list)
	}
	var q wire.Queue
	b.ok(http.StatusOK, "POST", "/v1/projects/p/queues/default/pause", tok, nil, &q)
	if !q.Paused || q.Counts["succeeded"] != 1 || q.Counts["active"] != 1 {
		t.Errorf("paused queue = %+v", q)
	}
	var adm wire.AdminResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks:cancel", tok, wire.IDsRequest{IDs: []string{id2, "missing"}}, &adm)
	if adm.Items[0].Error != nil || adm.Items[1].Error == nil || adm.Items[1].Error.Code != wire.CodeNotFound {
		t.Errorf("batch cancel = %+v", adm)
	}
	var sw wire.SweepResponse
	b.ok(http.StatusOK, "POST", "/v1/admin/sweep", adminToken, nil, &sw)
}

func TestLongPollLeaseReturnsOnEnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	got := make(chan wire.LeaseResponse, 1)
	go func() {
		var res wire.LeaseResponse
		status, body := b.do("POST", "/v1/projects/p/lease", tok, wire.LeaseRequest{Queues: []string{"q"}, Max: 1, DurationMS: 60000, WaitMS: 30000})
		if status == http.StatusOK {
			_ = json.Unmarshal(body, &res)
		}
		got <- res
	}()
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{Queue: "q"}})
	res := <-got
	if len(res.Tasks) != 1 || res.Tasks[0].ID != id {
		t.Fatalf("long poll answered %+v, want task %s", res, id)
	}
}

// sse reads an event stream line by line.
type sse struct {
	resp  *http.Response
	lines chan string
}

func openEvents(t *testing.T, b *bundle, p, token string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", b.ts.URL+"/v1/projects/"+p+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.ts.Client().Do(req) //nolint:bodyclose // closed in t.Cleanup, after the reader stops
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{resp: resp, lines: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = resp.Body.Close()
		<-done
	})
	return s
}

// next returns the next line that starts with prefix.
func (s *sse) next(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("stream ended before a %q line", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q line", prefix)
		}
	}
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.HeartbeatInterval = 20 * time.Millisecond })
	tok, secret := b.project("p")
	s := openEvents(t, b, "p", tok)
	s.next(t, ": kiln events")
	s.next(t, ": heartbeat")
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	s.next(t, "event: task.enqueued")
	if l := s.next(t, "data: "); !strings.Contains(l, id) {
		t.Errorf("data line %q does not name task %s", l, id)
	}
	_, sess := b.handshake("p", secret)
	s.next(t, "event: worker.registered")
	s.next(t, "event: worker.verified")
	var lease wire.LeaseResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", sess, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000}, &lease)
	s.next(t, "event: task.started")
	s.next(t, "event: worker.work_taken")
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", sess, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: id, LeaseID: lease.Tasks[0].LeaseID, Kind: "succeeded"}}}, nil)
	s.next(t, "event: task.succeeded")
	s.next(t, "event: worker.work_complete")
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", sess, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000}, nil)
	s.next(t, "event: worker.no_work")
	// The hook saw them too.
	b.waitEvent("worker.work_complete")
}

func TestEventStreamDropsForSlowSubscribers(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.EventBuffer = 1 })
	tok, _ := b.project("p")
	// A subscriber that never reads: its connection is open but the
	// client reads nothing, so its buffer of one fills up.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", b.ts.URL+"/v1/projects/p/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var reqs []wire.TaskRequest
	for range 200 {
		reqs = append(reqs, wire.TaskRequest{Type: "t"})
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok, wire.EnqueueRequest{Tasks: reqs}, nil)
	var st wire.ServerStats
	b.ok(http.StatusOK, "GET", "/v1/stats", adminToken, nil, &st)
	if st.EventsDropped == 0 {
		t.Errorf("events_dropped = 0 after 200 events to a subscriber with a buffer of 1")
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	clock := storetest.NewFakeClock(storetest.Epoch)
	st, err := embedded.Open(t.TempDir(), &embedded.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	srv, err := server.New(&server.Config{Store: st, Clock: clock, BootstrapToken: adminToken, SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	// A long poll is waiting when the shutdown starts; it answers at once
	// with no task.
	polled := make(chan int, 1)
	go func() {
		body := strings.NewReader(`{"queues":["q"],"max":1,"duration_ms":1000,"wait_ms":30000}`)
		req, _ := http.NewRequestWithContext(context.Background(), "POST", url+"/v1/projects/default/lease", body)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			polled <- 0
			return
		}
		_ = resp.Body.Close()
		polled <- resp.StatusCode
	}()
	// Wait until the server answers, then stop it.
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if code := <-polled; code != http.StatusOK && code != 0 {
		t.Errorf("long poll during shutdown = %d, want 200 (or a refused connection)", code)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestBootstrap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := embedded.Open(filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	var out strings.Builder
	logs := &strings.Builder{}
	cli := filepath.Join(dir, "data", "cli.json")
	cfg := &server.Config{Store: st, Stdout: &out, CLIFile: cli, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot := srv.Bootstrapped()
	if boot == nil || !strings.HasPrefix(boot.Token, "kiln_") || boot.Project != "default" {
		t.Fatalf("Bootstrapped() = %+v", boot)
	}
	if !strings.Contains(out.String(), boot.Token) {
		t.Errorf("the token was not printed: %q", out.String())
	}
	if strings.Contains(logs.String(), boot.Token) {
		t.Errorf("the token reached the log")
	}
	fi, err := os.Stat(cli)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cli.json mode = %v, want 0600", fi.Mode().Perm())
	}
	var saved wire.CLIConfig
	raw, err := os.ReadFile(cli)
	if err != nil || json.Unmarshal(raw, &saved) != nil || saved != (wire.CLIConfig{URL: boot.URL, Project: boot.Project, Token: boot.Token}) {
		t.Errorf("cli.json = %s, want %+v", raw, boot)
	}
	// A second start makes nothing and prints nothing.
	var out2 strings.Builder
	cfg.Stdout = &out2
	srv2, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if srv2.Bootstrapped() != nil || out2.String() != "" {
		t.Errorf("second start bootstrapped again: %q", out2.String())
	}
	// The token works.
	ts := httptest.NewServer(srv2.Handler())
	defer ts.Close()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", ts.URL+"/v1/projects/default/queues", nil)
	req.Header.Set("Authorization", "Bearer "+boot.Token)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the bootstrap token got %d", resp.StatusCode)
	}
}

func TestAutoCreateProjects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hook.AutoCreateProjects(b.srv.API())
	b.enqueue("ns-1", adminToken, wire.TaskRequest{Type: "t"})
	if n := b.counts("ns-1"); n != 1 {
		t.Errorf("ns-1 holds %d tasks, want 1", n)
	}
	b.fail(wire.CodeNotFound, "GET", "/v1/projects/_kiln/queues", adminToken, nil) // the server's own namespace is no project
	b.fail(wire.CodeInvalidName, "GET", "/v1/projects/_x/queues", adminToken, nil)
	tok, _ := b.project("p")
	b.fail(wire.CodeNotFound, "GET", "/v1/projects/ns-2/queues", tok, nil) // project tokens create nothing
}

var _ = store.ErrNotFound

// TestCancelWaitOverHTTP: cancel with wait_ms answers how an active task
// ended: 409 task_finished when its worker reported success before it saw
// the cancel (the cancel came too late), the cancelled task when it did.
func TestCancelWaitOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	for _, kind := range []string{"succeeded", "cancelled"} {
		id := b.enqueue("p", tok, wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{Queue: "q-" + kind}})
		var lease wire.LeaseResponse
		b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", tok, wire.LeaseRequest{Queues: []string{"q-" + kind}, Max: 1, DurationMS: 60000}, &lease)
		if len(lease.Tasks) != 1 || lease.Tasks[0].ID != id {
			t.Fatalf("lease = %+v", lease)
		}
		type answer struct {
			status int
			body   []byte
		}
		got := make(chan answer, 1)
		go func() {
			st, body := b.do("POST", "/v1/projects/p/tasks/"+id+"/cancel?wait_ms=20000", tok, nil)
			got <- answer{st, body}
		}()
		// The worker sees the request, then reports.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			var task wire.Task
			b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
			if task.CancelRequested {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the cancel was not requested")
			}
		}
		var rep wire.ReportResponse
		b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: id, LeaseID: lease.Tasks[0].LeaseID, Kind: kind}}}, &rep)
		a := <-got
		switch kind {
		case "succeeded":
			var eb wire.ErrorBody
			if err := json.Unmarshal(a.body, &eb); err != nil || a.status != http.StatusConflict || eb.Error == nil || eb.Error.Code != wire.CodeTaskFinished || !strings.Contains(eb.Error.Message, "succeeded") {
				t.Errorf("cancel?wait_ms of a task that then succeeded = %d %s; want 409 task_finished naming succeeded", a.status, a.body)
			}
		case "cancelled":
			var task wire.Task
			if err := json.Unmarshal(a.body, &task); err != nil || a.status != http.StatusOK || task.State != "cancelled" {
				t.Errorf("cancel?wait_ms of a task that then was cancelled = %d %s; want 200 with the cancelled task", a.status, a.body)
			}
		}
	}
	if st, body := b.do("POST", "/v1/projects/p/tasks/x/cancel?wait_ms=-1", tok, nil); st != http.StatusBadRequest {
		t.Errorf("cancel?wait_ms=-1 = %d %s, want 400", st, body)
	}
}

// TestCancelsWaitOverHTTP: cancels:wait answers a cursor at once, then the
// lease of an active task asked to cancel; bad input is refused.
func TestCancelsWaitOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	var first wire.CancelsResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/cancels:wait", tok, wire.CancelsRequest{WaitMS: 30000}, &first)
	if first.Cursor == "" || len(first.Leases) != 0 || first.Missed {
		t.Fatalf("first answer = %+v", first)
	}
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	var lease wire.LeaseResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", tok, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000}, &lease)
	if len(lease.Tasks) != 1 {
		t.Fatalf("lease = %+v", lease)
	}
	var task wire.Task
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks/"+id+"/cancel", tok, nil, &task)
	var next wire.CancelsResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/cancels:wait", tok, wire.CancelsRequest{Cursor: first.Cursor, WaitMS: 30000}, &next)
	if len(next.Leases) != 1 || next.Leases[0].ID != id || next.Leases[0].LeaseID != lease.Tasks[0].LeaseID || next.Cursor == first.Cursor {
		t.Fatalf("after the cancel = %+v; want the task's lease %s/%d", next, id, lease.Tasks[0].LeaseID)
	}
	b.fail(wire.CodeInvalidOption, "POST", "/v1/projects/p/cancels:wait", tok, wire.CancelsRequest{WaitMS: -1})
	b.fail(wire.CodeBadRequest, "POST", "/v1/projects/p/cancels:wait", tok, `{"cursor":1}`)
	b.fail(wire.CodeBadRequest, "POST", "/v1/projects/p/cancels:wait", tok, `{"wait":1}`)
}
