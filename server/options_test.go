package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server/api"
)

// The native API follows the one rule of option defaults: an absent option
// takes the default, a present one its value, 0 included, for a task and
// for the task of a schedule alike (docs/decisions/005-option-defaults.md).
func TestOptionDefaultsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	zero, zeroMS, tenMS := 0, int64(0), int64(10)
	for _, c := range []struct {
		name        string
		opts        *wire.TaskOptions
		wantRetries int
		wantTimeout int64
	}{
		{"absent", nil, kiln.MaxRetriesDefault, kiln.TimeoutDefault.Milliseconds()},
		{"empty", &wire.TaskOptions{}, kiln.MaxRetriesDefault, kiln.TimeoutDefault.Milliseconds()},
		{"zero", &wire.TaskOptions{MaxRetries: &zero, TimeoutMS: &zeroMS}, 0, 0},
		{"values", &wire.TaskOptions{TimeoutMS: &tenMS}, kiln.MaxRetriesDefault, 10},
	} {
		id := b.enqueue("p", tok, wire.TaskRequest{Type: "t", Options: c.opts})
		var task wire.Task
		b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
		if task.MaxRetries != c.wantRetries || task.TimeoutMS != c.wantTimeout {
			t.Errorf("%s: max_retries %d, timeout_ms %d; want %d, %d", c.name, task.MaxRetries, task.TimeoutMS, c.wantRetries, c.wantTimeout)
		}
	}

	// A schedule's task: timeout_ms 0 is no timeout (it used to be refused),
	// and the zeros survive the round trip and reach the tasks it makes.
	const path = "/v1/projects/p/schedules"
	var s api.Schedule
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{
		"task":     wire.TaskRequest{Type: "tick", Options: &wire.TaskOptions{MaxRetries: &zero, TimeoutMS: &zeroMS}},
		"every_ms": 1000,
	}, &s)
	if o := s.Task.Options; o == nil || o.MaxRetries == nil || *o.MaxRetries != 0 || o.TimeoutMS == nil || *o.TimeoutMS != 0 {
		t.Fatalf("schedule's task options: %+v", s.Task.Options)
	}
	var d api.Schedule
	b.ok(http.StatusCreated, "POST", path, tok, map[string]any{"task": map[string]any{"type": "tick"}, "every_ms": 1000}, &d)
	if o := d.Task.Options; o != nil && (o.MaxRetries != nil || o.TimeoutMS != nil) {
		t.Fatalf("schedule without options: %+v, want none", o)
	}
	if _, err := b.srv.API().Schedules().FireDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(time.Second)
	for _, c := range []struct {
		id          string
		wantRetries int
		wantTimeout int64
	}{{s.ID, 0, 0}, {d.ID, kiln.MaxRetriesDefault, kiln.TimeoutDefault.Milliseconds()}} {
		var got api.Schedule
		b.ok(http.StatusOK, "GET", path+"/"+c.id, tok, nil, &got)
		if got.LastTaskID == "" {
			t.Fatalf("schedule %s made no task: %+v", c.id, got)
		}
		var task wire.Task
		b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+got.LastTaskID, tok, nil, &task)
		if task.MaxRetries != c.wantRetries || task.TimeoutMS != c.wantTimeout {
			t.Errorf("task of schedule %s: max_retries %d, timeout_ms %d; want %d, %d", c.id, task.MaxRetries, task.TimeoutMS, c.wantRetries, c.wantTimeout)
		}
	}
}
