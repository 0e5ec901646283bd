package ironapi_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store"
)

const (
	echoScript = `echo "payload: $(cat "$PAYLOAD_FILE")"
echo "config: $(cat "$CONFIG_FILE")"
echo "id: $TASK_ID greeting: $GREETING"
echo "args: $*"
`
	pythonScript = `import json, os, sys
with open(sys.argv[sys.argv.index("-payload") + 1]) as f:
    data = json.load(f)
print("python got", data["n"] * 2, "in", os.environ["TASK_DIR"] == os.getcwd())
`
)

// TestShellAndPythonPackages runs a shell package and a Python package:
// payload and config files, env_vars, the IronWorker arguments.
func TestShellAndPythonPackages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustUpload(map[string]any{
		"name": "echo", "file_name": "run.sh", "runtime": "sh", "config": "the-config",
		"env_vars": map[string]string{"GREETING": "hi"},
	}, testenv.Zip(t, map[string][]byte{"run.sh": []byte(echoScript)}))
	ids := b.queue(map[string]any{"code_name": "echo", "payload": `{"x":"1"}`, "label": "lbl"})
	ti := b.wait(ids[0])
	if ti.Status != "complete" || ti.Label != "lbl" || ti.Payload != `{"x":"1"}` || ti.Timeout != 3600 {
		t.Fatalf("task = %+v", ti)
	}
	// The enqueue's event may come after the runner's first.
	if kinds := b.eventKinds(ids[0]); len(kinds) != 3 || !slices.Contains(kinds, "task.enqueued") || !slices.Contains(kinds, "task.started") || kinds[2] != "task.succeeded" {
		t.Errorf("events of the task: %v", kinds)
	}
	log := b.log(ids[0])
	for _, want := range []string{`payload: {"x":"1"}`, "config: the-config", "id: " + ids[0] + " greeting: hi", "args: -d /", "-payload /", "-config /", "-id " + ids[0]} {
		if !strings.Contains(log, want) {
			t.Errorf("log %q lacks %q", log, want)
		}
	}

	// The environment is built from scratch: nothing of the server's.
	b.mustUpload(map[string]any{"name": "env", "file_name": "run.sh", "runtime": "sh", "env_vars": map[string]string{"GREETING": "hi"}},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("env\n")}))
	envTask := b.queue(map[string]any{"code_name": "env", "payload": ""})[0]
	if ti := b.wait(envTask); ti.Status != "complete" {
		t.Fatalf("env task: %+v", ti)
	}
	allowed := map[string]bool{"TASK_ID": true, "TASK_DIR": true, "PAYLOAD_FILE": true, "CONFIG_FILE": true, "PATH": true, "HOME": true,
		"GREETING": true, "PWD": true, "OLDPWD": true, "SHLVL": true, "_": true}
	for _, line := range strings.Split(strings.TrimSpace(b.log(envTask)), "\n") {
		if name, _, _ := strings.Cut(line, "="); !allowed[name] {
			t.Errorf("the task's environment holds %s", name)
		}
	}

	if _, err := exec.LookPath("python3"); err != nil {
		t.Log("python3 not installed: the Python package is not run")
		return
	}
	b.mustUpload(map[string]any{"name": "py", "file_name": "main.py", "runtime": "python"},
		testenv.Zip(t, map[string][]byte{"main.py": []byte(pythonScript)}))
	ids = b.queue(map[string]any{"code_name": "py", "payload": `{"n":21}`})
	if ti := b.wait(ids[0]); ti.Status != "complete" {
		t.Fatalf("python task: %+v\n%s", ti, b.log(ids[0]))
	}
	if log := b.log(ids[0]); log != "python got 42 in True\n" {
		t.Errorf("python log = %q", log)
	}
}

// TestFailingPackages: a crash is an error with the exit status, a timeout
// is timeout, retries are honoured, a cancel kills a running task, the log
// is readable while the task runs, and the server keeps working.
func TestFailingPackages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustUpload(map[string]any{"name": "crash", "file_name": "run.sh", "runtime": "sh", "retries": 1},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo attempt; exit 3\n")}))
	b.mustUpload(map[string]any{"name": "slow", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("trap '' TERM; echo started; while :; do sleep 1; done\n")}))
	b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo fine\n")}))

	crash := b.queue(map[string]any{"code_name": "crash", "payload": ""})[0]
	timeout := b.queue(map[string]any{"code_name": "slow", "payload": "", "timeout": 1})[0]
	cancel := b.queue(map[string]any{"code_name": "slow", "payload": ""})[0]

	ti := b.wait(crash)
	if ti.Status != "error" || !strings.Contains(ti.Msg, "exit status 3") || ti.RunTimes != 2 {
		t.Errorf("crash: status %q msg %q run_times %d; want error, exit status 3, 2 runs", ti.Status, ti.Msg, ti.RunTimes)
	}
	if log := b.log(crash); strings.Count(log, "attempt\n") != 2 {
		t.Errorf("crash log %q: want both attempts", log)
	}
	ti = b.wait(timeout)
	if ti.Status != "timeout" || ti.Timeout != 1 {
		t.Errorf("timeout: status %q msg %q timeout %d", ti.Status, ti.Msg, ti.Timeout)
	}

	// Live log: "started" is readable while the task runs.
	b.waitFor(cancel, func(ti taskInfo) bool {
		if ti.Status != "running" {
			return false
		}
		status, body := b.do(http.MethodGet, "/2/projects/"+project+"/tasks/"+cancel+"/log", "", nil)
		return status == http.StatusOK && strings.Contains(string(body), "started")
	})
	var msg struct {
		Msg string `json:"msg"`
	}
	b.json(http.MethodPost, "/2/projects/"+project+"/tasks/"+cancel+"/cancel", nil, &msg)
	if msg.Msg != "Cancelled" {
		t.Errorf("cancel answered %q", msg.Msg)
	}
	if ti := b.wait(cancel); ti.Status != "cancelled" {
		t.Errorf("cancelled task: %+v", ti)
	}
	// Cancelling a finished task is refused.
	if status, _ := b.do(http.MethodPost, "/2/projects/"+project+"/tasks/"+cancel+"/cancel", "application/json", nil); status != http.StatusBadRequest {
		t.Errorf("second cancel: status %d, want 400", status)
	}

	// A program for another machine fails with a clear error; shell
	// metacharacters in a command are plain arguments.
	b.mustUpload(map[string]any{"name": "wrongarch", "file_name": "worker", "runtime": "binary"},
		testenv.Zip(t, map[string][]byte{"worker": []byte("\x7fELF not really a program")}))
	b.mustUpload(map[string]any{"name": "meta", "command": "echo ; rm -rf / $(id) `id` && true"},
		testenv.Zip(t, map[string][]byte{"README": []byte("no program here")}))
	wrong := b.queue(map[string]any{"code_name": "wrongarch", "payload": ""})[0]
	if ti := b.wait(wrong); ti.Status != "error" || !strings.Contains(ti.Msg, "exec format error") {
		t.Errorf("wrong architecture: %s %q", ti.Status, ti.Msg)
	}
	meta := b.queue(map[string]any{"code_name": "meta", "payload": ""})[0]
	if ti := b.wait(meta); ti.Status != "complete" || !strings.HasPrefix(b.log(meta), "; rm -rf / $(id) `id` && true -d /") {
		t.Errorf("metacharacters: %s %q, log %q", ti.Status, ti.Msg, b.log(meta))
	}

	// The server still runs tasks.
	ok := b.queue(map[string]any{"code_name": "ok", "payload": ""})[0]
	if ti := b.wait(ok); ti.Status != "complete" || b.log(ok) != "fine\n" {
		t.Errorf("after the failures: %+v", ti)
	}

	// Retry makes a new task of a finished one.
	var rr struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	b.json(http.MethodPost, "/2/projects/"+project+"/tasks/"+ok+"/retry", map[string]any{"delay": 0}, &rr)
	if len(rr.Tasks) != 1 || rr.Tasks[0].ID == ok {
		t.Fatalf("retry: %+v", rr)
	}
	if ti := b.wait(rr.Tasks[0].ID); ti.Status != "complete" {
		t.Errorf("retried task: %+v", ti)
	}
}

// TestTaskRoutes covers listing with filters, progress, the webhook,
// pause and resume, and the code package routes.
func TestTaskRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	codeID := b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh", "max_concurrency": 1},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo v1\n")}))
	zip2 := testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo v2; cat \"$PAYLOAD_FILE\"\n")})
	if id := b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh"}, zip2); id != codeID {
		t.Fatalf("a new revision got id %s, want %s", id, codeID)
	}
	pp := "/2/projects/" + project

	// Code routes.
	var code struct {
		ID   string `json:"id"`
		Name string `json:"name"`
		Rev  int    `json:"rev"`
	}
	b.json(http.MethodGet, pp+"/codes/"+codeID, nil, &code)
	if code.Rev != 2 || code.Name != "ok" {
		t.Errorf("code = %+v", code)
	}
	var list struct {
		Codes []struct {
			ID string `json:"id"`
		} `json:"codes"`
	}
	b.json(http.MethodGet, pp+"/codes?page=0&per_page=10", nil, &list)
	if len(list.Codes) != 1 || list.Codes[0].ID != codeID {
		t.Errorf("codes = %+v", list)
	}
	var revs struct {
		Revisions []struct {
			Rev int `json:"rev"`
		} `json:"revisions"`
	}
	b.json(http.MethodGet, pp+"/codes/"+codeID+"/revisions", nil, &revs)
	if len(revs.Revisions) != 2 || revs.Revisions[0].Rev != 2 {
		t.Errorf("revisions = %+v", revs)
	}
	status, body := b.do(http.MethodGet, pp+"/codes/"+codeID+"/download", "", nil)
	if status != http.StatusOK || !bytes.Equal(body, zip2) {
		t.Errorf("download: status %d, %d bytes; want the second zip", status, len(body))
	}
	status, body = b.do(http.MethodGet, pp+"/codes/"+codeID+"/download?revision=1", "", nil)
	if zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body))); status != http.StatusOK || err != nil {
		t.Errorf("download rev 1: status %d, %v", status, err)
	} else if f, err := zr.Open("run.sh"); err != nil {
		t.Error(err)
	} else if data, _ := io.ReadAll(f); string(data) != "echo v1\n" {
		t.Errorf("rev 1 holds %q", data)
	}

	// Pause: queued tasks stay queued until resumed.
	b.json(http.MethodPost, pp+"/codes/"+codeID+"/pause_task_queue", nil, nil)
	ids := b.queue(map[string]any{"code_name": "ok", "payload": "p1", "label": "a"}, map[string]any{"code_name": "ok", "payload": "p2", "priority": 2})
	var stats map[string]int
	b.json(http.MethodGet, pp+"/codes/"+codeID+"/stats", nil, &stats)
	if stats["queued"] != 2 {
		t.Errorf("stats while paused = %v", stats)
	}
	if ti := b.task(ids[0]); ti.Status != "queued" {
		t.Errorf("paused task is %s", ti.Status)
	}
	b.json(http.MethodPost, pp+"/codes/"+codeID+"/resume_task_queue", nil, nil)
	for _, id := range ids {
		if ti := b.wait(id); ti.Status != "complete" || ti.CodeRev != "2" {
			t.Errorf("task %s: %+v", id, ti)
		}
	}
	if log := b.log(ids[1]); log != "v2\np2" {
		t.Errorf("log = %q", log)
	}

	// Webhook: the raw body is the payload.
	req, _ := http.NewRequest(http.MethodPost, b.url+pp+"/tasks/webhook?code_name=ok&oauth="+url.QueryEscape(b.token), strings.NewReader("raw body"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wh struct {
		ID  string `json:"id"`
		Msg string `json:"msg"`
	}
	err = json.NewDecoder(resp.Body).Decode(&wh)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || wh.ID == "" {
		t.Fatalf("webhook: %d %+v %v", resp.StatusCode, wh, err)
	}
	if ti := b.wait(wh.ID); ti.Payload != "raw body" || b.log(wh.ID) != "v2\nraw body" {
		t.Errorf("webhook task: %+v", ti)
	}

	// Progress.
	b.json(http.MethodPost, pp+"/tasks/"+wh.ID+"/progress", map[string]any{"percent": 40, "msg": "almost"}, nil)
	if ti := b.task(wh.ID); ti.Percent != 40 {
		t.Errorf("percent = %d", ti.Percent)
	}
	if status, _ := b.do(http.MethodPost, pp+"/tasks/"+wh.ID+"/progress", "application/json", strings.NewReader(`{"percent":101}`)); status != 400 {
		t.Errorf("percent 101: status %d", status)
	}

	// Listing: filters as iron_go3 sends them, paging, labels.
	var tl struct {
		Tasks []taskInfo `json:"tasks"`
	}
	b.json(http.MethodGet, pp+"/tasks?code_name=&complete=%25%21d%28bool%3Dtrue%29", nil, &tl)
	if len(tl.Tasks) != 3 || tl.Tasks[0].ID != wh.ID {
		t.Errorf("complete tasks: %d, first %+v", len(tl.Tasks), tl.Tasks)
	}
	b.json(http.MethodGet, pp+"/tasks?error=1&timeout=1", nil, &tl)
	if len(tl.Tasks) != 0 {
		t.Errorf("error tasks: %+v", tl.Tasks)
	}
	b.json(http.MethodGet, pp+"/tasks?code_name=ok&per_page=2&page=1", nil, &tl)
	if len(tl.Tasks) != 1 || tl.Tasks[0].ID != ids[0] {
		t.Errorf("page 1 of 2: %+v", tl.Tasks)
	}
	b.json(http.MethodGet, pp+"/tasks?label=a", nil, &tl)
	if len(tl.Tasks) != 1 || tl.Tasks[0].ID != ids[0] {
		t.Errorf("label a: %+v", tl.Tasks)
	}
	b.json(http.MethodGet, pp+"/tasks?code_name=nope", nil, &tl)
	if len(tl.Tasks) != 0 {
		t.Errorf("code nope: %+v", tl.Tasks)
	}

	// cancel_all cancels the package's unfinished tasks.
	b.json(http.MethodPost, pp+"/codes/"+codeID+"/pause_task_queue", nil, nil)
	waiting := b.queue(map[string]any{"code_name": "ok", "payload": ""})[0]
	b.json(http.MethodPost, pp+"/codes/"+codeID+"/cancel_all", nil, nil)
	if ti := b.task(waiting); ti.Status != "cancelled" {
		t.Errorf("after cancel_all: %s", ti.Status)
	}
	if status, body := b.do(http.MethodGet, pp+"/tasks/"+ids[1]+"/outlog", "", nil); status != 200 || string(body) != "v2\np2" {
		t.Errorf("outlog: %d %q", status, body)
	}

	// Delete: the package is gone, its queued tasks are cancelled.
	b.json(http.MethodPost, pp+"/codes/"+codeID+"/pause_task_queue", nil, nil)
	queued := b.queue(map[string]any{"code_name": "ok", "payload": ""})[0]
	b.json(http.MethodDelete, pp+"/codes/"+codeID, nil, nil)
	if status, _ := b.do(http.MethodGet, pp+"/codes/"+codeID, "", nil); status != http.StatusNotFound {
		t.Errorf("deleted code: status %d", status)
	}
	if ti := b.task(queued); ti.Status != "cancelled" {
		t.Errorf("queued task of a deleted package: %s", ti.Status)
	}
	if status, _ := b.do(http.MethodPost, pp+"/tasks", "application/json", strings.NewReader(`{"tasks":[{"code_name":"ok","payload":""}]}`)); status != http.StatusNotFound {
		t.Errorf("queue to a deleted package: status %d", status)
	}
}

// TestSchedules: a schedule runs its task (the package's latest revision)
// right away and then every run_every; get, list and cancel; bad
// schedules are refused and nothing is scheduled.
func TestSchedules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo scheduled; cat \"$PAYLOAD_FILE\"\n")}))
	pp := "/2/projects/" + project
	for _, bad := range []struct {
		body   string
		status int
	}{
		{`{"schedules":[{"code_name":"ok","payload":"","run_every":59}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","run_every":60,"run_times":0}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","start_at":"tomorrow"}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","start_at":"2030-01-02T00:00:00Z","end_at":"2030-01-01T00:00:00Z"}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","run_every":60,"cron":"* * * * *"}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","cron":"61 * * * *"}]}`, 400},
		{`{"schedules":[{"code_name":"ok","payload":"","priority":3}]}`, 400},
		{`{"schedules":[{"code_name":"ok"}]}`, 400},
		{`{"schedules":[{"code_name":"nope","payload":""}]}`, 404},
		{`{"schedules":[{"code_name":"ok","payload":"","run_every":60},{"code_name":"ok","payload":"","run_every":1}]}`, 400},
		{`{"schedules":[]}`, 400},
	} {
		if status, body := b.do(http.MethodPost, pp+"/schedules", "application/json", strings.NewReader(bad.body)); status != bad.status {
			t.Errorf("%s: status %d (%s), want %d", bad.body, status, body, bad.status)
		}
	}
	var sl struct {
		Schedules []struct {
			ID        string `json:"id"`
			Status    string `json:"status"`
			RunCount  int    `json:"run_count"`
			RunEvery  int    `json:"run_every"`
			CodeName  string `json:"code_name"`
			NextStart string `json:"next_start"`
		} `json:"schedules"`
	}
	b.json(http.MethodGet, pp+"/schedules", nil, &sl)
	if len(sl.Schedules) != 0 {
		t.Fatalf("bad requests made schedules: %+v", sl)
	}

	var created struct {
		Msg       string `json:"msg"`
		Schedules []struct {
			ID string `json:"id"`
		} `json:"schedules"`
	}
	b.json(http.MethodPost, pp+"/schedules", map[string]any{"schedules": []map[string]any{
		{"code_name": "ok", "payload": "tick", "run_every": 3600, "run_times": 5, "label": "sched"},
	}}, &created)
	if created.Msg != "Scheduled" || len(created.Schedules) != 1 {
		t.Fatalf("create: %+v", created)
	}
	sid := created.Schedules[0].ID
	// The first run is now: find its task.
	var tl struct {
		Tasks []struct {
			ID         string `json:"id"`
			ScheduleID string `json:"schedule_id"`
		} `json:"tasks"`
	}
	kilntest.Eventually(t, "the schedule's task", func() bool {
		b.json(http.MethodGet, pp+"/tasks?label=sched", nil, &tl)
		return len(tl.Tasks) > 0
	})
	if tl.Tasks[0].ScheduleID != sid {
		t.Errorf("task schedule_id %q, want %q", tl.Tasks[0].ScheduleID, sid)
	}
	if ti := b.wait(tl.Tasks[0].ID); ti.Status != "complete" || ti.CodeRev != "1" || b.log(ti.ID) != "scheduled\ntick" {
		t.Errorf("scheduled task: %+v", ti)
	}
	var si struct {
		ID        string `json:"id"`
		Status    string `json:"status"`
		RunCount  int    `json:"run_count"`
		RunTimes  int    `json:"run_times"`
		RunEvery  int    `json:"run_every"`
		NextStart string `json:"next_start"`
	}
	b.json(http.MethodGet, pp+"/schedules/"+sid, nil, &si)
	if si.Status != "scheduled" || si.RunCount != 1 || si.RunTimes != 5 || si.RunEvery != 3600 || si.NextStart == "" {
		t.Errorf("schedule = %+v", si)
	}
	b.json(http.MethodPost, pp+"/schedules/"+sid+"/cancel", nil, nil)
	b.json(http.MethodGet, pp+"/schedules/"+sid, nil, &si)
	if si.Status != "cancelled" {
		t.Errorf("cancelled schedule = %+v", si)
	}
	b.json(http.MethodGet, pp+"/schedules", nil, &sl)
	if len(sl.Schedules) != 1 || sl.Schedules[0].ID != sid {
		t.Errorf("list = %+v", sl)
	}
	if status, _ := b.do(http.MethodGet, pp+"/schedules/nope", "", nil); status != http.StatusNotFound {
		t.Errorf("missing schedule: status %d", status)
	}
}

// TestSharedStore: a package uploaded to a server without a runner is run
// by the runners of two other servers sharing the store, and its
// max_concurrency of 1 holds across both: no two tasks overlap.
func TestSharedStore(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	front := setupOn(t, st, false)
	// The tasks share a lock folder on the host: no sandbox (it would give
	// each task a /tmp of its own).
	for range 2 {
		setupWith(t, st, &hosted.Config{
			WorkDir: t.TempDir(), Concurrency: 2, PollInterval: 100 * time.Millisecond,
			LeaseDuration: 900 * time.Millisecond, LeaseWait: 200 * time.Millisecond,
			Runner: &runner.Config{KillGrace: 500 * time.Millisecond, Sandbox: runner.SandboxOff}, SlotPoll: 20 * time.Millisecond,
		})
	}
	lock := t.TempDir()
	front.mustUpload(map[string]any{
		"name": "locked", "file_name": "run.sh", "runtime": "sh", "max_concurrency": 1,
		"env_vars": map[string]string{"LOCKDIR": lock},
	}, testenv.Zip(t, map[string][]byte{"run.sh": []byte(`mkdir "$LOCKDIR/held" || { echo overlap; exit 1; }
sleep 0.2
rmdir "$LOCKDIR/held"
echo done
`)}))
	ids := front.queue(
		map[string]any{"code_name": "locked", "payload": ""}, map[string]any{"code_name": "locked", "payload": ""},
		map[string]any{"code_name": "locked", "payload": ""}, map[string]any{"code_name": "locked", "payload": ""},
	)
	for _, id := range ids {
		if ti := front.wait(id); ti.Status != "complete" {
			t.Errorf("task %s: %s %q, log %q", id, ti.Status, ti.Msg, front.log(id))
		}
	}
}

// TestTaskMarkOnlyWithLog: a task is marked for the registry's Collect
// (iron/task/<id>) when its log has something to keep, and only then: a
// task that prints nothing costs no such store write.
func TestTaskMarkOnlyWithLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustUpload(map[string]any{"name": "silent", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("exit 0\n")}))
	b.mustUpload(map[string]any{"name": "talks", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo hello\n")}))
	silent := b.queue(map[string]any{"code_name": "silent", "payload": ""})[0]
	talks := b.queue(map[string]any{"code_name": "talks", "payload": ""})[0]
	for _, id := range []string{silent, talks} {
		if ti := b.wait(id); ti.Status != "complete" {
			t.Fatalf("task %s: %+v", id, ti)
		}
	}
	if log := b.log(talks); log != "hello\n" {
		t.Errorf("log = %q", log)
	}
	// The log is closed (and the mark written) before the outcome is
	// reported.
	marked := func(id string) bool {
		res, err := b.st.MetaList(t.Context(), store.MetaListParams{Namespace: project, Prefix: "iron/task/" + id})
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Items) > 0
	}
	if !marked(talks) {
		t.Error("a task with a log is not marked for Collect")
	}
	if marked(silent) {
		t.Error("a task that printed nothing was marked for Collect")
	}
}
