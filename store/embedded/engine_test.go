package embedded

import (
	"bytes"
	"fmt"
	"testing"
)

// TestEngineGetMany checks getMany on every engine against get: absent
// keys, repeated keys, empty values and the answer in the order asked.
func TestEngineGetMany(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{enginePebble, engineBolt} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			eng, err := openEngine(kind, t.TempDir(), false, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = eng.close() }()
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
}
