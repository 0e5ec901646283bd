package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kilnhq/kiln/store"
)

// testMeta checks the optional store.Meta ability: plain reads and writes,
// put-if-absent and compare-and-delete under concurrency, listing by prefix,
// namespaces, bad keys and durability.
func testMeta(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	m, ok := f.s.(store.Meta)
	if !ok {
		t.Skip("the store does not implement store.Meta (optional)")
	}
	ctx := f.ctx()
	get := func(m store.Meta, ns, key string) ([]byte, bool) {
		t.Helper()
		r, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: key})
		if err != nil {
			t.Fatalf("MetaGet(%s): %v", key, err)
		}
		return r.Value, r.Found
	}
	put := func(ns, key, val string, ifAbsent bool) bool {
		t.Helper()
		r, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: []byte(val), IfAbsent: ifAbsent})
		if err != nil {
			t.Fatalf("MetaPut(%s): %v", key, err)
		}
		return r.Stored
	}
	del := func(ns, key string, ifValue []byte) bool {
		t.Helper()
		r, err := m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: key, IfValue: ifValue})
		if err != nil {
			t.Fatalf("MetaDelete(%s): %v", key, err)
		}
		return r.Deleted
	}
	ns, other := f.ns, newName("ns")

	if _, found := get(m, ns, "token/a"); found {
		t.Fatal("MetaGet of a missing key: found")
	}
	if !put(ns, "token/a", "1", false) || !put(ns, "token/a", "2", false) {
		t.Fatal("MetaPut: not stored")
	}
	if v, found := get(m, ns, "token/a"); !found || string(v) != "2" {
		t.Errorf("MetaGet after two puts: got %q, %v; want \"2\"", v, found)
	}
	if put(ns, "token/a", "3", true) {
		t.Error("MetaPut IfAbsent over an existing key: stored")
	}
	if v, _ := get(m, ns, "token/a"); string(v) != "2" {
		t.Errorf("IfAbsent put changed the value to %q", v)
	}
	put(ns, "token/b", "b", false)
	put(ns, "tokem", "x", false)
	put(ns, "worker/1", "w", false)
	put(other, "token/c", "other namespace", false)
	l, err := m.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: "token/"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range l.Items {
		keys = append(keys, it.Key+"="+string(it.Value))
	}
	if got, want := fmt.Sprint(keys), "[token/a=2 token/b=b]"; got != want {
		t.Errorf("MetaList(token/): got %s, want %s", got, want)
	}
	if _, found := get(m, other, "token/a"); found {
		t.Error("namespace leak: token/a visible in another namespace")
	}

	if del(ns, "token/a", []byte("wrong")) {
		t.Error("MetaDelete with a wrong IfValue: deleted")
	}
	if !del(ns, "token/a", []byte("2")) {
		t.Error("MetaDelete with the right IfValue: not deleted")
	}
	if del(ns, "token/a", nil) {
		t.Error("MetaDelete of a deleted key: deleted")
	}

	// Exactly one of many concurrent IfAbsent puts wins, and exactly one of
	// many concurrent compare-and-deletes.
	const n = 32
	var stored, deleted atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "challenge", Value: []byte(fmt.Sprint(i)), IfAbsent: true})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Stored {
				stored.Add(1)
			}
		}()
	}
	wg.Wait()
	if stored.Load() != 1 {
		t.Fatalf("concurrent IfAbsent puts: %d stored, want 1", stored.Load())
	}
	v, _ := get(m, ns, "challenge")
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: "challenge", IfValue: v})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Deleted {
				deleted.Add(1)
			}
		}()
	}
	wg.Wait()
	if deleted.Load() != 1 {
		t.Errorf("concurrent compare-and-deletes: %d deleted, want 1", deleted.Load())
	}

	// Bad keys and values.
	for _, key := range []string{"", "a\x00b", string(make([]byte, store.MaxMetaKeyLen+1))} {
		if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: []byte("v")}); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("MetaPut(key of %d bytes): got %v, want ErrInvalidName", len(key), err)
		}
	}
	if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "big", Value: make([]byte, store.MaxMetaValueLen+1)}); !errors.Is(err, store.ErrPayloadTooLarge) {
		t.Errorf("MetaPut(oversize value): got %v, want ErrPayloadTooLarge", err)
	}

	// Durability.
	if f.reopen == nil {
		return
	}
	m2, ok := f.reopen().(store.Meta)
	if !ok {
		t.Fatal("the reopened store does not implement store.Meta")
	}
	if v, found := get(m2, ns, "token/b"); !found || string(v) != "b" {
		t.Errorf("after reopen: token/b = %q, %v; want \"b\"", v, found)
	}
	if _, found := get(m2, ns, "token/a"); found {
		t.Error("after reopen: the deleted token/a is back")
	}
}

// testMetaCAS checks MetaPut with IfValue (compare-and-set): it writes only
// over exactly the value given, never over a missing record, and of many
// writers that read the same value exactly one wins; read-modify-write
// loops over it lose no update.
func testMetaCAS(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	m, ok := f.s.(store.Meta)
	if !ok {
		t.Skip("the store does not implement store.Meta (optional)")
	}
	ctx := f.ctx()
	ns := f.ns
	cas := func(key string, val, ifValue []byte) bool {
		t.Helper()
		r, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: val, IfValue: ifValue})
		if err != nil {
			t.Fatalf("MetaPut(%s, IfValue %q): %v", key, ifValue, err)
		}
		return r.Stored
	}
	get := func(key string) (string, bool) {
		t.Helper()
		r, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: key})
		if err != nil {
			t.Fatalf("MetaGet(%s): %v", key, err)
		}
		return string(r.Value), r.Found
	}

	if cas("w", []byte("1"), []byte("0")) {
		t.Error("MetaPut IfValue over a missing record: stored")
	}
	if _, found := get("w"); found {
		t.Error("MetaPut IfValue over a missing record created it")
	}
	if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "w", Value: []byte("registered")}); err != nil {
		t.Fatal(err)
	}
	if cas("w", []byte("verified"), []byte("register")) || cas("w", []byte("verified"), []byte("registered+")) {
		t.Error("MetaPut IfValue with a prefix or extension of the value: stored")
	}
	if !cas("w", []byte("verified"), []byte("registered")) {
		t.Fatal("MetaPut IfValue with the current value: not stored")
	}
	if v, _ := get("w"); v != "verified" {
		t.Fatalf("after compare-and-set: %q, want \"verified\"", v)
	}
	if cas("w", []byte("revoked"), []byte("registered")) {
		t.Error("MetaPut IfValue with a stale value: stored")
	}
	// An empty IfValue matches an empty record, not a missing one.
	if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "empty", Value: []byte{}}); err != nil {
		t.Fatal(err)
	}
	if !cas("empty", []byte("x"), []byte{}) {
		t.Error("MetaPut with an empty IfValue over an empty record: not stored")
	}
	if cas("missing", []byte("x"), []byte{}) {
		t.Error("MetaPut with an empty IfValue over a missing record: stored")
	}
	// A deleted record does not match its old value.
	if _, err := m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: "empty"}); err != nil {
		t.Fatal(err)
	}
	if cas("empty", []byte("y"), []byte("x")) {
		t.Error("MetaPut IfValue over a deleted record: stored")
	}
	if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "w", Value: []byte("v"), IfAbsent: true, IfValue: []byte("verified")}); !errors.Is(err, store.ErrInvalidOption) {
		t.Errorf("MetaPut with IfAbsent and IfValue: got %v, want ErrInvalidOption", err)
	}

	// Of many writers that read the same value, exactly one stores.
	const n = 32
	var stored atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "w", Value: []byte(fmt.Sprint("writer ", i)), IfValue: []byte("verified")})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Stored {
				stored.Add(1)
			}
		}()
	}
	wg.Wait()
	if stored.Load() != 1 {
		t.Fatalf("concurrent compare-and-sets from one value: %d stored, want 1", stored.Load())
	}

	// Counters incremented by read-modify-write loops lose no increment.
	const workers, each = 8, 25
	if _, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "counter", Value: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for {
					r, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: "counter"})
					if err != nil {
						t.Error(err)
						return
					}
					var c int
					if _, err := fmt.Sscan(string(r.Value), &c); err != nil {
						t.Errorf("counter %q: %v", r.Value, err)
						return
					}
					w, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "counter", Value: []byte(fmt.Sprint(c + 1)), IfValue: r.Value})
					if err != nil {
						t.Error(err)
						return
					}
					if w.Stored {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	if v, _ := get("counter"); v != fmt.Sprint(workers*each) {
		t.Errorf("counter after %d compare-and-set increments: %s", workers*each, v)
	}
	l, err := m.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: "counter"})
	if err != nil || len(l.Items) != 1 {
		t.Errorf("MetaList(counter) = %+v, %v; want the one record", l.Items, err)
	}
}
