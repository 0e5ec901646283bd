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

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestTraceParentOverHTTP: a task takes its trace context from its
// options (checked) or from the request's traceparent header, answers
// carry it, and a lease answer holding it goes in binary only to a client
// that says it reads it (trace=1); others get JSON.
func TestTraceParentOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	var bad wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok,
		wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{TraceParent: "00-nope"}}}}, &bad)
	if e := bad.Tasks[0].Error; e == nil || e.Code != wire.CodeInvalidOption || e.Field != "traceparent" {
		t.Fatalf("a bad traceparent gives %+v, want invalid_option on traceparent", bad.Tasks[0])
	}

	body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t"}}})
	status, resp := b.ts.Do(t, "POST", "/v1/projects/p/tasks", http.Header{
		"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}, "Traceparent": {testTraceParent},
	}, bytes.NewReader(body))
	var er wire.EnqueueResponse
	if status != http.StatusOK || json.Unmarshal(resp, &er) != nil || len(er.Tasks) != 1 {
		t.Fatalf("enqueue = %d %s", status, resp)
	}
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+er.Tasks[0].ID, tok, nil, &task)
	if task.TraceParent != testTraceParent {
		t.Fatalf("task traceparent = %q, want the header's", task.TraceParent)
	}

	lease := func(accept string) (string, []byte) {
		t.Helper()
		lb, _ := json.Marshal(wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000})
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
	ct, data := lease(wirebin.TasksType + ", application/json;q=0.5")
	if !strings.HasPrefix(ct, "application/json") || !bytes.Contains(data, []byte(testTraceParent)) {
		t.Fatalf("a client without trace=1 got %s %s, want JSON with the trace context", ct, data)
	}
	var lr wire.LeaseResponse
	if err := json.Unmarshal(data, &lr); err != nil || len(lr.Tasks) != 1 {
		t.Fatalf("lease answer %s: %v", data, err)
	}
	// Hand it back, then lease again as a client that reads traces.
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: lr.Tasks[0].ID, LeaseID: lr.Tasks[0].LeaseID, Kind: "release", NotStarted: true}}}, nil)
	ct, data = lease(wirebin.TasksType + ";trace=1, application/json;q=0.5")
	if ct != wirebin.TasksType {
		t.Fatalf("a client with trace=1 got %s, want %s", ct, wirebin.TasksType)
	}
	ts, err := wirebin.DecodeTasks(data, "p")
	if err != nil || len(ts) != 1 || ts[0].TraceParent != testTraceParent {
		t.Fatalf("binary lease answer: %v %+v", err, ts)
	}
}
