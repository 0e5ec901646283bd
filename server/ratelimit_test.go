package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// from sends a request to b's handler as if from the TCP peer addr
// ("ip:port"), with extra headers (name, value pairs).
func (b *bundle) from(addr, method, path string, body any, hdr ...string) *httptest.ResponseRecorder {
	b.t.Helper()
	j, err := json.Marshal(body)
	if err != nil {
		b.t.Fatal(err)
	}
	req := httptest.NewRequestWithContext(b.t.Context(), method, path, bytes.NewReader(j))
	req.RemoteAddr = addr
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	b.srv.Handler().ServeHTTP(rec, req)
	return rec
}

// registerFrom registers a worker of project p from addr and returns the
// answer.
func (b *bundle) registerFrom(addr, p string) *httptest.ResponseRecorder {
	b.t.Helper()
	return b.from(addr, "POST", "/v1/projects/"+p+"/workers/register", wire.RegisterRequest{Name: "w"})
}

// wantLimited checks that rec is 429 rate_limited with a Retry-After of
// retry seconds and a message containing msg.
func wantLimited(t *testing.T, rec *httptest.ResponseRecorder, retry, msg string) {
	t.Helper()
	var eb wire.ErrorBody
	if rec.Code != http.StatusTooManyRequests || json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Error == nil || eb.Error.Code != wire.CodeRateLimited {
		t.Fatalf("answer = %d %s, want 429 rate_limited", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("Retry-After"); got != retry {
		t.Errorf("Retry-After = %q, want %q", got, retry)
	}
	if !strings.Contains(eb.Error.Message, msg) {
		t.Errorf("message %q does not say %q", eb.Error.Message, msg)
	}
}

func TestHandshakeRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxOpenHandshakes = -1 })
	_, secret := b.project("p")
	const addr = "192.0.2.1:4000"
	// The default burst of 20 (register and verify count together).
	var reg wire.RegisterResponse
	for i := range 19 {
		rec := b.registerFrom(addr, "p")
		if rec.Code != http.StatusOK {
			t.Fatalf("register %d of the burst = %d %s", i+1, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &reg); err != nil {
			t.Fatal(err)
		}
	}
	verify := wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, secret, reg.Challenge)}
	if rec := b.from(addr, "POST", "/v1/projects/p/workers/verify", verify); rec.Code != http.StatusOK {
		t.Fatalf("verify, the 20th request = %d %s", rec.Code, rec.Body)
	}
	// The 21st: refused, on both routes, from another port too, and
	// whatever X-Forwarded-For says; at 10 a second the next token is
	// there in 100 ms, which Retry-After rounds up to a second.
	wantLimited(t, b.registerFrom(addr, "p"), "1", "from this address")
	wantLimited(t, b.registerFrom("192.0.2.1:5000", "p"), "1", "from this address")
	wantLimited(t, b.from(addr, "POST", "/v1/projects/p/workers/verify", verify), "1", "from this address")
	wantLimited(t, b.from(addr, "POST", "/v1/projects/p/workers/register", wire.RegisterRequest{Name: "w"}, "X-Forwarded-For", "198.51.100.7"), "1", "from this address")
	// Even for a project that does not exist: the limit comes first.
	wantLimited(t, b.registerFrom(addr, "nope"), "1", "from this address")
	// Another address is served.
	if rec := b.registerFrom("192.0.2.2:4000", "p"); rec.Code != http.StatusOK {
		t.Errorf("another address = %d %s", rec.Code, rec.Body)
	}
	// 100 ms later, one more request; then refused again.
	b.clock.Advance(100 * time.Millisecond)
	if rec := b.registerFrom(addr, "p"); rec.Code != http.StatusOK {
		t.Errorf("after 100 ms = %d %s", rec.Code, rec.Body)
	}
	wantLimited(t, b.registerFrom(addr, "p"), "1", "from this address")
	// IPv6 addresses count by /64; IPv4-mapped ones as IPv4.
	for i := range 20 {
		if rec := b.registerFrom(fmt.Sprintf("[2001:db8::%x]:4000", i+1), "p"); rec.Code != http.StatusOK {
			t.Fatalf("IPv6 register %d = %d %s", i+1, rec.Code, rec.Body)
		}
	}
	wantLimited(t, b.registerFrom("[2001:db8::ffff]:4000", "p"), "1", "from this address")
	if rec := b.registerFrom("[2001:db8:0:1::1]:4000", "p"); rec.Code != http.StatusOK {
		t.Errorf("another /64 = %d %s", rec.Code, rec.Body)
	}
	wantLimited(t, b.registerFrom("[::ffff:192.0.2.1]:4000", "p"), "1", "from this address")
	// The other routes are not limited.
	for range 30 {
		if rec := b.from(addr, "GET", "/healthz", nil); rec.Code != http.StatusOK {
			t.Fatalf("healthz = %d", rec.Code)
		}
	}
}

func TestHandshakeRateLimitPerProject(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) {
		c.ProjectHandshakeRate, c.ProjectHandshakeBurst, c.MaxOpenHandshakes = 0.5, 10, -1
	})
	b.project("p")
	b.project("q")
	for i := range 10 {
		if rec := b.registerFrom(fmt.Sprintf("192.0.2.%d:4000", i+1), "p"); rec.Code != http.StatusOK {
			t.Fatalf("register %d = %d %s", i+1, rec.Code, rec.Body)
		}
	}
	// At 0.5 a second the next token is 2 s away.
	wantLimited(t, b.registerFrom("192.0.2.200:4000", "p"), "2", `for project "p"`)
	if rec := b.registerFrom("192.0.2.200:4000", "q"); rec.Code != http.StatusOK {
		t.Errorf("another project = %d %s", rec.Code, rec.Body)
	}
	b.clock.Advance(2 * time.Second)
	if rec := b.registerFrom("192.0.2.201:4000", "p"); rec.Code != http.StatusOK {
		t.Errorf("2 s later = %d %s", rec.Code, rec.Body)
	}
}

func TestHandshakeRateLimitOff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.HandshakeRate, c.ProjectHandshakeRate, c.MaxOpenHandshakes = -1, -1, -1 })
	b.project("p")
	for i := range 300 {
		if rec := b.registerFrom("192.0.2.1:4000", "p"); rec.Code != http.StatusOK {
			t.Fatalf("register %d with no limits = %d %s", i+1, rec.Code, rec.Body)
		}
	}
}

// TestOpenHandshakeCap fills a project's open handshakes; a slot frees when
// a handshake finishes or its challenge expires, and expired ones are
// collected.
func TestOpenHandshakeCap(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxOpenHandshakes, c.HandshakeTimeout = 3, 30*time.Second })
	_, secret := b.project("p")
	b.project("q")
	regs := make([]wire.RegisterResponse, 3)
	for i := range regs {
		b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/register", "", wire.RegisterRequest{Name: "w"}, &regs[i])
	}
	// Full: retry when the first challenge expires, 30 s from now.
	wantLimited(t, b.registerFrom("192.0.2.1:4000", "p"), "30", "3 open worker handshakes")
	// Another project has its own cap.
	b.ok(http.StatusOK, "POST", "/v1/projects/q/workers/register", "", wire.RegisterRequest{Name: "w"}, nil)

	// A finished handshake frees its slot (seen once the server recounts,
	// within a second).
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: regs[0].WorkerID, Response: proof(t, secret, regs[0].Challenge)}, nil)
	b.clock.Advance(time.Second)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/register", "", wire.RegisterRequest{Name: "w"}, nil)
	wantLimited(t, b.registerFrom("192.0.2.1:4000", "p"), "29", "3 open worker handshakes")

	// Expired challenges do not count, collected or not.
	b.clock.Advance(30 * time.Second)
	for range 3 {
		b.ok(http.StatusOK, "POST", "/v1/projects/p/workers/register", "", wire.RegisterRequest{Name: "w"}, nil)
	}
	wantLimited(t, b.registerFrom("192.0.2.1:4000", "p"), "30", "3 open worker handshakes")
	// The collection deletes the three expired ones of p (and q's one).
	n, err := b.srv.API().CollectHandshakes(t.Context())
	if err != nil || n != 4 {
		t.Errorf("CollectHandshakes = %d, %v; want 4", n, err)
	}
	var workers wire.WorkerList
	b.ok(http.StatusOK, "GET", "/v1/projects/p/workers", adminToken, nil, &workers)
	states := map[string]int{}
	for _, w := range workers.Workers {
		states[w.State]++
	}
	if len(workers.Workers) != 4 || states["verified"] != 1 || states["registered"] != 3 {
		t.Errorf("workers after collection: %v, want 1 verified and the 3 open", states)
	}
}

// TestSweeperCollectsHandshakes checks that a running server collects
// expired handshakes on its own.
func TestSweeperCollectsHandshakes(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.SweepInterval = time.Millisecond })
	b.project("p")
	register(b, "p")
	register(b, "p")
	b.clock.Advance(time.Hour)
	// setup serves b: its sweeper runs every millisecond.
	kilntest.Eventually(t, "the sweeper to collect the expired handshakes", func() bool {
		var workers wire.WorkerList
		b.ok(http.StatusOK, "GET", "/v1/projects/p/workers", adminToken, nil, &workers)
		return len(workers.Workers) == 0
	})
}
