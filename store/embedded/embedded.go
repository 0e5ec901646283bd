package embedded

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// Config configures an embedded store. The zero value (or nil) means all
// defaults.
type Config struct {
	// Clock is the store's clock; default store.SystemClock.
	Clock store.Clock
	// Limits bounds what the store accepts; zero fields mean the defaults
	// of store.Limits.
	Limits store.Limits
	// Logger receives the store's few log lines; default discards.
	Logger *slog.Logger

	// engine selects the key-value engine ("pebble" or "bbolt"); used by
	// the engine comparison benchmark only.
	engine string
}

// Store is the embedded store. It is safe for concurrent use. Only one Store
// may have a data folder open at a time (the engine locks it).
type Store struct {
	dir    string
	clock  store.Clock
	limits store.Limits
	log    *slog.Logger
	eng    engine

	// mu guards every field below it, and the entries and namespaces they
	// reach. Lock order: mu, then c.mu.
	mu       sync.Mutex
	closed   bool
	failed   error
	seq      uint64
	leaseSeq uint64
	nss      map[string]*namespace
	leases   timeHeap // active tasks by lease expiry (lazy)
	expiry   timeHeap // terminal tasks by ExpiresAt (lazy)
	evict    []timedItem
	// metaPending holds meta writes not yet committed (nil: a delete), and
	// metaGen the generation of each key's newest pending write (from
	// metaSeq), so a waiter knows whether its write is still the newest.
	metaPending map[string][]byte
	metaGen     map[string]uint64
	metaSeq     uint64 // the last generation handed out, for every key

	c    committer
	wg   sync.WaitGroup
	stop chan struct{}
}

// namespace holds the in-memory indexes of one namespace.
type namespace struct {
	name    string
	tasks   map[string]*entry // live tasks, and finished ones not yet durable
	queues  map[string]*queue
	delayed taskHeap // scheduled and retry tasks by RunAt
	unique  map[string]uniqueHold
	wake    chan struct{} // closed when tasks become ready, if waiting > 0
	waiting int
}

type queue struct {
	name   string
	paused bool
	ready  map[string]*taskHeap // pending tasks by type
	types  []string             // keys of ready, in first-seen order
	counts [store.NumStates + 1]int64
}

type uniqueHold struct {
	id    string
	until time.Time
}

// entry is a task held in memory. t.Payload is never modified in place, so
// copies of t may share it.
type entry struct {
	t   store.Task
	seq uint64
	idx int    // index in the heap the entry is in, -1 if none
	gen uint64 // commit generation of the entry's last write
}

// Open opens (creating if needed) the embedded store in the data folder dir.
// It loads every live task into memory; see the package documentation.
func Open(dir string, cfg *Config) (*Store, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Clock == nil {
		c.Clock = store.SystemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, errors.New("embedded: open: empty data folder name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil { //nolint:gosec // G703: the data folder is the operator's choice by design
		return nil, fmt.Errorf("embedded: open: %w", err)
	}
	eng, err := openEngine(c.engine, dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	s := &Store{
		dir:    dir,
		clock:  c.Clock,
		limits: c.Limits.WithDefaults(),
		log:    c.Logger,
		eng:    eng,
		nss:    make(map[string]*namespace),

		metaPending: make(map[string][]byte),
		metaGen:     make(map[string]uint64),
		stop:        make(chan struct{}),
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.leaseSeq = binary.BigEndian.Uint64(b[:]) >> 1
	s.c.init()
	if err := s.load(); err != nil {
		return nil, errors.Join(fmt.Errorf("embedded: open %s: %w", dir, err), eng.close())
	}
	s.wg.Add(1)
	go s.commitLoop()
	return s, nil
}

func (s *Store) namespace(name string) *namespace {
	ns := s.nss[name]
	if ns == nil {
		ns = &namespace{
			name:    name,
			tasks:   make(map[string]*entry),
			queues:  make(map[string]*queue),
			delayed: taskHeap{less: delayedLess},
			unique:  make(map[string]uniqueHold),
		}
		s.nss[name] = ns
	}
	return ns
}

func (ns *namespace) queue(name string) *queue {
	q := ns.queues[name]
	if q == nil {
		q = &queue{name: name, ready: make(map[string]*taskHeap)}
		ns.queues[name] = q
	}
	return q
}

// notify wakes the leasers waiting on ns.
func (ns *namespace) notify() {
	if ns.waiting > 0 && ns.wake != nil {
		close(ns.wake)
		ns.wake = nil
	}
}

// ---- keys ----

const (
	kTask    = 't' // t ns 0 seq -> record
	kPayload = 'p' // p ns 0 seq -> payload
	kID      = 'i' // i ns 0 id -> seq
	kQueue   = 'q' // q ns 0 queue -> paused flag
	kUnique  = 'u' // u ns 0 key -> until, id
	kMeta    = 'm' // m ns 0 key -> meta record
)

func nsPrefix(kind byte, ns string) []byte {
	k := make([]byte, 0, 2+len(ns)+8)
	k = append(k, kind)
	k = append(k, ns...)
	return append(k, 0)
}

func seqKey(kind byte, ns string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nsPrefix(kind, ns), seq)
}

// keySeq returns the sequence number that ends a seqKey.
func keySeq(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(k)-8:])
}

func nameKey(kind byte, ns, name string) []byte {
	return append(nsPrefix(kind, ns), name...)
}

// splitKey returns the namespace and the rest of a key.
func splitKey(k []byte) (string, []byte, bool) {
	for i := 1; i < len(k); i++ {
		if k[i] == 0 {
			return string(k[1:i]), k[i+1:], true
		}
	}
	return "", nil, false
}

// ---- load ----

func (s *Store) load() error {
	bySeq := make(map[uint64]*entry)
	var derr error
	err := s.eng.scan([]byte{kTask}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok || len(rest) != 8 {
			derr = fmt.Errorf("bad task key %q", k)
			return false
		}
		var t store.Task
		seq, err := record.Decode(v, &t)
		if err != nil {
			derr = fmt.Errorf("task %d: %w", binary.BigEndian.Uint64(rest), err)
			return false
		}
		t.Namespace = nsName
		ns := s.namespace(nsName)
		q := ns.queue(t.Queue)
		q.counts[t.State]++
		if seq > s.seq {
			s.seq = seq
		}
		if t.State.Terminal() {
			heap.Push(&s.expiry, timedItem{at: t.ExpiresAt, ns: nsName, id: t.ID, seq: seq})
			return true
		}
		e := &entry{t: t, seq: seq, idx: -1}
		ns.tasks[t.ID] = e
		bySeq[seq] = e
		switch t.State {
		case store.StatePending:
			q.pushReady(e)
		case store.StateScheduled, store.StateRetry:
			ns.delayed.push(e)
		case store.StateActive:
			heap.Push(&s.leases, timedItem{at: t.LeaseExpiresAt, leaseID: t.LeaseID, e: e})
		case store.StateSucceeded, store.StateDead, store.StateCancelled:
			// Terminal: handled above.
		}
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return err
	}
	err = s.eng.scan([]byte{kPayload}, nil, false, func(k, v []byte) bool {
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
	err = s.eng.scan([]byte{kQueue}, nil, false, func(k, v []byte) bool {
		if nsName, rest, ok := splitKey(k); ok && len(v) == 1 && v[0] == 1 {
			s.namespace(nsName).queue(string(rest)).paused = true
		}
		return true
	})
	if err != nil {
		return err
	}
	return s.eng.scan([]byte{kUnique}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok {
			return true
		}
		n, w := binary.Varint(v)
		if w <= 0 {
			return true
		}
		s.namespace(nsName).unique[string(rest)] = uniqueHold{id: string(v[w:]), until: time.Unix(0, n).UTC()}
		return true
	})
}

func (q *queue) pushReady(e *entry) {
	h := q.ready[e.t.Type]
	if h == nil {
		h = &taskHeap{less: readyLess}
		q.ready[e.t.Type] = h
		q.types = append(q.types, e.t.Type)
	}
	h.push(e)
}

func (q *queue) removeReady(e *entry) {
	if h := q.ready[e.t.Type]; h != nil {
		h.remove(e)
	}
}

// ---- group commit ----

// batch is a set of writes committed together with one sync.
type batch struct {
	gen  uint64
	ops  []op
	done chan struct{}
	err  error
}

// committer collects writes into batches; one goroutine commits them in
// order, so every write that arrives while a sync runs shares the next one.
type committer struct {
	mu   sync.Mutex
	cur  *batch
	last *batch // the batch being or last committed
	kick chan struct{}
}

func (c *committer) init() {
	c.cur = &batch{gen: 1, done: make(chan struct{})}
	c.last = &batch{done: make(chan struct{})}
	close(c.last.done)
	c.kick = make(chan struct{}, 1)
}

// write queues ops for the next commit and returns the batch they join.
// Callers hold s.mu, so writes reach the engine in the order their changes
// were made in memory.
func (s *Store) write(ops ...op) *batch {
	s.c.mu.Lock()
	b := s.c.cur
	b.ops = append(b.ops, ops...)
	s.c.mu.Unlock()
	select {
	case s.c.kick <- struct{}{}:
	default:
	}
	return b
}

// putTask queues the record of e and returns its batch.
func (s *Store) putTask(e *entry) *batch {
	b := s.write(op{key: seqKey(kTask, e.t.Namespace, e.seq), val: record.Encode(nil, e.seq, &e.t)})
	e.gen = b.gen
	return b
}

// barrier returns the newest batch that holds a write: waiting for it waits
// for every write made before the call.
func (s *Store) barrier() *batch {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if len(s.c.cur.ops) > 0 {
		return s.c.cur
	}
	return s.c.last
}

func (s *Store) commitLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.c.kick:
		case <-s.stop:
			s.commitOne()
			return
		}
		s.commitOne()
	}
}

func (s *Store) commitOne() {
	s.c.mu.Lock()
	b := s.c.cur
	if len(b.ops) == 0 {
		s.c.mu.Unlock()
		return
	}
	s.c.cur = &batch{gen: b.gen + 1, done: make(chan struct{})}
	s.c.last = b
	s.c.mu.Unlock()

	b.err = s.eng.apply(b.ops, true)
	b.ops = nil
	if b.err != nil {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = fmt.Errorf("embedded: commit failed, the store is read-only until reopened: %w", b.err)
			s.log.Error("embedded: commit failed", "err", b.err)
		}
		s.mu.Unlock()
	}
	close(b.done)
	s.evictDurable(b.gen)
}

// evictDurable drops finished tasks from memory once their final record is
// durable; Get and List read them from the engine from then on.
func (s *Store) evictDurable(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, it := range s.evict {
		if it.seq > gen { // seq holds the generation in evict items
			break
		}
		n++
		ns := s.nss[it.ns]
		if ns == nil {
			continue
		}
		if e := ns.tasks[it.id]; e != nil && e == it.e && e.t.State.Terminal() && e.gen <= gen {
			delete(ns.tasks, it.id)
		}
	}
	s.evict = append(s.evict[:0], s.evict[n:]...)
}

// wait waits for b to be durable.
func (b *batch) wait() error {
	if b == nil {
		return nil
	}
	<-b.done
	return b.err
}

// ---- lifecycle ----

// Ping reports whether the store is open and healthy.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usable(ctx)
}

// usable returns why a call cannot proceed: a done context, a closed or a
// failed store.
func (s *Store) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return store.ErrClosed
	}
	return s.failed
}

// Close flushes every pending write, wakes waiting leasers (they return
// ErrClosed) and closes the data folder. It is safe to call twice.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ns := range s.nss {
		ns.notify()
	}
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	return s.eng.close()
}

func (s *Store) nextLeaseID() uint64 {
	s.leaseSeq++
	if s.leaseSeq == 0 {
		s.leaseSeq = 1
	}
	return s.leaseSeq
}

func (s *Store) now() time.Time { return s.clock.Now().Round(0).UTC() }
