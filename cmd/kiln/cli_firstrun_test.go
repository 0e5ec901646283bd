package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
)

// TestEveryCommandHasHelp: `kiln <command> -h` prints the command's own
// usage and help for every command, code and schedule included (they
// printed an empty usage: their help was looked up among the client
// commands only).
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{c.name, h}, &stdout, &stderr)
			if code != 0 {
				t.Errorf("kiln %s %s: exit %d, stderr %q", c.name, h, code, &stderr)
				continue
			}
			want := "Usage: kiln " + c.name
			if c.args != "" {
				want += " " + c.args
			}
			if out := stdout.String(); !strings.HasPrefix(out, want+"\n") || !strings.Contains(out, c.help) || c.help == "" {
				t.Errorf("kiln %s %s printed %q, want %q and the command's help", c.name, h, out, want)
			}
		}
	}
}

// TestTaskListMoreKeepsOrder: the "more:" hint of a listing repeats its
// order, filters and page size, so the next page goes on where it left.
func TestTaskListMoreKeepsOrder(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	var ids []string
	for i := range 3 {
		out := mustKiln(t, s, "enqueue", "nobody", strconv.Itoa(i), "--queue", "idle-q", "--delay", "1h")
		ids = append(ids, strings.Fields(out)[0])
	}
	code, out, errOut := s.kiln(t, "task", "ls", "--newest", "--queue", "idle-q", "--limit", "1")
	if code != 0 || !strings.Contains(out, ids[2]) {
		t.Fatalf("task ls --newest: exit %d, stdout %q, stderr %q; want %s", code, out, errOut, ids[2])
	}
	m := regexp.MustCompile(`(?m)^more: kiln (task ls .*) \(or --all\)$`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("stderr = %q, want a more: line", errOut)
	}
	next := strings.Fields(m[1])
	for _, want := range []string{"--newest", "--queue", "--limit"} {
		if !slices.Contains(next, want) {
			t.Errorf("more: %q lacks %s", m[1], want)
		}
	}
	out = mustKiln(t, s, next...)
	if !strings.Contains(out, ids[1]) {
		t.Errorf("the hint's command printed %q, want the next newest task %s", out, ids[1])
	}
}

// TestProjectTokenAlone: a project token, without --project, works on its
// own project (GET /v1/whoami); --project still wins.
func TestProjectTokenAlone(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	mustKiln(t, s, "project", "create", "acme")
	tok := strings.TrimSpace(mustKiln(t, s, "project", "token", "acme"))
	out := mustKiln(t, s, "enqueue", "nobody", "x", "--delay", "1h", "--token", tok)
	id := strings.Fields(out)[0]
	out = mustKiln(t, s, "task", "ls", "--token", tok)
	if !strings.Contains(out, id) {
		t.Errorf("task ls with acme's token: %q, want task %s", out, id)
	}
	// The admin token's project stays "default": the task is not there.
	wantExit(t, s, exitNotFound, "not found", "task", "get", id)
	out = mustKiln(t, s, "task", "get", id, "--project", "acme")
	if !strings.Contains(out, id) {
		t.Errorf("task get --project acme: %q", out)
	}
	// A project named by the user is used as it is.
	wantExit(t, s, exitNotFound, "not found", "task", "ls", "--token", tok, "--project", "default")
	// A token the server does not know says so, exit 4.
	wantExit(t, s, exitUnauthorized, "hint: the server refused the token", "task", "ls", "--token", "kiln_nope-0123456789")
}

// TestEnqueuePayloadLooksLikeJSON: a payload that starts like JSON must be
// JSON unless --raw says otherwise; a payload taken as raw bytes says so.
func TestEnqueuePayloadLooksLikeJSON(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	wantExit(t, s, exitUsage, "looks like JSON but is not valid JSON", "enqueue", "nobody", `{"to":`, "--delay", "1h")

	code, out, errOut := s.kiln(t, "enqueue", "nobody", `{"to":`, "--raw", "--delay", "1h", "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("enqueue --raw: exit %d, stderr %q", code, errOut)
	}
	var it wire.EnqueueItem
	if err := json.Unmarshal([]byte(out), &it); err != nil {
		t.Fatal(err)
	}
	var task wire.Task
	if err := json.Unmarshal([]byte(mustKiln(t, s, "task", "get", it.ID, "--json")), &task); err != nil {
		t.Fatal(err)
	}
	if string(task.Payload) != `{"to":` {
		t.Errorf("--raw payload = %q", task.Payload)
	}

	// Valid JSON: sent as it is, without a word.
	if code, _, errOut := s.kiln(t, "enqueue", "nobody", `{"to": 1}`, "--delay", "1h"); code != 0 || errOut != "" {
		t.Errorf("enqueue JSON: exit %d, stderr %q", code, errOut)
	}
	// Text that is not JSON: sent as raw bytes, and the user is told.
	if code, _, errOut := s.kiln(t, "enqueue", "nobody", "hello", "--delay", "1h"); code != 0 || !strings.Contains(errOut, "not JSON: sent as 5 raw bytes") {
		t.Errorf("enqueue text: exit %d, stderr %q", code, errOut)
	}
	wantExit(t, s, exitUsage, "--raw and --format json disagree", "enqueue", "nobody", "x", "--raw", "--format", "json")
}

// TestQueuePauseUnknown: pausing a queue that has no task is refused (no
// empty paused queue left behind by a typo) unless --create.
func TestQueuePauseUnknown(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	wantExit(t, s, exitNotFound, `queue "nosuchqueue" not found`, "queue", "pause", "nosuchqueue")
	wantExit(t, s, exitNotFound, "--create pauses a queue before its first task", "queue", "pause", "nosuchqueue")
	wantExit(t, s, exitNotFound, `queue "nosuchqueue" not found`, "queue", "resume", "nosuchqueue")
	if out := mustKiln(t, s, "queue", "ls"); strings.Contains(out, "nosuchqueue") {
		t.Errorf("queue ls after a refused pause:\n%s", out)
	}
	if out := mustKiln(t, s, "queue", "pause", "later", "--create"); !strings.Contains(out, "queue later paused") {
		t.Errorf("queue pause --create: %q", out)
	}
	if out := mustKiln(t, s, "queue", "ls"); !regexp.MustCompile(`(?m)^later\s+yes\s`).MatchString(out) {
		t.Errorf("queue ls after pause --create:\n%s", out)
	}
	mustKiln(t, s, "queue", "resume", "later")
}

// TestTaskViewPreviousError: the error of an earlier attempt is not shown
// as the task's current error.
func TestTaskViewPreviousError(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		state   string
		attempt int
		want    string
	}{
		{"pending", 0, "previous error  boom (of the run before `task retry`)"},
		{"active", 1, "previous error  boom (of the run before `task retry`)"},
		{"active", 3, "previous error  boom (of attempt 2; attempt 3 is running)"},
		{"pending", 2, "previous error  boom (of attempt 2)"},
		{"succeeded", 2, "previous error  boom (of an earlier attempt; the task succeeded since)"},
		{"retry", 2, "last error  boom\n"},
		{"dead", 2, "last error  boom\n"},
	} {
		var b bytes.Buffer
		if err := printTask(&b, &wire.Task{ID: "t1", State: tt.state, Attempt: tt.attempt, MaxRetries: 5, LastError: "boom"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tt.want) {
			t.Errorf("task %s, attempt %d:\n%s\nwant %q", tt.state, tt.attempt, &b, tt.want)
		}
	}
}

// TestTaskViewErrorHistory: the task view lists every failed attempt that
// the task keeps, oldest first, with its worker and error on one line, and
// says how many earlier ones were not kept.
func TestTaskViewErrorHistory(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 6, 7, 12, 3, 0, time.Local)
	var b bytes.Buffer
	err := printTask(&b, &wire.Task{ID: "t1", State: "dead", Attempt: 5, MaxRetries: 4, LastError: "disk full\nat line 3",
		Errors: []wire.AttemptError{
			{Attempt: 4, At: at, Error: "lease expired on attempt 4 (worker lost)", WorkerID: "w2"},
			{Attempt: 5, At: at.Add(time.Minute), Error: "disk full\nat line 3"},
		}, ErrorsDropped: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"failed attempts  5 (the 3 earliest not kept)\n",
		"  attempt 4      2026-12-06 07:12:03  w2  lease expired on attempt 4 (worker lost)\n",
		"  attempt 5      2026-12-06 07:13:03  -  disk full ⏎ at line 3\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("task view:\n%s\nwant a line %q", &b, want)
		}
	}
	if i, j := strings.Index(b.String(), "attempt 4"), strings.Index(b.String(), "attempt 5"); i < 0 || j < i {
		t.Errorf("attempts are not oldest first:\n%s", &b)
	}
	b.Reset()
	if err := printTask(&b, &wire.Task{ID: "t1", State: "succeeded", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "failed attempts") {
		t.Errorf("a task that never failed shows a history:\n%s", &b)
	}
}

// TestErrorFormat: every error is one "kiln: <what>: <message> (<code>)"
// line, never with a second "kiln:", and an optional "hint:" line.
func TestErrorFormat(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	out := mustKiln(t, s, "enqueue", "nobody", "{}", "--unique-key", "k", "--unique-ttl", "1h", "--delay", "1h")
	held := strings.Fields(out)[0]
	var done wire.Task
	if err := json.Unmarshal([]byte(mustKiln(t, s, "enqueue", "echo", "{}", "--wait", "--json")), &done); err != nil || done.State != "succeeded" {
		t.Fatalf("enqueue --wait: %+v, %v", done, err)
	}
	for _, tc := range []struct {
		args []string
		code string
	}{
		{[]string{"enqueue", "echo", "{}", "--unique-key", "k", "--unique-ttl", "1h"}, "(duplicate)"},
		{[]string{"task", "cancel", done.ID}, "(task_finished)"},
		{[]string{"task", "retry", held, "nosuchtask"}, "(not_found)"},
		{[]string{"task", "get", "nosuchtask"}, "(not_found)"},
	} {
		_, _, errOut := s.kiln(t, tc.args...)
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if !strings.HasPrefix(lines[0], "kiln: ") || !strings.Contains(errOut, tc.code) {
			t.Errorf("kiln %s: stderr %q, want a kiln: line with %s", strings.Join(tc.args, " "), errOut, tc.code)
		}
		if n := strings.Count(errOut, "kiln: "); n != 1 {
			t.Errorf("kiln %s: stderr %q has %d \"kiln: \", want 1", strings.Join(tc.args, " "), errOut, n)
		}
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "hint: ") && !strings.HasPrefix(l, "  ") && !regexp.MustCompile(`^\S+: .* \(\w+\)$`).MatchString(l) {
				t.Errorf("kiln %s: stderr line %q is neither a hint nor an item's error", strings.Join(tc.args, " "), l)
			}
		}
	}
}

// TestExitCodeTable runs the real binary once for every row of the exit
// code table of docs/cli.md, so that the table and the code agree.
func TestExitCodeTable(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "## Exit codes\n")
	if !ok {
		t.Fatal("docs/cli.md has no \"## Exit codes\" section")
	}
	var documented []int
	for _, m := range regexp.MustCompile(`(?m)^\| (\d+) \|`).FindAllStringSubmatch(table, -1) {
		n, _ := strconv.Atoi(m[1])
		documented = append(documented, n)
	}
	s := startCLIServer(t)
	var done wire.Task
	if err := json.Unmarshal([]byte(mustKiln(t, s, "enqueue", "echo", "x", "--wait", "--json")), &done); err != nil || done.State != "succeeded" {
		t.Fatalf("enqueue --wait: %+v, %v", done, err)
	}
	later := strings.Fields(mustKiln(t, s, "enqueue", "nobody", "x", "--delay", "1h"))[0]
	conn := []string{"--url", s.url, "--token", testAdminToken}
	cases := map[int][]string{
		exitOK:           append([]string{"queue", "ls"}, conn...),
		exitFailure:      append([]string{"task", "retry", done.ID}, conn...), // invalid_state: it succeeded
		exitUsage:        append([]string{"task", "ls", "--bogus"}, conn...),
		exitNotFound:     append([]string{"task", "get", "nosuchtask"}, conn...),
		exitUnauthorized: {"queue", "ls", "--url", s.url, "--token", "kiln_wrong-0123456789"},
		exitTaskFailed:   append([]string{"enqueue", "fail", "x", "--wait"}, conn...),
		exitUnreachable:  {"queue", "ls", "--url", "http://127.0.0.1:1", "--token", testAdminToken},
		exitNotFinished:  append([]string{"task", "result", later}, conn...),
	}
	for _, code := range documented {
		if _, ok := cases[code]; !ok {
			t.Errorf("docs/cli.md lists exit code %d, which this test does not produce", code)
		}
	}
	for code, args := range cases {
		if !slices.Contains(documented, code) {
			t.Errorf("exit code %d (kiln %s) is not in the table of docs/cli.md", code, strings.Join(args, " "))
		}
		cmd := exec.CommandContext(testenv.Context(t), os.Args[0], args...)
		cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		got := 0
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr):
			got = exitErr.ExitCode()
		case err != nil:
			t.Fatalf("running kiln %v: %v", args, err)
		}
		if got != code {
			t.Errorf("kiln %s: exit %d, want %d; output:\n%s", strings.Join(args, " "), got, code, out)
		}
	}
}

// TestVersionFromBuild: the version comes from the build info, never
// "devel" when the toolchain recorded a version or a commit.
func TestVersionFromBuild(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		main     string
		settings map[string]string
		want     string
	}{
		{main: "v1.2.3", want: "v1.2.3"},
		{main: "v0.0.0-20261206041500-e8e6d9a1b2c3+dirty", want: "v0.0.0-20261206041500-e8e6d9a1b2c3+dirty"},
		{main: "(devel)", settings: map[string]string{"vcs.revision": "e8e6d9a1b2c3d4e5f6a7", "vcs.modified": "false"}, want: "e8e6d9a1b2c3"},
		{main: "(devel)", settings: map[string]string{"vcs.revision": "e8e6d9a1b2c3d4e5f6a7", "vcs.modified": "true"}, want: "e8e6d9a1b2c3-dirty"},
		{main: "(devel)", want: "devel"},
		{main: "", want: "devel"},
	} {
		info := &debug.BuildInfo{Main: debug.Module{Path: "github.com/kilnhq/kiln", Version: tt.main}}
		for k, v := range tt.settings {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: k, Value: v})
		}
		if got := versionFromBuild(info); got != tt.want {
			t.Errorf("versionFromBuild(%q, %v) = %q, want %q", tt.main, tt.settings, got, tt.want)
		}
	}
}

// TestVersionOfPlainBuild builds kiln with a plain `go build` (GOFLAGS set
// to the default -buildvcs=auto, whatever this machine's go env says) and
// checks that `kiln version` names the clone's commit.
func TestVersionOfPlainBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the kiln binary")
	}
	t.Parallel()
	top, err := exec.CommandContext(t.Context(), "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git clone (git rev-parse: %v)", err)
	}
	if fi, err := os.Stat(strings.TrimSpace(string(top)) + "/.git"); err != nil || !fi.IsDir() {
		// Go looks for a .git folder: a worktree's .git file gets no
		// stamp, and `make build` (git describe) is the way there.
		t.Skip("a git worktree: the go command records no commit in its builds")
	}
	head, err := exec.CommandContext(t.Context(), "git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir() + "/kiln"
	args := []string{"build", "-o", bin}
	if raceOn {
		args = append(args, "-race")
	}
	build := exec.CommandContext(t.Context(), "go", append(args, ".")...)
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=auto")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(testenv.Context(t), bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("kiln version: %v\n%s", err, out)
	}
	if rev := string(head[:12]); !strings.Contains(string(out), rev) || strings.Contains(string(out), "devel") {
		t.Errorf("kiln version = %q, want the commit %s and no \"devel\"", out, rev)
	}
}
