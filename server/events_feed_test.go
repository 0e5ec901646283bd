package server_test

import (
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// TestEventStreamBatchOnRedis: on Redis, a batch whose changes the store
// writes as several feed entries (300 tasks, about 14 KB of changes) is
// streamed whole and in order, and a stream resumed with the Last-Event-ID
// of an event in the middle of the batch gets exactly the events after it.
func TestEventStreamBatchOnRedis(t *testing.T) {
	t.Parallel()
	rawURL := kilntest.RedisURL(t)
	prefix := kilntest.RedisPrefix(t, rawURL)
	b := serveOn(t, kilntest.RedisAt(t, rawURL, prefix, nil), nil, func(c *server.Config) { c.SweepInterval = 0 })
	tok, _ := b.project("acme")
	s := openEvents(t, b, "acme", tok)
	s.next(t, ": kiln events")
	reqs := make([]wire.TaskRequest, 300)
	for i := range reqs {
		reqs[i] = wire.TaskRequest{Type: "t"}
	}
	var res wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/acme/tasks", tok, wire.EnqueueRequest{Tasks: reqs}, &res)
	if len(res.Tasks) != len(reqs) {
		t.Fatalf("enqueue: %d tasks, want %d", len(res.Tasks), len(reqs))
	}
	want := make([]string, len(res.Tasks))
	for i, tk := range res.Tasks {
		if tk.Error != nil {
			t.Fatalf("enqueue: %+v", tk)
		}
		want[i] = "task.enqueued " + tk.ID + " pending"
	}
	got, ids := s.taskEvents(t, len(want))
	wantLines(t, got, want...)
	r := openEventsAfter(t, b, "acme", tok, ids[149])
	again, _ := r.taskEvents(t, len(want)-150)
	wantLines(t, again, want[150:]...)
}
