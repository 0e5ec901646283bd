package embedded

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// ---- on-disk indexes ----
//
// Every task record has exactly one index key, written (and the previous
// one deleted) in the same batch as the record, chosen by its state:
//
//	r ns 0 queue 0 type 0 prio seq-order -> id  pending, in lease order
//	d ns 0 RunAt seq                     -> id  scheduled and retry, by due time
//	l ns 0 seq                           -> id  active
//	x ns 0 ExpiresAt seq                 -> id  finished, by the end of retention
//
// A ready key sorts in lease order (readyLess): 255-priority, RunAt and seq,
// each big-endian, so a scan of a queue and type reads its tasks in the
// order they are leased. Memory holds only a window of each queue and type
// (see window), the scheduled and active tasks, and per-queue counts, which
// the committer writes with each batch (n ns 0 queue -> counts). Open reads
// the counts, the windows, the scheduled and the active tasks: its time
// does not grow with the backlog of pending or finished tasks.
//
// The key v holds the format version. A data folder without it (written
// before the indexes existed) gets its indexes and counts built once, at
// Open.
const (
	kReady   = 'r'
	kDelayed = 'd'
	kLeased  = 'l'
	kExpiry  = 'x'
	kCounts  = 'n'
	kVersion = 'v'

	formatVersion = 1
)

// indexKinds lists the key kinds of the indexes, for Check.
var indexKinds = []byte{kReady, kDelayed, kLeased, kExpiry}

// windowDefault is the number of pending tasks of a queue and type that
// memory holds at least when the disk has more (at most twice that).
const windowDefault = 2048

// appendTime appends t so that byte order is time order (the sign bit
// flipped).
func appendTime(k []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(k, uint64(t.UnixNano())^(1<<63))
}

func readyPrefix(ns, queue, typ string) []byte {
	k := nsPrefix(kReady, ns)
	k = append(k, queue...)
	k = append(k, 0)
	k = append(k, typ...)
	return append(k, 0)
}

func readyKey(ns string, t *store.Task, seq uint64) []byte {
	k := readyPrefix(ns, t.Queue, t.Type)
	k = append(k, byte(255-t.Priority)) //nolint:gosec // G115: 0..MaxPriority
	k = appendTime(k, t.RunAt)
	return binary.BigEndian.AppendUint64(k, seq)
}

// indexKey returns the index key of task t of namespace ns stored at seq
// (nil for a state without one), allocated once at its size.
func indexKey(ns string, t *store.Task, seq uint64) []byte {
	n := indexKeyLen(ns, t)
	if n == 0 {
		return nil
	}
	return appendIndexKey(make([]byte, 0, n), ns, t, seq)
}

// indexKeyLen is the length of t's index key, 0 for a state without one.
func indexKeyLen(ns string, t *store.Task) int {
	n := 2 + len(ns) + 8 // kind, namespace, 0, seq
	switch t.State {
	case store.StatePending:
		n += len(t.Queue) + 1 + len(t.Type) + 1 + 1 + 8
	case store.StateScheduled, store.StateRetry, store.StateSucceeded, store.StateDead, store.StateCancelled:
		n += 8
	case store.StateActive:
	default:
		return 0
	}
	return n
}

// appendIndexKey appends indexKey(ns, t, seq) to k; t's state has an
// index key.
func appendIndexKey(k []byte, ns string, t *store.Task, seq uint64) []byte {
	switch t.State {
	case store.StatePending:
		k = append(append(append(k, kReady), ns...), 0)
		k = append(append(k, t.Queue...), 0)
		k = append(append(k, t.Type...), 0)
		k = append(k, byte(255-t.Priority)) //nolint:gosec // G115: 0..MaxPriority
		k = appendTime(k, t.RunAt)
	case store.StateScheduled, store.StateRetry:
		k = appendTime(append(append(append(k, kDelayed), ns...), 0), t.RunAt)
	case store.StateActive:
		k = append(append(append(k, kLeased), ns...), 0)
	case store.StateSucceeded, store.StateDead, store.StateCancelled:
		k = appendTime(append(append(append(k, kExpiry), ns...), 0), t.ExpiresAt)
	}
	return binary.BigEndian.AppendUint64(k, seq)
}

func expiryKey(ns string, at time.Time, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendTime(nsPrefix(kExpiry, ns), at), seq)
}

// keyTime decodes the time that precedes the sequence number at the end
// of a delayed or expiry key.
func keyTime(k []byte) time.Time {
	if len(k) < 16 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[len(k)-16:])^(1<<63))).UTC() //nolint:gosec // G115: sign flip, by design
}

// taskOps appends the writes of e's record (with its payload, unless
// e.payKey) and of its index key (the old one deleted when it changed) to
// ops.
//
// The record's key, the index key and its value (the task's id) share one
// allocation: each is a full slice of its own part of it, and the engine
// copies them into its batch.
func taskOps(ops []op, e *entry) []op { return taskOpsIn(ops, e, nil) }

// taskOpsIn is taskOps with the record's key and value and the index key's
// value taken from opBuf (Store.opBuf), when not nil; the index key, which
// e keeps, has an allocation of its own.
func taskOpsIn(ops []op, e *entry, opBuf func(n int) []byte) []op {
	ns := e.t.Namespace
	skLen, nkLen := 2+len(ns)+8, indexKeyLen(ns, &e.t)
	var buf, nbuf []byte
	if opBuf == nil {
		buf = make([]byte, 0, skLen+nkLen+len(e.t.ID))
		nbuf = buf[skLen:skLen]
	} else {
		size := record.Size(e.seq, &e.t, !e.payKey)
		buf = opBuf(skLen + len(e.t.ID) + size)
		if nkLen > 0 {
			nbuf = make([]byte, 0, nkLen)
		}
	}
	sk := binary.BigEndian.AppendUint64(append(append(append(buf, kTask), ns...), 0), e.seq)
	sk = sk[:skLen:skLen]
	var rec []byte
	if opBuf == nil {
		rec = record.Encode(nil, e.seq, &e.t, !e.payKey)
	} else {
		at := skLen + len(e.t.ID)
		rec = record.Append(buf[at:at], e.seq, &e.t, !e.payKey) // buf has room for it
	}
	ops = append(ops, op{key: sk, val: rec})
	var nk []byte
	if nkLen > 0 {
		nk = appendIndexKey(nbuf, ns, &e.t, e.seq)
		nk = nk[:len(nk):len(nk)]
	}
	if !bytes.Equal(nk, e.ikey) {
		if e.ikey != nil {
			ops = append(ops, op{key: e.ikey, once: setOnce(e.ikey)})
		}
		if nk != nil {
			var id []byte
			if opBuf == nil {
				at := skLen + nkLen
				id = append(buf[at:at], e.t.ID...)
			} else {
				id = append(buf[skLen:skLen], e.t.ID...)
				id = id[:len(id):len(id)]
			}
			ops = append(ops, op{key: nk, val: id})
		}
		e.ikey = nk
	}
	return ops
}

// setOnce reports whether the index key k is of a kind that is set only
// by taskOps (and by migrate, in a folder that has no index keys yet), and
// only when it is not the task's index key already: such a key is set once
// between two deletes, so taskOps may delete it with op.once. The kinds
// of the pending, scheduled and active tasks qualify; the expiry keys do
// not (the sweep rewrites them). A pending task's key is set when it is
// enqueued and deleted when it is leased, most often within one memtable,
// so with op.once neither reaches the disk's tables.
func setOnce(k []byte) bool {
	return len(k) > 0 && (k[0] == kReady || k[0] == kDelayed || k[0] == kLeased)
}

// countsOps appends the writes of the queue counts that changed since they
// were last written. The caller holds s.mu.
func (s *Store) countsOps(ops []op) []op {
	for _, ns := range s.nss {
		for _, q := range ns.queues {
			if q.counts != q.saved {
				q.saved = q.counts
				v := make([]byte, 0, 2*len(q.counts))
				for _, n := range q.counts {
					v = binary.AppendVarint(v, n)
				}
				ops = append(ops, op{key: nameKey(kCounts, ns.name, q.name), val: v})
			}
		}
	}
	return ops
}

// ---- the ready window ----

// window is the part of the pending tasks of one queue and type held in
// memory, as a heap in lease order. Every pending task whose order is at or
// before hi is in memory (in the heap, or staged); when more is set, the
// disk may hold pending tasks after hi that memory does not, and a scan of
// the ready index from hi loads them (refill). Without more, every pending
// task of the queue and type is in memory.
type window struct {
	taskHeap
	more bool
	hi   orderKey
}

// orderKey is the lease order of a pending task (readyLess).
type orderKey struct {
	prio  int
	runAt int64
	seq   uint64
}

func orderOf(e *entry) orderKey {
	return orderKey{prio: e.t.Priority, runAt: e.t.RunAt.UnixNano(), seq: e.seq}
}

// after reports whether a comes after b in lease order.
func (a orderKey) after(b orderKey) bool {
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	if a.runAt != b.runAt {
		return a.runAt > b.runAt
	}
	return a.seq > b.seq
}

func (q *queue) window(typ string) *window {
	w := q.ready[typ]
	if w == nil {
		w = &window{taskHeap: taskHeap{less: readyLess}}
		q.ready[typ] = w
		q.types = append(q.types, typ)
	}
	return w
}

// pushReady makes pending entry e of ns, whose write is queued, leasable:
// it joins its window, or, when it comes after the window and its record
// is durable, it leaves memory (a refill reads it from disk). The caller
// holds s.mu. It reports whether e left memory.
func (s *Store) pushReady(ns *namespace, q *queue, e *entry) (dropped bool) {
	w := q.window(e.t.Type)
	if s.windowSize > 0 && w.more && orderOf(e).after(w.hi) && e.gen <= s.committed {
		s.dropEntry(ns, e)
		return true
	}
	w.push(e)
	if s.windowSize > 0 && w.Len() > 2*s.windowSize {
		s.trim(ns, w)
	}
	return false
}

// newEntry returns a zero entry: one that recycleDropped kept, else a new
// one. The caller holds s.mu.
func (s *Store) newEntry() *entry {
	if k := len(s.freeEntries); k > 0 {
		e := s.freeEntries[k-1]
		s.freeEntries[k-1] = nil
		s.freeEntries = s.freeEntries[:k-1]
		return e
	}
	return new(entry)
}

// recycleDropped keeps the entries that releaseDurable dropped from memory
// (they went to the disk alone once their enqueue was durable, which a
// backlog's new tasks do) for newEntry, up to windowSize of them: a refill
// that reads the backlog back fills them again instead of allocating. Once
// releaseDurable dropped it, nothing refers to such an entry: it is in no
// heap, no map and no list (spillDurable, which runs before this, let go
// of it). The caller holds s.mu.
func (s *Store) recycleDropped() {
	for i, e := range s.dropped {
		if len(s.freeEntries) < s.windowSize {
			*e = entry{}
			s.freeEntries = append(s.freeEntries, e)
		}
		s.dropped[i] = nil
	}
	s.dropped = s.dropped[:0]
}

// dropEntry forgets e, whose records are durable: it is on disk alone.
func (s *Store) dropEntry(ns *namespace, e *entry) {
	if ns.tasks[e.t.ID] == e {
		delete(ns.tasks, e.t.ID)
	}
	s.diskEpoch.Add(1)
}

// trim keeps the first windowSize entries of w (and those whose records
// are not durable yet) and forgets the others.
func (s *Store) trim(ns *namespace, w *window) {
	s.trimHeap(ns, &w.taskHeap, func(last *entry) {
		w.hi = orderOf(last)
		w.more = true
	})
}

// trimHeap keeps the first windowSize entries of h in its order (and
// those whose records are not durable yet) and forgets the others; mark
// is given the last entry kept by the count before any is forgotten.
func (s *Store) trimHeap(ns *namespace, h *taskHeap, mark func(last *entry)) {
	items := slices.Clone(h.items)
	slices.SortFunc(items, func(a, b *entry) int {
		if h.less(a, b) {
			return -1
		}
		return 1
	})
	mark(items[s.windowSize-1])
	keep := items[:0]
	for i, e := range items {
		if i < s.windowSize || e.gen > s.committed {
			keep = append(keep, e)
			continue
		}
		e.idx = -1
		s.dropEntry(ns, e)
	}
	h.items = keep
	for i, e := range h.items {
		e.idx = i
	}
	heap.Init(h)
}

// ready returns w's first entry once every pending task of w that comes
// before it is in memory, refilling w from the disk when needed. The
// caller holds s.mu.
func (s *Store) ready(ns *namespace, q *queue, typ string, w *window) (*entry, error) {
	for {
		e := w.peek()
		if !w.more || (e != nil && !orderOf(e).after(w.hi)) {
			return e, nil
		}
		if err := s.refill(ns, q, typ, w); err != nil {
			return nil, err
		}
	}
}

// refill loads the next windowSize pending tasks after w.hi from the ready
// index into w. The caller holds s.mu.
func (s *Store) refill(ns *namespace, q *queue, typ string, w *window) error {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	return s.refillFrom(s.d.eng, &s.d, ns, q, typ, w)
}

// refillFrom is refill from eng, whose hidden tasks d names.
func (s *Store) refillFrom(eng engine, d *disk, ns *namespace, q *queue, typ string, w *window) error {
	prefix := readyPrefix(ns.name, q.name, typ)
	start := readyKey(ns.name, &store.Task{Queue: q.name, Type: typ, Priority: w.hi.prio, RunAt: time.Unix(0, w.hi.runAt)}, w.hi.seq)
	start = append(start, 0) // just after hi
	es, n, last, err := s.scanWindow(eng, d, ns, prefix, start)
	if err != nil {
		return fmt.Errorf("reading the ready index of queue %q: %w", q.name, err)
	}
	for _, e := range es {
		ns.tasks[e.t.ID] = e
		w.push(e)
	}
	defer func() {
		if w.Len() > 2*s.windowSize {
			s.trim(ns, w)
		}
	}()
	if n < s.windowSize {
		w.more = false
		return nil
	}
	w.hi = orderKey{prio: 255 - int(last[len(last)-17]), runAt: int64(binary.BigEndian.Uint64(last[len(last)-16:]) ^ (1 << 63)), seq: keySeq(last)} //nolint:gosec // G115: sign flip
	return nil
}

// scanWindow reads up to windowSize keys of the index with prefix from
// start in eng (whose hidden tasks d names), and loads the tasks they name
// that memory holds neither as live nor as deleted (s.gone): a refill of a
// ready or delayed window. It returns the tasks whose record has that very
// index key and id (another key is left by a change not yet durable), the
// number of keys read and the last one.
func (s *Store) scanWindow(eng engine, d *disk, ns *namespace, prefix, start []byte) (es []*entry, n int, last []byte, err error) {
	var keys, ids [][]byte
	err = eng.scan(prefix, start, false, func(k, v []byte) bool {
		n++
		last = append(last[:0], k...)
		if ns.tasks[string(v)] == nil && s.gone[goneKey{ns: ns.name, seq: keySeq(k)}] == 0 {
			kv := make([]byte, 0, len(k)+len(v)) // one buffer: the key, then its id
			kv = append(append(kv, k...), v...)
			keys = append(keys, kv[:len(k):len(k)])
			ids = append(ids, kv[len(k):])
		}
		return n < s.windowSize
	})
	if err != nil {
		return nil, 0, nil, err
	}
	loaded, err := loadEntries(eng, ns.name, keys, d, s.newEntry)
	if err != nil {
		return nil, 0, nil, err
	}
	es = loaded[:0]
	for i, e := range loaded {
		if e != nil && e.t.ID == string(ids[i]) {
			es = append(es, e)
		}
	}
	return es, n, last, nil
}

// loadEntries reads the tasks, with their payloads, that the index keys
// name (by the sequence number that ends each key): nil where the record is
// missing, hidden, or not indexed by that key. newEntry, when not nil,
// returns the zero entries to fill (Store.newEntry). A payload stored apart
// from its record (entry.payKey) takes a second read, of all such at once.
func loadEntries(eng engine, ns string, ikeys [][]byte, d *disk, newEntry func() *entry) ([]*entry, error) {
	if len(ikeys) == 0 {
		return nil, nil
	}
	// The records' keys (in key order when the index keys are in sequence
	// order, as a queue's mostly are), in one buffer.
	n := len(ikeys)
	kl := 2 + len(ns) + 8
	buf := make([]byte, 0, n*kl)
	keys := make([][]byte, n)
	for i, k := range ikeys {
		at := len(buf)
		buf = append(append(append(buf, kTask), ns...), 0)
		buf = binary.BigEndian.AppendUint64(buf, keySeq(k))
		keys[i] = buf[at:len(buf):len(buf)]
	}
	vals, err := eng.getMany(keys)
	if err != nil {
		return nil, err
	}
	out := make([]*entry, n)
	var ik []byte
	var apart []int     // indexes in out of the entries whose payload is apart
	var last store.Task // the strings of the record decoded last, for Decode to keep
	for i, k := range ikeys {
		rec := vals[i]
		if rec == nil {
			continue
		}
		seq := keySeq(k)
		t := store.Task{Namespace: ns, Type: last.Type, Queue: last.Queue, WorkerID: last.WorkerID}
		_, err := record.Decode(rec, &t)
		last.Type, last.Queue, last.WorkerID = t.Type, t.Queue, t.WorkerID
		if err != nil {
			return nil, fmt.Errorf("task record %d of namespace %q: %w", seq, ns, err)
		}
		if d != nil && d.isHidden(ns, t.ID, seq) {
			continue
		}
		if !t.State.Valid() {
			continue
		}
		ik = appendIndexKey(ik[:0], ns, &t, seq)
		if !bytes.Equal(ik, k) {
			continue
		}
		var e *entry
		if newEntry != nil {
			e = newEntry()
		} else {
			e = new(entry)
		}
		*e = entry{t: t, seq: seq, idx: -1, ikey: k, payKey: t.Payload == nil}
		if e.payKey {
			apart = append(apart, i)
		}
		out[i] = e
	}
	ts := make([]*store.Task, len(apart))
	seqs := make([]uint64, len(apart))
	for j, i := range apart {
		ts[j], seqs[j] = &out[i].t, out[i].seq
	}
	if err := readApart(eng, ns, ts, seqs); err != nil {
		return nil, err
	}
	return out, nil
}

// readApart reads the payloads stored apart from their records (kPayload)
// of tasks ts of namespace ns, at sequence numbers seqs, in one batched
// read: an absent one reads as empty.
func readApart(eng engine, ns string, ts []*store.Task, seqs []uint64) error {
	if len(ts) == 0 {
		return nil
	}
	keys := make([][]byte, len(seqs))
	for j, seq := range seqs {
		keys[j] = seqKey(kPayload, ns, seq)
	}
	vals, err := eng.getMany(keys)
	if err != nil {
		return err
	}
	for j, t := range ts {
		if t.Payload = vals[j]; vals[j] == nil {
			t.Payload = []byte{}
		}
	}
	return nil
}

// goneKey names a pending or delayed task deleted in memory whose
// deletion is not durable yet: a refill must not read it back from the
// disk.
type goneKey struct {
	ns  string
	seq uint64
}

// ---- load ----

// load reads the engine and builds the in-memory indexes, skipping the
// hidden tasks (whose enqueue failed; see disk.go). A data folder without
// the on-disk indexes gets them first (migrate); when that cannot be
// written (a read-only engine), every live task is loaded, as before the
// indexes existed.
func (s *Store) load(eng engine, hidden map[string]created) error {
	v, err := eng.get([]byte{kVersion})
	if err != nil {
		return err
	}
	if v == nil {
		n, err := s.migrate(eng)
		if err != nil {
			var werr writeError
			if !errors.As(err, &werr) {
				return err
			}
			s.log.Warn("embedded: the data folder has no task indexes and they cannot be written now: every live task is loaded into memory", "dir", s.dir, "err", err)
			s.windowSize = 0
			return s.loadAll(eng, hidden)
		}
		if n > 0 {
			s.log.Info("embedded: built the task indexes of a data folder written by an older version", "dir", s.dir, "tasks", n)
		}
	} else if len(v) != 1 || v[0] != formatVersion {
		return fmt.Errorf("%w: format version %x, this version reads %d", errCorrupt, v, formatVersion)
	}
	// The parts of flows that a crash left unwritten are written first:
	// what follows reads their tasks like any other.
	if n, err := s.recoverParts(eng); err != nil {
		var werr writeError
		if !errors.As(err, &werr) {
			return err
		}
		s.log.Warn("embedded: the unwritten parts of workflows cannot be written now: their tasks are missing until the store can write", "dir", s.dir, "err", err)
	} else if n > 0 {
		s.log.Info("embedded: wrote the parts of workflows left unwritten", "dir", s.dir, "tasks", n)
	}
	s.windowSize = s.windowConf
	return s.loadIndexed(eng, hidden)
}

// writeError is a failed write of migrate.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// migrate writes the index key of every task record and the counts of
// every queue, then the format version. It returns the number of tasks.
func (s *Store) migrate(eng engine) (int, error) {
	counts := make(map[[2]string]*[store.NumStates + 1]int64)
	var ops []op
	var derr, werr error
	n := 0
	err := eng.scan([]byte{kTask}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok || len(rest) != 8 {
			derr = fmt.Errorf("%w: bad task key %q", errCorrupt, k)
			return false
		}
		var t store.Task
		seq, err := record.Decode(v, &t)
		if err != nil {
			derr = fmt.Errorf("task record %d of namespace %q (key %x): %w", binary.BigEndian.Uint64(rest), nsName, k, err)
			return false
		}
		n++
		c := counts[[2]string{nsName, t.Queue}]
		if c == nil {
			c = new([store.NumStates + 1]int64)
			counts[[2]string{nsName, t.Queue}] = c
		}
		c[t.State]++
		// A delete before the set: a migration cut short by a crash may
		// have set the key already, and taskOps deletes it with op.once,
		// which needs one set since the last delete.
		ik := indexKey(nsName, &t, seq)
		ops = append(ops, op{key: ik}, op{key: ik, val: []byte(t.ID)})
		if len(ops) >= 20000 {
			if err := eng.apply(ops, false); err != nil {
				werr = writeError{err}
				return false
			}
			ops = ops[:0]
		}
		return true
	})
	if err = errors.Join(err, derr, werr); err != nil {
		return n, err
	}
	for k, c := range counts {
		v := make([]byte, 0, 2*len(c))
		for _, x := range c {
			v = binary.AppendVarint(v, x)
		}
		ops = append(ops, op{key: nameKey(kCounts, k[0], k[1]), val: v})
	}
	ops = append(ops, op{key: []byte{kVersion}, val: []byte{formatVersion}})
	if err := eng.apply(ops, true); err != nil {
		return n, writeError{err}
	}
	return n, nil
}

// loadIndexed loads the counts, the windows of pending tasks, and the
// scheduled and active tasks, from the indexes.
func (s *Store) loadIndexed(eng engine, hidden map[string]created) error {
	d := &disk{hidden: hidden}
	var derr error
	err := eng.scan([]byte{kCounts}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok {
			derr = fmt.Errorf("%w: bad counts key %q", errCorrupt, k)
			return false
		}
		q := s.namespace(nsName).queue(string(rest))
		for i := range q.counts {
			x, w := binary.Varint(v)
			if w <= 0 {
				derr = fmt.Errorf("%w: bad counts of queue %q of namespace %q", errCorrupt, rest, nsName)
				return false
			}
			q.counts[i] = x
			v = v[w:]
		}
		q.saved = q.counts
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return err
	}
	// Active tasks: all of them (as many as the workers' leases).
	byNS := make(map[string][][]byte)
	err = eng.scan([]byte{kLeased}, nil, false, func(k, _ []byte) bool {
		if nsName, _, ok := splitKey(k); ok {
			byNS[nsName] = append(byNS[nsName], bytes.Clone(k))
		}
		return true
	})
	if err != nil {
		return err
	}
	for nsName, keys := range byNS {
		ns := s.namespace(nsName)
		for len(keys) > 0 {
			part := keys[:min(len(keys), 4096)]
			keys = keys[len(part):]
			es, err := loadEntries(eng, nsName, part, d, nil)
			if err != nil {
				return err
			}
			for _, e := range es {
				if e != nil {
					ns.tasks[e.t.ID] = e
					s.leases.push(e)
				}
			}
		}
	}
	// The window of scheduled and retry tasks of each namespace.
	start := []byte{kDelayed}
	for {
		first, err := firstKey(eng, kDelayed, start)
		if err != nil {
			return err
		}
		if first == nil {
			break
		}
		nsName, _, ok := splitKey(first)
		if !ok {
			return fmt.Errorf("%w: bad delayed key %x", errCorrupt, first)
		}
		ns := s.namespace(nsName)
		ns.delayed.more = true
		ns.delayed.hi = dueKey{at: math.MinInt64}
		if err := s.refillDelayed(eng, d, ns); err != nil {
			return err
		}
		start = nsPrefix(kDelayed, nsName)
		start[len(start)-1] = 1 // past every key of the namespace
	}
	// The window of each queue and type.
	start = []byte{kReady}
	for {
		first, err := firstKey(eng, kReady, start)
		if err != nil {
			return err
		}
		if first == nil {
			break
		}
		nsName, rest, ok := splitKey(first)
		parts := bytes.SplitN(rest, []byte{0}, 3)
		if !ok || len(parts) != 3 {
			return fmt.Errorf("%w: bad ready key %x", errCorrupt, first)
		}
		ns := s.namespace(nsName)
		q := ns.queue(string(parts[0]))
		w := q.window(string(parts[1]))
		w.more = true
		w.hi = orderKey{prio: store.MaxPriority + 1} // before every task
		if err := s.refillFrom(eng, d, ns, q, string(parts[1]), w); err != nil {
			return err
		}
		start = readyPrefix(nsName, q.name, string(parts[1]))
		start[len(start)-1] = 1 // past every key of this queue and type
	}
	// The highest sequence number in use: the last task key of each
	// namespace (every namespace with tasks has counts).
	for name := range s.nss {
		if err := eng.scan(nsPrefix(kTask, name), nil, true, func(k, _ []byte) bool {
			s.seq = max(s.seq, keySeq(k))
			return false
		}); err != nil {
			return err
		}
	}
	if len(hidden) > 0 {
		// A failed batch may have reached the disk, counts included:
		// count again without the hidden tasks.
		if err := s.recount(eng, hidden); err != nil {
			return err
		}
	}
	return s.loadRest(eng, hidden)
}

// recount sets the counts from every task record, hidden ones left out.
func (s *Store) recount(eng engine, hidden map[string]created) error {
	for _, ns := range s.nss {
		for _, q := range ns.queues {
			q.counts = [store.NumStates + 1]int64{}
		}
	}
	var derr error
	err := eng.scan([]byte{kTask}, nil, false, func(k, v []byte) bool {
		nsName, _, _ := splitKey(k)
		var t store.Task
		seq, err := record.Decode(v, &t)
		if err != nil {
			derr = fmt.Errorf("task record of namespace %q (key %x): %w", nsName, k, err)
			return false
		}
		if c, ok := hidden[hiddenKey(nsName, t.ID)]; ok && c.seq == seq {
			return true
		}
		s.namespace(nsName).queue(t.Queue).counts[t.State]++
		return true
	})
	return errors.Join(err, derr)
}

// loadAll loads every live task into memory from the task records (a data
// folder without indexes that cannot be written).
func (s *Store) loadAll(eng engine, hidden map[string]created) error {
	isHidden := func(ns, id string, seq uint64) bool {
		c, ok := hidden[hiddenKey(ns, id)]
		return ok && c.seq == seq
	}
	bySeq := make(map[uint64]*entry)
	var derr error
	err := eng.scan([]byte{kTask}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok || len(rest) != 8 {
			derr = fmt.Errorf("%w: bad task key %q", errCorrupt, k)
			return false
		}
		var t store.Task
		seq, err := record.Decode(v, &t)
		if err != nil {
			derr = fmt.Errorf("task record %d of namespace %q (key %x): %w", binary.BigEndian.Uint64(rest), nsName, k, err)
			return false
		}
		if isHidden(nsName, t.ID, seq) {
			return true
		}
		t.Namespace = nsName
		ns := s.namespace(nsName)
		q := ns.queue(t.Queue)
		q.counts[t.State]++
		s.seq = max(s.seq, seq)
		if t.State.Terminal() {
			return true
		}
		e := &entry{t: t, seq: seq, idx: -1, payKey: t.Payload == nil}
		ns.tasks[t.ID] = e
		if e.payKey {
			e.t.Payload = []byte{} // until the scan of the payloads
			bySeq[seq] = e
		}
		switch t.State {
		case store.StatePending:
			q.window(t.Type).push(e)
		case store.StateScheduled, store.StateRetry:
			ns.delayed.push(e)
		case store.StateActive:
			s.leases.push(e)
		case store.StateSucceeded, store.StateDead, store.StateCancelled:
			// Terminal: handled above.
		}
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return err
	}
	err = eng.scan([]byte{kPayload}, nil, false, func(k, v []byte) bool {
		_, rest, ok := splitKey(k)
		if ok && len(rest) == 8 {
			if e := bySeq[binary.BigEndian.Uint64(rest)]; e != nil {
				e.t.Payload = append([]byte(nil), v...)
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return s.loadRest(eng, hidden)
}

// loadRest loads the paused queues, the unique keys and the flows.
func (s *Store) loadRest(eng engine, hidden map[string]created) error {
	err := eng.scan([]byte{kQueue}, nil, false, func(k, v []byte) bool {
		if nsName, rest, ok := splitKey(k); ok && len(v) == 1 && v[0] == 1 {
			s.namespace(nsName).queue(string(rest)).paused = true
		}
		return true
	})
	if err != nil {
		return err
	}
	err = eng.scan([]byte{kUnique}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok {
			return true
		}
		n, w := binary.Varint(v)
		if w <= 0 {
			return true
		}
		if _, ok := hidden[hiddenKey(nsName, string(v[w:]))]; ok {
			return true
		}
		until := time.Unix(0, n).UTC()
		s.namespace(nsName).unique[string(rest)] = uniqueHold{id: string(v[w:]), until: until}
		heap.Push(&s.uniqueExp, timedItem{at: until, ns: nsName, id: string(rest)})
		return true
	})
	if err != nil {
		return err
	}
	return s.loadFlows(eng)
}

// goneItem is an entry of s.goneList.
type goneItem struct {
	k   goneKey
	gen uint64
}

// markGone notes that the task of ns at seq was deleted in memory by a
// write of the current batch. The caller holds s.mu.
func (s *Store) markGone(ns string, seq uint64, gen uint64) {
	k := goneKey{ns: ns, seq: seq}
	s.gone[k] = gen
	s.goneList = append(s.goneList, goneItem{k: k, gen: gen})
}

// forgetGone forgets the deletions durable at gen. The caller holds s.mu.
func (s *Store) forgetGone(gen uint64) {
	n := 0
	for _, g := range s.goneList {
		if g.gen > gen {
			break
		}
		n++
		if s.gone[g.k] == g.gen {
			delete(s.gone, g.k)
		}
	}
	s.goneList = append(s.goneList[:0], s.goneList[n:]...)
}

// storedLive reports whether eng holds task id of ns, and whether it is
// live (not finished).
func storedLive(eng engine, ns, id string) (stored, live bool, err error) {
	v, err := eng.get(nameKey(kID, ns, id))
	if err != nil || len(v) != 8 {
		return false, false, err
	}
	rec, err := eng.get(seqKey(kTask, ns, binary.BigEndian.Uint64(v)))
	if err != nil || rec == nil {
		return false, false, err
	}
	var t store.Task
	if _, err := record.Decode(rec, &t); err != nil {
		return false, false, fmt.Errorf("task %q of namespace %q: %w", id, ns, err)
	}
	return true, !t.State.Terminal(), nil
}

// ---- the delayed window ----

// delayedWindow is the part of the scheduled and retry tasks of a
// namespace held in memory, as a heap by due time: as window, for the
// delayed index.
type delayedWindow struct {
	taskHeap
	more bool
	hi   dueKey
}

// dueKey is the order of a delayed task (delayedLess).
type dueKey struct {
	at  int64
	seq uint64
}

func dueOf(e *entry) dueKey { return dueKey{at: e.t.RunAt.UnixNano(), seq: e.seq} }

func (a dueKey) after(b dueKey) bool {
	if a.at != b.at {
		return a.at > b.at
	}
	return a.seq > b.seq
}

// pushDelayed adds scheduled or retry entry e to the delayed window of ns.
// Its write is not durable yet: once it is, spillDurable drops it from
// memory if it comes after the window. The caller holds s.mu.
func (s *Store) pushDelayed(ns *namespace, e *entry) {
	ns.delayed.push(e)
	if s.windowSize == 0 {
		return
	}
	s.spill = append(s.spill, e)
	if ns.delayed.Len() > 2*s.windowSize {
		s.trimDelayed(ns)
	}
}

// spillDurable drops from memory the delayed entries, durable at gen, that
// come after their window. The caller holds s.mu.
func (s *Store) spillDurable(gen uint64) {
	n := 0
	for _, e := range s.spill {
		if e.gen > gen {
			s.spill[n] = e
			n++
			continue
		}
		ns := s.nss[e.t.Namespace]
		if ns == nil || ns.tasks[e.t.ID] != e || (e.t.State != store.StateScheduled && e.t.State != store.StateRetry) {
			continue
		}
		if w := &ns.delayed; w.more && dueOf(e).after(w.hi) {
			w.remove(e)
			s.dropEntry(ns, e)
		}
	}
	clear(s.spill[n:])
	s.spill = s.spill[:n]
}

// trimDelayed keeps the first windowSize entries of the delayed window of
// ns (and those whose records are not durable yet) and forgets the others.
func (s *Store) trimDelayed(ns *namespace) {
	w := &ns.delayed
	s.trimHeap(ns, &w.taskHeap, func(last *entry) {
		w.hi = dueOf(last)
		w.more = true
	})
}

// nextDelayed returns the first scheduled or retry task of ns, reading the
// delayed index when the window does not hold it. A failed read is logged
// and leaves the window as it is (the task is promoted later). The caller
// holds s.mu.
func (s *Store) nextDelayed(ns *namespace) *entry {
	w := &ns.delayed
	for {
		e := w.peek()
		if !w.more || (e != nil && !dueOf(e).after(w.hi)) {
			return e
		}
		s.d.mu.RLock()
		err := s.refillDelayed(s.d.eng, &s.d, ns)
		s.d.mu.RUnlock()
		if err != nil {
			s.log.Error("embedded: reading the delayed index failed", "namespace", ns.name, "err", err)
			return e
		}
	}
}

// refillDelayed loads the next windowSize delayed tasks of ns after its
// window's hi from the delayed index of eng, whose hidden tasks d names.
func (s *Store) refillDelayed(eng engine, d *disk, ns *namespace) error {
	w := &ns.delayed
	prefix := nsPrefix(kDelayed, ns.name)
	start := binary.BigEndian.AppendUint64(appendTime(bytes.Clone(prefix), time.Unix(0, w.hi.at)), w.hi.seq)
	start = append(start, 0)
	es, n, last, err := s.scanWindow(eng, d, ns, prefix, start)
	if err != nil {
		return fmt.Errorf("reading the delayed index of namespace %q: %w", ns.name, err)
	}
	for _, e := range es {
		ns.tasks[e.t.ID] = e
		s.seq = max(s.seq, e.seq)
		w.push(e)
	}
	if n < s.windowSize {
		w.more = false
		return nil
	}
	w.hi = dueKey{at: keyTime(last).UnixNano(), seq: keySeq(last)}
	return nil
}

// firstKey returns a copy of the first key of kind at or after start, or
// nil when there is none.
func firstKey(eng engine, kind byte, start []byte) ([]byte, error) {
	var first []byte
	err := eng.scan([]byte{kind}, start, false, func(k, _ []byte) bool {
		first = bytes.Clone(k)
		return false
	})
	return first, err
}
