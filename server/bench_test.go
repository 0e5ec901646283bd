package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
)

// BenchmarkEnqueueHTTP enqueues batches of tasks with 128-byte payloads
// through the HTTP API on loopback, into the embedded store (fsync on
// every batch), from 8 concurrent clients.
//
//	go test -run '^$' -bench EnqueueHTTP -benchtime 20000x ./server/
func BenchmarkEnqueueHTTP(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			st, err := embedded.Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = st.Close() }()
			srv, err := server.New(&server.Config{Store: st, BootstrapToken: adminToken, SweepInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			ts := httptest.NewServer(srv.Handler())
			defer ts.Close()
			defer srv.API().Stop()
			reqs := make([]wire.TaskRequest, batch)
			for i := range reqs {
				reqs[i] = wire.TaskRequest{Type: "bench", Payload: bytes.Repeat([]byte("x"), 128)}
			}
			body, err := json.Marshal(wire.EnqueueRequest{Tasks: reqs})
			if err != nil {
				b.Fatal(err)
			}
			url := ts.URL + "/v1/projects/default/tasks"
			client := ts.Client()
			b.SetParallelism(4) // 4 × GOMAXPROCS clients
			b.ResetTimer()
			start := time.Now()
			calls := (b.N + batch - 1) / batch
			var done = make(chan struct{}, calls)
			for range calls {
				done <- struct{}{}
			}
			close(done)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, ok := <-done; !ok {
						continue
					}
					req, err := http.NewRequestWithContext(context.Background(), "POST", url, bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					req.Header.Set("Authorization", "Bearer "+adminToken)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(calls*batch)/time.Since(start).Seconds(), "tasks/s")
		})
	}
}
