package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server/api"
)

const testAdminToken = "kiln_cli-test-admin-token-0123456789abcdefghij"

// cliServer serves the API on an embedded store with a kiln worker running
// in-process on project "default": type "echo" returns its payload, "fail"
// fails for good, "slow" reports progress and waits for its context.
type cliServer struct {
	url string
	api *api.API
}

func startCLIServer(t *testing.T) *cliServer {
	t.Helper()
	emb := kilntest.Embedded(t, nil)
	a, err := api.New(api.Config{Store: emb, Meta: emb, ResultPoll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hook.AutoCreateProjects(a)
	if _, err := a.AddToken(t.Context(), "", "test", testAdminToken); err != nil {
		t.Fatal(err)
	}
	if err := a.EnsureProject(t.Context(), "default"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	w, err := kiln.NewWorker(emb, &kiln.WorkerConfig{Concurrency: 4, LeaseWait: 100 * time.Millisecond, Queues: map[string]int{"default": 1, "mail": 1},
		EventFunc: func(ev kiln.Event) {
			a.Publish(wire.Event{Kind: "task." + ev.Kind.String(), Project: "default", TaskID: ev.TaskID})
		}})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("echo", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
		tk.SetResult(tk.Payload)
		return nil
	}))
	w.Handle("fail", kiln.HandlerFunc(func(context.Context, *kiln.Task) error {
		return fmt.Errorf("told to fail: %w", kiln.SkipRetry)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Worker.Run: %v", err)
		}
		a.Stop()
		srv.Close()
	})
	return &cliServer{url: srv.URL, api: a}
}

// kiln runs the command line with the server's URL and token and returns
// its exit code and output.
func (s *cliServer) kiln(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	all := append([]string{}, args...)
	// The connection flags, unless the test gives its own.
	if !slices.Contains(args, "--url") {
		all = append(all, "--url", s.url)
	}
	if !slices.Contains(args, "--token") {
		all = append(all, "--token", testAdminToken)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, all, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func mustKiln(t *testing.T, s *cliServer, args ...string) string {
	t.Helper()
	code, out, errOut := s.kiln(t, args...)
	if code != 0 {
		t.Fatalf("kiln %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func wantExit(t *testing.T, s *cliServer, want int, stderrHas string, args ...string) {
	t.Helper()
	code, out, errOut := s.kiln(t, args...)
	if code != want || !strings.Contains(errOut, stderrHas) {
		t.Errorf("kiln %s: exit %d, stderr %q; want exit %d and %q\nstdout: %s", strings.Join(args, " "), code, errOut, want, stderrHas, out)
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)

	// enqueue, then read the task back.
	out := mustKiln(t, s, "enqueue", "echo", `{ "to": "a" }`, "--format", "json", "--queue", "mail", "--priority", "3", "--max-retries", "0")
	fields := strings.Fields(out)
	if len(fields) != 2 {
		t.Fatalf("enqueue printed %q, want \"<id> <state>\"", out)
	}
	id := fields[0]
	var tk wire.Task
	if err := json.Unmarshal([]byte(mustKiln(t, s, "task", "result", id, "--wait", "--json")), &tk); err != nil {
		t.Fatalf("task result --json: %v", err)
	}
	if tk.State != "succeeded" || string(tk.Result) != `{"to":"a"}` || tk.Queue != "mail" || tk.Priority != 3 || tk.MaxRetries != 0 {
		t.Errorf("task: got %+v", tk)
	}
	if got := mustKiln(t, s, "task", "result", id); got != `{"to":"a"}` {
		t.Errorf("task result: got %q", got)
	}
	got := mustKiln(t, s, "task", "get", id)
	for _, want := range []string{id, "echo", "mail", "succeeded", `{"to":"a"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("task get: %q lacks %q", got, want)
		}
	}
	got = mustKiln(t, s, "task", "ls", "--queue", "mail", "--state", "succeeded,dead")
	if !strings.Contains(got, "STATE") || !strings.Contains(got, id) {
		t.Errorf("task ls: got %q", got)
	}
	var list wire.TaskList
	if err := json.Unmarshal([]byte(mustKiln(t, s, "task", "ls", "--json", "--all", "--limit", "1")), &list); err != nil || len(list.Tasks) != 1 {
		t.Errorf("task ls --json --all: got %+v, %v", list, err)
	}

	// enqueue --wait prints the result; payload from standard input.
	stdin = strings.NewReader("from stdin")
	if got := mustKiln(t, s, "enqueue", "echo", "-", "--wait"); got != "from stdin" {
		t.Errorf("enqueue - --wait: got %q", got)
	}

	// A failing task: exit 5 with its error, from result and from watch.
	out = mustKiln(t, s, "enqueue", "fail")
	failID := strings.Fields(out)[0]
	wantExit(t, s, exitTaskFailed, "told to fail", "task", "result", failID, "--wait")
	wantExit(t, s, exitTaskFailed, "dead", "task", "watch", failID)
	wantExit(t, s, exitFailure, "task_finished", "task", "cancel", id)
	mustKiln(t, s, "task", "retry", failID)

	// watch follows a task to its end.
	out = mustKiln(t, s, "enqueue", "echo", "w", "--delay", "300ms")
	wid := strings.Fields(out)[0]
	if got := mustKiln(t, s, "task", "watch", wid); !strings.Contains(got, "succeeded") || !strings.Contains(got, "scheduled") {
		t.Errorf("task watch: got %q", got)
	}

	// A task no worker takes is not finished: exit 7, and cancel works.
	out = mustKiln(t, s, "enqueue", "nobody", "--queue", "idle")
	idle := strings.Fields(out)[0]
	wantExit(t, s, exitNotFinished, "not finished", "task", "result", idle)
	wantExit(t, s, exitNotFinished, "not finished", "task", "result", idle, "--wait", "--timeout", "50ms")
	mustKiln(t, s, "task", "cancel", idle)

	// Queues and stats.
	mustKiln(t, s, "queue", "pause", "mail")
	if got := mustKiln(t, s, "queue", "ls"); !strings.Contains(got, "mail") || !strings.Contains(got, "yes") {
		t.Errorf("queue ls after pause: got %q", got)
	}
	mustKiln(t, s, "queue", "resume", "mail")
	if got := mustKiln(t, s, "stats"); !strings.Contains(got, "default") || !strings.Contains(got, "SUCCEEDED") {
		t.Errorf("stats: got %q", got)
	}

	// Projects, tokens and workers.
	got = mustKiln(t, s, "project", "create", "acme", "--name", "Acme")
	if !strings.Contains(got, "worker secret") {
		t.Errorf("project create: got %q", got)
	}
	tok := strings.TrimSpace(mustKiln(t, s, "project", "token", "acme"))
	if !strings.HasPrefix(tok, "kiln_") {
		t.Errorf("project token: got %q", tok)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"task", "get", id, "--url", s.url, "--token", tok, "--project", "default"}, &stdout, &stderr); code != exitNotFound {
		t.Errorf("a project token reading another project: exit %d (%s), want %d", code, &stderr, exitNotFound)
	}
	if got := mustKiln(t, s, "worker", "ls", "--project", "acme"); !strings.Contains(got, "STATE") {
		t.Errorf("worker ls: got %q", got)
	}
	if got := mustKiln(t, s, "project", "ls"); !strings.Contains(got, "acme") {
		t.Errorf("project ls: got %q", got)
	}

	// Errors and their exit codes.
	wantExit(t, s, exitNotFound, "not_found", "task", "get", "no-such-task")
	wantExit(t, s, exitUsage, "unknown subcommand", "task", "nope")
	wantExit(t, s, exitUsage, "flag provided but not defined", "task", "ls", "--bogus")
	wantExit(t, s, exitUsage, "not valid JSON", "enqueue", "echo", "{bad", "--format", "json")
	wantExit(t, s, exitUsage, "want 1 argument", "task", "get")
	wantExit(t, s, exitUsage, "--unique-key needs --unique-ttl", "enqueue", "echo", "--unique-key", "k")
	wantExit(t, s, exitUsage, "--limit", "task", "ls", "--limit", "0")
	wantExit(t, s, exitUsage, "is not a state", "task", "ls", "--state", "done")
	wantExit(t, s, exitFailure, "invalid_name", "enqueue", "bad type")
	wantExit(t, s, exitUnauthorized, "set --token", "task", "ls", "--token", "kiln_wrong-token-0123456789abcdefghijklmnop")
	wantExit(t, s, exitUnreachable, "cannot reach the server", "task", "ls", "--url", "http://127.0.0.1:1")
	if code, out, errOut := s.kiln(t, "stats", "--token", tok); code != 0 || strings.Contains(out, "default") {
		t.Errorf("stats with a project token: exit %d, %q, %q; want only the token's project", code, out, errOut)
	}
	out = mustKiln(t, s, "enqueue", "echo", "--unique-key", "k1", "--unique-ttl", "1h")
	holder := strings.Fields(out)[0]
	wantExit(t, s, exitFailure, "task "+holder+" holds the unique key", "enqueue", "echo", "--unique-key", "k1", "--unique-ttl", "1h")
}

func TestCLINoToken(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"task", "ls", "--config", "/dev/null/none", "--url", "http://127.0.0.1:1"}, &stdout, &stderr)
	if code != exitFailure || !strings.Contains(stderr.String(), "/dev/null/none") {
		t.Errorf("a missing --config file: exit %d, %q", code, &stderr)
	}
	if err := (&conn{}).needToken(); !errors.Is(err, err) || !strings.Contains(err.Error(), "run `kiln server` first") {
		t.Errorf("needToken: %v", err)
	}
}
