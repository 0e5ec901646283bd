package redisstore

import (
	"strconv"
	"testing"
)

// TestHints: a note is taken once, only under the lease it was noted for,
// and a Store keeps at most maxHints of them.
func TestHints(t *testing.T) {
	t.Parallel()
	var h hints
	h.put("n", []string{"a", "b", "c"}, []leaseHint{{lid: 1, q: "q", ty: "t", a: "1"}, {lid: 2, q: "q", ty: "t", a: "2"}, {}})
	if n, ok := h.take("n", "a", 1); !ok || n.q != "q" || n.ty != "t" || n.a != "1" {
		t.Errorf("take(a, 1) = %+v, %v", n, ok)
	}
	if _, ok := h.take("n", "a", 1); ok {
		t.Error("a note was taken twice")
	}
	if _, ok := h.take("n", "b", 3); ok {
		t.Error("a note was taken under another lease")
	}
	if _, ok := h.take("n", "b", 2); ok {
		t.Error("a note taken under another lease was kept")
	}
	if _, ok := h.take("n", "c", 0); ok {
		t.Error("a task without a note (lease id 0) has one")
	}
	if _, ok := h.take("m", "a", 1); ok {
		t.Error("a note of another namespace was taken")
	}
	ids := make([]string, maxHints)
	notes := make([]leaseHint, maxHints)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
		notes[i] = leaseHint{lid: uint64(i + 1)}
	}
	h.put("n", ids, notes)
	h.put("n", []string{"x"}, []leaseHint{{lid: 7}})
	if len(h.m) != 1 {
		t.Errorf("%d notes kept, want the map started anew past %d", len(h.m), maxHints)
	}
}
