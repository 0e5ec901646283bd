package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// certCheckEvery is how often, at most, a TLS handshake looks at the
// certificate and key files to see whether they changed.
const certCheckEvery = time.Second

// certReloader serves the key pair of two PEM files and loads them again
// when either file changes (another size, modification time or file), so
// that a renewed certificate is served without a restart. A new pair that
// does not load keeps the previous one in service, and is logged.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	tried   [2]os.FileInfo // the files as they were when last loaded or tried
	checked time.Time      // when the files were last looked at
	lastErr string         // the last reload error logged, so it is logged once
}

// newCertReloader loads the pair, which must load.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	infos, err := r.stat()
	if err != nil {
		return nil, fmt.Errorf("server: TLS: %w", err)
	}
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server: TLS: %w", err)
	}
	r.cert, r.tried, r.checked = cert, infos, time.Now()
	r.logLoaded("TLS certificate loaded")
	return r, nil
}

// getCertificate is tls.Config.GetCertificate: the current pair, after a
// look at the files when the last look is certCheckEvery old.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckEvery || now.Before(r.checked) {
		r.checked = now
		r.reload()
	}
	return r.cert, nil
}

// leaf returns the certificate being served.
func (r *certReloader) leaf() *x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert.Leaf
}

// reload loads the pair again if either file changed since it was last
// loaded or tried. r.mu is held.
func (r *certReloader) reload() {
	infos, err := r.stat()
	if err != nil {
		r.fail(err)
		return
	}
	if sameFile(infos[0], r.tried[0]) && sameFile(infos[1], r.tried[1]) {
		return
	}
	// Remember the files as they are now even if they fail to load: a pair
	// half written is tried again once the other half changes too.
	r.tried = infos
	cert, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		r.fail(err)
		return
	}
	r.cert, r.lastErr = cert, ""
	r.logLoaded("TLS certificate reloaded")
}

// fail logs a failed reload, once for each different error.
func (r *certReloader) fail(err error) {
	if msg := err.Error(); msg != r.lastErr {
		r.lastErr = msg
		r.log.Error("TLS certificate not reloaded; still serving the previous one", "err", err,
			"serial", serialText(r.cert.Leaf), "not_after", r.cert.Leaf.NotAfter)
	}
}

func (r *certReloader) stat() ([2]os.FileInfo, error) {
	var out [2]os.FileInfo
	for i, name := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return out, err
		}
		out[i] = fi
	}
	return out, nil
}

// sameFile reports whether a and b describe the same file, unchanged.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// logLoaded logs what the certificate says (never anything of the key).
func (r *certReloader) logLoaded(msg string) {
	l := r.cert.Leaf
	ips := make([]string, len(l.IPAddresses))
	for i, ip := range l.IPAddresses {
		ips[i] = ip.String()
	}
	r.log.Info(msg, "file", r.certFile, "subject", l.Subject.String(), "dns_names", strings.Join(l.DNSNames, ","),
		"ip_addresses", strings.Join(ips, ","), "serial", serialText(l), "not_before", l.NotBefore, "not_after", l.NotAfter)
	if now := time.Now(); now.After(l.NotAfter) || now.Before(l.NotBefore) {
		r.log.Warn("the TLS certificate is not valid now: clients will refuse it", "file", r.certFile, "not_before", l.NotBefore, "not_after", l.NotAfter)
	}
}

func serialText(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// loadPair reads a PEM certificate (chain) and its private key.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the key pair %s, %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// tlsConfig is the server's TLS configuration: TLS 1.2 or later, the
// certificate from r.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.getCertificate}
}

// isLoopback reports whether a listener's address is a TCP address of the
// loopback network (127.0.0.0/8, ::1). Any other address, the unspecified
// ones (0.0.0.0, ::) included, may be reached from the network.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
