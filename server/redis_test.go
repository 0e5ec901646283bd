package server_test

import (
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// TestTwoServersOnOneRedis runs two kiln servers, each with its own Redis
// connection, on one Redis: a token made on one works on the other, a worker
// registers with one and proves itself to the other, and a task enqueued
// through one is leased, reported and read back through either.
func TestTwoServersOnOneRedis(t *testing.T) {
	t.Parallel()
	rawURL := kilntest.RedisURL(t)
	prefix := kilntest.RedisPrefix(t, rawURL)
	start := func(string) *bundle {
		return serveOn(t, kilntest.RedisAt(t, rawURL, prefix, nil), nil, func(c *server.Config) { c.SweepInterval = 0 })
	}
	a, b := start("A"), start("B")

	// A project and its token made on A are known to B.
	token, secret := a.project("acme")
	id := b.enqueue("acme", token, wire.TaskRequest{Type: "greet", Payload: []byte(`"kiln"`)})
	var got wire.Task
	a.ok(http.StatusOK, "GET", "/v1/projects/acme/tasks/"+id, token, nil, &got)
	if got.State != "pending" || string(got.Payload) != `"kiln"` {
		t.Fatalf("task read through A: state %q payload %q, want pending \"kiln\"", got.State, got.Payload)
	}

	// A worker registers with A and proves itself to B.
	var reg wire.RegisterResponse
	a.ok(http.StatusOK, "POST", "/v1/projects/acme/workers/register", "", wire.RegisterRequest{Name: "w1"}, &reg)
	var sess wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/acme/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)}, &sess)
	// The challenge is spent on both servers.
	a.fail("verify_failed", "POST", "/v1/projects/acme/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)})

	// It leases through A and reports through B.
	var lease wire.LeaseResponse
	a.ok(http.StatusOK, "POST", "/v1/projects/acme/lease", sess.SessionKey, wire.LeaseRequest{Queues: []string{"default"}, Types: []string{"greet"}, Max: 10, DurationMS: 30000, WaitMS: 5000}, &lease)
	if len(lease.Tasks) != 1 || lease.Tasks[0].ID != id {
		t.Fatalf("lease through A: got %d tasks, want task %s", len(lease.Tasks), id)
	}
	var rep wire.ReportResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/acme/report", sess.SessionKey, wire.ReportRequest{Outcomes: []wire.Outcome{{
		ID: id, LeaseID: lease.Tasks[0].LeaseID, Kind: "succeeded", Result: []byte(`"Hello kiln!"`),
	}}}, &rep)
	if len(rep.Errors) != 1 || rep.Errors[0] != nil {
		t.Fatalf("report through B: %+v", rep.Errors)
	}

	// Both servers see the outcome; a second report of the old lease fails
	// on either.
	for name, srv := range map[string]*bundle{"A": a, "B": b} {
		var done wire.Task
		srv.ok(http.StatusOK, "GET", "/v1/projects/acme/tasks/"+id+"/result", token, nil, &done)
		if done.State != "succeeded" || string(done.Result) != `"Hello kiln!"` {
			t.Errorf("result through %s: state %q result %q", name, done.State, done.Result)
		}
	}
	var again wire.ReportResponse
	a.ok(http.StatusOK, "POST", "/v1/projects/acme/report", sess.SessionKey, wire.ReportRequest{Outcomes: []wire.Outcome{{
		ID: id, LeaseID: lease.Tasks[0].LeaseID, Kind: "dead", Error: "late",
	}}}, &again)
	if len(again.Errors) != 1 || again.Errors[0] == nil || again.Errors[0].Code != "lease_lost" {
		t.Errorf("stale report through A: got %+v, want lease_lost", again.Errors)
	}

	// Revoking the worker on B ends its session on A.
	b.ok(http.StatusOK, "POST", "/v1/projects/acme/workers/"+reg.WorkerID+"/revoke", token, nil, nil)
	a.fail("unauthorized", "POST", "/v1/projects/acme/lease", sess.SessionKey, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 1000})
}
