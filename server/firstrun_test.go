package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
)

// TestWhoami: GET /v1/whoami tells a project token's project, and that an
// admin token is one; no token is 401.
func TestWhoami(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("acme")
	var who wire.Whoami
	b.ok(http.StatusOK, "GET", "/v1/whoami", tok, nil, &who)
	if who.Admin || who.Project != "acme" || who.TokenID == "" {
		t.Errorf("whoami(project token) = %+v, want project acme with a token id", who)
	}
	who = wire.Whoami{}
	b.ok(http.StatusOK, "GET", "/v1/whoami", adminToken, nil, &who)
	if !who.Admin || who.Project != "" {
		t.Errorf("whoami(admin token) = %+v, want admin", who)
	}
	b.fail(wire.CodeUnauthorized, "GET", "/v1/whoami", "", nil)
	b.fail(wire.CodeUnauthorized, "GET", "/v1/whoami", "kiln_nope-0123456789", nil)
}

// TestPauseUnknownQueue: pausing or resuming a queue the store does not
// know is not_found, and leaves nothing behind; ?create=true pauses it.
func TestPauseUnknownQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	msg := b.fail(wire.CodeNotFound, "POST", "/v1/projects/p/queues/nosuchqueue/pause", tok, nil)
	if !strings.Contains(msg, "nosuchqueue") || !strings.Contains(msg, "?create=true") {
		t.Errorf("pause of an unknown queue: %q", msg)
	}
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/p/queues/nosuchqueue/resume", tok, nil)
	var ql wire.QueueList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/queues", tok, nil, &ql)
	if len(ql.Queues) != 0 {
		t.Errorf("queues after refused pauses = %+v, want none", ql.Queues)
	}
	b.fail(wire.CodeBadRequest, "POST", "/v1/projects/p/queues/later/pause?create=maybe", tok, nil)

	var q wire.Queue
	b.ok(http.StatusOK, "POST", "/v1/projects/p/queues/later/pause?create=true", tok, nil, &q)
	if !q.Paused || q.Queue != "later" {
		t.Errorf("pause?create=true = %+v", q)
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/queues/later/resume", tok, nil, &q) // known now: paused
	if q.Paused {
		t.Errorf("resume = %+v", q)
	}
	// A queue with a task is known.
	b.enqueue("p", tok, wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{Queue: "busy"}})
	b.ok(http.StatusOK, "POST", "/v1/projects/p/queues/busy/pause", tok, nil, &q)
	if !q.Paused || q.Total != 1 {
		t.Errorf("pause of a queue with a task = %+v", q)
	}
}

// TestWorkerListSessionExpired: a verified worker whose session ended
// without a refresh (it stopped) is listed as expired, not verified.
func TestWorkerListSessionExpired(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.SessionTTL = time.Minute })
	tok, secret := b.project("p")
	id, _ := b.handshake("p", secret)
	state := func() string {
		t.Helper()
		var wl wire.WorkerList
		b.ok(http.StatusOK, "GET", "/v1/projects/p/workers", tok, nil, &wl)
		for _, w := range wl.Workers {
			if w.ID == id {
				return w.State
			}
		}
		t.Fatalf("worker %s not listed: %+v", id, wl)
		return ""
	}
	if got := state(); got != "verified" {
		t.Errorf("state after the handshake = %s, want verified", got)
	}
	b.clock.Advance(59 * time.Second)
	if got := state(); got != "verified" {
		t.Errorf("state before the session ends = %s, want verified", got)
	}
	b.clock.Advance(time.Second)
	if got := state(); got != "expired" {
		t.Errorf("state after the session ended = %s, want expired", got)
	}
}
