package apiclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testcert"
)

// TestCertErrors: a server certificate that does not verify fails with a
// *CertError that names the problem; with the CA and the right name the
// request succeeds.
func TestCertErrors(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "apiclient test CA")
	pair := ca.Leaf(t, 1, "kiln.test") // a DNS name only: 127.0.0.1 is a name mismatch
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	caFile := ca.WriteCA(t, dir, "ca.pem")
	tc, err := LoadCAFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	// kiln.test is the test server, whatever the URL's host and port.
	toServer := func(hc *http.Client) *http.Client {
		d := &net.Dialer{}
		hc.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, srv.Listener.Addr().String())
		}
		return hc
	}
	call := func(url string, hc *http.Client) error {
		t.Helper()
		defer hc.CloseIdleConnections()
		c, err := New(url, &Config{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		return c.Do(t.Context(), Request{Method: http.MethodGet, Path: "/x"}, nil)
	}

	for _, c := range []struct {
		name, url string
		hc        *http.Client
		reason    string
		text      string
	}{
		{"no CA", "https://kiln.test", toServer(NewHTTPClient()), CertUnknownAuthority, "unknown authority"},
		{"name mismatch", "https://127.0.0.1", toServer(NewHTTPClientTLS(tc)), CertNameMismatch, "name mismatch: the server's TLS certificate is not valid for 127.0.0.1"},
	} {
		err := call(c.url, c.hc)
		var ce *CertError
		var te *TransportError
		if !errors.As(err, &ce) || ce.Reason != c.reason || !strings.Contains(err.Error(), c.text) || !errors.As(err, &te) {
			t.Errorf("%s: got %v, want a *CertError (%s) in a *TransportError, saying %q", c.name, err, c.reason, c.text)
		}
	}
	if err := call("https://kiln.test", toServer(NewHTTPClientTLS(tc))); err != nil {
		t.Errorf("with the CA and the right name: %v", err)
	}

	// LoadCAFile: a file that holds no certificate, or none at all.
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, pair.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAFile(empty); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("LoadCAFile(a key file) = %v", err)
	}
	if _, err := LoadCAFile(filepath.Join(dir, "none.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCAFile(missing) = %v", err)
	}
}
