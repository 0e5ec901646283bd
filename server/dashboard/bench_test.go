package dashboard_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
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
