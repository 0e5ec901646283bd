package ironapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
)

// TestCodeTaskRetriesByEveryDoor: a code package's task retries as its
// package says (retries, retries_delay) whichever door it entered. Queued
// natively (/v1, as kiln enqueue does; with the max_retries store/remote
// always sends; or by a library client on the store itself) a package
// with retries 0 ran 26 times with no pause; now it runs once. A /v1 task
// without a queue takes the package's (it sat in "default" for ever). A package
// with retries runs retries+1 times, with retries_delay between the runs,
// or kiln's default backoff (about 1 s, then 2 s, ...) without one.
func TestCodeTaskRetriesByEveryDoor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	failing := testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo attempt; exit 3\n")})
	b.mustUpload(map[string]any{"name": "fail", "file_name": "run.sh", "runtime": "sh"}, failing)
	b.mustUpload(map[string]any{"name": "twice", "file_name": "run.sh", "runtime": "sh", "retries": 2, "retries_delay": 1}, failing)
	b.mustUpload(map[string]any{"name": "backoff", "file_name": "run.sh", "runtime": "sh", "retries": 1}, failing)

	native := func(typ string, opts *wire.TaskOptions) string {
		t.Helper()
		body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: typ, Payload: []byte("{}"), Options: opts}}})
		status, resp := b.ks.Do(t, http.MethodPost, "/v1/projects/"+project+"/tasks",
			http.Header{"Authorization": {"Bearer " + b.token}, "Content-Type": {"application/json"}}, bytes.NewReader(body))
		var er wire.EnqueueResponse
		if status != http.StatusOK || json.Unmarshal(resp, &er) != nil || len(er.Tasks) != 1 || er.Tasks[0].Error != nil {
			t.Fatalf("enqueue %s: %d %s", typ, status, resp)
		}
		return er.Tasks[0].ID
	}
	get := func(id string) wire.Task {
		t.Helper()
		status, resp := b.ks.Do(t, http.MethodGet, "/v1/projects/"+project+"/tasks/"+id,
			http.Header{"Authorization": {"Bearer " + b.token}}, nil)
		var task wire.Task
		if status != http.StatusOK || json.Unmarshal(resp, &task) != nil {
			t.Fatalf("get %s: %d %s", id, status, resp)
		}
		return task
	}
	client, err := kiln.NewClient(b.st, &kiln.ClientConfig{Namespace: project})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := client.Enqueue(t.Context(), "code:fail", []byte("{}"), &kiln.TaskOptions{Queue: "code:fail"})
	if err != nil {
		t.Fatal(err)
	}

	once := map[string]string{
		"/v1 without max_retries":   native("code:fail", nil),
		"/v1 with max_retries 25":   native("code:fail", &wire.TaskOptions{MaxRetries: new(25)}),
		"a library client directly": direct.ID(),
		"/2":                        b.queue(map[string]any{"code_name": "fail", "payload": "{}"})[0],
	}
	for door, id := range once {
		if ti := b.wait(id); ti.Status != "error" || ti.RunTimes != 1 {
			t.Errorf("retries 0, queued by %s: status %s, run_times %d; want error after 1 run", door, ti.Status, ti.RunTimes)
		}
	}
	// Queued by /v1 without a queue, it went to "default", where no
	// runner looks: it takes its package's queue, as kiln enqueue gives it.
	if tk := get(once["/v1 without max_retries"]); tk.MaxRetries != 0 || tk.Queue != "code:fail" {
		t.Errorf("a task of a package with retries 0 queued by /v1: max_retries %d, queue %q; want 0 and code:fail", tk.MaxRetries, tk.Queue)
	}

	twice := native("code:twice", nil)
	ti := b.wait(twice)
	if ti.Status != "error" || ti.RunTimes != 3 {
		t.Errorf("retries 2 by /v1: status %s, run_times %d; want error after 3 runs", ti.Status, ti.RunTimes)
	}
	if d := ti.EndTime.Sub(ti.CreatedAt); d < 2*time.Second {
		t.Errorf("retries 2 with retries_delay 1 by /v1: the three runs took %s, want at least 2 s of pauses", d)
	}
	if n := get(twice).MaxRetries; n != 2 {
		t.Errorf("retries 2 by /v1: max_retries %d, want 2", n)
	}

	// No retries_delay: kiln's default backoff, 1 s ± 25 % before the
	// second run.
	for door, id := range map[string]string{
		"/v1": native("code:backoff", nil),
		"/2":  b.queue(map[string]any{"code_name": "backoff", "payload": "{}"})[0],
	} {
		ti := b.wait(id)
		if ti.Status != "error" || ti.RunTimes != 2 {
			t.Errorf("retries 1 by %s: status %s, run_times %d; want error after 2 runs", door, ti.Status, ti.RunTimes)
		}
		if d := ti.EndTime.Sub(ti.CreatedAt); d < 750*time.Millisecond {
			t.Errorf("retries 1 without retries_delay by %s: two runs in %s; want a pause of the default backoff (at least 750 ms)", door, d)
		}
	}
}
