package redisstore

import (
	"strconv"
	"sync"
)

// Report needs, besides a task's state and lease id, its queue (for the
// counts), type and attempt (for the change feed) and whether it has a
// retention, a unique key to release, and its workflow fields (dependents
// and flow). Reading those
// nine fields in the report script costs Redis about three times what
// reading the first two does (every field is a string the script takes
// from Redis), and the Store that leased the task has just read them all.
// So Lease notes them per leased task, and Report sends them along with
// the outcome of a task this Store leased: the script then reads only the
// state and the lease id. The note is used only while the task holds the
// lease it was taken for (the script checks the lease id as always), and
// the fields it carries do not change while a task holds a lease (queue,
// type, retention, unique key, flow and dependents are written when the
// task is created, the dependents emptied only by the report that ends
// the lease; the attempt only when a lease is taken or given up). A task
// with a unique key takes the full read; one with a retention (every
// workflow member has one) has it in its note.
// An outcome without a note (another process leased the task, the Store
// was reopened, the note was dropped) takes the full read.

// maxHints bounds the notes a Store keeps: a worker that never reports
// the tasks it leased must not grow them without end. Past it the notes
// are dropped, and the outcomes of those tasks take the full read.
const maxHints = 1 << 16

// leaseHint is what Lease noted of a task it leased.
type leaseHint struct {
	lid   uint64
	q, ty string
	a     string // the attempt, as the record writes it
	// dp and fl are the workflow fields (a member's dependents and its
	// workflow), when the record has them.
	dp, fl       string
	hasDP, hasFL bool
	// rtu is the retention (µs, field rtu), when the record has one.
	rtu    string
	hasRTU bool
}

// sameNote reports whether h carries the same queue, type and workflow
// fields as o (Report then sends "the note before").
func (h *leaseHint) sameNote(o *leaseHint) bool {
	return h.q == o.q && h.ty == o.ty && h.dp == o.dp && h.fl == o.fl && h.hasDP == o.hasDP && h.hasFL == o.hasFL &&
		h.rtu == o.rtu && h.hasRTU == o.hasRTU
}

// hints holds the notes of a Store's leased tasks, by namespace and id.
type hints struct {
	mu sync.Mutex
	m  map[hintKey]leaseHint
}

type hintKey struct{ ns, id string }

func (h *hints) put(ns string, ids []string, notes []leaseHint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m)+len(ids) > maxHints {
		h.m = make(map[hintKey]leaseHint)
	}
	for i, id := range ids {
		if notes[i].lid != 0 {
			h.m[hintKey{ns, id}] = notes[i]
		}
	}
}

// take removes and returns the note of task id under lease lid.
func (h *hints) take(ns, id string, lid uint64) (leaseHint, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := hintKey{ns, id}
	n, ok := h.m[k]
	if !ok {
		return leaseHint{}, false
	}
	delete(h.m, k)
	return n, n.lid == lid
}

// hintOf returns the note for a leased task t, or none (lid 0) when its
// record has a field the note cannot carry (nf.extra).
func hintOf(q, ty string, attempt int, lid uint64, nf noteFields) leaseHint {
	if nf.extra || lid == 0 {
		return leaseHint{}
	}
	return leaseHint{lid: lid, q: q, ty: ty, a: strconv.Itoa(attempt), dp: nf.dp, fl: nf.fl, hasDP: nf.hasDP, hasFL: nf.hasFL,
		rtu: nf.rtu, hasRTU: nf.hasRTU}
}

// optField is a workflow field of a note as the report script takes it:
// "-" when the record has none, else "+" and its value.
func optField(v string, has bool) string {
	if !has {
		return "-"
	}
	return "+" + v
}
