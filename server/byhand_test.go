package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
)

// TestPayloadJSON: a task's payload can be sent as JSON (payload_json) on
// an enqueue and a schedule, and becomes the compact text of that JSON;
// payload with a JSON object says to use payload_json (it said "a JSON
// object cannot be a []uint8"), and payload with payload_json is refused
// with conflicting_fields naming payload_json.
func TestPayloadJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	var res wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok,
		`{"tasks":[{"type":"email","payload_json":{"to": "a@example.com", "n": [1, 2]}},{"type":"s","payload_json":"hi"},{"type":"b","payload":"aGk="}]}`, &res)
	want := []string{`{"to":"a@example.com","n":[1,2]}`, `"hi"`, "hi"}
	if len(res.Tasks) != len(want) {
		t.Fatalf("enqueue: %+v", res)
	}
	for i, it := range res.Tasks {
		if it.Error != nil {
			t.Fatalf("task %d: %+v", i, it.Error)
		}
		var task wire.Task
		b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+it.ID, tok, nil, &task)
		if string(task.Payload) != want[i] {
			t.Errorf("task %d: payload %q, want %q", i, task.Payload, want[i])
		}
	}

	// Each problem fails its own task with a precise error.
	for _, tc := range []struct {
		name, task, code, field, says string
	}{
		{"both", `{"type":"t","payload":"aGk=","payload_json":{"a":1}}`, wire.CodeConflictingFields, "payload_json", "both given"},
		{"object as payload", `{"type":"t","payload":{"a":1}}`, wire.CodeBadRequest, "tasks.payload", "payload_json"},
	} {
		status, body := b.do("POST", "/v1/projects/p/tasks", tok, `{"tasks":[`+tc.task+`]}`)
		var e *wire.Error
		if status == http.StatusOK {
			var er wire.EnqueueResponse
			if err := json.Unmarshal(body, &er); err != nil || len(er.Tasks) != 1 {
				t.Fatalf("%s: %d %s", tc.name, status, body)
			}
			e = er.Tasks[0].Error
		} else {
			var eb wire.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("%s: %d %s", tc.name, status, body)
			}
			e = eb.Error
		}
		if e == nil || e.Code != tc.code || e.Field != tc.field || !strings.Contains(e.Message, tc.says) {
			t.Errorf("%s: %d %s; want code %s, field %s, a message with %q", tc.name, status, body, tc.code, tc.field, tc.says)
		}
	}

	// A schedule's task takes payload_json too.
	var s struct {
		Task wire.TaskRequest `json:"task"`
	}
	b.ok(http.StatusCreated, "POST", "/v1/projects/p/schedules", tok,
		`{"id":"s1","task":{"type":"t","payload_json":{"x": true}},"every_ms":60000}`, &s)
	if string(s.Task.Payload) != `{"x":true}` {
		t.Errorf("schedule's payload %q, want {\"x\":true}", s.Task.Payload)
	}
	msg := b.fail(wire.CodeConflictingFields, "POST", "/v1/projects/p/schedules", tok,
		`{"id":"s2","task":{"type":"t","payload":"aGk=","payload_json":1},"every_ms":60000}`)
	if !strings.Contains(msg, "payload_json") {
		t.Errorf("schedule with both payloads: %q", msg)
	}
}

// TestReadyzWithoutToken: a load balancer, which has no token, gets 200
// {"status":"ok"} from /readyz and nothing more (it got 401); a token that
// is given is still checked.
func TestReadyzWithoutToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.do("GET", "/readyz", "", nil)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Errorf("/readyz without a token = %d %s, want 200 {\"status\":\"ok\"}", status, body)
	}
	b.ok(http.StatusOK, "GET", "/readyz", adminToken, nil, nil)
	b.fail(wire.CodeUnauthorized, "GET", "/readyz", "kiln_not-a-token-0123456789abcdefghij", nil)
}
