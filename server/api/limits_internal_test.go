package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

// TestHandshakeLimiterBounded sends handshake requests from twice as many
// client addresses as the limiter remembers: its table stays bounded.
func TestHandshakeLimiterBounded(t *testing.T) {
	t.Parallel()
	clock := storetest.NewFakeClock(storetest.Epoch)
	st, err := embedded.Open(t.TempDir(), &embedded.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	a, err := New(Config{Store: st, Meta: st, Clock: clock, ProjectHandshakeRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	if _, _, err := a.CreateProject(t.Context(), "p", "p"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 * limiterKeys {
		// A verify of an unknown worker: cheap, and counted like any.
		req := httptest.NewRequestWithContext(t.Context(), "POST", "/v1/projects/p/workers/verify", strings.NewReader(`{"worker_id":"wrk_x","response":"00"}`))
		req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4000", i>>16&0xff, i>>8&0xff, i&0xff)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d = %d %s, want 401 verify_failed", i, rec.Code, rec.Body)
		}
		if n := a.addrLimit.Len(); n > limiterKeys {
			t.Fatalf("after %d addresses the limiter holds %d, more than %d", i+1, n, limiterKeys)
		}
	}
	if n := a.addrLimit.Len(); n != limiterKeys {
		t.Errorf("the limiter holds %d addresses, want %d", n, limiterKeys)
	}
}
