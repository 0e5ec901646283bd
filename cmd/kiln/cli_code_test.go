package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/kilntest"
)

// TestCodeCommands: code upload (a folder), ls, task log --follow of a
// task that completes and of one that fails, code rm.
func TestCodeCommands(t *testing.T) {
	t.Parallel()
	s := &cliServer{url: kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true, Configure: useTestAdminToken}).URL}

	dir := t.TempDir()
	script := "echo \"hello $GREETING\"\necho \"payload $(cat \"$PAYLOAD_FILE\")\"\n[ \"$(cat \"$PAYLOAD_FILE\")\" = fail ] && exit 4\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustKiln(t, s, "code", "upload", dir, "--name", "hello", "--file", "run.sh", "--runtime", "sh", "--env", "GREETING=there")
	if !strings.HasPrefix(out, "hello revision 1 (id ") {
		t.Errorf("upload printed %q", out)
	}
	if out := mustKiln(t, s, "code", "ls"); !strings.Contains(out, "hello") || !strings.Contains(out, "sh run.sh") {
		t.Errorf("code ls printed %q", out)
	}

	queue := func(payload string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.url+"/2/projects/default/tasks",
			strings.NewReader(`{"tasks":[{"code_name":"hello","payload":"`+payload+`"}]}`))
		req.Header.Set("Authorization", "OAuth "+testAdminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var body struct {
			Tasks []struct {
				ID string `json:"id"`
			} `json:"tasks"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Tasks) != 1 {
			t.Fatalf("queue: %v %+v", err, body)
		}
		return body.Tasks[0].ID
	}
	ok := queue("ok")
	if out := mustKiln(t, s, "task", "log", ok, "--follow", "--interval", "20ms"); out != "hello there\npayload ok\n" {
		t.Errorf("task log --follow printed %q", out)
	}
	if out := mustKiln(t, s, "task", "log", ok); out != "hello there\npayload ok\n" {
		t.Errorf("task log printed %q", out)
	}
	failed := queue("fail")
	wantExit(t, s, exitTaskFailed, "exit status 4", "task", "log", failed, "--follow", "--interval", "20ms")
	wantExit(t, s, exitNotFound, "not found", "task", "log", "nope")

	// The README's walk-through: a task enqueued with the native CLI
	// (kiln enqueue code:<name>, no IronWorker envelope) goes to the
	// package's queue and runs its latest revision with the raw payload.
	id, _, _ := strings.Cut(mustKiln(t, s, "enqueue", "code:hello", "native"), "\t")
	if out := mustKiln(t, s, "task", "result", id, "--wait"); !strings.Contains(out, `"status":"complete"`) {
		t.Errorf("task result --wait of a natively enqueued code task printed %q", out)
	}
	if out := mustKiln(t, s, "task", "log", id); out != "hello there\npayload native\n" {
		t.Errorf("task log of a natively enqueued code task printed %q", out)
	}

	mustKiln(t, s, "code", "rm", "hello")
	wantExit(t, s, exitNotFound, "no code package", "code", "rm", "hello")
	wantExit(t, s, exitUsage, "--name", "code", "upload", dir)
}

// TestCodeTaskRetriesCLI: the walk-through. A package that fails
// and has no retries (code ls: RETRIES 0), queued with kiln enqueue
// code:<name>, runs once and is dead, with max_retries 0; it ran 26 times
// in 30 s.
func TestCodeTaskRetriesCLI(t *testing.T) {
	t.Parallel()
	s := &cliServer{url: kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true, Configure: useTestAdminToken}).URL}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fail.sh"), []byte("echo ran\nexit 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKiln(t, s, "code", "upload", dir, "--name", "fail", "--file", "fail.sh", "--runtime", "sh")
	id, _, _ := strings.Cut(mustKiln(t, s, "enqueue", "code:fail", "{}"), "\t")
	id = strings.TrimSpace(id)
	wantExit(t, s, exitTaskFailed, "exit status 3", "task", "result", id, "--wait")
	out := mustKiln(t, s, "task", "get", id, "--json")
	var task struct {
		State      string `json:"state"`
		Attempt    int    `json:"attempt"`
		MaxRetries int    `json:"max_retries"`
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatalf("task get --json printed %q: %v", out, err)
	}
	if task.State != "dead" || task.Attempt != 1 || task.MaxRetries != 0 {
		t.Errorf("the task of a package with retries 0: state %s, attempt %d, max_retries %d; want dead after 1 attempt, max_retries 0", task.State, task.Attempt, task.MaxRetries)
	}
	if log := mustKiln(t, s, "task", "log", id); strings.Count(log, "ran\n") != 1 {
		t.Errorf("task log %q: want one run", log)
	}
}
