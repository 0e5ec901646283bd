package remote_test

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln" //nolint:depguard // the benchmark runs kiln.Client and kiln.Worker on the remote store, as users do
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server" //nolint:depguard // the benchmark's server; the package itself talks HTTP only
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/remote"
)

// BenchmarkRemoteEndToEnd is the "Remote workers" figure of
// docs/benchmarks.md: enqueue 100,000 no-op tasks in batches of 1000 and run
// them with workers of concurrency 50, in-process on the embedded store, and
// through the HTTP API on loopback with 1 and 3 remote workers (each with
// its own connection pool and worker session). Run it with
//
//	go test -run '^$' -bench RemoteEndToEnd -benchtime 1x ./store/remote/
func BenchmarkRemoteEndToEnd(b *testing.B) {
	b.Run("in-process", func(b *testing.B) { benchEndToEnd(b, 0) })
	b.Run("remote-1-worker", func(b *testing.B) { benchEndToEnd(b, 1) })
	b.Run("remote-3-workers", func(b *testing.B) { benchEndToEnd(b, 3) })
}

func benchEndToEnd(b *testing.B, remotes int) {
	const total, batch, project = 100_000, 1000, "bench"
	for b.Loop() {
		b.StopTimer()
		emb, err := embedded.Open(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var client store.Store = emb
		var workerStores []store.Store
		var serveDone chan error
		if remotes == 0 {
			workerStores = []store.Store{emb}
		} else {
			srv, err := server.New(&server.Config{Store: emb, BootstrapToken: adminToken, BootstrapProject: project})
			if err != nil {
				b.Fatal(err)
			}
			var lc net.ListenConfig
			ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			serveDone = make(chan error, 1)
			go func() { serveDone <- srv.Serve(ctx, ln) }()
			url := "http://" + ln.Addr().String()
			admin, err := apiclient.New(url, &apiclient.Config{Token: adminToken})
			if err != nil {
				b.Fatal(err)
			}
			var ws wire.WorkerSecret
			if err := admin.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", project, "worker-secret")}, &ws); err != nil {
				b.Fatal(err)
			}
			cs, err := remote.Open(ctx, url, &remote.Config{Token: adminToken})
			if err != nil {
				b.Fatal(err)
			}
			client = cs
			for range remotes {
				s, err := remote.Open(ctx, url, &remote.Config{Project: project, WorkerSecret: ws.WorkerSecret})
				if err != nil {
					b.Fatal(err)
				}
				workerStores = append(workerStores, s)
			}
		}
		var done atomic.Int64
		all := make(chan struct{})
		var wg sync.WaitGroup
		for _, s := range workerStores {
			w, err := kiln.NewWorker(s, &kiln.WorkerConfig{
				Namespace: project, Concurrency: 50,
				EventFunc: func(e kiln.Event) {
					if e.Kind == kiln.EventSucceeded && done.Add(1) == total {
						close(all)
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			w.Handle("noop", kiln.HandlerFunc(func(context.Context, *kiln.Task) error { return nil }))
			wg.Go(func() { _ = w.Run(ctx) })
		}
		c, err := kiln.NewClient(client, &kiln.ClientConfig{Namespace: project})
		if err != nil {
			b.Fatal(err)
		}
		reqs := make([]kiln.TaskRequest, batch)
		for i := range reqs {
			reqs[i] = kiln.TaskRequest{Type: "noop"}
		}
		b.StartTimer()
		start := time.Now()
		for i := 0; i < total; i += batch {
			if _, err := c.EnqueueMany(ctx, reqs); err != nil {
				b.Fatal(err)
			}
		}
		<-all
		// The handlers are done; wait until the store has every outcome.
		for {
			st, err := emb.Stats(ctx, store.StatsParams{Namespace: project, Queues: []string{store.DefaultQueue}})
			if err != nil {
				b.Fatal(err)
			}
			if st.Queues[0].Counts[store.StateSucceeded] == total {
				break
			}
			time.Sleep(100 * time.Microsecond) // a benchmark's poll of the store
		}
		elapsed := time.Since(start)
		b.StopTimer()
		cancel()
		wg.Wait()
		if serveDone != nil {
			if err := <-serveDone; err != nil {
				b.Errorf("server: %v", err)
			}
		}
		for _, s := range workerStores {
			_ = s.Close()
		}
		_ = client.Close()
		_ = emb.Close()
		b.ReportMetric(total/elapsed.Seconds(), "tasks/s")
		b.StartTimer()
	}
}
