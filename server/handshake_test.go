package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
)

func register(b *bundle, p string) wire.RegisterResponse {
	b.t.Helper()
	var reg wire.RegisterResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/"+p+"/workers/register", "", wire.RegisterRequest{Name: "host-1"}, &reg)
	return reg
}

func proof(t *testing.T, secret, challenge string) string {
	t.Helper()
	p, err := wire.Proof(secret, challenge)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, secret := b.project("p")
	reg := register(b, "p")
	b.waitEvent("worker.registered")
	var sess wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)}, &sess)
	b.waitEvent("worker.verified")
	if !strings.HasPrefix(sess.SessionKey, "kiln_ws_") || !sess.ExpiresAt.Equal(b.clock.Now().Add(time.Hour)) {
		t.Errorf("session = %+v", sess)
	}
	// Replay: the same correct answer a second time.
	msg := b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)})
	if !strings.Contains(msg, "already used") {
		t.Errorf("replay message = %q", msg)
	}
	b.waitEvent("worker.verify_failed")

	// The session key leases, extends and reports in its project only.
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	var lease wire.LeaseResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", sess.SessionKey, wire.LeaseRequest{Queues: []string{"default"}, Max: 5, DurationMS: 60000, WorkerID: "spoofed"}, &lease)
	if len(lease.Tasks) != 1 || lease.Tasks[0].ID != id || lease.Tasks[0].WorkerID != reg.WorkerID {
		t.Fatalf("lease = %+v, want task %s held by %s", lease.Tasks, id, reg.WorkerID)
	}
	b.fail(wire.CodeForbidden, "GET", "/v1/projects/p/tasks", sess.SessionKey, nil)
	b.fail(wire.CodeForbidden, "GET", "/v1/projects", sess.SessionKey, nil)

	var workers wire.WorkerList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/workers", tok, nil, &workers)
	if len(workers.Workers) != 1 || workers.Workers[0].State != "verified" || workers.Workers[0].ID != reg.WorkerID {
		t.Errorf("workers = %+v", workers)
	}

	// Refresh: a new key; the old one stops working.
	var fresh wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/refresh", sess.SessionKey, nil, &fresh)
	b.fail(wire.CodeUnauthorized, "POST", "/v1/projects/p/extend", sess.SessionKey, wire.ExtendRequest{DurationMS: 1000})
	b.ok(http.StatusOK, "POST", "/v1/projects/p/extend", fresh.SessionKey, wire.ExtendRequest{DurationMS: 1000, Leases: []wire.ExtendLease{{ID: id, LeaseID: lease.Tasks[0].LeaseID}}}, nil)
	b.fail(wire.CodeForbidden, "POST", "/v1/projects/p/workers/refresh", tok, nil)

	// Revoke: the key stops at once, and the worker cannot verify again.
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/"+reg.WorkerID+"/revoke", tok, nil, nil)
	b.waitEvent("worker.revoked")
	msg = b.fail(wire.CodeUnauthorized, "POST", "/v1/projects/p/report", fresh.SessionKey, wire.ReportRequest{})
	if !strings.Contains(msg, "revoked") {
		t.Errorf("revoked message = %q", msg)
	}
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/p/workers/wrk_nope/revoke", tok, nil)
}

func TestHandshakeWrongSecret(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, secret := b.project("p")
	_, otherSecret := b.project("q")
	reg := register(b, "p")
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, otherSecret, reg.Challenge)})
	// The wrong answer used up the challenge: the right one now fails.
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)})

	// Answers that are not hex, unknown workers, invalid worker ids.
	reg = register(b, "p")
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: "zz"})
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: "wrk_unknown", Response: "00"})
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: "../x", Response: "00"})
	// A challenge of project p answered in project q.
	reg = register(b, "p")
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/q/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, otherSecret, reg.Challenge)})
	// Unknown project; bad names.
	b.fail(wire.CodeNotFound, "POST", "/v1/projects/nope/workers/register", "", wire.RegisterRequest{Name: "h"})
	b.fail(wire.CodeInvalidName, "POST", "/v1/projects/p/workers/register", "", wire.RegisterRequest{Name: "a b"})
	b.fail(wire.CodeBadRequest, "POST", "/v1/projects/p/workers/register", "", `{"name":"h","secret":"x"}`)
}

func TestHandshakeDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.HandshakeTimeout = time.Second })
	_, secret := b.project("p")
	reg := register(b, "p")
	b.clock.Advance(time.Second)
	msg := b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)})
	if !strings.Contains(msg, "deadline") {
		t.Errorf("late answer message = %q", msg)
	}
	// Just in time works.
	reg = register(b, "p")
	b.clock.Advance(999 * time.Millisecond)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)}, nil)
	// Expired challenges of unfinished handshakes are collected.
	register(b, "p")
	b.clock.Advance(time.Hour)
	n, err := b.srv.API().CollectHandshakes(t.Context())
	if err != nil || n != 1 {
		t.Errorf("CollectHandshakes = %d, %v; want 1", n, err)
	}
	var workers wire.WorkerList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/workers", adminToken, nil, &workers)
	if len(workers.Workers) != 1 {
		t.Errorf("workers after collection = %+v, want only the verified one", workers.Workers)
	}
}

func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.SessionTTL = time.Minute })
	_, secret := b.project("p")
	_, sess := b.handshake("p", secret)
	req := wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 1000}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", sess, req, nil)
	b.clock.Advance(time.Minute)
	b.fail(wire.CodeSessionExpired, "POST", "/v1/projects/p/lease", sess, req)
	b.fail(wire.CodeSessionExpired, "POST", "/v1/projects/p/workers/refresh", sess, nil)
}
