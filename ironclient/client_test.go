package ironclient_test

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/ironclient"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

// startServer serves a kiln server with a runner of four processes on an
// embedded store, and returns a client of project "default" with a
// project token.
func startServer(t *testing.T) *ironclient.Client {
	t.Helper()
	srv := kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true, Configure: func(c *server.Config) { c.Runner.Concurrency = 4 }})
	c, err := ironclient.New(ironclient.Config{URL: srv.URL, ProjectID: srv.Project, Token: srv.Token,
		PollMin: 20 * time.Millisecond, PollMax: 200 * time.Millisecond, MaxWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// script is the test package: it prints its payload and, by the payload,
// fails or sleeps.
const script = `p=$(cat "$PAYLOAD_FILE")
echo "payload $p"
case "$p" in
fail) echo oops; exit 3 ;;
sleep) exec sleep 30 ;;
esac
`

func upload(t *testing.T, c *ironclient.Client) {
	t.Helper()
	res, err := c.UploadCode(t.Context(), ironclient.Code{Name: "echo", FileName: "run.sh", Runtime: "sh"},
		bytes.NewReader(testenv.Zip(t, map[string]string{"run.sh": script})))
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" || res.Rev != 1 {
		t.Fatalf("upload = %+v", res)
	}
}

func wait(t *testing.T, c *ironclient.Client, id string) *ironclient.Task {
	t.Helper()
	ti, err := c.WaitForTask(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return ti
}

// TestTasks: queue with options, info, wait, log, a failing task, a
// timeout, cancel of a delayed task, a batch.
func TestTasks(t *testing.T) {
	t.Parallel()
	c := startServer(t)
	upload(t, c)
	ctx := t.Context()

	id, err := c.Queue(ctx, "echo", map[string]int{"x": 1}, ironclient.TaskOptions{Timeout: 90 * time.Second, Priority: ironclient.Priority(2), Label: "l1"})
	if err != nil {
		t.Fatal(err)
	}
	ti, err := c.TaskInfo(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ti.ID != id || ti.CodeName != "echo" || ti.Timeout != 90 || ti.Priority != 2 || ti.Label != "l1" || ti.Payload != `{"x":1}` {
		t.Errorf("task info = %+v", ti)
	}
	if ti = wait(t, c, id); ti.Status != ironclient.StatusComplete || ti.EndTime == nil {
		t.Errorf("finished task = %+v", ti)
	}
	if out, err := c.Log(ctx, id); err != nil || out != "payload {\"x\":1}\n" {
		t.Errorf("log = %q, %v", out, err)
	}

	failed, err := c.Queue(ctx, "echo", "fail", ironclient.TaskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ti = wait(t, c, failed); ti.Status != ironclient.StatusError || !strings.Contains(ti.Msg, "exit status 3") {
		t.Errorf("failed task = %+v", ti)
	}

	slow, err := c.Queue(ctx, "echo", "sleep", ironclient.TaskOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if ti = wait(t, c, slow); ti.Status != ironclient.StatusTimeout {
		t.Errorf("timed-out task = %+v", ti)
	}

	delayed, err := c.Queue(ctx, "echo", "later", ironclient.TaskOptions{Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ti, err = c.TaskInfo(ctx, delayed); err != nil || ti.Status != ironclient.StatusQueued || ti.Delay != 3600 {
		t.Errorf("delayed task = %+v, %v", ti, err)
	}
	if err := c.Cancel(ctx, delayed); err != nil {
		t.Fatal(err)
	}
	if ti = wait(t, c, delayed); ti.Status != ironclient.StatusCancelled {
		t.Errorf("cancelled task = %+v", ti)
	}
	var e *ironclient.Error
	if err := c.Cancel(ctx, delayed); !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, "already finished") {
		t.Errorf("second cancel: %v", err)
	}

	batch := make([]ironclient.TaskRequest, 5)
	for i := range batch {
		batch[i] = ironclient.TaskRequest{CodeName: "echo", Payload: []byte{'a' + byte(i)}}
	}
	ids, err := c.QueueBatch(ctx, batch)
	if err != nil || len(ids) != len(batch) {
		t.Fatalf("batch: %v, %v", ids, err)
	}
	for i, id := range ids {
		if ti = wait(t, c, id); ti.Status != ironclient.StatusComplete || ti.Payload != string(rune('a'+i)) {
			t.Errorf("batch task %d = %+v", i, ti)
		}
	}
}

// TestBadInput: the server's message and status come back in *Error, and
// nothing is queued by a batch with one bad task.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := startServer(t)
	upload(t, c)
	ctx := t.Context()
	var e *ironclient.Error
	_, err := c.Queue(ctx, "nope", "", ironclient.TaskOptions{})
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || !strings.Contains(e.Msg, `no code package named "nope"`) || !ironclient.IsNotFound(err) {
		t.Errorf("unknown code: %v", err)
	}
	_, err = c.QueueBatch(ctx, []ironclient.TaskRequest{{CodeName: "echo"}, {CodeName: "echo", TaskOptions: ironclient.TaskOptions{Priority: ironclient.Priority(7)}}})
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, "priority 7") {
		t.Errorf("bad priority: %v", err)
	}
	if _, err := c.Queue(ctx, "echo", "", ironclient.TaskOptions{Timeout: 2 * time.Hour}); !errors.As(err, &e) || !strings.Contains(e.Msg, "timeout") {
		t.Errorf("long timeout: %v", err)
	}
	if _, err := c.TaskInfo(ctx, "nope"); !ironclient.IsNotFound(err) {
		t.Errorf("unknown task: %v", err)
	}
	if _, err := c.Schedule(ctx, "echo", "", ironclient.ScheduleOptions{RunEvery: 30 * time.Second}); !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, "run_every") {
		t.Errorf("short run_every: %v", err)
	}
	if _, err := c.Schedule(ctx, "nope", "", ironclient.ScheduleOptions{}); !ironclient.IsNotFound(err) {
		t.Errorf("schedule of an unknown code: %v", err)
	}
	if _, err := c.UploadCode(ctx, ironclient.Code{Name: "bad", FileName: "run.sh", Runtime: "sh"}, strings.NewReader("not a zip")); !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, "zip") {
		t.Errorf("upload of a bad zip: %v", err)
	}
	if s, err := c.Schedules(ctx); err != nil || len(s) != 0 {
		t.Errorf("bad schedules made some: %+v, %v", s, err)
	}

	bad, err := ironclient.New(ironclient.Config{URL: strings.TrimSuffix(c.BaseURL(), "/2/projects/default"), Token: "kiln_wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.TaskInfo(ctx, "x"); !errors.As(err, &e) || e.Status != http.StatusUnauthorized || strings.Contains(err.Error(), "kiln_wrong") {
		t.Errorf("wrong token: %v", err)
	}
}

// TestSchedule: a schedule runs its task at once, shows its run, and
// cancels.
func TestSchedule(t *testing.T) {
	t.Parallel()
	c := startServer(t)
	upload(t, c)
	ctx := t.Context()
	sid, err := c.Schedule(ctx, "echo", "tick", ironclient.ScheduleOptions{Name: "ticker", RunEvery: time.Hour, RunTimes: 3, Priority: ironclient.Priority(1), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var s *ironclient.Schedule
	kilntest.Eventually(t, "the schedule's first run", func() bool {
		if s, err = c.ScheduleInfo(ctx, sid); err != nil {
			t.Fatal(err)
		}
		return s.RunCount > 0
	})
	if s.Status != "scheduled" || s.RunEvery != 3600 || s.RunTimes != 3 || s.Name != "ticker" || s.Priority != 1 || s.Timeout != 60 || s.NextStart == nil {
		t.Errorf("schedule = %+v", s)
	}
	if err := c.CancelSchedule(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if s, err = c.ScheduleInfo(ctx, sid); err != nil || s.Status != "cancelled" {
		t.Errorf("cancelled schedule = %+v, %v", s, err)
	}
	if _, err := c.ScheduleInfo(ctx, "nope"); !ironclient.IsNotFound(err) {
		t.Errorf("unknown schedule: %v", err)
	}
}

// TestEnv: empty fields come from the IRON_* variables.
func TestEnv(t *testing.T) {
	t.Setenv("IRON_TOKEN", "tok")
	t.Setenv("IRON_PROJECT_ID", "p1")
	t.Setenv("IRON_HOST", "example.test")
	t.Setenv("IRON_SCHEME", "https")
	t.Setenv("IRON_PORT", "8443")
	c, err := ironclient.New(ironclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BaseURL(); got != "https://example.test:8443/2/projects/p1" {
		t.Errorf("BaseURL = %q", got)
	}
	for _, tc := range []struct{ url, host, want string }{
		{"127.0.0.1:9000", "", "http://127.0.0.1:9000/2/projects/p1"},
		{"https://kiln.example/base/", "", "https://kiln.example/base/2/projects/p1"},
		{"", "http://h.example:1234", "http://h.example:1234/2/projects/p1"},
	} {
		t.Setenv("IRON_HOST", tc.host)
		c, err := ironclient.New(ironclient.Config{URL: tc.url})
		if err != nil || c.BaseURL() != tc.want {
			t.Errorf("URL %q, IRON_HOST %q: %v, %v; want %s", tc.url, tc.host, c, err, tc.want)
		}
	}
	if _, err := ironclient.New(ironclient.Config{URL: "ftp://x"}); err == nil {
		t.Error("New with an ftp URL succeeded")
	}
	t.Setenv("IRON_TOKEN", "")
	if _, err := ironclient.New(ironclient.Config{}); err == nil {
		t.Error("New without a token succeeded")
	}
}
