package embedded

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// finishedStore returns a store of engine kind holding n finished tasks of
// namespace "g" (ids f00000...), opened again so that none is in memory.
func finishedStore(tb testing.TB, kind string, n int) (*Store, []string) {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	cfg := &Config{ReserveBytes: -1, engine: kind}
	s := mustOpen(tb, dir, cfg)
	var ids []string
	for i := 0; i < n; i += store.MaxBatch {
		var in []store.TaskInput
		for j := i; j < min(n, i+store.MaxBatch); j++ {
			id := fmt.Sprintf("f%05d", j)
			ids = append(ids, id)
			payload := []byte(fmt.Sprintf(`{"n":%d}`, j))
			if j%7 == 0 {
				payload = nil // no payload: Get answers an empty one
			}
			in = append(in, store.TaskInput{ID: id, Type: "x", Payload: payload})
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "g", Tasks: in}); err != nil {
			tb.Fatal(err)
		}
	}
	for done := 0; done < n; {
		l, err := s.Lease(ctx, store.LeaseParams{Namespace: "g", Queues: []string{store.DefaultQueue}, Max: store.MaxBatch, Duration: time.Minute})
		if err != nil {
			tb.Fatal(err)
		}
		if len(l.Tasks) == 0 {
			tb.Fatalf("lease found nothing after %d of %d", done, n)
		}
		outs := make([]store.Outcome, len(l.Tasks))
		for i, t := range l.Tasks {
			outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "g", Outcomes: outs}); err != nil {
			tb.Fatal(err)
		}
		done += len(outs)
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	s = mustOpen(tb, dir, cfg)
	tb.Cleanup(func() { _ = s.Close() })
	return s, ids
}

// TestGetManyFinished checks that one Get of many finished tasks (read from
// the engine in batches) answers what a Get of each id alone does: absent
// and invalid ids nil, repeated ids each answered, empty payloads non-nil.
func TestGetManyFinished(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{enginePebble, engineBolt} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s, ids := finishedStore(t, kind, 300)
			ask := []string{ids[250], "absent", ids[0], "bad name\n", ids[7], ids[250], ids[1], ids[299]}
			for i := 8; i < 300; i += 3 {
				ask = append(ask, ids[i])
			}
			got, err := s.Get(t.Context(), store.GetParams{Namespace: "g", IDs: ask})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Tasks) != len(ask) {
				t.Fatalf("Get answered %d tasks for %d ids", len(got.Tasks), len(ask))
			}
			for i, id := range ask {
				one, err := s.Get(t.Context(), store.GetParams{Namespace: "g", IDs: []string{id}})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.Tasks[i], one.Tasks[0]) {
					t.Errorf("id %q: Get of many answers %+v, Get of one %+v", id, got.Tasks[i], one.Tasks[0])
				}
				wantPresent := id != "absent" && id != "bad name\n"
				if (got.Tasks[i] != nil) != wantPresent {
					t.Fatalf("id %q: present %v, want %v", id, got.Tasks[i] != nil, wantPresent)
				}
				if tk := got.Tasks[i]; tk != nil && (tk.ID != id || tk.State != store.StateSucceeded || tk.Payload == nil) {
					t.Errorf("id %q: got id %q state %v payload %q", id, tk.ID, tk.State, tk.Payload)
				}
			}
			if string(got.Tasks[6].Payload) != `{"n":1}` || len(got.Tasks[4].Payload) != 0 {
				t.Errorf("payloads %q and %q, want {\"n\":1} and empty", got.Tasks[6].Payload, got.Tasks[4].Payload)
			}
			// The two answers for a repeated id do not share memory.
			got.Tasks[0].Payload[0] = 'X'
			if got.Tasks[5].Payload[0] == 'X' {
				t.Error("the answers for a repeated id share a payload")
			}
		})
	}
}

// BenchmarkGetFinished reads 10,000 finished tasks (none in memory) by id in
// Gets of 1,000, as a chord's callback reads its members. One iteration
// reads all 10,000.
//
//	go test -run '^$' -bench GetFinished -benchtime 20x ./store/embedded/
func BenchmarkGetFinished(b *testing.B) {
	for _, kind := range []string{enginePebble, engineBolt} {
		b.Run("engine="+kind, func(b *testing.B) {
			const n, chunk = 10000, 1000
			s, ids := finishedStore(b, kind, n)
			for b.Loop() {
				for i := 0; i < n; i += chunk {
					r, err := s.Get(b.Context(), store.GetParams{Namespace: "g", IDs: ids[i : i+chunk]})
					if err != nil {
						b.Fatal(err)
					}
					if r.Tasks[chunk-1] == nil {
						b.Fatal("a finished task is missing")
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
		})
	}
}
