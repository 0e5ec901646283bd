package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// streamEvent is one event of a stream: its id line and its data.
type streamEvent struct {
	id string
	ev wire.Event
}

// event returns the next event of the stream (skipping comments).
func (s *sse) event(t *testing.T) streamEvent {
	t.Helper()
	var out streamEvent
	seen := false // an event line of this event: a data line left by next is skipped
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatal("stream ended before an event")
			}
			switch {
			case strings.HasPrefix(l, "id: "):
				out.id = strings.TrimPrefix(l, "id: ")
			case strings.HasPrefix(l, "event: "):
				seen = true
			case strings.HasPrefix(l, "data: ") && seen:
				if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), &out.ev); err != nil {
					t.Fatalf("data line %q: %v", l, err)
				}
				return out
			}
		case <-timeout:
			t.Fatal("no event within 30s")
		}
	}
}

// kinds returns the kinds of the next n events.
func (s *sse) kinds(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = s.event(t).ev.Kind
	}
	return out
}

// wantKinds requires got to hold exactly want, in any order.
func wantKinds(t *testing.T, got []string, want ...string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("events %v, want %v in any order", got, want)
	}
}

// taskEvents returns the next n events of the stream, which must be task
// changes with ids, as "kind id state" lines.
func (s *sse) taskEvents(t *testing.T, n int) (lines, ids []string) {
	t.Helper()
	for range n {
		e := s.event(t)
		if e.id == "" || e.ev.Seq == 0 {
			t.Fatalf("event %+v has no id; want the store's sequence", e)
		}
		lines = append(lines, e.ev.Kind+" "+e.ev.TaskID+" "+e.ev.State)
		ids = append(ids, e.id)
	}
	return lines, ids
}

func wantLines(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestEventStreamAdminChanges: every admin change of a task is an event of
// the stream, whichever route made it (the batch cancel the CLI uses, the
// single routes), in the order the store applied them; a stream opened
// again with Last-Event-ID replays what followed that event.
func TestEventStreamAdminChanges(t *testing.T) {
	t.Parallel()
	b := setup(t, func(*server.Config) {})
	tok, _ := b.project("p")
	s := openEvents(t, b, "p", tok)
	s.next(t, ": kiln events")
	a := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	c := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks:cancel", tok, wire.IDsRequest{IDs: []string{a}}, nil)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks/"+c+"/cancel", tok, nil, nil)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks:retry", tok, wire.IDsRequest{IDs: []string{a}}, nil)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks/"+c+"/retry", tok, nil, nil)
	b.ok(http.StatusNoContent, "DELETE", "/v1/projects/p/tasks/"+a, tok, nil, nil)
	want := []string{
		"task.enqueued " + a + " pending",
		"task.enqueued " + c + " pending",
		"task.cancelled " + a + " cancelled",
		"task.cancelled " + c + " cancelled",
		"task.retried " + a + " pending",
		"task.retried " + c + " pending",
		"task.deleted " + a + " ",
	}
	got, ids := s.taskEvents(t, len(want))
	wantLines(t, got, want...)

	// Resumed after the second event: the rest, in the same order.
	r := openEventsAfter(t, b, "p", tok, ids[1])
	again, _ := r.taskEvents(t, len(want)-2)
	wantLines(t, again, want[2:]...)
}

// TestEventStreamTwoServersOneRedis: two servers sharing one Redis stream
// the same task events, with the same ids, in the same order, whichever
// server made the changes.
func TestEventStreamTwoServersOneRedis(t *testing.T) {
	t.Parallel()
	rawURL := kilntest.RedisURL(t)
	prefix := kilntest.RedisPrefix(t, rawURL)
	start := func() *bundle {
		return serveOn(t, kilntest.RedisAt(t, rawURL, prefix, nil), nil, func(c *server.Config) { c.SweepInterval = 0 })
	}
	a, b := start(), start()
	tok, secret := a.project("acme")
	sa, sb := openEvents(t, a, "acme", tok), openEvents(t, b, "acme", tok)
	sa.next(t, ": kiln events")
	sb.next(t, ": kiln events")

	x := a.enqueue("acme", tok, wire.TaskRequest{Type: "t"})
	y := b.enqueue("acme", tok, wire.TaskRequest{Type: "t"})
	_, sess := b.handshake("acme", secret)
	var lease wire.LeaseResponse
	a.ok(http.StatusOK, "POST", "/v1/projects/acme/lease", sess, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000}, &lease)
	if len(lease.Tasks) != 1 || lease.Tasks[0].ID != x {
		t.Fatalf("lease: %+v, want task %s", lease.Tasks, x)
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/acme/report", sess, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: x, LeaseID: lease.Tasks[0].LeaseID, Kind: "retry", Error: "no"}}}, nil)
	a.ok(http.StatusOK, "POST", "/v1/projects/acme/tasks:cancel", tok, wire.IDsRequest{IDs: []string{y}}, nil)
	want := []string{
		"task.enqueued " + x + " pending",
		"task.enqueued " + y + " pending",
		"task.started " + x + " active",
		"task.failed " + x + " active",
		"task.retrying " + x + " pending",
		"task.cancelled " + y + " cancelled",
	}
	taskOnly := func(s *sse) ([]string, []string) {
		var lines, ids []string
		for len(lines) < len(want) {
			e := s.event(t)
			if !strings.HasPrefix(e.ev.Kind, "task.") {
				continue // worker.* events are each server's own
			}
			lines = append(lines, e.ev.Kind+" "+e.ev.TaskID+" "+e.ev.State)
			ids = append(ids, e.id)
		}
		return lines, ids
	}
	la, ia := taskOnly(sa)
	lb, ib := taskOnly(sb)
	wantLines(t, la, want...)
	wantLines(t, lb, want...)
	if !slices.Equal(ia, ib) {
		t.Fatalf("event ids differ between the servers: %v and %v", ia, ib)
	}
}
