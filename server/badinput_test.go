package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
)

// TestBadInput sends malformed and invalid requests: each gets its
// catalogue error, and the store is left unchanged.
func TestBadInput(t *testing.T) { //nolint:tparallel // the rows share one server and the test checks after them that nothing changed: they run in order
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxBodyBytes = 64 << 10 })
	tok, _ := b.project("p")
	tokB, _ := b.project("b")
	idB := b.enqueue("b", tokB, wire.TaskRequest{Type: "t"})
	const tasks = "/v1/projects/p/tasks"
	for _, tc := range []struct {
		name, method, path, body, code string
	}{
		{"malformed", "POST", tasks, `{`, wire.CodeBadRequest},
		{"not an object", "POST", tasks, `[]`, wire.CodeBadRequest},
		{"null", "POST", tasks, `null`, wire.CodeBadRequest},
		{"empty", "POST", tasks, ``, wire.CodeBadRequest},
		{"trailing garbage", "POST", tasks, `{"tasks":[{"type":"t"}]}x`, wire.CodeBadRequest},
		{"two objects", "POST", tasks, `{"tasks":[{"type":"t"}]}{}`, wire.CodeBadRequest},
		{"duplicate key", "POST", tasks, `{"tasks":[{"type":"t","type":"u"}]}`, wire.CodeBadRequest},
		{"duplicate key by case", "POST", tasks, `{"tasks":[{"type":"t","Type":"u"}]}`, wire.CodeBadRequest},
		{"duplicate option", "POST", tasks, `{"tasks":[{"type":"t","options":{"queue":"a","queue":"b"}}]}`, wire.CodeBadRequest},
		{"unknown field", "POST", tasks, `{"tasks":[{"type":"t","retry":3}]}`, wire.CodeBadRequest},
		{"unknown top-level field", "POST", tasks, `{"tasks":[{"type":"t"}],"x":1}`, wire.CodeBadRequest},
		{"wrong type", "POST", tasks, `{"tasks":[{"type":"t","options":{"max_retries":"3"}}]}`, wire.CodeBadRequest},
		{"payload not base64", "POST", tasks, `{"tasks":[{"type":"t","payload":"%%%"}]}`, wire.CodeBadRequest},
		{"deep nesting", "POST", tasks, strings.Repeat("[", 10000), wire.CodeBadRequest},
		{"deep object", "POST", tasks, `{"tasks":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 101), wire.CodeBadRequest},
		{"oversize body", "POST", tasks, `{"tasks":[{"type":"t","payload":"` + strings.Repeat("A", 70<<10) + `"}]}`, wire.CodeBodyTooLarge},
		{"no tasks", "POST", tasks, `{"tasks":[]}`, wire.CodeInvalidOption},
		{"tasks null", "POST", tasks, `{"tasks":null}`, wire.CodeInvalidOption},
		{"invalid project name", "POST", "/v1/projects/a%20b/tasks", `{"tasks":[{"type":"t"}]}`, wire.CodeInvalidName},
		{"unknown project", "POST", "/v1/projects/nope/tasks", `{"tasks":[{"type":"t"}]}`, wire.CodeNotFound},
		{"another project", "POST", "/v1/projects/b/tasks", `{"tasks":[{"type":"t"}]}`, wire.CodeNotFound},
		{"another project's task", "POST", tasks + "/" + idB + "/cancel", ``, wire.CodeNotFound},
		{"unknown task", "GET", tasks + "/nope", ``, wire.CodeNotFound},
		{"invalid task id", "GET", tasks + "/a%2F..%2Fb", ``, wire.CodeInvalidName},
		{"long task id", "GET", tasks + "/" + strings.Repeat("x", 300), ``, wire.CodeInvalidName},
		{"body on a bodiless route", "POST", tasks + "/" + idB + "/retry", `{"x":1}`, wire.CodeBadRequest},
		{"unknown query parameter", "GET", tasks + "?oauth=secret", ``, wire.CodeBadRequest},
		{"repeated query parameter", "GET", tasks + "?limit=1&limit=2", ``, wire.CodeBadRequest},
		{"limit too large", "GET", tasks + "?limit=1001", ``, wire.CodeInvalidOption},
		{"limit not a number", "GET", tasks + "?limit=ten", ``, wire.CodeBadRequest},
		{"unknown state", "GET", tasks + "?state=done", ``, wire.CodeInvalidOption},
		{"bad time", "GET", tasks + "?created_after=yesterday", ``, wire.CodeBadRequest},
		{"result wait too long", "GET", tasks + "/x/result?wait_ms=60001", ``, wire.CodeInvalidOption},
		{"negative wait", "POST", "/v1/projects/p/lease", `{"queues":["q"],"max":1,"duration_ms":1000,"wait_ms":-1}`, wire.CodeInvalidOption},
		{"lease max 0", "POST", "/v1/projects/p/lease", `{"queues":["q"],"max":0,"duration_ms":1000}`, wire.CodeInvalidOption},
		{"lease bad queue", "POST", "/v1/projects/p/lease", `{"queues":["a/b"],"max":1,"duration_ms":1000}`, wire.CodeInvalidName},
		{"report unknown kind", "POST", "/v1/projects/p/report", `{"outcomes":[{"id":"x","lease_id":"1","kind":"done"}]}`, wire.CodeInvalidOption},
		{"lease id not a string", "POST", "/v1/projects/p/report", `{"outcomes":[{"id":"x","lease_id":1,"kind":"dead"}]}`, wire.CodeBadRequest},
		{"invalid queue to pause", "POST", "/v1/projects/p/queues/a%20b/pause", ``, wire.CodeInvalidName},
		{"invalid project id", "POST", "/v1/projects", `{"id":"../x"}`, wire.CodeInvalidName},
		{"reserved project id", "POST", "/v1/projects", `{"id":"_kiln"}`, wire.CodeInvalidName},
		{"existing project", "POST", "/v1/projects", `{"id":"p"}`, wire.CodeConflict},
		{"negative sweep limit", "POST", "/v1/admin/sweep", `{"limit":-1}`, wire.CodeInvalidOption},
		{"unknown token id", "DELETE", "/v1/projects/p/tokens/tok_nope", ``, wire.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tok
			if strings.HasPrefix(tc.path, "/v1/projects?") || tc.path == "/v1/projects" || strings.HasPrefix(tc.path, "/v1/admin") {
				token = adminToken
			}
			b.t = t
			b.fail(tc.code, tc.method, tc.path, token, tc.body)
		})
	}
	b.t = t

	// Per-task problems of a batch: each item has its catalogue error.
	neg := -1
	reqs := []wire.TaskRequest{
		{Type: "bad type"},
		{Type: "t", Options: &wire.TaskOptions{Priority: -1}},
		{Type: "t", Options: &wire.TaskOptions{MaxRetries: &neg}},
		{Type: "t", Options: &wire.TaskOptions{ProcessInMS: -5}},
		{Type: "t", Options: &wire.TaskOptions{UniqueKey: "k"}},
		{Type: "t", Options: &wire.TaskOptions{Queue: strings.Repeat("q", 256)}},
		{Type: "t", Payload: bytes.Repeat([]byte("x"), 1<<20+1)},
		{Type: "t", Options: &wire.TaskOptions{ID: idB}}, // another project's id is free here: no oracle
	}
	want := []string{wire.CodeInvalidName, wire.CodeInvalidOption, wire.CodeInvalidOption, wire.CodeInvalidOption, wire.CodeInvalidOption, wire.CodeInvalidName, wire.CodePayloadTooLarge, ""}
	b2 := setup(t) // the default body cap, so that the large payload reaches validation
	tok2, _ := b2.project("p")
	var res wire.EnqueueResponse
	b2.ok(http.StatusOK, "POST", tasks, tok2, wire.EnqueueRequest{Tasks: reqs[:len(reqs)-1]}, &res)
	for i, it := range res.Tasks {
		if it.Error == nil || it.Error.Code != want[i] {
			t.Errorf("task %d: error %+v, want %s", i, it.Error, want[i])
		}
	}
	if n := b2.counts("p"); n != 0 {
		t.Errorf("the store holds %d tasks after invalid enqueues, want 0", n)
	}

	// Nothing changed: p has no task and no paused queue, b has its task.
	var q wire.QueueList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/queues", tok, nil, &q)
	if n := b.counts("p"); n != 0 || len(q.Queues) != 0 {
		t.Errorf("project p holds %d tasks and queues %+v after bad input, want none", n, q.Queues)
	}
	var task wire.Task
	b.ok(http.StatusOK, "GET", tasks[:len(tasks)-len("p/tasks")]+"b/tasks/"+idB, tokB, nil, &task)
	if task.State != "pending" || b.counts("b") != 1 {
		t.Errorf("project b's task is %s (%d tasks), want pending (1)", task.State, b.counts("b"))
	}
	var ps wire.ProjectList
	b.ok(http.StatusOK, "GET", "/v1/projects", adminToken, nil, &ps)
	if len(ps.Projects) != 3 { // default, p, b
		raw, _ := json.Marshal(ps)
		t.Errorf("projects = %s, want default, p and b", raw)
	}
}
