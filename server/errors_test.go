package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
)

// TestErrorHistoryOverHTTP: a task's failed attempts show in its JSON
// ("errors", oldest first, with the worker); a binary lease answer carries
// them only to a client that says it reads them (errors=1), and gives the
// others the same tasks without them, still in binary.
func TestErrorHistoryOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	retries := 5
	var er wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok,
		wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{MaxRetries: &retries}}}}, &er)
	id := er.Tasks[0].ID

	lease := func(worker, accept string) (string, []byte) {
		t.Helper()
		lb, _ := json.Marshal(wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000, WorkerID: worker})
		req, err := http.NewRequestWithContext(testenv.Context(t), "POST", b.ts.URL+"/v1/projects/p/lease", bytes.NewReader(lb))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", accept)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("lease = %s %s", res.Status, data)
		}
		return res.Header.Get("Content-Type"), data
	}
	fail := func(worker, msg string) {
		t.Helper()
		_, data := lease(worker, "application/json")
		var lr wire.LeaseResponse
		if err := json.Unmarshal(data, &lr); err != nil || len(lr.Tasks) != 1 {
			t.Fatalf("lease answer %s: %v", data, err)
		}
		b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: id, LeaseID: lr.Tasks[0].LeaseID, Kind: "retry", Error: msg}}}, nil)
	}
	fail("w1", "first <b>")
	fail("w2", "second")

	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
	var got []string
	for _, e := range task.Errors {
		got = append(got, e.WorkerID+" "+e.Error)
		if e.At.IsZero() {
			t.Errorf("attempt %d has no time", e.Attempt)
		}
	}
	if len(task.Errors) != 2 || task.Errors[0].Attempt != 1 || task.Errors[1].Attempt != 2 ||
		strings.Join(got, "|") != "w1 first <b>|w2 second" || task.ErrorsDropped != 0 {
		t.Fatalf("task errors = %+v (dropped %d), want attempts 1 and 2 by w1 and w2", task.Errors, task.ErrorsDropped)
	}

	// An older client (no errors=1) gets the task in binary, without its
	// history.
	ct, data := lease("w3", wirebin.TasksType+";trace=1, application/json;q=0.5")
	ts, err := wirebin.DecodeTasks(data, "p")
	if ct != wirebin.TasksType || err != nil || len(ts) != 1 || ts[0].Errors != nil {
		t.Fatalf("a client without errors=1 got %s %v %+v, want binary without the history", ct, err, ts)
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: id, LeaseID: ts[0].LeaseID, Kind: "release", NotStarted: true}}}, nil)
	ct, data = lease("w3", wirebin.TasksType+";trace=1;errors=1, application/json;q=0.5")
	ts, err = wirebin.DecodeTasks(data, "p")
	if ct != wirebin.TasksType || err != nil || len(ts) != 1 || len(ts[0].Errors) != 2 || ts[0].Errors[1].Error != "second" {
		t.Fatalf("a client with errors=1 got %s %v %+v, want binary with the history", ct, err, ts)
	}
}
