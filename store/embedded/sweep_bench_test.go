package embedded

import (
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// BenchmarkSweepUniqueKeys measures a sweep of a store that holds 300,000
// unique keys, none of them expired, and has nothing else to do: the cost
// every sweeper pays every interval (docs/benchmarks.md).
func BenchmarkSweepUniqueKeys(b *testing.B) {
	const keys, batch = 300_000, 10_000
	s, err := Open(b.TempDir(), &Config{ReserveBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx := b.Context()
	for start := 0; start < keys; start += batch {
		ins := make([]store.TaskInput, batch)
		for i := range ins {
			n := start + i
			ins[i] = store.TaskInput{ID: fmt.Sprintf("t%07d", n), Type: "t", UniqueKey: fmt.Sprintf("k%07d", n), UniqueTTL: time.Hour}
		}
		res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: ins})
		if err != nil {
			b.Fatal(err)
		}
		for _, it := range res.Items {
			if it.Err != nil {
				b.Fatal(it.Err)
			}
		}
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := s.Sweep(ctx, store.SweepParams{})
		if err != nil || res.Total() != 0 {
			b.Fatalf("Sweep = %+v, %v; want nothing done", res, err)
		}
	}
}
