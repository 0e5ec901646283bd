package embedded

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// TestOpenDoesNotWaitForCompaction: a data folder whose log, flushed by
// Open, takes L0 to its compaction threshold opens without running that
// compaction; the compaction begins once Open has returned, and the data
// is all there.
func TestOpenDoesNotWaitForCompaction(t *testing.T) {
	t.Parallel()
	// Each batch rewrites the same keys, so each flush adds an L0
	// sublevel: twelve, with compactions held, are over the threshold
	// (pebbleOptions: 8); one more batch is left in the log, for Open to
	// flush.
	const keys, batches = 200, 13
	dir := t.TempDir()
	eng, err := openEngine(enginePebble, dir, false, engineHooks{holdCompactions: true})
	if err != nil {
		t.Fatal(err)
	}
	db := eng.(*pebbleEngine).db
	for b := range batches {
		ops := make([]op, keys)
		for i := range ops {
			ops[i] = op{key: fmt.Appendf(nil, "k%05d", i), val: fmt.Appendf(nil, "batch %d", b)}
		}
		if err := eng.apply(ops, true); err != nil {
			t.Fatal(err)
		}
		if b < batches-1 {
			if err := db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if m := db.Metrics(); m.Compact.Count != 0 || m.Levels[0].Sublevels < 12 {
		t.Fatalf("%d compactions, %d L0 sublevels; want none and 12", m.Compact.Count, m.Levels[0].Sublevels)
	}
	if err := eng.close(); err != nil {
		t.Fatal(err)
	}
	var during, after atomic.Int32
	began := make(chan struct{}, 16)
	eng, err = openEngine(enginePebble, dir, false, engineHooks{compaction: func(afterOpen bool) {
		if afterOpen {
			after.Add(1)
		} else {
			during.Add(1)
		}
		began <- struct{}{}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.close() }()
	select {
	case <-began:
	case <-time.After(30 * time.Second):
		t.Fatal("no compaction began after Open")
	}
	if during.Load() != 0 || after.Load() == 0 {
		t.Fatalf("compactions begun during Open: %d, after: %d; want none during", during.Load(), after.Load())
	}
	for i := range keys {
		v, err := eng.get(fmt.Appendf(nil, "k%05d", i))
		if want := fmt.Sprintf("batch %d", batches-1); err != nil || string(v) != want {
			t.Fatalf("key %d: %q, %v; want %q", i, v, err, want)
		}
	}
}
