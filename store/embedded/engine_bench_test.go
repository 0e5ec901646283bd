package embedded

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// BenchmarkEngineCycle compares the engines on the enqueue-lease-report
// cycle under concurrency, the workload of docs/decisions/001: producers
// enqueue small batches (sharing group commits) while consumers lease up to
// 50 tasks and report them. Each iteration moves one task through.
//
//	go test -run '^$' -bench EngineCycle -benchtime 100000x ./store/embedded/
func BenchmarkEngineCycle(b *testing.B) {
	for _, eng := range []string{enginePebble, engineBolt} {
		for _, producers := range []int{1, 16} {
			b.Run(fmt.Sprintf("engine=%s/producers=%d", eng, producers), func(b *testing.B) {
				s := mustOpen(b, b.TempDir(), &Config{engine: eng})
				defer func() { _ = s.Close() }()
				ctx := context.Background()
				var next atomic.Int64
				var done atomic.Int64
				total := int64(b.N)
				var wg sync.WaitGroup
				b.ResetTimer()
				for p := 0; p < producers; p++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							start := next.Add(10) - 10
							if start >= total {
								return
							}
							n := min(10, total-start)
							in := make([]store.TaskInput, n)
							for i := range in {
								in[i] = store.TaskInput{ID: fmt.Sprintf("t%d", start+int64(i)), Type: "noop", Payload: []byte(`{"n":1}`)}
							}
							if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "b", Tasks: in}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				for c := 0; c < 2; c++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for done.Load() < total {
							l, err := s.Lease(ctx, store.LeaseParams{Namespace: "b", Queues: []string{store.DefaultQueue}, Max: 50, Duration: time.Minute, Wait: 10 * time.Millisecond})
							if err != nil {
								b.Error(err)
								return
							}
							if len(l.Tasks) == 0 {
								continue
							}
							outs := make([]store.Outcome, len(l.Tasks))
							for i, t := range l.Tasks {
								outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
							}
							if _, err := s.Report(ctx, store.ReportParams{Namespace: "b", Outcomes: outs}); err != nil {
								b.Error(err)
								return
							}
							done.Add(int64(len(outs)))
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			})
		}
	}
}
