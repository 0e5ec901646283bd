package embedded

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kilnhq/kiln/internal/cancelfeed"
	"github.com/kilnhq/kiln/internal/changefeed"
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
	// ReserveBytes is the disk space the store keeps for itself, twice
	// over: it refuses writes (with store.ErrStorageFull; reads keep
	// working) while its disk has less than ReserveBytes free, and it keeps
	// a file of ReserveBytes in the data folder, which it deletes when
	// another program fills the disk, so that the write under way can end
	// cleanly. Writes are accepted again once the disk has a quarter more
	// than ReserveBytes free besides the file. 0 means ReserveBytesDefault;
	// a negative value turns both off, which leaves a full disk to the
	// engine (and may end the process).
	ReserveBytes int64

	// engine selects the key-value engine ("pebble" or "bbolt"); used by
	// the engine comparison benchmark only.
	engine string
	// retryEvery is how often the store checks, while it refuses writes,
	// whether they can resume; default retryEveryDefault.
	retryEvery time.Duration
	// spaceEvery is how often at most the free space is checked; default
	// spaceCheckEvery; negative: never (tests of the reserve).
	spaceEvery time.Duration
	// wrapEngine, when set, wraps every engine the store opens (tests
	// inject failures with it).
	wrapEngine func(engine) engine
	// window is the number of pending tasks of a queue and type held in
	// memory while the disk holds more; default windowDefault.
	window int
}

// ErrInUse is returned (wrapped) by Open when another Store, in this
// process or another one, has the data folder open. The message names the
// process that holds it.
var ErrInUse = errors.New("data folder in use")

// Store is the embedded store. It is safe for concurrent use. Only one Store
// may have a data folder open at a time: Open locks the folder and fails
// with ErrInUse, naming the process that has it, while another has it open.
type Store struct {
	dir        string
	clock      store.Clock
	limits     store.Limits
	log        *slog.Logger
	engineKind string
	reserve    int64
	retryEvery time.Duration
	spaceEvery time.Duration
	wrapEngine func(engine) engine
	windowConf int           // Config.window
	lock       *folderLock   // the data folder's lock, held until Close
	noteC      chan struct{} // the engine's notes to the monitor (disk.go)
	d          disk
	cancels    *cancelfeed.Feed // cancel requests of active tasks, for WaitCancels
	changes    *changefeed.Feed // the task changes, for Changes

	// mu guards every field below it, and the entries and namespaces they
	// reach. Lock order: mu, then d.mu, then c.mu.
	mu     sync.Mutex
	closed bool
	// fault is set while the engine is read-only after a failed write, and
	// full while the disk has too little free space (disk.go): writes
	// return them.
	fault, full error
	spaceAt     time.Time // when the free space was last checked
	written     int64     // bytes written since
	seq         uint64
	leaseSeq    uint64
	nss         map[string]*namespace
	leases      taskHeap // active tasks by lease expiry
	uniqueExp   timeHeap // unique keys by the end of their window (lazy; id is the key)
	evict       []timedItem
	// metaPending holds meta writes not yet committed (nil: a delete), and
	// metaGen the generation of each key's newest pending write (from
	// metaSeq), so a waiter knows whether its write is still the newest.
	metaPending map[string][]byte
	metaGen     map[string]uint64
	metaSeq     uint64 // the last generation handed out, for every key
	// flows indexes held tasks by namespace, and flowOps holds the writes
	// of flow changes that the next write takes (flow.go).
	flows   map[string]*flowIndex
	flowOps []op
	// committed is the generation of the last batch made durable. staged
	// holds the pending entries kept out of their ready heaps until the
	// write that made them pending is durable (see stage), and unassigned
	// the entries whose write the caller has not queued yet: writeTask
	// gives them its batch's generation (gen, and readyGen when staged).
	committed  uint64
	staged     []*entry
	unassigned []*entry
	// diskEpoch counts the times a task left memory while staying on disk
	// (evictDurable, a rebuild of memory); Enqueue's read of its ids
	// before the lock stands while it is unchanged. Written under mu.
	diskEpoch atomic.Uint64
	// flowKept is the estimated size of the finished members of open
	// flows kept in memory (flowKeep), at most flowKeepBytes.
	flowKept int64
	// windowSize bounds the ready windows (index.go); 0: no bound (every
	// pending task in memory, for a folder without indexes).
	windowSize int
	// gone holds the tasks deleted in memory whose deletion is not
	// durable yet, with its generation (goneList in order), so that a
	// refill does not read them back.
	gone     map[goneKey]uint64
	goneList []goneItem
	// spill holds the scheduled entries pushed to a delayed window before
	// their write was durable, for spillDurable.
	spill []*entry
	// dropped holds the entries releaseDurable dropped from memory, and
	// freeEntries those kept for newEntry (recycleDropped).
	dropped, freeEntries []*entry

	c    committer
	wg   sync.WaitGroup
	stop chan struct{}
}

// namespace holds the in-memory indexes of one namespace.
type namespace struct {
	name    string
	tasks   map[string]*entry // live tasks, and finished ones not yet durable
	queues  map[string]*queue
	delayed delayedWindow // scheduled and retry tasks by RunAt
	unique  map[string]uniqueHold
	wake    chan struct{} // closed when tasks become ready, if waiting > 0
	waiting int
}

type queue struct {
	name   string
	paused bool
	ready  map[string]*window // pending tasks by type
	types  []string           // keys of ready, in first-seen order
	counts [store.NumStates + 1]int64
	saved  [store.NumStates + 1]int64 // counts as last written (countsOps)
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
	// staged is set while the entry is pending but out of its ready heap:
	// it is leasable once the batch of generation readyGen is durable (0:
	// the caller's next write, not yet queued). See stage.
	staged   bool
	readyGen uint64
	// ikey is the index key of the task's last record written (see
	// index.go), to delete when the next one has another.
	ikey []byte
	// flow caches the id of the task's flow ("" for none) once flowKnown
	// (see memberOf): a task's flow never changes.
	flow      string
	flowKnown bool
	// upstream is what a released held task's lease tells of the tasks it
	// waited for (store.Task.Upstream), when this process counted them.
	upstream *store.Upstream
	// payKey is set when the task's payload is stored in a key of its own
	// (kPayload) rather than in its record: a payload over inlineMax, or
	// a task written by a version that kept every payload apart. It never
	// changes, as the payload never does.
	payKey bool
}

// inlineMax is the largest payload a task's record holds (record flag
// 32). A small payload in the record saves a key per task, written at
// enqueue and deleted with the task, and a read per task leased from the
// disk; a larger one is stored once in a key of its own rather than
// rewritten with the record at every change of state. Measured in
// docs/decisions/013-payload-in-record.md: at 256 bytes the rewrites cost
// the processing of a task what the saved key gave its enqueue.
const inlineMax = 128

// payKeyFor reports whether a new task with payload p stores it in a key
// of its own.
func payKeyFor(p []byte) bool { return len(p) > inlineMax }

// Open opens (creating if needed) the embedded store in the data folder dir.
// It loads the queue counts, the first pending and scheduled tasks of each
// queue and the active tasks into memory, not the whole backlog; see the
// package documentation.
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
	if c.ReserveBytes == 0 {
		c.ReserveBytes = ReserveBytesDefault
	}
	if c.retryEvery <= 0 {
		c.retryEvery = retryEveryDefault
	}
	if c.spaceEvery == 0 {
		c.spaceEvery = spaceCheckEvery
	}
	if c.window <= 0 {
		c.window = windowDefault
	}
	s := &Store{
		dir:        dir,
		clock:      c.Clock,
		limits:     c.Limits.WithDefaults(),
		log:        c.Logger,
		engineKind: c.engine,
		reserve:    c.ReserveBytes,
		retryEvery: c.retryEvery,
		spaceEvery: c.spaceEvery,
		wrapEngine: c.wrapEngine,
		windowConf: c.window,
		gone:       make(map[goneKey]uint64),
		noteC:      make(chan struct{}, 1),
		d:          disk{hidden: make(map[string]created)},
		cancels:    cancelfeed.New(),
		changes:    changefeed.New(0),
		nss:        make(map[string]*namespace),
		leases:     taskHeap{less: leaseLess},

		metaPending: make(map[string][]byte),
		metaGen:     make(map[string]uint64),
		stop:        make(chan struct{}),
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.leaseSeq = binary.BigEndian.Uint64(b[:]) >> 1
	s.c.init()
	lock, err := lockFolder(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	eng, err := s.openAtStart()
	if err != nil {
		return nil, errors.Join(err, lock.unlock())
	}
	s.d.eng = eng
	if err := s.load(eng, nil); err != nil {
		return nil, errors.Join(openError(dir, err), eng.close(), lock.unlock())
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.monitor()
	return s, nil
}

// openAtStart makes the disk reserve and opens the engine. When the disk
// has no room to open it read-write (which replays its WAL into a new
// table), it opens it read-only, and the store refuses writes until there
// is room.
func (s *Store) openAtStart() (engine, error) {
	if s.reserve > 0 {
		if err := makeReserve(s.dir, s.reserve); err != nil {
			if !isNoSpace(err) {
				return nil, fmt.Errorf("embedded: open %s: %w", s.dir, err)
			}
			free, _ := diskFree(s.dir)
			s.full = s.fullError(free)
			s.spaceAt = time.Now()
			s.log.Warn("embedded: the disk is almost full: writes are refused until space is freed", "dir", s.dir, "free", mib(free), "reserve", mib(s.reserve))
		}
	}
	if walBytes(s.dir) > 0 && !s.roomToOpen(false) {
		eng, err := s.openEngine(true)
		if err != nil {
			return nil, openError(s.dir, err)
		}
		free, _ := diskFree(s.dir)
		s.fault = fmt.Errorf("%w: %s free on the disk of %s is too little to open the store for writing; writes are refused until space is freed",
			store.ErrStorageFull, mib(free), s.dir)
		s.log.Warn("embedded: the disk is full: the store opened read-only and refuses writes until space is freed", "dir", s.dir, "free", mib(free))
		return eng, nil
	}
	eng, err := s.openEngine(false)
	if err != nil {
		return nil, openError(s.dir, err)
	}
	return eng, nil
}

// openEngine opens the store's engine, with the store's callbacks.
func (s *Store) openEngine(readOnly bool) (engine, error) {
	h := engineHooks{note: s.note, corrupt: func(path string, err error) {
		s.log.Error("embedded: a file of the data folder is damaged; run `kiln store check` on the folder (docs/reliability.md)", "file", path, "err", err)
	}}
	if s.reserve > 0 {
		h.onDiskFull = s.onDiskFull
	}
	eng, err := openEngine(s.engineKind, s.dir, readOnly, h)
	if err == nil && s.wrapEngine != nil {
		eng = s.wrapEngine(eng)
	}
	return eng, err
}

// openError explains why the data folder dir did not open, and what to do.
func openError(dir string, err error) error {
	switch {
	case isNoSpace(err):
		return fmt.Errorf("embedded: open %s: %w: %w; free some space on its disk and start again", dir, store.ErrStorageFull, err)
	case errors.Is(err, fs.ErrPermission), isLockError(err):
		// Not the data: access rights, or another process has it open.
		return fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	var names []string
	for _, p := range damagedFiles(dir, false) {
		names = append(names, p.File)
	}
	what := "the data folder may be damaged"
	switch len(names) {
	case 0:
	case 1:
		what = "the data folder is damaged (" + names[0] + " fails its checksums)"
	default:
		what = "the data folder is damaged (" + strings.Join(names, ", ") + " fail their checksums)"
	}
	if len(names) == 0 && (errors.Is(err, errCorrupt) || pebble.IsCorruptionError(err) || errors.Is(err, record.ErrCorrupt)) {
		what = "the data folder is damaged"
	}
	return fmt.Errorf("embedded: open %s: %s: %w; run `kiln store check %s` to see what can be read, and `kiln store recover %s --to <new folder>` to copy it into a new data folder (docs/reliability.md)",
		dir, what, err, dir, dir)
}

func (s *Store) namespace(name string) *namespace {
	ns := s.nss[name]
	if ns == nil {
		ns = &namespace{
			name:    name,
			tasks:   make(map[string]*entry),
			queues:  make(map[string]*queue),
			delayed: delayedWindow{taskHeap: taskHeap{less: delayedLess}},
			unique:  make(map[string]uniqueHold),
		}
		s.nss[name] = ns
	}
	return ns
}

func (ns *namespace) queue(name string) *queue {
	q := ns.queues[name]
	if q == nil {
		q = &queue{name: name, ready: make(map[string]*window)}
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
	kPayload = 'p' // p ns 0 seq -> payload (when not in the record: entry.payKey)
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

func (q *queue) removeReady(e *entry) {
	if e.staged {
		e.staged = false // releaseDurable drops it
		return
	}
	if w := q.ready[e.t.Type]; w != nil {
		w.remove(e)
	}
}

// ---- durable before visible ----
//
// A task reaches a leaser only once the write that made it pending is
// durable: an enqueue whose commit fails, or that a crash cuts short, never
// runs. The transitions to pending (enqueue, a flow releasing a held task,
// a retry or release by a worker, an expired lease, an admin retry) stage
// the entry instead of pushing it to its ready heap; the committer pushes
// it there, and wakes the leasers, after the batch that holds the write is
// synced and before that batch's writers hear of it. A batch that fails
// releases nothing: memory is rebuilt from the disk (degrade), and the
// staged entries go with the old memory. A scheduled or retry task that
// becomes due changes nothing a crash could lose (the disk has it due, and
// it is promoted again after a restart): it is leasable at once when the
// write that scheduled it is durable, else when that write is.

// stage keeps pending entry e out of its ready heap until the caller's next
// write (which writes e's pending record) is durable. The caller holds s.mu
// and queues that write before it releases the lock.
func (s *Store) stage(e *entry) {
	e.staged = true
	e.readyGen = 0
	s.staged = append(s.staged, e)
	s.unassigned = append(s.unassigned, e)
}

// readyAfter makes pending entry e of q leasable once the batch of
// generation gen is durable: at once when it is already. It reports
// whether e is leasable now. The caller holds s.mu.
func (s *Store) readyAfter(q *queue, e *entry, gen uint64) bool {
	if gen <= s.committed {
		s.pushReady(s.nss[e.t.Namespace], q, e)
		return true
	}
	e.staged = true
	e.readyGen = gen
	s.staged = append(s.staged, e)
	return false
}

// releaseDurable pushes the staged entries whose write is in a batch up to
// gen, now durable, to their ready heaps and wakes their leasers. The
// caller holds s.mu.
func (s *Store) releaseDurable(gen uint64) {
	n := 0
	for _, e := range s.staged {
		if !e.staged {
			continue // left the pending state, or staged again (a later item)
		}
		if e.readyGen == 0 || e.readyGen > gen {
			s.staged[n] = e
			n++
			continue
		}
		e.staged = false
		ns := s.nss[e.t.Namespace]
		if ns == nil {
			continue
		}
		if s.pushReady(ns, ns.queue(e.t.Queue), e) {
			s.dropped = append(s.dropped, e)
		}
		ns.notify()
	}
	clear(s.staged[n:])
	s.staged = s.staged[:n]
}

// ---- group commit ----

// batch is a set of writes committed together with one sync.
type batch struct {
	gen     uint64
	ops     []op
	created []created // the tasks enqueued in the batch (disk.go)
	// buf holds keys and values of ops that nothing keeps after the
	// engine has copied them (see opBuf).
	buf  opArena
	done chan struct{}
	err  error
}

// opArena hands out byte slices from a few large chunks, for the keys and
// values of a batch's ops: the engine copies them when it applies the
// batch, after which the chunks serve the next batch but one. A task's
// record and most of its keys need no allocation of their own this way.
type opArena struct {
	cur  []byte   // the chunk being filled
	used [][]byte // the chunks filled before cur
	free [][]byte // emptied chunks, to fill after cur
}

const (
	arenaChunk = 64 << 10 // the size of a chunk
	arenaKeep  = 16       // chunks kept for the next batch, at most
)

// take returns a slice of length 0 and capacity n.
func (a *opArena) take(n int) []byte {
	if n > arenaChunk/8 {
		return make([]byte, 0, n)
	}
	if cap(a.cur)-len(a.cur) < n {
		if a.cur != nil {
			a.used = append(a.used, a.cur)
		}
		if k := len(a.free); k > 0 {
			a.cur = a.free[k-1][:0]
			a.free[k-1] = nil
			a.free = a.free[:k-1]
		} else {
			a.cur = make([]byte, 0, arenaChunk)
		}
	}
	at := len(a.cur)
	a.cur = a.cur[:at+n]
	return a.cur[at : at : at+n]
}

// reset makes every chunk free again (at most arenaKeep of them are kept).
// Nothing may use the slices handed out before.
func (a *opArena) reset() {
	if a.cur != nil {
		a.used = append(a.used, a.cur)
		a.cur = nil
	}
	for _, c := range a.used {
		if len(a.free) < arenaKeep {
			a.free = append(a.free, c[:0])
		}
	}
	clear(a.used)
	a.used = a.used[:0]
}

// opBuf returns a slice of length 0 and capacity n for a key or value of
// an op that the caller queues, before it releases s.mu, with write or
// writeTask, and that nothing keeps once the engine has it (an index key
// an entry keeps as ikey does not qualify). The caller holds s.mu, under
// which the batch being filled stays the same.
func (s *Store) opBuf(n int) []byte { return s.c.cur.buf.take(n) }

// committer collects writes into batches; one goroutine commits them in
// order, so every write that arrives while a sync runs shares the next one.
type committer struct {
	mu  sync.Mutex
	cur *batch
	// sealed holds the batches closed to further writes (seal) and not
	// yet taken for commit, oldest first; every one is older than cur.
	sealed []*batch
	last   *batch // the batch being or last committed
	kick   chan struct{}
	// spare, spareCreated and spareBuf are the slices and the arena of
	// the batch committed last, emptied, for the next batch to fill
	// without growing new ones.
	spare        []op
	spareCreated []created
	spareBuf     opArena
}

// spareOpsMax bounds the capacity of the ops slice kept for the next batch.
const spareOpsMax = 1 << 16

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
	return s.writeTask(nil, ops...)
}

// writeTask is write for the ops of a new task: if their batch fails, the
// task is dropped (see disk.go).
func (s *Store) writeTask(c *created, ops ...op) *batch {
	b := s.queueOps(c, ops)
	s.kick()
	return b
}

// writeSealed is write, with the batch sealed (see seal) before the
// committer is woken: it can commit it without waiting for s.mu. It takes
// ops: the caller does not use them again.
func (s *Store) writeSealed(ops []op) *batch {
	s.c.mu.Lock()
	if cur := s.c.cur; len(cur.ops) == 0 && cap(cur.ops) < len(ops) {
		cur.ops = ops[:0] // queueOps copies ops onto themselves
	}
	s.c.mu.Unlock()
	b := s.queueOps(nil, ops)
	s.seal()
	s.kick()
	return b
}

// kick wakes the committer.
func (s *Store) kick() {
	select {
	case s.c.kick <- struct{}{}:
	default:
	}
}

// queueOps adds ops to the current batch and returns it (see writeTask).
// It keeps no reference to ops. The caller holds s.mu.
func (s *Store) queueOps(c *created, ops []op) *batch {
	if s.flows != nil {
		s.flowOps = append(s.flowOps, s.flowGone(ops)...)
	}
	if len(s.flowOps) > 0 {
		ops = append(ops, s.flowOps...)
		s.flowOps = nil
	}
	for _, o := range ops {
		s.written += int64(len(o.key) + len(o.val))
	}
	s.c.mu.Lock()
	b := s.c.cur
	b.ops = append(b.ops, ops...)
	if c != nil {
		b.created = append(b.created, *c)
	}
	s.c.mu.Unlock()
	for _, e := range s.unassigned {
		e.gen = b.gen
		if e.staged && e.readyGen == 0 {
			e.readyGen = b.gen
		}
	}
	clear(s.unassigned)
	s.unassigned = s.unassigned[:0]
	return b
}

// takeSealed removes the oldest sealed batch and returns it, as the one
// being committed; nil when there is none. The caller holds s.c.mu.
func (s *Store) takeSealed() *batch {
	if len(s.c.sealed) == 0 {
		return nil
	}
	b := s.c.sealed[0]
	s.c.sealed[0] = nil
	s.c.sealed = s.c.sealed[1:]
	s.c.last = b
	return b
}

// seal closes the batch that the writes so far joined: later writes go to
// the next one, committed after it (a flow written in parts; see
// EnqueueFlow). The sealed batch carries the queue counts as of its last
// write. The caller holds s.mu.
func (s *Store) seal() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	b := s.c.cur
	if len(b.ops) == 0 {
		return
	}
	b.ops = s.countsOps(b.ops)
	s.c.sealed = append(s.c.sealed, b)
	s.c.cur = &batch{gen: b.gen + 1, done: make(chan struct{})}
}

// putTask queues the record of e and returns its batch.
func (s *Store) putTask(e *entry) *batch {
	var buf [3]op // the record, the old index key's delete, the new one
	b := s.write(taskOpsIn(buf[:0], e, s.opBuf)...)
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
	if n := len(s.c.sealed); n > 0 {
		return s.c.sealed[n-1]
	}
	return s.c.last
}

func (s *Store) commitLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.c.kick:
		case <-s.stop:
			for s.commitOne() {
			}
			return
		}
		for s.commitOne() {
		}
	}
}

// commitOne commits the oldest sealed batch, or else the current one, and
// reports whether writes are left to commit.
func (s *Store) commitOne() bool {
	// A sealed batch has its counts (seal) and is taken without s.mu: its
	// commit starts while the writer that sealed it still holds s.mu (a
	// flow written in parts queues its later parts).
	s.c.mu.Lock()
	b := s.takeSealed()
	s.c.mu.Unlock()
	if b == nil {
		s.mu.Lock()
		s.c.mu.Lock()
		if b = s.takeSealed(); b == nil {
			b = s.c.cur
			if len(b.ops) == 0 {
				s.c.mu.Unlock()
				s.mu.Unlock()
				return false
			}
			s.c.cur = &batch{gen: b.gen + 1, done: make(chan struct{}), ops: s.c.spare, created: s.c.spareCreated, buf: s.c.spareBuf}
			s.c.spare, s.c.spareCreated, s.c.spareBuf = nil, nil, opArena{}
			s.c.last = b
			// The counts as of the batch's last write: every write is
			// queued under s.mu with the changes of counts it makes.
			b.ops = s.countsOps(b.ops)
		}
		s.c.mu.Unlock()
		s.mu.Unlock()
	}

	s.d.mu.RLock()
	var err error
	if full, fault := s.d.eng.trouble(); fault != nil {
		err = fault
	} else if full {
		// The engine found the disk full; it has used the reserve to
		// finish what it was doing, and must be sent nothing more.
		err = errEngineFull
	} else {
		err = s.d.eng.apply(b.ops, true)
	}
	s.d.mu.RUnlock()
	b.buf.reset() // the engine has copied the ops
	if cap(b.ops) <= spareOpsMax {
		clear(b.ops)
		s.c.mu.Lock()
		s.c.spare = b.ops[:0]
		s.c.spareBuf = b.buf
		s.c.mu.Unlock()
	}
	b.ops, b.buf = nil, opArena{}
	if err != nil {
		// Memory holds changes the disk may not: degrade rebuilds it from
		// the disk before the writers hear of the failure.
		s.degrade(b, err)
		s.mu.Lock()
		b.err = s.fault
		s.mu.Unlock()
		if b.err == nil {
			b.err = faultError(s.dir, err)
		}
		close(b.done)
		return false
	}
	// The batch is durable: its tasks become leasable before its writers
	// return, so that a task is leasable once its enqueue returned.
	if cap(b.created) <= spareOpsMax {
		clear(b.created)
		s.c.mu.Lock()
		s.c.spareCreated = b.created[:0]
		s.c.mu.Unlock()
	}
	b.created = nil
	s.mu.Lock()
	s.committed = b.gen
	s.forgetGone(b.gen)
	s.releaseDurable(b.gen)
	s.evictDurable(b.gen)
	s.spillDurable(b.gen)
	s.recycleDropped()
	s.mu.Unlock()
	close(b.done)
	s.c.mu.Lock()
	more := len(s.c.sealed) > 0 || len(s.c.cur.ops) > 0
	s.c.mu.Unlock()
	return more
}

// evictDurable drops finished tasks from memory once their final record is
// durable; Get and List read them from the engine from then on. The caller
// holds s.mu.
func (s *Store) evictDurable(gen uint64) {
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
		if e := ns.tasks[it.id]; e != nil && e == it.e && e.t.State.Terminal() && e.gen <= gen && !s.flowKeep(ns, e) {
			delete(ns.tasks, it.id)
			s.diskEpoch.Add(1)
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

// Ping reports whether the store is open and accepts writes: while its disk
// is full it returns an error that matches store.ErrStorageFull (reads
// still work).
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.writable(0)
}

// usable returns why a call cannot proceed: a done context or a closed
// store. Writes also check writable (disk.go).
func (s *Store) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return store.ErrClosed
	}
	return nil
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
	s.cancels.Close()
	s.changes.Close()
	close(s.stop)
	s.wg.Wait()
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return errors.Join(s.d.eng.close(), s.lock.unlock())
}

func (s *Store) nextLeaseID() uint64 {
	s.leaseSeq++
	if s.leaseSeq == 0 {
		s.leaseSeq = 1
	}
	return s.leaseSeq
}

func (s *Store) now() time.Time { return s.clock.Now().Round(0).UTC() }
