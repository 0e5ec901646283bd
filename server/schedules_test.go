package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/store"
)

func TestSchedulesOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	const path = "/v1/projects/p/schedules"
	two, timeout := 2, int64(60000)
	var s api.Schedule
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{
		"id":   "nightly",
		"task": wire.TaskRequest{Type: "report", Payload: []byte("hi"), Options: &wire.TaskOptions{Queue: "q", MaxRetries: &two, TimeoutMS: &timeout}},
		"cron": "30 2 * * *", "time_zone": "America/Los_Angeles", "max_runs": 3,
	}, &s)
	if s.ID != "nightly" || s.Project != "p" || s.Status != "active" || s.RunCount != 0 || s.NextStart == nil || s.LastRunTime != nil ||
		s.Task.Type != "report" || string(s.Task.Payload) != "hi" || s.Task.Options.Queue != "q" || *s.Task.Options.MaxRetries != 2 || *s.Task.Options.TimeoutMS != timeout || s.MaxRuns != 3 {
		raw, _ := json.Marshal(s)
		t.Fatalf("created %s", raw)
	}
	// 02:30 in Los Angeles, after the fake clock's start.
	if got := s.NextStart.In(time.UTC); got.Hour() != 9 || got.Minute() != 30 || !got.After(b.clock.Now()) {
		t.Errorf("next_start = %s, want 02:30 PDT", s.NextStart)
	}
	var e api.Schedule
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{"task": map[string]any{"type": "tick"}, "every_ms": 1000}, &e)
	if e.ID == "" || e.EveryMS != 1000 || e.Cron != "" || !e.NextStart.Equal(b.clock.Now()) {
		t.Errorf("interval schedule %+v", e)
	}
	var list api.ScheduleList
	b.ok(http.StatusOK, "GET", path, tok, nil, &list)
	if len(list.Schedules) != 2 {
		t.Fatalf("list = %+v", list)
	}

	// The server's scheduler fires the interval schedule once per run time.
	sch := b.srv.API().Schedules()
	for range 3 {
		if _, err := sch.FireDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.clock.Advance(time.Second)
	}
	b.ok(http.StatusOK, "GET", path+"/"+e.ID, tok, nil, &e)
	if e.RunCount != 3 || e.LastRunTime == nil || e.LastTaskID == "" {
		t.Errorf("after three seconds: %+v", e)
	}
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+e.LastTaskID, tok, nil, &task)
	if task.Type != "tick" {
		t.Errorf("the run's task: %+v", task)
	}

	b.ok(http.StatusOK, "POST", path+"/"+e.ID+"/cancel", tok, nil, &e)
	if e.Status != "cancelled" || e.NextStart != nil {
		t.Errorf("cancelled: %+v", e)
	}
	b.ok(http.StatusNoContent, "DELETE", path+"/nightly", tok, nil, nil)
	b.fail(wire.CodeNotFound, "GET", path+"/nightly", tok, nil)
	b.fail(wire.CodeNotFound, "POST", path+"/nightly/cancel", tok, nil)
	b.fail(wire.CodeNotFound, "DELETE", path+"/nightly", tok, nil)
	b.ok(http.StatusOK, "GET", path, tok, nil, &list)
	if len(list.Schedules) != 1 || list.Schedules[0].ID != e.ID {
		t.Errorf("list after delete = %+v", list)
	}
}

func TestSchedulesBadInput(t *testing.T) { //nolint:tparallel // the rows share one server and the test checks after them that nothing changed: they run in order
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	tokB, _ := b.project("b")
	var sb api.Schedule
	b.ok(http.StatusCreated, "POST", "/v1/projects/b/schedules", tokB, map[string]any{"id": "theirs", "task": map[string]any{"type": "t"}, "every_ms": 60000}, &sb)
	const path = "/v1/projects/p/schedules"
	task := `"task":{"type":"t"}`
	for _, tc := range []struct {
		name, method, path, body, code string
	}{
		{"malformed", "POST", path, `{`, wire.CodeBadRequest},
		{"unknown field", "POST", path, `{` + task + `,"every_ms":1000,"run_every":60}`, wire.CodeBadRequest},
		{"duplicate key", "POST", path, `{` + task + `,"every_ms":1000,"every_ms":2000}`, wire.CodeBadRequest},
		{"no rule", "POST", path, `{` + task + `}`, wire.CodeInvalidOption},
		{"two rules", "POST", path, `{` + task + `,"every_ms":1000,"cron":"* * * * *"}`, wire.CodeInvalidOption},
		{"bad cron", "POST", path, `{` + task + `,"cron":"* * *"}`, wire.CodeInvalidOption},
		{"step zero", "POST", path, `{` + task + `,"cron":"*/0 * * * *"}`, wire.CodeInvalidOption},
		{"out of range", "POST", path, `{` + task + `,"cron":"61 * * * *"}`, wire.CodeInvalidOption},
		{"never fires", "POST", path, `{` + task + `,"cron":"0 0 30 2 *"}`, wire.CodeInvalidOption},
		{"reboot", "POST", path, `{` + task + `,"cron":"@reboot"}`, wire.CodeInvalidOption},
		{"TZ prefix", "POST", path, `{` + task + `,"cron":"TZ=UTC 0 0 * * *"}`, wire.CodeInvalidOption},
		{"10 KB cron", "POST", path, `{` + task + `,"cron":"` + strings.Repeat("1 ", 5<<10) + `"}`, wire.CodeInvalidOption},
		{"unknown zone", "POST", path, `{` + task + `,"cron":"@daily","time_zone":"Mars/Base"}`, wire.CodeInvalidOption},
		{"every below 1 s", "POST", path, `{` + task + `,"every_ms":500}`, wire.CodeInvalidOption},
		{"every zero", "POST", path, `{` + task + `,"every_ms":0}`, wire.CodeInvalidOption},
		{"every overflow", "POST", path, `{` + task + `,"every_ms":9223372036854775807}`, wire.CodeInvalidOption},
		{"every too large for JSON", "POST", path, `{` + task + `,"every_ms":92233720368547758070}`, wire.CodeBadRequest},
		{"end before start", "POST", path, `{` + task + `,"every_ms":1000,"start_at":"2040-01-02T00:00:00Z","end_at":"2040-01-01T00:00:00Z"}`, wire.CodeInvalidOption},
		{"max runs zero", "POST", path, `{` + task + `,"every_ms":1000,"max_runs":0}`, wire.CodeInvalidOption},
		{"max runs negative", "POST", path, `{` + task + `,"every_ms":1000,"max_runs":-1}`, wire.CodeInvalidOption},
		{"bad type", "POST", path, `{"task":{"type":"a b"},"every_ms":1000}`, wire.CodeInvalidName},
		{"task id", "POST", path, `{"task":{"type":"t","options":{"id":"x"}},"every_ms":1000}`, wire.CodeInvalidOption},
		{"timeout negative", "POST", path, `{"task":{"type":"t","options":{"timeout_ms":-1}},"every_ms":1000}`, wire.CodeInvalidOption},
		{"bad schedule id", "POST", path, `{"id":"a/b",` + task + `,"every_ms":1000}`, wire.CodeInvalidName},
		{"payload too large", "POST", path, `{"task":{"type":"t","payload":"` + strings.Repeat("A", 44<<10) + `"},"every_ms":1000}`, wire.CodePayloadTooLarge},
		{"existing id", "POST", "/v1/projects/b/schedules", `{"id":"theirs",` + task + `,"every_ms":60000}`, wire.CodeConflict},
		{"another project", "POST", "/v1/projects/b/schedules", `{` + task + `,"every_ms":1000}`, wire.CodeNotFound},
		{"another project's list", "GET", "/v1/projects/b/schedules", ``, wire.CodeNotFound},
		{"another project's schedule", "GET", "/v1/projects/b/schedules/theirs", ``, wire.CodeNotFound},
		{"another project's schedule by id", "GET", path + "/theirs", ``, wire.CodeNotFound},
		{"cancel another project's", "POST", "/v1/projects/b/schedules/theirs/cancel", ``, wire.CodeNotFound},
		{"delete another project's", "DELETE", "/v1/projects/b/schedules/theirs", ``, wire.CodeNotFound},
		{"invalid id in path", "GET", path + "/a%2Fb", ``, wire.CodeInvalidName},
		{"long id in path", "GET", path + "/" + strings.Repeat("x", 201), ``, wire.CodeInvalidName},
		{"body on cancel", "POST", path + "/x/cancel", `{"x":1}`, wire.CodeBadRequest},
		{"unknown query", "GET", path + "?page=2", ``, wire.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tok
			if tc.name == "existing id" {
				token = tokB
			}
			b.t = t
			b.fail(tc.code, tc.method, tc.path, token, tc.body)
		})
	}
	b.t = t
	// Nothing was written to p: no schedule, no task, no index entry.
	var list api.ScheduleList
	b.ok(http.StatusOK, "GET", path, tok, nil, &list)
	if len(list.Schedules) != 0 || b.counts("p") != 0 {
		t.Errorf("project p has %d schedules and %d tasks after bad input", len(list.Schedules), b.counts("p"))
	}
	res, err := b.st.MetaList(context.Background(), store.MetaListParams{Namespace: "p", Prefix: "schedule"})
	if err != nil || len(res.Items) != 0 {
		t.Errorf("meta records of p: %+v %v", res.Items, err)
	}
	res, err = b.st.MetaList(context.Background(), store.MetaListParams{Namespace: api.SystemNamespace, Prefix: "schedule-ns/"})
	if err != nil || len(res.Items) != 1 || res.Items[0].Key != "schedule-ns/b" {
		t.Errorf("schedule index: %+v %v, want b only", res.Items, err)
	}
	// B's schedule is untouched.
	b.ok(http.StatusOK, "GET", "/v1/projects/b/schedules/theirs", tokB, nil, &sb)
	if sb.Status != "active" {
		t.Errorf("B's schedule: %+v", sb)
	}
}
