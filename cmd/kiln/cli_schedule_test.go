package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/server/api"
)

// startScheduleServer serves a whole kiln server (with its scheduler, no
// runner) on an embedded store.
func startScheduleServer(t *testing.T) *cliServer {
	t.Helper()
	return &cliServer{url: kilntest.StartServer(t, &kilntest.ServerOptions{Configure: useTestAdminToken}).URL}
}

// useTestAdminToken makes testAdminToken the admin token of a test server.
func useTestAdminToken(c *server.Config) { c.BootstrapToken = testAdminToken }

func scheduleJSON(t *testing.T, s *cliServer, args ...string) api.Schedule {
	t.Helper()
	var out api.Schedule
	if err := json.Unmarshal([]byte(mustKiln(t, s, append(args, "--json")...)), &out); err != nil {
		t.Fatalf("kiln %v: %v", args, err)
	}
	return out
}

// TestScheduleCommands: schedule create (interval and cron), ls as a table
// and as JSON, get, a run enqueued by the server's scheduler, cancel, rm,
// and the usage and server errors.
func TestScheduleCommands(t *testing.T) {
	t.Parallel()
	s := startScheduleServer(t)

	out := mustKiln(t, s, "schedule", "create", "echo", `{"n":1}`, "--every", "1s", "--max-runs", "2", "--queue", "mail",
		"--priority", "3", "--max-retries", "0", "--timeout", "1m", "--format", "json")
	id, rest, _ := strings.Cut(out, "\t")
	if id == "" || !strings.HasPrefix(rest, "active\tnext ") {
		t.Fatalf("schedule create printed %q", out)
	}
	nightly := scheduleJSON(t, s, "schedule", "create", "report", "--cron", "30 2 * * *", "--tz", "Europe/London",
		"--id", "nightly", "--start-at", "1h", "--end-at", "2099-01-01T00:00:00Z")
	if nightly.ID != "nightly" || nightly.Cron != "30 2 * * *" || nightly.TimeZone != "Europe/London" || nightly.Status != "active" ||
		nightly.StartAt == nil || time.Until(*nightly.StartAt) < 50*time.Minute || nightly.EndAt == nil || nightly.EndAt.Year() != 2099 {
		t.Errorf("cron schedule = %+v", nightly)
	}

	out = mustKiln(t, s, "schedule", "ls")
	for _, want := range []string{"ID", "RULE", id, "every 1s", "nightly", "cron 30 2 * * * (Europe/London)", "report"} {
		if !strings.Contains(out, want) {
			t.Errorf("schedule ls printed %q, want %q in it", out, want)
		}
	}
	var list api.ScheduleList
	if err := json.Unmarshal([]byte(mustKiln(t, s, "schedule", "ls", "--json")), &list); err != nil || len(list.Schedules) != 2 {
		t.Errorf("schedule ls --json: %v, %+v", err, list)
	}

	// The scheduler runs the interval schedule twice (max runs).
	var got api.Schedule
	kilntest.Eventually(t, "the schedule's two runs", func() bool {
		got = scheduleJSON(t, s, "schedule", "get", id)
		return got.Status == "done"
	})
	if got.RunCount != 2 || got.LastTaskID == "" || got.Task.Options == nil || got.Task.Options.Queue != "mail" ||
		got.Task.Options.Priority != 3 || string(got.Task.Payload) != `{"n":1}` {
		t.Errorf("finished schedule = %+v", got)
	}
	if out := mustKiln(t, s, "task", "get", got.LastTaskID); !strings.Contains(out, "mail") {
		t.Errorf("the schedule's task: %q", out)
	}
	if out := mustKiln(t, s, "schedule", "get", id); !strings.Contains(out, "2 of 2") || !strings.Contains(out, got.LastTaskID) {
		t.Errorf("schedule get printed %q", out)
	}

	if out := mustKiln(t, s, "schedule", "cancel", "nightly"); out != "nightly\tcancelled\n" {
		t.Errorf("schedule cancel printed %q", out)
	}
	if got := scheduleJSON(t, s, "schedule", "get", "nightly"); got.Status != "cancelled" || got.NextStart != nil {
		t.Errorf("cancelled schedule = %+v", got)
	}
	if out := mustKiln(t, s, "schedule", "rm", "nightly"); out != "nightly\tdeleted\n" {
		t.Errorf("schedule rm printed %q", out)
	}
	wantExit(t, s, exitNotFound, "not found", "schedule", "get", "nightly")
	wantExit(t, s, exitNotFound, "not found", "schedule", "cancel", "nope")
	wantExit(t, s, exitFailure, "done", "schedule", "cancel", id) // a done schedule cannot be cancelled

	wantExit(t, s, exitUsage, "--cron or --every", "schedule", "create", "echo")
	wantExit(t, s, exitUsage, "not both", "schedule", "create", "echo", "--cron", "@daily", "--every", "1h")
	wantExit(t, s, exitUsage, "--tz goes with --cron", "schedule", "create", "echo", "--every", "1h", "--tz", "UTC")
	wantExit(t, s, exitUsage, "whole seconds", "schedule", "create", "echo", "--every", "1500ms")
	wantExit(t, s, exitUsage, "--start-at", "schedule", "create", "echo", "--every", "1h", "--start-at", "tomorrow")
	wantExit(t, s, exitUsage, "want 1 argument", "schedule", "get")
	wantExit(t, s, exitUsage, "unknown subcommand", "schedule", "nope")
	wantExit(t, s, exitFailure, "cron", "schedule", "create", "echo", "--cron", "61 * * * *")
	wantExit(t, s, exitFailure, "time_zone", "schedule", "create", "echo", "--cron", "@daily", "--tz", "Mars/Olympus")
	if out := mustKiln(t, s, "schedule", "ls", "--json"); !strings.Contains(out, id) || strings.Contains(out, "nightly") {
		t.Errorf("after the errors, schedule ls --json printed %q", out)
	}
}

// TestScheduleUpdatePauseResume: schedule pause, resume and update (rule,
// bounds, payload and one task option, the others kept), get with the
// next run times, and their errors.
func TestScheduleUpdatePauseResume(t *testing.T) {
	t.Parallel()
	s := startScheduleServer(t)
	created := scheduleJSON(t, s, "schedule", "create", "report", `{"n":1}`, "--id", "upd", "--every", "1h", "--start-at", "1h",
		"--queue", "mail", "--priority", "3", "--max-retries", "2")
	if created.Status != "active" {
		t.Fatalf("created %+v", created)
	}

	if out := mustKiln(t, s, "schedule", "pause", "upd"); out != "upd\tpaused\n" {
		t.Errorf("schedule pause printed %q", out)
	}
	if out := mustKiln(t, s, "schedule", "pause", "upd"); out != "upd\tpaused\n" {
		t.Errorf("a second schedule pause printed %q", out)
	}
	if got := scheduleJSON(t, s, "schedule", "get", "upd"); got.Status != "paused" || got.NextStart != nil || got.NextRuns != nil {
		t.Errorf("paused schedule = %+v", got)
	}
	if out := mustKiln(t, s, "schedule", "resume", "upd"); !strings.HasPrefix(out, "upd\tactive\tnext ") {
		t.Errorf("schedule resume printed %q", out)
	}

	got := scheduleJSON(t, s, "schedule", "update", "upd", "--cron", "0 9 * * *", "--tz", "Europe/London")
	if got.Cron != "0 9 * * *" || got.TimeZone != "Europe/London" || got.EveryMS != 0 || got.Task.Options.Queue != "mail" ||
		got.Task.Options.Priority != 3 || string(got.Task.Payload) != `{"n":1}` || got.Status != "active" || got.NextStart == nil {
		t.Errorf("after update --cron: %+v", got)
	}
	got = scheduleJSON(t, s, "schedule", "update", "upd", `{"n":2}`, "--priority", "5")
	if string(got.Task.Payload) != `{"n":2}` || got.Task.Options.Priority != 5 || got.Task.Options.Queue != "mail" ||
		got.Task.Options.MaxRetries == nil || *got.Task.Options.MaxRetries != 2 || got.Task.Type != "report" || got.Cron != "0 9 * * *" {
		t.Errorf("after update of the payload and priority: %+v", got)
	}
	got = scheduleJSON(t, s, "schedule", "update", "upd", "--max-runs", "4", "--end-at", "2099-01-01T00:00:00Z")
	if got.MaxRuns != 4 || got.EndAt == nil || got.EndAt.Year() != 2099 {
		t.Errorf("after update of the bounds: %+v", got)
	}
	out := mustKiln(t, s, "schedule", "get", "upd")
	if n := strings.Count(out, "\nthen "); n != 3 || !strings.Contains(out, "0 of 4") {
		t.Errorf("schedule get printed %q, want the next run and 3 more (max runs 4)", out)
	}
	got = scheduleJSON(t, s, "schedule", "update", "upd", "--max-runs", "0", "--end-at", "none")
	if got.MaxRuns != 0 || got.EndAt != nil {
		t.Errorf("after removing the bounds: %+v", got)
	}
	if out := mustKiln(t, s, "schedule", "update", "upd", "--every", "2h"); !strings.HasPrefix(out, "upd\tactive\tnext ") {
		t.Errorf("schedule update printed %q", out)
	}

	wantExit(t, s, exitNotFound, "not found", "schedule", "update", "nope", "--every", "1h")
	wantExit(t, s, exitNotFound, "not found", "schedule", "pause", "nope")
	wantExit(t, s, exitNotFound, "not found", "schedule", "resume", "nope")
	wantExit(t, s, exitUsage, "nothing to change", "schedule", "update", "upd")
	wantExit(t, s, exitUsage, "not both", "schedule", "update", "upd", "--cron", "@daily", "--every", "1h")
	wantExit(t, s, exitUsage, "whole seconds", "schedule", "update", "upd", "--every", "1500ms")
	wantExit(t, s, exitUsage, "--end-at", "schedule", "update", "upd", "--end-at", "someday")
	wantExit(t, s, exitFailure, "cron", "schedule", "update", "upd", "--cron", "61 * * * *")
	wantExit(t, s, exitFailure, "time_zone", "schedule", "update", "upd", "--cron", "@daily", "--tz", "Mars/Olympus")
	wantExit(t, s, exitUsage, "negative", "schedule", "update", "upd", "--max-runs", "-1")
	if got := scheduleJSON(t, s, "schedule", "get", "upd"); got.EveryMS != 2*3600*1000 || got.Status != "active" {
		t.Errorf("after the failed updates: %+v", got)
	}
	mustKiln(t, s, "schedule", "cancel", "upd")
	wantExit(t, s, exitFailure, "invalid_state", "schedule", "pause", "upd")
	wantExit(t, s, exitFailure, "cancelled", "schedule", "resume", "upd")
	wantExit(t, s, exitFailure, "invalid_state", "schedule", "update", "upd", "--every", "1h")
}
