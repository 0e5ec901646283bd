package dashboard_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/server/dashboard"
	"github.com/kilnhq/kiln/store/embedded"
)

// BenchmarkAPIWithDashboard measures what the dashboard adds to the API's
// requests when nobody is looking at it: the server's handler answers
// GET /v1/projects/default/tasks/{id} (a token check and a store read on
// the embedded store), in process, with the dashboard on and off. The
// dashboard holds no goroutine and no subscription of its own; its only
// cost on the API's path is one more ServeMux lookup.
//
//	go test -run '^$' -bench APIWithDashboard -benchtime 2s -count 6 ./server/dashboard/
func BenchmarkAPIWithDashboard(b *testing.B) {
	for _, off := range []bool{false, true} {
		name := "dashboard=on"
		if off {
			name = "dashboard=off"
		}
		b.Run(name, func(b *testing.B) {
			st, err := embedded.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = st.Close() }()
			const tok = "bench-admin-token-0123456789abcdefghij"
			srv, err := server.New(&server.Config{Store: st, BootstrapToken: tok, SweepInterval: -1, DisableDashboard: off})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.API().Stop()
			h := srv.Handler()
			body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "bench", Payload: []byte("x")}}})
			req := httptest.NewRequest("POST", "/v1/projects/default/tasks", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var res wire.EnqueueResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res.Tasks) != 1 {
				b.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
			}
			get := httptest.NewRequest("GET", "/v1/projects/default/tasks/"+res.Tasks[0].ID, nil)
			get.Header.Set("Authorization", "Bearer "+tok)
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, get)
				if w.Code != http.StatusOK {
					b.Fatalf("get: %d", w.Code)
				}
			}
		})
	}
}

// BenchmarkProxySessions measures a request through the dashboard's proxy
// (GET /ui/api/v1/projects/default/tasks/{id}: a session lookup, then the
// API's token check and store read, in process, on the embedded store)
// with the sessions in memory and in the store (Config.Meta), which reads
// and opens the session's record on every request.
//
//	go test -run '^$' -bench ProxySessions -benchtime 20000x -count 4 ./server/dashboard/
func BenchmarkProxySessions(b *testing.B) {
	for _, inStore := range []bool{false, true} {
		name := "sessions=memory"
		if inStore {
			name = "sessions=store"
		}
		b.Run(name, func(b *testing.B) {
			st, err := embedded.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = st.Close() }()
			const tok = "bench-admin-token-0123456789abcdefghij"
			srv, err := server.New(&server.Config{Store: st, BootstrapToken: tok, SweepInterval: -1, DisableDashboard: true})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.API().Stop()
			cfg := dashboard.Config{Backend: srv.Handler()}
			if inStore {
				cfg.Meta, cfg.MetaNamespace = st, "_kiln"
			}
			h, err := dashboard.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "bench", Payload: []byte("x")}}})
			req := httptest.NewRequest("POST", "/v1/projects/default/tasks", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			var res wire.EnqueueResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res.Tasks) != 1 {
				b.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
			}
			login := httptest.NewRequest("POST", "/ui/login", strings.NewReader(`{"token":"`+tok+`"}`))
			login.Header.Set("Content-Type", "application/json")
			lrec := httptest.NewRecorder()
			h.ServeHTTP(lrec, login)
			cookies := lrec.Result().Cookies()
			if lrec.Code != http.StatusOK || len(cookies) != 1 {
				b.Fatalf("sign-in: %d %s", lrec.Code, lrec.Body)
			}
			get := httptest.NewRequest("GET", "/ui/api/v1/projects/default/tasks/"+res.Tasks[0].ID, nil)
			get.AddCookie(cookies[0])
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, get)
				if w.Code != http.StatusOK {
					b.Fatalf("get: %d %s", w.Code, w.Body)
				}
			}
		})
	}
}
