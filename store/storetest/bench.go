package storetest

import (
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// ListBenchTasks is how many tasks the List benchmarks of Bench enqueue
// before they measure.
const ListBenchTasks = 450_000

// Bench runs the suite's workloads as benchmarks against the stores h opens,
// each on a fresh store driven by the system clock, and reports tasks/s:
//
//   - Enqueue: one task per call;
//   - EnqueueParallel: one task per call from 16 goroutines per
//     GOMAXPROCS (b.RunParallel), the callers a group commit serves
//     together;
//   - EnqueueBatch1000: batches of 1000 tasks (b.N counts batches);
//   - LeaseReport: tasks enqueued beforehand (not timed), then leased in
//     batches of 50 and reported in batches of 50;
//   - EndToEnd: enqueue, lease and report b.N tasks in batches of 50;
//   - ListNoMatch: one List call whose filter matches none of
//     ListBenchTasks tasks (enqueued beforehand, not timed), b.N times;
//   - ListNoMatchWalk: the same filter walked by cursor to the end (b.N
//     counts walks), the cost of a whole scan split into bounded calls.
func Bench(b *testing.B, h Harness) {
	b.Helper()
	if h.New == nil {
		b.Fatal("storetest: Harness.New is nil")
	}
	setup := func(b *testing.B) *fixture {
		b.Helper()
		s, reopen := h.New(b, store.SystemClock{})
		return &fixture{t: b, s: s, reopen: reopen, ns: newName("bench")}
	}
	report := func(b *testing.B, tasks int) {
		b.Helper()
		if sec := b.Elapsed().Seconds(); sec > 0 {
			b.ReportMetric(float64(tasks)/sec, "tasks/s")
		}
	}
	inputs := func(n int) []store.TaskInput {
		ins := make([]store.TaskInput, n)
		for i := range ins {
			ins[i] = input("bench", "q")
			ins[i].Payload = []byte(`{"to":"someone@example.com","n":12345}`)
		}
		return ins
	}
	// cycle leases up to batch tasks and reports them succeeded; it returns
	// how many it handled.
	cycle := func(f *fixture, batch int) int {
		tasks := f.lease(store.LeaseParams{Queues: []string{"q"}, Max: batch, Duration: time.Minute})
		if len(tasks) == 0 {
			return 0
		}
		outs := make([]store.Outcome, len(tasks))
		for i, tk := range tasks {
			outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
		}
		f.mustReport(outs...)
		return len(tasks)
	}

	b.Run("Enqueue", func(b *testing.B) {
		f := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			in := inputs(1)
			b.StartTimer()
			f.add(in...)
		}
		report(b, b.N)
	})

	b.Run("EnqueueParallel", func(b *testing.B) {
		f := setup(b)
		b.ReportAllocs()
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				in := inputs(1)
				r, err := f.s.Enqueue(b.Context(), store.EnqueueParams{Namespace: f.ns, Tasks: in})
				if err == nil && r.Items[0].Err != nil {
					err = r.Items[0].Err
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		report(b, b.N)
	})

	b.Run("EnqueueBatch1000", func(b *testing.B) {
		f := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			b.StopTimer()
			ins := inputs(1000)
			b.StartTimer()
			f.add(ins...)
		}
		report(b, b.N*1000)
	})

	b.Run("LeaseReport", func(b *testing.B) {
		const batch = 50
		f := setup(b)
		for left := b.N; left > 0; left -= store.MaxBatch {
			f.add(inputs(min(left, store.MaxBatch))...)
		}
		b.ReportAllocs()
		b.ResetTimer()
		done := 0
		for done < b.N {
			n := cycle(f, batch)
			if n == 0 {
				b.Fatalf("leased nothing after %d of %d tasks", done, b.N)
			}
			done += n
		}
		report(b, done)
	})

	// listSetup enqueues ListBenchTasks tasks in batches (not timed).
	listSetup := func(b *testing.B) *fixture {
		b.Helper()
		f := setup(b)
		for left := ListBenchTasks; left > 0; left -= store.MaxBatch {
			f.add(inputs(min(left, store.MaxBatch))...)
		}
		return f
	}

	b.Run("ListNoMatch", func(b *testing.B) {
		f := listSetup(b)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if res := f.list(store.ListParams{Type: "nope", Limit: 100}); len(res.Tasks) != 0 {
				b.Fatalf("List(Type nope) found %d tasks", len(res.Tasks))
			}
		}
	})

	b.Run("ListNoMatchWalk", func(b *testing.B) {
		f := listSetup(b)
		b.ReportAllocs()
		b.ResetTimer()
		calls := 0
		for range b.N {
			p := store.ListParams{Type: "nope", Limit: 100}
			for {
				res := f.list(p)
				calls++
				if res.NextCursor == "" {
					break
				}
				p.Cursor = res.NextCursor
			}
		}
		b.ReportMetric(float64(calls)/float64(b.N), "calls/walk")
	})

	b.Run("EndToEnd", func(b *testing.B) {
		const batch = 50
		f := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		done := 0
		for done < b.N {
			b.StopTimer()
			ins := inputs(min(batch, b.N-done))
			b.StartTimer()
			f.add(ins...)
			for left := len(ins); left > 0; {
				n := cycle(f, batch)
				if n == 0 {
					b.Fatalf("leased nothing with %d tasks enqueued", left)
				}
				left -= n
			}
			done += len(ins)
		}
		report(b, done)
	})
}
