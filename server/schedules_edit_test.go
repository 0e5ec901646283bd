package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server/api"
)

// TestSchedulePauseResumeUpdate: pause, resume and PATCH over HTTP, with
// their errors: 404 unknown, 409 done or cancelled, 400 bad rule.
func TestSchedulePauseResumeUpdate(t *testing.T) { //nolint:tparallel // the error rows share one server and check its state after them
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	tokB, _ := b.project("b")
	const path = "/v1/projects/p/schedules"
	ctx := context.Background()
	sch := b.srv.API().Schedules()
	var s api.Schedule
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{"id": "tick", "task": map[string]any{"type": "tick", "payload_json": map[string]int{"n": 1}}, "every_ms": 10000}, &s)
	start := *s.NextStart
	if _, err := sch.FireDue(ctx); err != nil {
		t.Fatal(err)
	}

	// Pause: paused, no next run; the scheduler fires nothing.
	b.ok(http.StatusOK, "POST", path+"/tick/pause", tok, nil, &s)
	if s.Status != "paused" || s.NextStart != nil || s.RunCount != 1 {
		t.Fatalf("paused: %+v", s)
	}
	b.ok(http.StatusOK, "POST", path+"/tick/pause", tok, nil, &s) // again: no change
	b.clock.Advance(65 * time.Second)
	if n, err := sch.FireDue(ctx); err != nil || n != 0 {
		t.Fatalf("FireDue while paused: %d, %v", n, err)
	}

	// Resume: the next run from now on, none made up.
	b.ok(http.StatusOK, "POST", path+"/tick/resume", tok, nil, &s)
	if want := start.Add(70 * time.Second); s.Status != "active" || s.NextStart == nil || !s.NextStart.Equal(want) || s.RunCount != 1 || s.MissedRuns != 0 {
		t.Fatalf("resumed: %+v, want next %s", s, want)
	}
	var got api.Schedule
	b.ok(http.StatusOK, "GET", path+"/tick?next_runs=3", tok, nil, &got)
	if len(got.NextRuns) != 3 || !got.NextRuns[0].Equal(*s.NextStart) || got.NextRuns[2].Sub(got.NextRuns[1]) != 10*time.Second {
		t.Errorf("next_runs = %v", got.NextRuns)
	}
	var list api.ScheduleList
	b.ok(http.StatusOK, "GET", path+"?next_runs=2", tok, nil, &list)
	if len(list.Schedules) != 1 || len(list.Schedules[0].NextRuns) != 2 {
		t.Errorf("list with next_runs = %+v", list)
	}
	var plain api.ScheduleList
	b.ok(http.StatusOK, "GET", path, tok, nil, &plain)
	if plain.Schedules[0].NextRuns != nil {
		t.Errorf("next_runs without asking: %v", plain.Schedules[0].NextRuns)
	}

	// PATCH: a cron rule in a zone and a new payload; runs kept.
	b.ok(http.StatusOK, "PATCH", path+"/tick", tok, map[string]any{"cron": "0 9 * * *", "time_zone": "Europe/London",
		"task": map[string]any{"type": "tock", "payload_json": "x", "options": map[string]any{"queue": "q2"}}, "max_runs": 5}, &s)
	if s.ID != "tick" || s.Cron != "0 9 * * *" || s.TimeZone != "Europe/London" || s.EveryMS != 0 || s.Task.Type != "tock" ||
		string(s.Task.Payload) != `"x"` || s.Task.Options.Queue != "q2" || s.MaxRuns != 5 || s.RunCount != 1 || s.Status != "active" ||
		s.NextStart == nil || s.NextStart.In(time.UTC).Minute() != 0 {
		t.Fatalf("patched: %+v", s)
	}
	// Back to an interval; max_runs null removes the cap, end_at sets one.
	end := b.clock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	b.ok(http.StatusOK, "PATCH", path+"/tick", tok, `{"every_ms":60000,"max_runs":null,"end_at":"`+end.Format(time.RFC3339)+`"}`, &s)
	if s.Cron != "" || s.TimeZone != "" || s.EveryMS != 60000 || s.MaxRuns != 0 || s.EndAt == nil || !s.EndAt.Equal(end) || s.Task.Type != "tock" {
		t.Fatalf("patched to an interval: %+v", s)
	}
	b.ok(http.StatusOK, "PATCH", path+"/tick", tok, `{"end_at":null}`, &s)
	if s.EndAt != nil {
		t.Errorf("end_at null left %v", s.EndAt)
	}
	version := s.UpdatedAt
	b.ok(http.StatusOK, "PATCH", path+"/tick", tok, `{}`, &s)
	if !s.UpdatedAt.Equal(*version) {
		t.Errorf("an empty PATCH changed the schedule")
	}
	// A paused schedule stays paused through a PATCH.
	b.ok(http.StatusOK, "POST", path+"/tick/pause", tok, nil, &s)
	b.ok(http.StatusOK, "PATCH", path+"/tick", tok, `{"every_ms":120000}`, &s)
	if s.Status != "paused" || s.NextStart != nil || s.EveryMS != 120000 {
		t.Errorf("patched while paused: %+v", s)
	}

	// Errors.
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{"id": "once", "task": map[string]any{"type": "t"}, "every_ms": 1000, "max_runs": 1}, nil)
	if _, err := sch.FireDue(ctx); err != nil {
		t.Fatal(err)
	}
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{"id": "gone", "task": map[string]any{"type": "t"}, "every_ms": 1000}, nil)
	b.ok(http.StatusOK, "POST", path+"/gone/cancel", tok, nil, nil)
	b.ok(http.StatusOK, "GET", path+"/tick", tok, nil, &s)
	before := *s.UpdatedAt
	for _, tc := range []struct {
		name, method, path, body, code, msg string
	}{
		{"pause unknown", "POST", path + "/nope/pause", ``, wire.CodeNotFound, ""},
		{"resume unknown", "POST", path + "/nope/resume", ``, wire.CodeNotFound, ""},
		{"patch unknown", "PATCH", path + "/nope", `{"every_ms":1000}`, wire.CodeNotFound, ""},
		{"pause another project's", "POST", "/v1/projects/b/schedules/x/pause", ``, wire.CodeNotFound, ""},
		{"pause done", "POST", path + "/once/pause", ``, wire.CodeInvalidState, "done"},
		{"resume done", "POST", path + "/once/resume", ``, wire.CodeInvalidState, "done"},
		{"patch done", "PATCH", path + "/once", `{"every_ms":2000}`, wire.CodeInvalidState, "done"},
		{"pause cancelled", "POST", path + "/gone/pause", ``, wire.CodeInvalidState, "cancelled"},
		{"resume cancelled", "POST", path + "/gone/resume", ``, wire.CodeInvalidState, "cancelled"},
		{"patch cancelled", "PATCH", path + "/gone", `{"every_ms":2000}`, wire.CodeInvalidState, "cancelled"},
		{"bad cron", "PATCH", path + "/tick", `{"cron":"61 * * * *"}`, wire.CodeInvalidOption, ""},
		{"cron and every", "PATCH", path + "/tick", `{"cron":"@daily","every_ms":1000}`, wire.CodeInvalidOption, "not both"},
		{"zone on an interval", "PATCH", path + "/tick", `{"time_zone":"Europe/London"}`, wire.CodeInvalidOption, ""},
		{"unknown zone", "PATCH", path + "/tick", `{"cron":"@daily","time_zone":"Mars/Base"}`, wire.CodeInvalidOption, ""},
		{"every below 1 s", "PATCH", path + "/tick", `{"every_ms":500}`, wire.CodeInvalidOption, ""},
		{"max runs zero", "PATCH", path + "/tick", `{"max_runs":0}`, wire.CodeInvalidOption, "null"},
		{"max runs made", "PATCH", path + "/tick", `{"max_runs":1}`, wire.CodeInvalidOption, "runs already"},
		{"end in the past", "PATCH", path + "/tick", `{"end_at":"2001-01-01T00:00:00Z"}`, wire.CodeInvalidOption, ""},
		{"task without type", "PATCH", path + "/tick", `{"task":{}}`, wire.CodeInvalidName, ""},
		{"task id", "PATCH", path + "/tick", `{"task":{"type":"t","options":{"id":"x"}}}`, wire.CodeInvalidOption, ""},
		{"id in body", "PATCH", path + "/tick", `{"id":"other"}`, wire.CodeBadRequest, ""},
		{"status in body", "PATCH", path + "/tick", `{"status":"active"}`, wire.CodeBadRequest, ""},
		{"malformed", "PATCH", path + "/tick", `{`, wire.CodeBadRequest, ""},
		{"no body", "PATCH", path + "/tick", ``, wire.CodeBadRequest, ""},
		{"max runs a string", "PATCH", path + "/tick", `{"max_runs":"5"}`, wire.CodeBadRequest, ""},
		{"body on pause", "POST", path + "/tick/pause", `{"x":1}`, wire.CodeBadRequest, ""},
		{"bad id", "POST", path + "/a%2Fb/pause", ``, wire.CodeInvalidName, ""},
		{"GET pause", "GET", path + "/tick/pause", ``, wire.CodeMethodNotAllowed, ""},
		{"next_runs too many", "GET", path + "/tick?next_runs=101", ``, wire.CodeInvalidOption, ""},
		{"next_runs not a number", "GET", path + "?next_runs=x", ``, wire.CodeBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.t = t
			token := tok
			if strings.Contains(tc.path, "/projects/b/") {
				token = tokB
				tc.path = strings.Replace(tc.path, "/projects/b/", "/projects/p/", 1)
			}
			msg := b.fail(tc.code, tc.method, tc.path, token, tc.body)
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not say %q", msg, tc.msg)
			}
		})
	}
	b.t = t
	b.ok(http.StatusOK, "GET", path+"/tick", tok, nil, &s)
	if !s.UpdatedAt.Equal(before) || s.EveryMS != 120000 || s.Status != "paused" {
		t.Errorf("the failed calls changed the schedule: %+v", s)
	}
}
