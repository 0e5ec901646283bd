package embedded

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// memEngine is an engine in memory, for fuzzing what reads the engine.
type memEngine struct{ kvs []op } // sorted by key

func newMemEngine(kvs []op) *memEngine {
	m := map[string][]byte{}
	for _, o := range kvs {
		m[string(o.key)] = o.val
	}
	e := &memEngine{}
	for k, v := range m {
		e.kvs = append(e.kvs, op{key: []byte(k), val: v})
	}
	sort.Slice(e.kvs, func(i, j int) bool { return bytes.Compare(e.kvs[i].key, e.kvs[j].key) < 0 })
	return e
}

func (e *memEngine) apply([]op, bool) error { return errReadOnly }
func (e *memEngine) get(key []byte) ([]byte, error) {
	for _, o := range e.kvs {
		if bytes.Equal(o.key, key) {
			return bytes.Clone(o.val), nil
		}
	}
	return nil, nil
}

func (e *memEngine) getMany(keys [][]byte) ([][]byte, error) {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i], _ = e.get(k)
	}
	return out, nil
}

func (e *memEngine) scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) error {
	var in []op
	for _, o := range e.kvs {
		if bytes.HasPrefix(o.key, prefix) {
			in = append(in, o)
		}
	}
	if reverse {
		for i := len(in) - 1; i >= 0; i-- {
			if (start == nil || bytes.Compare(in[i].key, start) <= 0) && !fn(in[i].key, in[i].val) {
				return nil
			}
		}
		return nil
	}
	for _, o := range in {
		if (start == nil || bytes.Compare(o.key, start) >= 0) && !fn(o.key, o.val) {
			return nil
		}
	}
	return nil
}
func (e *memEngine) trouble() (bool, error) { return false, nil }
func (e *memEngine) close() error           { return nil }

// kvsOf splits fuzz input into key-value pairs: a length byte and the key,
// a length byte and the value, again and again.
func kvsOf(b []byte) []op {
	var out []op
	take := func() ([]byte, bool) {
		if len(b) == 0 {
			return nil, false
		}
		n := min(int(b[0]), len(b)-1)
		v := b[1 : 1+n]
		b = b[1+n:]
		return v, true
	}
	for {
		k, ok := take()
		if !ok {
			return out
		}
		v, _ := take()
		out = append(out, op{key: k, val: v})
	}
}

// encodeKVs is the inverse of kvsOf, for seeds (keys and values under 256
// bytes).
func encodeKVs(kvs ...op) []byte {
	var b []byte
	for _, o := range kvs {
		b = append(b, byte(len(o.key)))
		b = append(b, o.key...)
		b = append(b, byte(len(o.val)))
		b = append(b, o.val...)
	}
	return b
}

// FuzzReadFolder feeds arbitrary engine contents to what reads a data
// folder: the store's load at Open, Check's reading and Recover's. None may
// panic, whatever the records hold.
func FuzzReadFolder(f *testing.F) {
	task := &store.Task{ID: "a", Type: "t", Queue: "q", State: store.StatePending, UniqueKey: "u"}
	good := encodeKVs(
		op{key: seqKey(kTask, "n", 1), val: record.Encode(nil, 1, task, false)},
		op{key: seqKey(kPayload, "n", 1), val: []byte("p")},
		op{key: nameKey(kID, "n", "a"), val: binary.BigEndian.AppendUint64(nil, 1)},
		op{key: nameKey(kUnique, "n", "u"), val: append(binary.AppendVarint(nil, 5), 'a')},
		op{key: nameKey(kQueue, "n", "q"), val: []byte{1}},
		op{key: nameKey(kMeta, "n", "m"), val: []byte("v")},
	)
	f.Add(good)
	f.Add(append(bytes.Clone(good), 3, 't', 0, 0, 1, 7))
	// A task with an error history (record flag 16).
	failed := *task
	failed.State, failed.Attempt, failed.LastError = store.StateRetry, 2, "boom"
	failed.Errors = []store.AttemptError{{Attempt: 2, At: time.Unix(1, 0), Error: "boom", WorkerID: "w"}}
	failed.ErrorsDropped = 1
	f.Add(encodeKVs(
		op{key: seqKey(kTask, "n", 1), val: record.Encode(nil, 1, &failed, false)},
		op{key: nameKey(kID, "n", "a"), val: binary.BigEndian.AppendUint64(nil, 1)},
	))
	// A task with its payload in its record (record flag 32).
	failed.Payload = []byte("p")
	f.Add(encodeKVs(
		op{key: seqKey(kTask, "n", 1), val: record.Encode(nil, 1, &failed, true)},
		op{key: nameKey(kID, "n", "a"), val: binary.BigEndian.AppendUint64(nil, 1)},
	))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		eng := newMemEngine(kvsOf(b))
		s := &Store{nss: make(map[string]*namespace), log: slog.New(slog.DiscardHandler)}
		_ = s.load(eng, map[string]created{"n\x00a": {ns: "n", id: "a", seq: 1}})
		rep := newReport()
		n := 0
		readAll(eng, rep, &sink{
			task:    func(string, uint64, []byte, *store.Task) { n++ },
			payload: func(string, uint64, []byte) {},
			other:   func(k, _ []byte) { _ = keyName(k) },
		})
		var total int64
		for _, c := range rep.Tasks {
			for _, x := range c {
				total += x
			}
		}
		if total != int64(n) {
			t.Fatalf("report counts %d tasks, %d were read", total, n)
		}
		for _, p := range rep.Problems {
			_ = p.String()
		}
	})
}

// FuzzSkipPast checks that the key Check seeks to after damage is always
// past the last key read, within the prefix, and never the same twice.
func FuzzSkipPast(f *testing.F) {
	f.Add(seqKey(kTask, "n", 5), []byte{kTask}, 1)
	f.Add(nameKey(kMeta, "n", "abc"), []byte{kMeta}, 3)
	f.Add([]byte{kID}, []byte{kID}, 1)
	f.Fuzz(func(t *testing.T, last, prefix []byte, n int) {
		if n < 1 || n > maxSkips || !bytes.HasPrefix(last, prefix) {
			return
		}
		k := skipPast(last, prefix, n)
		if k == nil {
			return
		}
		if bytes.Compare(k, last) <= 0 {
			t.Fatalf("skipPast(%q, %q, %d) = %q, not after the last key", last, prefix, n, k)
		}
		if n > 1 {
			if prev := skipPast(last, prefix, n-1); prev != nil && bytes.Compare(k, prev) < 0 {
				t.Fatalf("skipPast(%q, %q, %d) = %q, before the previous try %q", last, prefix, n, k, prev)
			}
		}
		_ = keyName(k)
	})
}
