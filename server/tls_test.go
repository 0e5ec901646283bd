package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/testcert"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/remote"
)

// tlsFiles is a test's CA and the server's key pair files.
type tlsFiles struct {
	ca                *testcert.CA
	dir               string
	cert, key, caFile string
}

// newTLSFiles makes a CA and a server certificate for 127.0.0.1 and
// localhost with the given serial, written to a fresh folder.
func newTLSFiles(t *testing.T, serial int64) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFiles{ca: testcert.NewCA(t, "kiln test CA"), dir: dir, cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	f.caFile = f.ca.WriteCA(t, dir, "ca.crt")
	f.ca.Leaf(t, serial, "127.0.0.1", "localhost").Write(t, f.cert, f.key)
	return f
}

// running is a server serving on a real listener.
type running struct{ *kilntest.Server }

// serve starts a server on a fresh embedded store (system clock) on a
// listener bound to listenAddr, until the test ends.
func serve(t *testing.T, listenAddr string, mod func(*server.Config)) *running {
	t.Helper()
	return &running{serveWith(t, &kilntest.ServerOptions{Listen: listenAddr}, func(c *server.Config) {
		if mod != nil {
			mod(c)
		}
	}).ts}
}

// port returns the port of the listener.
func (r *running) port() string {
	_, p, _ := net.SplitHostPort(r.Addr)
	return p
}

// TestTLSWorkersEndToEnd: a server with TLS on a non-loopback address and
// remote workers that trust its CA run tasks over the worker handshake;
// a client without the CA fails, naming the unknown authority.
func TestTLSWorkersEndToEnd(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t, 100)
	r := serve(t, "0.0.0.0:0", func(c *server.Config) { c.TLSCertFile, c.TLSKeyFile = f.cert, f.key })
	url := "https://127.0.0.1:" + r.port()
	_, secret, err := r.Server.Server.API().CreateProject(t.Context(), "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.Logs(), "tls_required") {
		t.Error("a TLS server refuses the worker routes")
	}

	cs, err := remote.Open(t.Context(), url, &remote.Config{Token: adminToken, CAFile: f.caFile})
	if err != nil {
		t.Fatalf("remote.Open with a token: %v", err)
	}
	defer func() { _ = cs.Close() }()
	ws, err := remote.Open(t.Context(), url, &remote.Config{Project: "acme", WorkerSecret: secret, CAFile: f.caFile})
	if err != nil {
		t.Fatalf("remote.Open as a worker: %v", err)
	}
	defer func() { _ = ws.Close() }()
	if ws.WorkerID() == "" {
		t.Fatal("no worker id after the handshake")
	}
	client, err := kiln.NewClient(cs, &kiln.ClientConfig{Namespace: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kiln.NewWorker(ws, &kiln.WorkerConfig{Namespace: "acme", Concurrency: 4, LeaseWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("twice", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
		tk.SetResult(append(append([]byte(nil), tk.Payload...), tk.Payload...))
		return nil
	}))
	kilntest.RunWorker(t, w)
	var results []*kiln.Result
	for i := range 10 {
		res, err := client.Enqueue(t.Context(), "twice", fmt.Appendf(nil, "%d", i), nil)
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		results = append(results, res)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), time.Minute)
	defer wcancel()
	for i, res := range results {
		info, err := res.Wait(wctx)
		if err != nil {
			t.Fatalf("Wait(task %d): %v", i, err)
		}
		if want := fmt.Sprintf("%d%d", i, i); string(info.Result) != want || info.WorkerID != ws.WorkerID() {
			t.Errorf("task %d: result %q by %q, want %q by the remote worker %q", i, info.Result, info.WorkerID, want, ws.WorkerID())
		}
	}

	// Without the CA: the handshake fails, and the error says why.
	_, err = remote.Open(t.Context(), url, &remote.Config{Project: "acme", WorkerSecret: secret})
	var ua x509.UnknownAuthorityError
	var ce *apiclient.CertError
	if !errors.As(err, &ua) || !errors.As(err, &ce) || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("remote.Open without the CA: %v; want an unknown authority error", err)
	}
	// Plain HTTP to the TLS port is answered, with an error.
	_, err = remote.Open(t.Context(), "http://127.0.0.1:"+r.port(), &remote.Config{Project: "acme", WorkerSecret: secret})
	if err == nil || !strings.Contains(err.Error(), "HTTPS server") {
		t.Errorf("remote.Open over plain HTTP to the TLS port: %v", err)
	}
}

// serialOf connects to addr with a fresh TLS connection that trusts ca and
// returns the serial number of the server's certificate.
func serialOf(t *testing.T, addr string, ca *testcert.CA) *big.Int {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer func() { _ = c.Close() }()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// TestTLSReload: a new key pair written over the files is served to new
// connections without a restart; a broken one, or half of a new pair,
// leaves the previous pair in service.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t, 100)
	r := serve(t, "127.0.0.1:0", func(c *server.Config) { c.TLSCertFile, c.TLSKeyFile = f.cert, f.key })
	if got := serialOf(t, r.Addr, f.ca); got.Int64() != 100 {
		t.Fatalf("serial = %v, want 100", got)
	}

	// A new pair: new connections get it.
	f.ca.Leaf(t, 200, "127.0.0.1", "localhost").Write(t, f.cert, f.key)
	kilntest.Eventually(t, "the new certificate (serial 200)", func() bool { return serialOf(t, r.Addr, f.ca).Int64() == 200 })
	if !strings.Contains(r.Logs(), "TLS certificate reloaded") || !strings.Contains(r.Logs(), `"serial":"c8"`) {
		t.Errorf("the reload was not logged with its serial:\n%s", r.Logs())
	}

	failures := func() int { return strings.Count(r.Logs(), "TLS certificate not reloaded") }
	// A certificate file that is not one: still serial 200.
	testcert.Replace(t, f.cert, []byte("not a certificate\n"))
	kilntest.Eventually(t, "the failed reload to be logged", func() bool {
		serialOf(t, r.Addr, f.ca)
		return failures() >= 1
	})
	if got := serialOf(t, r.Addr, f.ca); got.Int64() != 200 {
		t.Errorf("after a broken certificate file: serial = %v, want the previous pair's 200", got)
	}
	// Half of a new pair (the certificate, with the old key): still 200.
	next := f.ca.Leaf(t, 300, "127.0.0.1", "localhost")
	testcert.Replace(t, f.cert, next.CertPEM)
	kilntest.Eventually(t, "the mismatched pair to be logged", func() bool {
		serialOf(t, r.Addr, f.ca)
		return failures() >= 2
	})
	if got := serialOf(t, r.Addr, f.ca); got.Int64() != 200 {
		t.Errorf("with a certificate and a key that do not match: serial = %v, want the previous pair's 200", got)
	}
	// The other half: the new pair is served.
	testcert.Replace(t, f.key, next.KeyPEM)
	kilntest.Eventually(t, "the completed pair (serial 300)", func() bool { return serialOf(t, r.Addr, f.ca).Int64() == 300 })
	if logs := r.Logs(); strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, string(next.KeyPEM[30:60])) {
		t.Error("the log holds key material")
	}
}

// post sends a JSON POST over plain HTTP and returns the status and the
// error code of the answer ("" for a success).
func post(t *testing.T, url, token, body string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var eb wire.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
		return resp.StatusCode, eb.Error.Code, eb.Error.Message
	}
	return resp.StatusCode, "", ""
}

// nonLoopback lists listen addresses that are not loopback, each with the
// host to reach it at: 0.0.0.0 (reached through 127.0.0.1) and, when the
// machine has one, an address of one of its interfaces.
func nonLoopback(t *testing.T) [][2]string {
	t.Helper()
	out := [][2]string{{"0.0.0.0:0", "127.0.0.1"}}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return append(out, [2]string{n.IP.String() + ":0", n.IP.String()})
		}
	}
	return out
}

// TestPlainWorkerRoutes: without TLS on a non-loopback address the worker
// routes answer 403 tls_required, other routes work, and
// AllowInsecureWorkers lets them through; on loopback they always work.
func TestPlainWorkerRoutes(t *testing.T) {
	t.Parallel()
	for _, la := range nonLoopback(t) {
		t.Run("refused on "+la[0], func(t *testing.T) {
			t.Parallel()
			r := serve(t, la[0], nil)
			base := "http://" + net.JoinHostPort(la[1], r.port()) + "/v1/projects/default"
			for _, rt := range []struct{ path, token, body string }{
				{"/workers/register", "", `{"name":"w"}`},
				{"/workers/verify", "", `{"worker_id":"wrk_x","response":"00"}`},
				{"/workers/refresh", adminToken, ``},
				{"/lease", adminToken, `{"queues":["default"],"max":1}`},
				{"/extend", adminToken, `{"leases":[]}`},
				{"/report", adminToken, `{"outcomes":[]}`},
			} {
				status, code, msg := post(t, base+rt.path, rt.token, rt.body)
				if status != http.StatusForbidden || code != wire.CodeTLSRequired || !strings.Contains(msg, "--allow-insecure-workers") {
					t.Errorf("POST %s = %d %s %q, want 403 %s naming the way out", rt.path, status, code, msg, wire.CodeTLSRequired)
				}
			}
			// Other routes are served.
			if status, code, _ := post(t, base+"/tasks", adminToken, `{"tasks":[{"type":"t"}]}`); status != http.StatusOK {
				t.Errorf("enqueue = %d %s, want 200", status, code)
			}
			// tasks:batchGet, which session keys may call too, is refused
			// to session keys only: tokens still read through it.
			if status, code, _ := post(t, base+"/tasks:batchGet", adminToken, `{"ids":["t_x"]}`); status != http.StatusOK {
				t.Errorf("batchGet with a token = %d %s, want 200", status, code)
			}
			// store/remote gets the code back.
			_, secret, err := r.Server.Server.API().CreateProject(t.Context(), "acme", "Acme")
			if err != nil {
				t.Fatal(err)
			}
			_, err = remote.Open(t.Context(), "http://"+net.JoinHostPort(la[1], r.port()), &remote.Config{Project: "acme", WorkerSecret: secret})
			if code := apiclient.CodeOf(err); code != wire.CodeTLSRequired {
				t.Errorf("remote.Open as a worker = %v (code %q), want %s", err, code, wire.CodeTLSRequired)
			}
			if !strings.Contains(r.Logs(), "the worker routes are refused") {
				t.Errorf("no warning at start:\n%s", r.Logs())
			}
		})
		t.Run("allowed on "+la[0], func(t *testing.T) {
			t.Parallel()
			r := serve(t, la[0], func(c *server.Config) { c.AllowInsecureWorkers = true })
			_, secret, err := r.Server.Server.API().CreateProject(t.Context(), "acme", "Acme")
			if err != nil {
				t.Fatal(err)
			}
			ws, err := remote.Open(t.Context(), "http://"+net.JoinHostPort(la[1], r.port()), &remote.Config{Project: "acme", WorkerSecret: secret})
			if err != nil {
				t.Fatalf("remote.Open as a worker with AllowInsecureWorkers: %v", err)
			}
			_ = ws.Close()
			if !strings.Contains(r.Logs(), "--allow-insecure-workers") {
				t.Errorf("no warning at start:\n%s", r.Logs())
			}
		})
	}
	for _, lo := range []string{"127.0.0.1:0", "127.0.0.2:0", "[::1]:0"} {
		t.Run("loopback "+lo, func(t *testing.T) {
			t.Parallel()
			r := serve(t, lo, nil)
			if status, code, _ := post(t, "http://"+r.Addr+"/v1/projects/default/workers/register", "", `{"name":"w"}`); status != http.StatusOK {
				t.Errorf("register on loopback = %d %s, want 200", status, code)
			}
			if strings.Contains(r.Logs(), "plain HTTP") {
				t.Errorf("a warning on loopback:\n%s", r.Logs())
			}
		})
	}
}

// TestTLSConfig: the pair goes together and must load; the URL for the CLI
// says https:// and names a host the certificate is valid for.
func TestTLSConfig(t *testing.T) {
	t.Parallel()
	f := newTLSFiles(t, 7)
	open := func(t *testing.T) *embedded.Store {
		t.Helper()
		st := kilntest.Embedded(t, nil)
		return st
	}
	st := open(t)
	other := newTLSFiles(t, 8)
	for _, c := range []struct {
		name, cert, key, want string
	}{
		{"cert only", f.cert, "", "both"},
		{"key only", "", f.key, "both"},
		{"missing file", f.cert, filepath.Join(f.dir, "none.key"), "none.key"},
		{"not PEM", f.caFile, f.caFile, "key pair"},
		{"key of another pair", f.cert, other.key, "private key does not match"},
	} {
		_, err := server.New(&server.Config{Store: st, DisableBootstrap: true, TLSCertFile: c.cert, TLSKeyFile: c.key})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v, want an error with %q", c.name, err, c.want)
		}
	}

	for _, c := range []struct {
		addr     string
		tls      bool
		wantURL  string
		certHost []string
	}{
		{":7878", true, "https://localhost:7878", nil},
		{"0.0.0.0:7878", false, "http://127.0.0.1:7878", nil},
		{"kiln.example:7878", true, "https://kiln.example:7878", nil},
		{"[::]:7878", true, "https://10.1.2.3:7878", []string{"10.1.2.3"}},
	} {
		cfg := &server.Config{Store: open(t), BootstrapToken: adminToken, Addr: c.addr}
		if c.tls {
			cfg.TLSCertFile, cfg.TLSKeyFile = f.cert, f.key
			if c.certHost != nil {
				dir := t.TempDir()
				cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "c"), filepath.Join(dir, "k")
				f.ca.Leaf(t, 9, c.certHost...).Write(t, cfg.TLSCertFile, cfg.TLSKeyFile)
			}
		}
		srv, err := server.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := srv.URL(); got != c.wantURL {
			t.Errorf("Addr %q, TLS %v: URL() = %q, want %q", c.addr, c.tls, got, c.wantURL)
		}
	}

	// The CLI file gets the https:// URL; an old http:// one is kept, with
	// a warning.
	cli := filepath.Join(t.TempDir(), "cli.json")
	if _, err := server.New(&server.Config{Store: open(t), BootstrapToken: adminToken, CLIFile: cli, Addr: "127.0.0.1:7878", TLSCertFile: f.cert, TLSKeyFile: f.key}); err != nil {
		t.Fatal(err)
	}
	var saved wire.CLIConfig
	if b, err := os.ReadFile(cli); err != nil || json.Unmarshal(b, &saved) != nil || saved.URL != "https://127.0.0.1:7878" {
		t.Errorf("cli.json = %+v (%v), want the https:// URL", saved, err)
	}
	if err := os.WriteFile(cli, []byte(`{"url":"http://127.0.0.1:7878","project":"default","token":"`+adminToken+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &strings.Builder{}
	if _, err := server.New(&server.Config{Store: open(t), BootstrapToken: adminToken, CLIFile: cli, Addr: "127.0.0.1:7878", TLSCertFile: f.cert, TLSKeyFile: f.key,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "another scheme") {
		t.Errorf("no warning about the http:// URL of the CLI file:\n%s", logs)
	}
}
