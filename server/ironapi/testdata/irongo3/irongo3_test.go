package irongo3

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iron-io/iron_go3/config"
	"github.com/iron-io/iron_go3/worker"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
)

func TestMain(m *testing.M) {
	// The test binary is the trampoline of the runner's task processes.
	runner.Main()
	os.Exit(m.Run())
}

// startServer serves a kiln server with a runner on a loopback port and
// returns its port and a project token of "default".
func startServer(t *testing.T) (uint16, string) {
	t.Helper()
	srv := kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true})
	_, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n), srv.Token
}

func writeZip(t *testing.T, files map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "code.zip")
	if err := os.WriteFile(path, testenv.Zip(t, files), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wait reads WaitForTask (which polls while the task is queued or
// running) with a bound.
func wait(t *testing.T, w *worker.Worker, id string) worker.TaskInfo {
	t.Helper()
	select {
	case ti := <-w.WaitForTask(id):
		return ti
	case <-time.After(time.Minute):
		t.Fatalf("task %s did not finish within a minute", id)
		return worker.TaskInfo{}
	}
}

// TestIronGo3 drives a kiln server with the official Go client: upload a
// package, queue tasks, read their status, logs and the package, set
// progress, cancel, list with filters, schedule, delete.
func TestIronGo3(t *testing.T) {
	// The client reads ~/.iron.json, IRON_* variables and ./iron.json
	// before the manual settings: keep them out of the way.
	t.Setenv("HOME", t.TempDir())
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "IRON_") {
			t.Setenv(k, "")
			_ = os.Unsetenv(k)
		}
	}
	if _, err := os.Stat("iron.json"); err == nil {
		t.Fatal("an iron.json in the test folder would override the settings")
	}
	port, token := startServer(t)
	w := &worker.Worker{Settings: config.ManualConfig("iron_worker", &config.Settings{
		Token: token, ProjectId: "default", Host: "127.0.0.1", Scheme: "http", Port: port,
	})}

	zipPath := writeZip(t, map[string]string{
		"run.sh": `echo "payload=$(cat "$PAYLOAD_FILE") config=$(cat "$CONFIG_FILE") color=$COLOR"
[ "$(cat "$PAYLOAD_FILE")" = slow ] && exec sleep 60
exit 0
`,
	})
	retries := 0
	code, err := w.CodePackageZipUpload(zipPath, worker.Code{
		Name: "hello", Runtime: "sh", FileName: "run.sh", Config: "cfg",
		EnvVars: map[string]string{"COLOR": "blue"}, MaxConcurrency: 2, Retries: &retries,
	})
	if err != nil {
		t.Fatalf("CodePackageZipUpload: %v", err)
	}
	if code.Id == "" {
		t.Fatalf("upload returned no id: %+v", code)
	}

	timeout := 30 * time.Second
	ids, err := w.TaskQueue(
		worker.Task{CodeName: "hello", Payload: "one", Timeout: &timeout, Label: "first"},
		worker.Task{CodeName: "hello", Payload: "two", Priority: 2},
	)
	if err != nil || len(ids) != 2 {
		t.Fatalf("TaskQueue: %v %v", ids, err)
	}
	for i, id := range ids {
		ti := wait(t, w, id)
		if ti.Status != "complete" || ti.CodeName != "hello" || ti.CodeId != code.Id || ti.CodeRev != "1" || ti.ProjectId != "default" {
			t.Errorf("task %d: %+v", i, ti)
		}
		if ti.CreatedAt.IsZero() || ti.StartTime.IsZero() || ti.EndTime.IsZero() {
			t.Errorf("task %d times: %+v", i, ti)
		}
		if i == 0 && ti.Timeout != 30 {
			t.Errorf("timeout = %d, want 30", ti.Timeout)
		}
		var log []byte
		select {
		case log = <-w.WaitForTaskLog(id):
		case <-time.After(time.Minute):
			t.Fatal("WaitForTaskLog did not return")
		}
		want := "payload=" + []string{"one", "two"}[i] + " config=cfg color=blue\n"
		if string(log) != want {
			t.Errorf("log = %q, want %q", log, want)
		}
		direct, err := w.TaskLog(id)
		if err != nil || string(direct) != want {
			t.Errorf("TaskLog = %q, %v", direct, err)
		}
	}

	// Progress and cancel of a running task.
	slow, err := w.TaskQueue(worker.Task{CodeName: "hello", Payload: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.TaskProgress(slow[0], 50, "half"); err != nil {
		t.Fatalf("TaskProgress: %v", err)
	}
	if ti, err := w.TaskInfo(slow[0]); err != nil || ti.Percent != 50 {
		t.Errorf("TaskInfo after progress: %+v %v", ti, err)
	}
	if err := w.TaskCancel(slow[0]); err != nil {
		t.Fatalf("TaskCancel: %v", err)
	}
	if ti := wait(t, w, slow[0]); ti.Status != "cancelled" {
		t.Errorf("cancelled task: %+v", ti)
	}

	// Listing, as the client sends its filters.
	all, err := w.TaskList()
	if err != nil || len(all) != 3 {
		t.Errorf("TaskList: %d tasks, %v", len(all), err)
	}
	done, err := w.FilteredTaskList(worker.TaskListParams{CodeName: "hello", Statuses: []string{"complete"}})
	if err != nil || len(done) != 2 {
		t.Errorf("FilteredTaskList(complete): %d tasks, %v", len(done), err)
	}
	labelled, err := w.FilteredTaskList(worker.TaskListParams{Label: "first"})
	if err != nil || len(labelled) != 1 || labelled[0].Id != ids[0] {
		t.Errorf("FilteredTaskList(label): %+v, %v", labelled, err)
	}

	// The package.
	codes, err := w.CodePackageList(0, 10)
	if err != nil || len(codes) != 1 || codes[0].Id != code.Id || codes[0].Name != "hello" || codes[0].Rev != 1 {
		t.Errorf("CodePackageList: %+v, %v", codes, err)
	}
	info, err := w.CodePackageInfo(code.Id)
	if err != nil || info.Name != "hello" || info.LatestChecksum == "" || info.CreatedAt.IsZero() {
		t.Errorf("CodePackageInfo: %+v, %v", info, err)
	}
	if _, err := w.CodePackageRevisions(code.Id); err != nil {
		t.Errorf("CodePackageRevisions: %v", err)
	}

	// A second upload is revision 2 of the same package.
	code2, err := w.CodePackageZipUpload(zipPath, worker.Code{Name: "hello", Runtime: "sh", FileName: "run.sh"})
	if err != nil || code2.Id != code.Id {
		t.Fatalf("second upload: %+v %v", code2, err)
	}
	if info, err := w.CodePackageInfo(code.Id); err != nil || info.Rev != 2 {
		t.Errorf("after the second upload: %+v %v", info, err)
	}

	// A schedule: its first run is now.
	every, times := 3600, 3
	sids, err := w.Schedule(worker.Schedule{CodeName: "hello", Name: "hourly", Payload: "tick", RunEvery: &every, RunTimes: &times, Label: "sched"})
	if err != nil || len(sids) != 1 {
		t.Fatalf("Schedule: %v %v", sids, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		info, err := w.ScheduleInfo(sids[0])
		if err != nil {
			t.Fatalf("ScheduleInfo: %v", err)
		}
		if info.RunCount == 1 {
			if info.Status != "scheduled" || info.CodeName != "hello" || info.RunTimes != 3 || info.NextStart.IsZero() || info.LastRunTime.IsZero() {
				t.Errorf("ScheduleInfo = %+v", info)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not run within a minute: %+v", info)
		}
		<-time.After(20 * time.Millisecond)
	}
	scheduled, err := w.FilteredTaskList(worker.TaskListParams{Label: "sched"})
	if err != nil || len(scheduled) != 1 || scheduled[0].ScheduleId != sids[0] {
		t.Fatalf("the schedule's task: %+v %v", scheduled, err)
	}
	if ti := wait(t, w, scheduled[0].Id); ti.Status != "complete" {
		t.Errorf("scheduled task: %+v", ti)
	}
	if list, err := w.ScheduleList(); err != nil || len(list) != 1 || list[0].Id != sids[0] {
		t.Errorf("ScheduleList: %+v %v", list, err)
	}
	if err := w.ScheduleCancel(sids[0]); err != nil {
		t.Fatalf("ScheduleCancel: %v", err)
	}
	if info, _ := w.ScheduleInfo(sids[0]); info.Status != "cancelled" {
		t.Errorf("cancelled schedule: %+v", info)
	}

	// Errors come back as errors with the server's message.
	if _, err := w.TaskQueue(worker.Task{CodeName: "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("queue to an unknown package: %v", err)
	}
	if err := w.CodePackageDelete(code.Id); err != nil {
		t.Fatalf("CodePackageDelete: %v", err)
	}
	if _, err := w.CodePackageInfo(code.Id); err == nil {
		t.Error("the deleted package is still there")
	}

}
