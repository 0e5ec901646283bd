package embedded

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kilnhq/kiln/store"
)

// TestIndexKeysLeaveNoTombstones runs tasks through enqueue, lease and
// report within one memtable and flushes it: the ready and lease keys,
// each set once and deleted once (op.once), vanish with their deletes, so
// the table the flush writes holds no deletion at all; the records, ids
// and expiry keys are all there, and no payload key (a small payload is in
// its record).
func TestIndexKeysLeaveNoTombstones(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, t.TempDir(), nil)
	defer func() { _ = s.Close() }()
	const n = 300
	ins := make([]store.TaskInput, n)
	for i := range ins {
		ins[i] = store.TaskInput{ID: fmt.Sprintf("t%03d", i), Type: "t", Queue: "q"}
	}
	mustEnqueue(t, s, ins...)
	done := 0
	for done < n {
		res, err := s.Lease(t.Context(), store.LeaseParams{Namespace: durableNS, Queues: []string{"q"}, Max: 50, Duration: time.Minute, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			t.Fatalf("Lease found nothing after %d of %d tasks", done, n)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, task := range res.Tasks {
			outs[i] = store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(t.Context(), store.ReportParams{Namespace: durableNS, Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
		done += len(res.Tasks)
	}
	db := s.d.eng.(*pebbleEngine).db
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	tables, err := db.SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	var entries, dels uint64
	for _, level := range tables {
		for _, tb := range level {
			entries += tb.Properties.NumEntries
			dels += tb.Properties.NumDeletions
		}
	}
	if dels != 0 {
		t.Errorf("the flushed tables hold %d deletions among %d entries, want none", dels, entries)
	}
	// Each task's record (with its payload), id and expiry key, and the
	// counts.
	if entries < 3*n {
		t.Errorf("the flushed tables hold %d entries, want at least %d", entries, 3*n)
	}
	for _, kind := range []byte{kReady, kLeased, kPayload} {
		if k, err := firstKey(s.d.eng, kind, nil); err != nil || k != nil {
			t.Errorf("index %c: first key %x, %v; want none", kind, k, err)
		}
	}
	st, err := s.Stats(t.Context(), store.StatsParams{Namespace: durableNS, Queues: []string{"q"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Queues[0].Counts[store.StateSucceeded]; got != n {
		t.Errorf("%d succeeded, want %d", got, n)
	}
}

// TestEngineDeleteOnce checks op.once on every engine: a key set once and
// deleted with it is gone, in the same batch as its set or a later one,
// and set again after that it is there.
func TestEngineDeleteOnce(t *testing.T) {
	t.Parallel()
	eachEngine(t, func(t *testing.T, eng engine) {
		a, b := []byte("ra"), []byte("rb")
		steps := []struct {
			ops  []op
			want map[string]string // "" absent
		}{
			{[]op{{key: a, val: []byte("1")}, {key: b, val: []byte("1")}, {key: b, once: true}}, map[string]string{"ra": "1", "rb": ""}},
			{[]op{{key: a, once: true}}, map[string]string{"ra": "", "rb": ""}},
			{[]op{{key: a, val: []byte("2")}}, map[string]string{"ra": "2"}},
			{[]op{{key: a, once: true}, {key: a, val: []byte("3")}}, map[string]string{"ra": "3"}},
		}
		for i, st := range steps {
			if err := eng.apply(st.ops, true); err != nil {
				t.Fatal(err)
			}
			for k, want := range st.want {
				got, err := eng.get([]byte(k))
				if err != nil {
					t.Fatal(err)
				}
				if (want == "") != (got == nil) || !bytes.Equal(got, []byte(want)) && want != "" {
					t.Errorf("step %d: %s = %q (nil %v), want %q", i, k, got, got == nil, want)
				}
			}
		}
	})
}

// TestOpArena: the slices an arena hands out do not overlap, have the
// room asked for, and after reset the same chunks serve again.
func TestOpArena(t *testing.T) {
	t.Parallel()
	var a opArena
	var got [][]byte
	for i := range 3000 {
		n := 1 + i%200
		b := a.take(n)
		if len(b) != 0 || cap(b) != n {
			t.Fatalf("take(%d): len %d cap %d", n, len(b), cap(b))
		}
		got = append(got, append(b, bytes.Repeat([]byte{byte(i)}, n)...))
	}
	for i, b := range got {
		if !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, len(b))) {
			t.Fatalf("slice %d was overwritten by another", i)
		}
	}
	if big := a.take(arenaChunk); cap(big) != arenaChunk {
		t.Fatalf("take(%d): cap %d", arenaChunk, cap(big))
	}
	chunks := len(a.used) + 1
	first := &a.used[0][:1][0]
	a.reset()
	if len(a.free) != min(chunks, arenaKeep) || a.cur != nil || len(a.used) != 0 {
		t.Fatalf("after reset: %d free, %d used, cur %v; want %d free", len(a.free), len(a.used), a.cur != nil, min(chunks, arenaKeep))
	}
	for range 3000 {
		a.take(100)
	}
	reused := false
	for _, c := range append(a.used, a.cur) {
		if &c[:1][0] == first {
			reused = true
		}
	}
	if !reused {
		t.Errorf("the chunks freed by reset were not used again")
	}
}

// TestIDFilter checks the tables' filter: it may contain every id key
// added and every key of another kind (it cannot tell those), and rules
// out most absent id keys; through the engine, after a flush, present
// keys of every kind are found and absent ones are not.
func TestIDFilter(t *testing.T) {
	t.Parallel()
	w := idFilter{}.NewWriter(pebble.TableFilter)
	for i := range 500 {
		w.AddKey(fmt.Appendf(nil, "i\x00id%04d", i))
		w.AddKey(fmt.Appendf(nil, "t\x00%08d", i))
	}
	f := w.Finish(nil)
	for i := range 500 {
		if k := fmt.Appendf(nil, "i\x00id%04d", i); !(idFilter{}).MayContain(pebble.TableFilter, f, k) {
			t.Fatalf("the filter rules out %q, which was added", k)
		}
		if k := fmt.Appendf(nil, "t\x00%08d", i+1000); !(idFilter{}).MayContain(pebble.TableFilter, f, k) {
			t.Fatalf("the filter rules out %q, a key of another kind", k)
		}
	}
	maybe := 0
	for i := range 1000 {
		if (idFilter{}).MayContain(pebble.TableFilter, f, fmt.Appendf(nil, "i\x00other%04d", i)) {
			maybe++
		}
	}
	if maybe > 50 {
		t.Errorf("the filter may contain %d of 1000 absent id keys, want about 1%%", maybe)
	}
	empty := idFilter{}.NewWriter(pebble.TableFilter).Finish(nil)
	if (idFilter{}).MayContain(pebble.TableFilter, empty, []byte("i\x00a")) || !(idFilter{}).MayContain(pebble.TableFilter, empty, []byte("t\x00a")) {
		t.Errorf("a filter of no id key: wrong answer")
	}

	eng, err := openEngine(enginePebble, t.TempDir(), false, engineHooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.close() }()
	var ops []op
	for _, kind := range []byte{kID, kTask, kPayload, kExpiry, kReady} {
		for i := range 100 {
			ops = append(ops, op{key: fmt.Appendf(nil, "%c\x00k%03d", kind, i), val: []byte{kind}})
		}
	}
	if err := eng.apply(ops, true); err != nil {
		t.Fatal(err)
	}
	if err := eng.(*pebbleEngine).db.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []byte{kID, kTask, kPayload, kExpiry, kReady} {
		for i := range 100 {
			if v, err := eng.get(fmt.Appendf(nil, "%c\x00k%03d", kind, i)); err != nil || len(v) != 1 || v[0] != kind {
				t.Fatalf("get %c k%03d = %q, %v", kind, i, v, err)
			}
			if v, err := eng.get(fmt.Appendf(nil, "%c\x00k%03d", kind, i+500)); err != nil || v != nil {
				t.Fatalf("get absent %c k%03d = %q, %v", kind, i+500, v, err)
			}
		}
	}
}
