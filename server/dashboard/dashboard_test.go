package dashboard_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/server/dashboard"
)

// browser is an HTTP client with a cookie jar, as a browser on the
// dashboard's origin.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

func newBrowser(t *testing.T, base string, c *http.Client) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c == nil {
		c = &http.Client{}
	}
	cc := *c
	cc.Jar = jar
	cc.Timeout = 30 * time.Second
	return &browser{t: t, base: base, c: &cc}
}

// answer is a response read to its end.
type answer struct {
	StatusCode int
	Header     http.Header
	cookies    []*http.Cookie
}

// Cookies returns the cookies the answer set.
func (a *answer) Cookies() []*http.Cookie { return a.cookies }

// do sends a request; hdr are extra headers ("Origin", "X-CSRF-Token"...).
func (b *browser) do(method, path string, body any, hdr map[string]string) (*answer, []byte) {
	b.t.Helper()
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			b.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, r)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return &answer{StatusCode: res.StatusCode, Header: res.Header, cookies: res.Cookies()}, out
}

func (b *browser) login(tok string) *answer {
	b.t.Helper()
	res, body := b.do("POST", "/ui/login", map[string]string{"token": tok}, nil)
	if res.StatusCode == http.StatusOK {
		var s struct {
			CSRF string `json:"csrf"`
		}
		if err := json.Unmarshal(body, &s); err != nil || s.CSRF == "" {
			b.t.Fatalf("sign-in answer %s: no csrf (%v)", body, err)
		}
		b.csrf = s.CSRF
	}
	return res
}

func sessionCookie(t *testing.T, res *answer, name string) *http.Cookie {
	t.Helper()
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", name, res.Header.Values("Set-Cookie"))
	return nil
}

// TestSignIn: a wrong token gets 401 and no cookie; a token gets a session
// cookie that is HttpOnly, SameSite=Strict, not Secure over plain HTTP, and
// holds no part of the token; the session then reaches the API through
// the proxy, and sign-out ends it. No token is logged.
func TestSignIn(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	b := newBrowser(t, ts.URL, nil)

	res, _ := b.do("GET", "/ui/session", nil, nil)
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session before sign-in: %d", res.StatusCode)
	}
	res, _ = b.do("GET", "/ui/api/v1/projects", nil, nil)
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("proxy before sign-in: %d", res.StatusCode)
	}
	wrong := "kiln_wrong-but-long-enough-token-xxxxxxxxxx"
	res = b.login(wrong)
	if res.StatusCode != http.StatusUnauthorized || len(res.Cookies()) != 0 {
		t.Fatalf("wrong token: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	res, body := b.do("POST", "/ui/login", map[string]string{"token": ts.Token, "extra": "x"}, nil)
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: %d %s", res.StatusCode, body)
	}

	res = b.login(ts.Token)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	c := sessionCookie(t, res, dashboard.CookieName)
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure on plain HTTP, Path=/", c)
	}
	if strings.Contains(c.Value, ts.Token) || strings.Contains(ts.Token, c.Value) || len(c.Value) < 40 {
		t.Fatalf("the cookie value %q is not a random session id", c.Value)
	}
	res, body = b.do("GET", "/ui/session", nil, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":"default"`) || !strings.Contains(string(body), `"admin":false`) {
		t.Fatalf("session: %d %s", res.StatusCode, body)
	}
	res, body = b.do("GET", "/ui/api/v1/projects/default/queues", nil, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"queues"`) {
		t.Fatalf("proxied GET: %d %s", res.StatusCode, body)
	}
	// A project token does not reach admin routes through the proxy.
	res, _ = b.do("POST", "/ui/api/v1/projects", map[string]string{"id": "other"}, map[string]string{dashboard.CSRFHeader: b.csrf})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("admin route with a project token's session: %d", res.StatusCode)
	}
	// Sign-out needs the CSRF token too.
	if res, _ = b.do("POST", "/ui/logout", nil, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without the CSRF token: %d", res.StatusCode)
	}
	if res, _ = b.do("POST", "/ui/logout", nil, map[string]string{dashboard.CSRFHeader: b.csrf}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out: %d", res.StatusCode)
	}
	if res, _ = b.do("GET", "/ui/api/v1/projects/default/queues", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("proxy after sign-out: %d", res.StatusCode)
	}
	// The admin token: admin in the session.
	a := newBrowser(t, ts.URL, nil)
	a.login(ts.AdminToken)
	if _, body = a.do("GET", "/ui/session", nil, nil); !strings.Contains(string(body), `"admin":true`) {
		t.Fatalf("admin session: %s", body)
	}
	logs := ts.Logs()
	if !strings.Contains(logs, "/ui/login") {
		t.Fatal("the sign-ins were not logged at all")
	}
	for name, s := range map[string]string{"project token": ts.Token, "admin token": ts.AdminToken, "wrong token": wrong, "session id": c.Value, "csrf token": b.csrf} {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the %s", name)
		}
	}
}

// TestCSRF: every request through the proxy that is not GET or HEAD needs
// the session's CSRF token and the same origin; a refused one changes
// nothing.
func TestCSRF(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	b := newBrowser(t, ts.URL, nil)
	if res := b.login(ts.Token); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	other := newBrowser(t, ts.URL, nil)
	other.login(ts.Token)
	if other.csrf == b.csrf {
		t.Fatal("two sessions share a CSRF token")
	}
	pause := "/ui/api/v1/projects/default/queues/q/pause?create=true"
	u, _ := url.Parse(ts.URL)
	for name, hdr := range map[string]map[string]string{
		"no token":            nil,
		"wrong token":         {dashboard.CSRFHeader: "nope"},
		"another's token":     {dashboard.CSRFHeader: other.csrf},
		"cross-site fetch":    {dashboard.CSRFHeader: b.csrf, "Sec-Fetch-Site": "cross-site"},
		"same-site fetch":     {dashboard.CSRFHeader: b.csrf, "Sec-Fetch-Site": "same-site"},
		"foreign Origin":      {dashboard.CSRFHeader: b.csrf, "Origin": "http://evil.example"},
		"Origin another port": {dashboard.CSRFHeader: b.csrf, "Origin": "http://" + u.Hostname() + ":1"},
	} {
		res, body := b.do("POST", pause, nil, hdr)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"forbidden"`) {
			t.Errorf("%s: %d %s, want 403 forbidden", name, res.StatusCode, body)
		}
	}
	_, body := b.do("GET", "/ui/api/v1/projects/default/queues?queue=q", nil, nil)
	if strings.Contains(string(body), `"paused":true`) {
		t.Fatalf("a refused request paused the queue: %s", body)
	}
	res, body := b.do("POST", pause, nil, map[string]string{dashboard.CSRFHeader: b.csrf, "Origin": ts.URL, "Sec-Fetch-Site": "same-origin"})
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"paused":true`) {
		t.Fatalf("with the token: %d %s", res.StatusCode, body)
	}
	// DELETE is an action too.
	if res, _ = b.do("DELETE", "/ui/api/v1/projects/default/tasks/x", nil, nil); res.StatusCode != http.StatusForbidden {
		t.Fatalf("DELETE without the token: %d", res.StatusCode)
	}
	// Sign-in from another origin is refused (login CSRF).
	o := newBrowser(t, ts.URL, nil)
	if res, _ = o.do("POST", "/ui/login", map[string]string{"token": ts.Token}, map[string]string{"Origin": "http://evil.example"}); res.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin sign-in: %d", res.StatusCode)
	}
	// A form post (no JSON) cannot sign in either.
	req, _ := http.NewRequest("POST", ts.URL+"/ui/login", strings.NewReader("token="+ts.Token))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r2.Body.Close()
	if r2.StatusCode != http.StatusBadRequest || len(r2.Cookies()) != 0 {
		t.Fatalf("form sign-in: %d", r2.StatusCode)
	}
}

// TestHeaders: the page, its files, the dashboard's own answers and the
// proxied ones carry a strict CSP (no inline script, no eval) and the
// other protective headers; the API's own paths stay the API's.
func TestHeaders(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	b := newBrowser(t, ts.URL, nil)
	for _, path := range []string{"/", "/assets/app.js", "/assets/lib.js", "/assets/style.css", "/ui/session", "/assets/nope.js"} {
		res, body := b.do("GET", path, nil, nil)
		csp := res.Header.Get("Content-Security-Policy")
		if csp != dashboard.CSP {
			t.Errorf("%s: CSP %q", path, csp)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", path, k, got, want)
			}
		}
		if path == "/" && (res.StatusCode != http.StatusOK || !strings.Contains(string(body), `src="/assets/app.js"`)) {
			t.Errorf("GET /: %d", res.StatusCode)
		}
		if strings.HasSuffix(path, ".js") && path != "/assets/nope.js" && !strings.Contains(res.Header.Get("Content-Type"), "javascript") {
			t.Errorf("%s: Content-Type %q", path, res.Header.Get("Content-Type"))
		}
	}
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "*", "data: 'self'"} {
		if strings.Contains(strings.Split(strings.Split(dashboard.CSP, "script-src")[1], ";")[0], bad) {
			t.Errorf("script-src allows %s", bad)
		}
	}
	b.login(ts.Token)
	res, _ := b.do("GET", "/ui/api/v1/projects/default/queues", nil, nil)
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("proxied answer CSP %q", csp)
	}
	// Paths that are not the dashboard's are still answered by the API.
	res, body := b.do("GET", "/nope", nil, nil)
	if res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no such route") {
		t.Errorf("GET /nope: %d %s", res.StatusCode, body)
	}
	res, body = b.do("GET", "/healthz", nil, nil)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "ok") {
		t.Errorf("GET /healthz: %d %s", res.StatusCode, body)
	}
	// The proxy forwards only to the APIs.
	res, _ = b.do("GET", "/ui/api/healthz", nil, nil)
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/api/healthz: %d", res.StatusCode)
	}
}

// TestStaticFilesSafe checks the page's own sources: no inline script or
// handler in the HTML, and no HTML sink or eval in the JavaScript (values
// are put in the page with text nodes only).
func TestStaticFilesSafe(t *testing.T) {
	t.Parallel()
	root := "static"
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setTimeout\(\s*['"]|setInterval\(\s*['"]`)
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=|javascript:|style=`)
	err := fs.WalkDir(os.DirFS(root), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			return err
		}
		switch filepath.Ext(path) {
		case ".js":
			if m := sinks.Find(b); m != nil {
				t.Errorf("%s uses %s", path, m)
			}
		case ".html":
			if m := inline.Find(b); m != nil {
				t.Errorf("%s has inline code: %s", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSecureCookie: behind TLS the cookie is Secure and __Host- named.
func TestSecureCookie(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	h, err := dashboard.New(dashboard.Config{Backend: ts.Server.Handler(), Identify: ts.Server.API().Identify, Secure: true})
	if err != nil {
		t.Fatal(err)
	}
	tls := httptest.NewTLSServer(h)
	t.Cleanup(tls.Close)
	b := newBrowser(t, tls.URL, tls.Client())
	res := b.login(ts.Token)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	c := sessionCookie(t, res, dashboard.SecureCookieName)
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Domain != "" {
		t.Fatalf("cookie %+v", c)
	}
	// The plain name is not accepted in its place.
	req, _ := http.NewRequest("GET", tls.URL+"/ui/session", nil)
	req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: c.Value}) //nolint:gosec // G124: a request's cookie, as a client sends it
	r2, err := tls.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r2.Body.Close()
	if r2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the plain cookie name on TLS: %d", r2.StatusCode)
	}
	if res, _ := b.do("GET", "/ui/session", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("session: %d", res.StatusCode)
	}
}

// TestSessionExpiryAndCap: a session ends after its TTL; beyond
// MaxSessions the oldest goes.
func TestSessionExpiryAndCap(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h, err := dashboard.New(dashboard.Config{Backend: ts.Server.Handler(), SessionTTL: time.Hour, MaxSessions: 2, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var bs []*browser
	for range 3 {
		b := newBrowser(t, srv.URL, nil)
		if res := b.login(ts.Token); res.StatusCode != http.StatusOK {
			t.Fatalf("sign-in: %d", res.StatusCode)
		}
		bs = append(bs, b)
		mu.Lock()
		now = now.Add(time.Second)
		mu.Unlock()
	}
	if n := h.Sessions(); n != 2 {
		t.Fatalf("%d sessions, want 2 (the cap)", n)
	}
	if res, _ := bs[0].do("GET", "/ui/session", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the oldest session survived the cap: %d", res.StatusCode)
	}
	if res, _ := bs[2].do("GET", "/ui/session", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("the newest session: %d", res.StatusCode)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	if res, _ := bs[2].do("GET", "/ui/api/v1/projects", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an expired session: %d", res.StatusCode)
	}
}

// TestRevokedToken: a session whose token was deleted gets 401 from the
// API through the proxy (the token is checked on every call).
func TestRevokedToken(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	a := newBrowser(t, ts.URL, nil)
	a.login(ts.AdminToken)
	res, body := a.do("POST", "/ui/api/v1/projects/default/tokens", map[string]string{"name": "tmp"}, map[string]string{dashboard.CSRFHeader: a.csrf})
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("token: %d %s", res.StatusCode, body)
	}
	var tok struct{ ID, Token string }
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, ts.URL, nil)
	b.login(tok.Token)
	if res, _ = b.do("GET", "/ui/api/v1/projects/default/queues", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("before revoke: %d", res.StatusCode)
	}
	if res, _ = a.do("DELETE", "/ui/api/v1/projects/default/tokens/"+tok.ID, nil, map[string]string{dashboard.CSRFHeader: a.csrf}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("delete token: %d", res.StatusCode)
	}
	if res, _ = b.do("GET", "/ui/api/v1/projects/default/queues", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after revoke: %d", res.StatusCode)
	}
	if res, _ = b.do("GET", "/ui/session", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session after revoke: %d", res.StatusCode)
	}
}

// TestDisableDashboard: with the dashboard off, / is the API's 404.
func TestDisableDashboard(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, &kilntest.ServerOptions{Configure: func(c *server.Config) { c.DisableDashboard = true }})
	b := newBrowser(t, ts.URL, nil)
	for _, p := range []string{"/", "/assets/app.js", "/ui/session"} {
		res, body := b.do("GET", p, nil, nil)
		if res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no such route") {
			t.Errorf("GET %s: %d %s", p, res.StatusCode, body)
		}
	}
}
