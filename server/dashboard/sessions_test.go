package dashboard_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/server/dashboard"
	"github.com/kilnhq/kiln/store"
)

// TestSessionsTwoServersOneRedis: two servers on one Redis (behind a load
// balancer) share the dashboard's sessions: a browser signed in on one
// reads and acts (CSRF included) through the other, and signing out on one
// ends the session on both. The store holds one record per session, keyed
// by a hash: neither the session id nor the token is in it.
func TestSessionsTwoServersOneRedis(t *testing.T) {
	t.Parallel()
	rawURL := kilntest.RedisURL(t)
	prefix := kilntest.RedisPrefix(t, rawURL)
	start := func() *kilntest.Server {
		return kilntest.StartServer(t, &kilntest.ServerOptions{Store: kilntest.RedisAt(t, rawURL, prefix, nil), Bare: true})
	}
	a, b := start(), start()
	if _, _, err := a.Server.API().CreateProject(context.Background(), "acme", "acme"); err != nil {
		t.Fatal(err)
	}

	br := newBrowser(t, a.URL, nil)
	res := br.login(a.AdminToken)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in on a: %d", res.StatusCode)
	}
	id := sessionCookie(t, res, dashboard.CookieName).Value

	br.base = b.URL // the load balancer sends the next requests to b
	if res, body := br.do("GET", "/ui/session", nil, nil); res.StatusCode != http.StatusOK {
		t.Fatalf("the session on b: %d %s", res.StatusCode, body)
	}
	if res, body := br.do("GET", "/ui/api/v1/projects", nil, nil); res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("acme")) {
		t.Fatalf("the proxy on b: %d %s", res.StatusCode, body)
	}
	if res, body := br.do("POST", "/ui/api/v1/projects/acme/tokens", map[string]string{"name": "x"}, map[string]string{dashboard.CSRFHeader: br.csrf}); res.StatusCode != http.StatusCreated {
		t.Fatalf("an action on b with a's CSRF token: %d %s", res.StatusCode, body)
	}
	if res, _ := br.do("POST", "/ui/api/v1/projects/acme/tokens", map[string]string{"name": "y"}, map[string]string{dashboard.CSRFHeader: "wrong"}); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a wrong CSRF token on b: %d", res.StatusCode)
	}

	recs, err := a.Store.MetaList(context.Background(), store.MetaListParams{Namespace: api.SystemNamespace, Prefix: "dashboard-session/"})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Items) != 1 {
		t.Fatalf("%d session records, want 1", len(recs.Items))
	}
	for _, it := range recs.Items {
		for _, secret := range []string{id, a.AdminToken} {
			if strings.Contains(it.Key, secret) || bytes.Contains(it.Value, []byte(secret)) {
				t.Errorf("the session record %s holds a secret: %s", it.Key, it.Value)
			}
		}
	}

	if res, _ := br.do("POST", "/ui/logout", nil, map[string]string{dashboard.CSRFHeader: br.csrf}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("sign-out on b: %d", res.StatusCode)
	}
	br.base = a.URL
	for _, c := range br.c.Jar.Cookies(mustURL(t, a.URL)) {
		if c.Name == dashboard.CookieName {
			t.Fatalf("the cookie survived sign-out: %v", c)
		}
	}
	// The old cookie, replayed on a, is dead too.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.URL+"/ui/api/v1/projects", nil)
	req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: id, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the signed-out session on a: %d, want 401", resp.StatusCode)
	}
	recs, err = a.Store.MetaList(context.Background(), store.MetaListParams{Namespace: api.SystemNamespace, Prefix: "dashboard-session/"})
	if err != nil || len(recs.Items) != 0 {
		t.Fatalf("after sign-out: %d records (%v), want none", len(recs.Items), err)
	}
}

// TestStoredSessionExpiryAndCap: sessions kept in a store expire after
// SessionTTL (the record is dropped when read) and beyond MaxSessions the
// oldest goes, as in memory.
func TestStoredSessionExpiryAndCap(t *testing.T) {
	t.Parallel()
	ts := kilntest.StartServer(t, nil)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h, err := dashboard.New(dashboard.Config{
		Backend: ts.Server.Handler(), SessionTTL: time.Hour, MaxSessions: 2, Now: clock,
		Meta: ts.Store, MetaNamespace: "dash-test",
	})
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
	if n := h.Sessions(); n != 1 {
		t.Fatalf("%d session records after one expired and was read, want 1 (the other expired one is dropped at the next sign-in)", n)
	}
	if _, err := dashboard.New(dashboard.Config{Backend: ts.Server.Handler(), Meta: ts.Store}); err == nil {
		t.Error("Meta without MetaNamespace was accepted")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
