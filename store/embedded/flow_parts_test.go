package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// partsFlow returns a flow of namespace "parts" written in parts: n ready
// tasks (two inputs alternating in runs, so that a part holds more than
// one), a callback held for all of them and a last step held for the
// callback.
func partsFlow(id string, n int) store.FlowParams {
	p := store.FlowParams{Namespace: "parts", ID: id, Spec: []byte(id)}
	var ids []string
	for i := range n {
		in := store.TaskInput{ID: fmt.Sprintf("%s.%d", id, i), Type: "m", Queue: "q", MaxRetries: 2, Payload: []byte(`"a"`)}
		if i/300%2 == 1 {
			in.Priority, in.Payload = 3, []byte(`"b"`)
		}
		p.Tasks = append(p.Tasks, in)
		ids = append(ids, in.ID)
	}
	p.Held = []store.HeldTask{
		{Task: store.TaskInput{ID: id + ".cb", Type: "cb", Queue: "q"}, After: ids},
		{Task: store.TaskInput{ID: id + ".z", Type: "z", Queue: "q"}, After: []string{id + ".cb"}},
	}
	return p
}

// checkPartsTasks checks that every ready task of p is stored, pending,
// with its own input, that the queue counts say so, and that no part
// record is left.
func checkPartsTasks(t *testing.T, s *Store, p store.FlowParams) {
	t.Helper()
	ctx := t.Context()
	for from := 0; from < len(p.Tasks); from += store.MaxBatch {
		ins := p.Tasks[from:min(from+store.MaxBatch, len(p.Tasks))]
		ids := make([]string, len(ins))
		for i := range ins {
			ids[i] = ins[i].ID
		}
		g, err := s.Get(ctx, store.GetParams{Namespace: p.Namespace, IDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		for i, tk := range g.Tasks {
			in := ins[i]
			if tk == nil || tk.State != store.StatePending || tk.Type != in.Type || tk.Priority != in.Priority || string(tk.Payload) != string(in.Payload) || tk.MaxRetries != in.MaxRetries {
				t.Fatalf("task %s: %+v; want it pending, of input %+v", in.ID, tk, in)
			}
		}
	}
	st, err := s.Stats(ctx, store.StatsParams{Namespace: p.Namespace, Queues: []string{"q"}})
	if err != nil || len(st.Queues) != 1 || st.Queues[0].Counts[store.StatePending] != int64(len(p.Tasks)) {
		t.Fatalf("Stats = %+v, %v; want %d pending", st, err, len(p.Tasks))
	}
	left := 0
	s.d.mu.RLock()
	err = s.d.eng.scan([]byte{kFlowPart}, nil, false, func(_, _ []byte) bool { left++; return true })
	s.d.mu.RUnlock()
	if err != nil || left != 0 {
		t.Fatalf("%d part records left (%v)", left, err)
	}
	storetest.CheckInvariants(t, s, p.Namespace)
}

// runParts leases and completes every task of namespace "parts" until
// none is left, and checks that the flow's callback and last step ran
// once each, after every member.
func runParts(t *testing.T, s *Store, p store.FlowParams) {
	t.Helper()
	ctx := t.Context()
	ran := map[string]int{}
	members := 0
	for {
		l, err := s.Lease(ctx, store.LeaseParams{Namespace: "parts", Queues: []string{"q"}, Max: 1000, Duration: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Tasks) == 0 {
			break
		}
		var outs []store.Outcome
		for _, tk := range l.Tasks {
			ran[tk.ID]++
			if tk.Type == "m" {
				members++
			} else if tk.Type == "cb" && members != len(p.Tasks) {
				t.Fatalf("the callback ran after %d of %d members", members, len(p.Tasks))
			}
			outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "parts", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{p.ID + ".cb", p.ID + ".z"} {
		if ran[id] != 1 {
			t.Fatalf("%s ran %d times, want once", id, ran[id])
		}
	}
	if members != len(p.Tasks) || len(ran) != len(p.Tasks)+2 {
		t.Fatalf("%d member runs of %d distinct tasks; want %d members, each once", members, len(ran), len(p.Tasks))
	}
	f, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "parts", ID: p.ID})
	if err != nil || len(f.Held) != 0 {
		t.Fatalf("GetFlow = %+v, %v; want nothing held", f, err)
	}
}

// TestFlowParts writes a flow in parts (more ready tasks than
// flowPartTasks, with two inputs in runs) and checks it before and after
// a reopen: every task stored with its input, the counts, no part record
// left, and the flow run to its end.
func TestFlowParts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	p := partsFlow("fp", 2*flowPartTasks+500)
	if err := s.EnqueueFlow(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	// EnqueueFlow returns at the commit point; the parts follow.
	if err := s.barrier().wait(); err != nil {
		t.Fatal(err)
	}
	checkPartsTasks(t, s, p)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(dir); err != nil || !rep.OK() {
		t.Fatalf("Check: %v, %+v", err, rep)
	}
	s = mustOpen(t, dir, nil)
	defer func() { _ = s.Close() }()
	checkPartsTasks(t, s, p)
	runParts(t, s, p)
}

// partFailEngine fails, without applying it, every batch that deletes a
// flow part once allow such batches went through: the store stops (as on a
// crash) after the commit point of a flow written in parts.
type partFailEngine struct {
	engine
	allow *atomic.Int32
}

func (f partFailEngine) apply(ops []op, sync bool) error {
	for _, o := range ops {
		if len(o.key) > 0 && o.key[0] == kFlowPart && o.val == nil && f.allow.Add(-1) < 0 {
			return fmt.Errorf("sync: %w", errNoSpace)
		}
	}
	return f.engine.apply(ops, sync)
}

// TestFlowPartsRecovered stops the store after the commit point of a flow
// written in parts, with no part written and with one written: the data
// folder is consistent (Check), and Open writes the parts left, so that
// every task is there, pending, the counts right, and the callback waits
// for every member and runs once.
func TestFlowPartsRecovered(t *testing.T) {
	t.Parallel()
	for _, written := range []int32{0, 1} {
		t.Run(fmt.Sprintf("written=%d", written), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var allow atomic.Int32
			allow.Store(written)
			s := mustOpen(t, dir, &Config{ReserveBytes: 1 << 20, retryEvery: time.Hour, wrapEngine: func(e engine) engine {
				return partFailEngine{engine: e, allow: &allow}
			}})
			p := partsFlow("fr", 3*flowPartTasks+10)
			if err := s.EnqueueFlow(t.Context(), p); err != nil {
				t.Fatalf("EnqueueFlow: %v; want it done at its commit point", err)
			}
			// The failed part stops the store's writes.
			if err := s.barrier().wait(); err == nil {
				t.Fatal("the parts were written: the engine did not fail them")
			}
			if err := s.Ping(context.Background()); err == nil {
				t.Fatal("the store still writes after a failed part")
			}
			if err := s.Close(); err != nil && !errors.Is(err, store.ErrStorageFull) {
				t.Logf("Close: %v", err)
			}
			rep, err := Check(dir)
			if err != nil || !rep.OK() {
				t.Fatalf("Check of the stopped folder: %v, %+v", err, rep)
			}
			left := 0
			eng, err := openEngine(enginePebble, dir, true, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			_ = eng.scan([]byte{kFlowPart}, nil, false, func(_, _ []byte) bool { left++; return true })
			_ = eng.close()
			if want := 3 - int(written); left != want {
				t.Fatalf("%d part records on disk, want %d", left, want)
			}
			s = mustOpen(t, dir, nil)
			defer func() { _ = s.Close() }()
			checkPartsTasks(t, s, p)
			f, err := s.GetFlow(t.Context(), store.FlowGetParams{Namespace: "parts", ID: p.ID})
			if err != nil || len(f.Held) != 2 {
				t.Fatalf("GetFlow = %+v, %v; want the callback and the last step held", f, err)
			}
			runParts(t, s, p)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if rep, err := Check(dir); err != nil || !rep.OK() {
				t.Fatalf("Check after the run: %v, %+v", err, rep)
			}
		})
	}
}
