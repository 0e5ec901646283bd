package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// eachEngine runs fn in a parallel subtest per engine kind, on an engine
// of its own in a fresh folder.
func eachEngine(t *testing.T, fn func(t *testing.T, eng engine)) {
	t.Helper()
	for _, kind := range []string{enginePebble, engineBolt} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			eng, err := openEngine(kind, t.TempDir(), false, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = eng.close() }()
			fn(t, eng)
		})
	}
}

// TestEngineGetMany checks getMany on every engine against get: absent
// keys, repeated keys, empty values and the answer in the order asked.
func TestEngineGetMany(t *testing.T) {
	t.Parallel()
	eachEngine(t, func(t *testing.T, eng engine) {
		var ops []op
		for i := range 200 {
			if i%3 == 0 {
				continue // absent between present keys
			}
			ops = append(ops, op{key: fmt.Appendf(nil, "k%04d", i), val: fmt.Appendf(nil, "v%d", i)})
		}
		ops = append(ops, op{key: []byte("empty"), val: []byte{}})
		if err := eng.apply(ops, true); err != nil {
			t.Fatal(err)
		}

		if got, err := eng.getMany(nil); err != nil || len(got) != 0 {
			t.Fatalf("getMany(nil) = %q, %v", got, err)
		}
		keys := [][]byte{
			[]byte("k0151"), []byte("k0001"), []byte("k0003"), // present, present, absent
			[]byte("empty"), []byte("k0151"), []byte("a"), // empty, repeat, before all
			[]byte("z"), []byte("k0001"), []byte("k0199"), // after all, repeat, last
			[]byte("k01"), []byte("k0002"), // a prefix of present keys, present
		}
		got, err := eng.getMany(keys)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(keys) {
			t.Fatalf("getMany returned %d values for %d keys", len(got), len(keys))
		}
		want := []string{"v151", "v1", "", "", "v151", "", "", "v1", "v199", "", "v2"}
		present := []bool{true, true, false, true, true, false, false, true, true, false, true}
		for i, k := range keys {
			if (got[i] != nil) != present[i] || string(got[i]) != want[i] {
				t.Errorf("getMany: key %q = %q (nil %v), want %q (present %v)", k, got[i], got[i] == nil, want[i], present[i])
			}
			one, err := eng.get(k)
			if err != nil {
				t.Fatal(err)
			}
			if (one == nil) != (got[i] == nil) || !bytes.Equal(one, got[i]) {
				t.Errorf("key %q: getMany %q, get %q", k, got[i], one)
			}
		}
		// Each value is a copy of its own, repeated keys included.
		got[0][0] = 'X'
		if string(got[4]) != "v151" {
			t.Errorf("values of a repeated key share memory: %q", got[4])
		}

		// A single key, and only absent keys.
		if got, err := eng.getMany([][]byte{[]byte("k0100")}); err != nil || len(got) != 1 || string(got[0]) != "v100" {
			t.Fatalf("getMany(k0100) = %q, %v", got, err)
		}
		if got, err := eng.getMany([][]byte{[]byte("k0000"), []byte("k0000"), []byte("zz")}); err != nil || len(got) != 3 || got[0] != nil || got[1] != nil || got[2] != nil {
			t.Fatalf("getMany(absent keys) = %q, %v", got, err)
		}
	})
}

// TestSortOps checks that sortOps puts a batch in key order and keeps the
// order of the ops on one key (the last one is what the batch writes),
// whatever the order and the kinds of the keys it is given.
func TestSortOps(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		n := rng.IntN(300)
		ops := make([]op, n)
		for i := range ops {
			// Few distinct keys of a few kinds: many repeats, some runs.
			k := []byte{"tpirlx"[rng.IntN(6)]}
			k = binary.BigEndian.AppendUint16(k, uint16(rng.IntN(40)))
			ops[i] = op{key: k, val: binary.BigEndian.AppendUint32(nil, uint32(i))}
			if round%3 == 0 && i > 0 {
				ops[i].key = binary.BigEndian.AppendUint16([]byte{'t'}, uint16(i)) // already in order
			}
		}
		orig := slices.Clone(ops)
		sortOps(ops)
		if len(ops) != len(orig) {
			t.Fatalf("round %d: %d ops, want %d", round, len(ops), len(orig))
		}
		for i := 1; i < len(ops); i++ {
			switch c := bytes.Compare(ops[i-1].key, ops[i].key); {
			case c > 0:
				t.Fatalf("round %d: op %d (%x) before op %d (%x): not in key order", round, i-1, ops[i-1].key, i, ops[i].key)
			case c == 0 && bytes.Compare(ops[i-1].val, ops[i].val) > 0:
				t.Fatalf("round %d: two ops on key %x swapped", round, ops[i].key)
			}
		}
		seen := make(map[string]int)
		for _, o := range orig {
			seen[string(o.key)+"/"+string(o.val)]++
		}
		for _, o := range ops {
			seen[string(o.key)+"/"+string(o.val)]--
		}
		for k, c := range seen {
			if c != 0 {
				t.Fatalf("round %d: op %x lost or duplicated", round, k)
			}
		}
	}
}

// TestEngineBatchLastOpWins checks that a batch with several ops on one key,
// among ops on other keys, leaves the key as its last op does, on every
// engine.
func TestEngineBatchLastOpWins(t *testing.T) {
	t.Parallel()
	eachEngine(t, func(t *testing.T, eng engine) {
		ops := []op{
			{key: []byte("t2"), val: []byte("a")},
			{key: []byte("r1"), val: []byte("x")},
			{key: []byte("t1"), val: []byte("a")},
			{key: []byte("r1")}, // deleted
			{key: []byte("t2"), val: []byte("b")},
			{key: []byte("l1"), val: []byte("y")},
			{key: []byte("t1"), val: []byte("b")},
			{key: []byte("l1")}, // deleted, then set again
			{key: []byte("t1"), val: []byte("c")},
			{key: []byte("l1"), val: []byte("z")},
		}
		if err := eng.apply(ops, true); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{"t1": "c", "t2": "b", "r1": "", "l1": "z"} {
			got, err := eng.get([]byte(k))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want || (want == "") != (got == nil) {
				t.Errorf("%s = %q (nil %v), want %q", k, got, got == nil, want)
			}
		}
	})
}
