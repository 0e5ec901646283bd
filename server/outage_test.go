//go:build unix

package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
)

// redisProc is a redis-server process of the test's own, on a loopback
// port, that the test may pause, kill and start again over the same data.
type redisProc struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

// startRedis starts a private redis-server with an fsync'ed append-only
// file, so that a killed and restarted server keeps its data (the tokens
// among them). It skips the test when redis-server is not installed.
func startRedis(t *testing.T) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") != "" {
			t.Fatal("redis-server is not on PATH and KILN_TEST_REQUIRE_ALL is set")
		}
		t.Skip("redis-server is not on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	p := &redisProc{t: t, bin: bin, dir: t.TempDir(), port: port}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	})
	return p
}

func (p *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// start runs redis-server and waits (bounded) until it answers PING.
func (p *redisProc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, "--port", strconv.Itoa(p.port), "--bind", "127.0.0.1", "--dir", p.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--maxmemory-policy", "noeviction", "--protected-mode", "no")
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start redis-server: %v", err)
	}
	p.cmd = cmd
	kilntest.Eventually(p.t, "redis-server on "+p.addr()+" to answer PING", func() bool {
		c, err := net.DialTimeout("tcp", p.addr(), time.Second)
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 7)
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
		_, err = io.ReadFull(c, buf)
		return err == nil && string(buf) == "+PONG\r\n"
	})
}

func (p *redisProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// kill ends the process at once (SIGKILL) and reaps it.
func (p *redisProc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// goroutineStacks returns the stacks of every goroutine of the process.
func goroutineStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// outageAnswer is one response of the outage test.
type outageAnswer struct {
	status     int
	retryAfter string
	body       []byte
}

func (b *bundle) raw(method, path, auth, body string) outageAnswer {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.ts.URL+path, r)
	if err != nil {
		b.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return outageAnswer{resp.StatusCode, resp.Header.Get("Retry-After"), out}
}

// TestRedisOutage runs a server on a Redis of the test's own, then pauses
// Redis (SIGSTOP: every call times out) and kills it (SIGKILL: every
// connection is refused). During each outage every kind of route answers
// 503 with Retry-After: /readyz with a body that says why, with or without
// a token; an enqueue and a token-checked read with store_unavailable (not
// 401 for a token the server cannot check, not 500); the IronWorker API
// with its {"msg"}. Once Redis is back, everything works again.
func TestRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills redis-server: skipped with -short")
	}
	t.Parallel()
	rp := startRedis(t)
	// While Redis is down, go-redis starts a goroutine that probes it once
	// a second and ends on the first probe that connects or, after the
	// pool is closed, on waking. This cleanup runs after the store's (it is
	// registered before it) and waits for that goroutine, so that it is not
	// still asleep when the package's leak check runs.
	// (A plain loop: the test's context is already cancelled here.)
	t.Cleanup(func() {
		for deadline := time.Now().Add(30 * time.Second); strings.Contains(goroutineStacks(), "(*ConnPool).tryDial"); {
			if time.Now().After(deadline) {
				t.Error("go-redis' dial probe still runs 30 s after the store was closed")
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	// Short client timeouts and no retries, so that each request of the
	// paused phase fails after about a second instead of go-redis' 3 s
	// times its retries.
	url := "redis://" + rp.addr() + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s&max_retries=0&pool_timeout=2s"
	b := serveOn(t, kilntest.RedisAt(t, url, "kilntest-outage", nil), nil)
	tok, _ := b.project("p")
	bearer := "Bearer " + tok
	enqueue := `{"tasks":[{"type":"t"}]}`
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})

	healthy := func(phase string) {
		t.Helper()
		// Bounded wait for the store to answer again.
		deadline := time.Now().Add(30 * time.Second)
		for {
			a := b.raw("GET", "/readyz", bearer, "")
			if a.status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz = %d %s 30 s after Redis came back", phase, a.status, a.body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if a := b.raw("POST", "/v1/projects/p/tasks", bearer, enqueue); a.status != http.StatusOK {
			t.Errorf("%s: enqueue after recovery = %d %s", phase, a.status, a.body)
		}
		if a := b.raw("GET", "/v1/projects/p/tasks/"+id, bearer, ""); a.status != http.StatusOK {
			t.Errorf("%s: get after recovery = %d %s", phase, a.status, a.body)
		}
		if a := b.raw("GET", "/2/projects/p/tasks", "OAuth "+tok, ""); a.status != http.StatusOK {
			t.Errorf("%s: IronWorker list after recovery = %d %s", phase, a.status, a.body)
		}
	}
	down := func(phase string) {
		t.Helper()
		for _, auth := range []string{"", bearer, "Bearer kiln_not-a-token-0123456789abcdefghij"} {
			a := b.raw("GET", "/readyz", auth, "")
			var h wire.Health
			if err := json.Unmarshal(a.body, &h); err != nil || a.status != http.StatusServiceUnavailable ||
				h.Status != "unavailable" || h.Code != wire.CodeStoreUnavailable || h.Error == "" || a.retryAfter == "" {
				t.Errorf("%s: /readyz with %q = %d (Retry-After %q) %s; want 503 unavailable store_unavailable with Retry-After", phase, auth, a.status, a.retryAfter, a.body)
			}
		}
		for _, rq := range []struct{ method, path, body string }{
			{"POST", "/v1/projects/p/tasks", enqueue},
			{"GET", "/v1/projects/p/tasks/" + id, ""},
			{"GET", "/v1/projects/p/tasks", ""},
		} {
			a := b.raw(rq.method, rq.path, bearer, rq.body)
			var eb wire.ErrorBody
			if err := json.Unmarshal(a.body, &eb); err != nil || eb.Error == nil || a.status != http.StatusServiceUnavailable ||
				eb.Error.Code != wire.CodeStoreUnavailable || a.retryAfter != "1" {
				t.Errorf("%s: %s %s = %d (Retry-After %q) %s; want 503 store_unavailable with Retry-After: 1", phase, rq.method, rq.path, a.status, a.retryAfter, a.body)
			}
			if strings.Contains(string(a.body), rp.addr()) {
				t.Errorf("%s: %s %s: the answer names Redis' address: %s", phase, rq.method, rq.path, a.body)
			}
		}
		a := b.raw("GET", "/2/projects/p/tasks", "OAuth "+tok, "")
		var msg struct {
			Msg string `json:"msg"`
		}
		if err := json.Unmarshal(a.body, &msg); err != nil || msg.Msg == "" || a.status != http.StatusServiceUnavailable || a.retryAfter != "1" {
			t.Errorf("%s: IronWorker GET /2/projects/p/tasks = %d (Retry-After %q) %s; want 503 {\"msg\"} with Retry-After: 1", phase, a.status, a.retryAfter, a.body)
		}
	}

	healthy("before")

	rp.signal(syscall.SIGSTOP)
	down("paused")
	rp.signal(syscall.SIGCONT)
	healthy("resumed")

	rp.kill()
	down("killed")
	rp.start()
	healthy("restarted")

	if !strings.Contains(b.ts.Logs(), "the store is unavailable") {
		t.Errorf("the outage was not logged:\n%s", b.ts.Logs())
	}
	if t.Failed() {
		t.Logf("server log:\n%s", b.ts.Logs())
	}
}
