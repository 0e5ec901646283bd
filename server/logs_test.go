package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
)

// TestSecretsNeverLogged runs every kind of credential through the server
// with debug logs on, including failures, and checks the log holds none.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, secret := b.project("p")
	reg := register(b, "p")
	good := proof(t, secret, reg.Challenge)
	var sess wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: good}, &sess)
	b.fail(wire.CodeVerifyFailed, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: good})
	var fresh wire.Session
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/refresh", sess.SessionKey, nil, &fresh)
	var rot wire.WorkerSecret
	b.ok(http.StatusOK, "POST", "/v1/projects/p/worker-secret", tok, nil, &rot)
	b.fail(wire.CodeBadRequest, "GET", "/v1/projects/p/tasks?oauth="+tok, tok, nil)
	b.fail(wire.CodeUnauthorized, "GET", "/v1/projects/p/tasks", "kiln_wrong-but-long-enough-token-xxxxxxxx", nil)
	b.fail(wire.CodeUnauthorized, "GET", "/v1/projects/p/tasks", sess.SessionKey, nil)
	logs := b.ts.Logs()
	if !strings.Contains(logs, `"path":"/v1/projects/p/tasks"`) {
		t.Fatalf("the requests were not logged:\n%s", logs)
	}
	for name, s := range map[string]string{
		"admin token": adminToken, "project token": tok, "worker secret": secret, "rotated secret": rot.WorkerSecret,
		"session key": sess.SessionKey, "refreshed key": fresh.SessionKey, "proof": good, "challenge": reg.Challenge,
		"wrong token": "kiln_wrong-but-long-enough-token",
	} {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the %s", name)
		}
	}
}
