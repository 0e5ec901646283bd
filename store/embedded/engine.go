package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	bolt "go.etcd.io/bbolt"
)

// engine is the durable key-value layer under the store. The store keeps
// windows of its indexes in memory and writes every change, index keys
// included, through an engine; an engine only
// has to apply ordered batches atomically and durably and to scan by prefix.
// docs/decisions/001-embedded-engine.md records why Pebble is the default.
type engine interface {
	// apply writes a batch atomically; with sync it returns once the batch is
	// on stable storage. A nil value deletes the key. It may reorder the
	// ops on different keys (the order of the ops on one key is kept: the
	// last one wins).
	apply(ops []op, sync bool) error
	// get returns a copy of the value of key, or nil when absent.
	get(key []byte) ([]byte, error)
	// getMany returns, at each index of keys, what get would return for
	// that key, reading them all with one iterator in key order: many
	// lookups cost one seek each instead of one read setup each. keys may
	// repeat and come in any order; every value is a copy of its own.
	getMany(keys [][]byte) ([][]byte, error)
	// scan calls fn for every key with the prefix, in key order (reverse
	// order with reverse), starting at start (inclusive) when not nil. fn's
	// arguments are valid only during the call. fn returns false to stop.
	scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) error
	// trouble reports whether the engine found the disk full, and the
	// fault that makes it unusable for writes, if any.
	trouble() (full bool, fault error)
	close() error
}

// engineHooks are the store's callbacks; nil ones are not called.
type engineHooks struct {
	// note is called, and must not block, when trouble changes.
	note func()
	// onDiskFull is called when a write finds the disk full, with the
	// engine's writes held; the write is retried once after it returns.
	onDiskFull func()
	// corrupt is called when the engine finds a damaged file; the read
	// that found it fails.
	corrupt func(path string, err error)
	// compaction is called when a compaction begins, with whether Open
	// had returned (tests).
	compaction func(afterOpen bool)
	// holdCompactions keeps every compaction from running (tests).
	holdCompactions bool
}

type op struct {
	key, val []byte
	// once marks a delete (val nil) of a key set exactly once since it
	// was last deleted, if ever: the engine may then delete it in a way
	// that takes that one set with it (Pebble's SingleDelete: the set and
	// its delete both vanish when they meet in a flush or compaction,
	// where a plain delete would leave a tombstone to carry down).
	once bool
}

const (
	enginePebble = "pebble"
	engineBolt   = "bbolt"
)

// openEngine opens the engine kind in the data folder dir. A read-only
// engine never writes to dir.
func openEngine(kind, dir string, readOnly bool, hooks engineHooks) (engine, error) {
	switch kind {
	case enginePebble, "":
		return openPebble(filepath.Join(dir, "pebble"), readOnly, hooks)
	case engineBolt:
		return openBolt(filepath.Join(dir, "kiln.bolt"), readOnly)
	default:
		return nil, fmt.Errorf("unknown engine %q", kind)
	}
}

// ---- Pebble ----

// pebbleEngine is the Pebble engine. Pebble treats some failures as fatal (a
// WAL or MANIFEST write that fails, for instance on a full disk) and reports
// them through Logger.Fatalf, which by default ends the process. Here Fatalf
// records the failure instead: the engine refuses every later write with it
// (fault), and the store closes the engine and opens it again (see
// store.degrade), so the process stays up and reads keep working.
type pebbleEngine struct {
	db    *pebble.DB
	dir   string
	ro    bool
	hooks engineHooks

	fault  atomic.Pointer[error]
	full   atomic.Bool // a write found the disk full
	opened atomic.Bool // pebble.Open has returned
}

// pebbleLog is Pebble's logger: it drops information and errors (the
// store logs what matters) and turns fatal errors into the engine's fault.
type pebbleLog struct{ e *pebbleEngine }

func (pebbleLog) Infof(string, ...any)  {}
func (pebbleLog) Errorf(string, ...any) {}
func (l pebbleLog) Fatalf(format string, args ...any) {
	l.e.setFault(&engineFaultError{msg: fmt.Sprintf(format, args...), cause: firstError(args)})
}

// engineFaultError is a failure Pebble deems fatal for the open engine.
type engineFaultError struct {
	msg   string
	cause error // the error among the arguments, if any
}

func (f *engineFaultError) Error() string { return "pebble: " + f.msg }
func (f *engineFaultError) Unwrap() error { return f.cause }

func firstError(args []any) error {
	for _, a := range args {
		if err, ok := a.(error); ok {
			return err
		}
	}
	return nil
}

func (e *pebbleEngine) setFault(err error) {
	if e.fault.CompareAndSwap(nil, &err) && e.hooks.note != nil {
		e.hooks.note()
	}
}

func (e *pebbleEngine) setFull() {
	if !e.full.Swap(true) && e.hooks.note != nil {
		e.hooks.note()
	}
}

func (e *pebbleEngine) trouble() (bool, error) { return e.full.Load(), e.failure() }

// failure returns the engine's fault, or nil.
func (e *pebbleEngine) failure() error {
	if p := e.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// pebbleOptions returns the options the store opens Pebble with.
func pebbleOptions(e *pebbleEngine, readOnly bool) *pebble.Options {
	// Enqueue checks that a task id is new with a point lookup that misses
	// almost always: bloom filters on every level answer it without reading
	// blocks (without them, enqueue spent half its time in those lookups).
	// They hold the id keys only (idFilter).
	fs := vfs.Default
	if !readOnly {
		fs = tableFS{vfs.OnDiskFull(fs, func() {
			e.setFull()
			if e.hooks.onDiskFull != nil {
				e.hooks.onDiskFull()
			}
		})}
	}
	opts := &pebble.Options{
		FS:       fs,
		Logger:   pebbleLog{e},
		ReadOnly: readOnly,
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				if isNoSpace(err) {
					e.setFull()
				}
			},
			// A damaged block fails the reads that reach it; the store
			// goes on with the rest (Pebble's default ends the process).
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				if e.hooks.corrupt != nil {
					e.hooks.corrupt(info.Path, info.Details)
				}
			},
			CompactionBegin: func(pebble.CompactionInfo) {
				if e.hooks.compaction != nil {
					e.hooks.compaction(e.opened.Load())
				}
			},
		},
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = idFilter{}
	}
	// The tables written before idFilter have bloom filters of every key.
	opts.Filters = map[string]pebble.FilterPolicy{bloomPolicy.Name(): bloomPolicy}
	// Each task's index key is written and deleted as the task moves
	// between states (index.go): with Pebble's default 4 MiB memtables,
	// the compactions of those short-lived keys doubled the CPU time of a
	// busy store; 32 MiB ones (two at most in memory) bring it back to
	// what it was without the indexes (docs/benchmarks.md).
	opts.MemTableSize = 32 << 20
	// A queue's keys are short-lived: a task's keys are written at its
	// enqueue and deleted when it is done, mostly within seconds. Letting
	// L0 hold up to eight sublevels before compacting it into the levels
	// below (Pebble's default: four) lets more of those writes and their
	// deletes meet in one L0 compaction, where both are dropped, instead of
	// each being carried down a level: 11 % less CPU per task over a soak
	// of 10,000,000 tasks, and a restart with a 1,000,000-task backlog is
	// ready sooner (docs/decisions/012-l0-compaction-threshold.md). Writes
	// stop at 24 sublevels (Pebble's default: 12), three times the
	// threshold, as with Pebble's defaults.
	opts.L0CompactionThreshold = 8
	opts.L0StopWritesThreshold = 24
	return opts
}

// bloomPolicy is the bloom filter of the tables, 10 bits per key.
var bloomPolicy = bloom.FilterPolicy(10)

// idFilter is the tables' filter policy: a bloom filter (bloomPolicy) of
// their id keys alone. The point lookups that miss, where a filter saves
// reading blocks, are those of ids (a new task's id is looked up before it
// is taken); a lookup of any other key reads the table, as without a
// filter. With every other key left out, a flush or a compaction hashes
// one key in four or five instead of every one.
type idFilter struct{}

func (idFilter) Name() string { return "kiln.id-keys.bloom10" }

func (idFilter) MayContain(ft pebble.FilterType, filter, key []byte) bool {
	if len(key) == 0 || key[0] != kID {
		return true // not in the filter: it cannot say
	}
	return bloomPolicy.MayContain(ft, filter, key)
}

func (idFilter) NewWriter(ft pebble.FilterType) pebble.FilterWriter {
	return idFilterWriter{bloomPolicy.NewWriter(ft)}
}

// idFilterWriter adds the id keys to its bloom filter, and no other key.
type idFilterWriter struct{ w pebble.FilterWriter }

func (w idFilterWriter) AddKey(key []byte) {
	if len(key) > 0 && key[0] == kID {
		w.w.AddKey(key)
	}
}

func (w idFilterWriter) Finish(dst []byte) []byte { return w.w.Finish(dst) }

func openPebble(dir string, readOnly bool, hooks engineHooks) (e *pebbleEngine, err error) {
	e = &pebbleEngine{dir: dir, ro: readOnly, hooks: hooks}
	c := pebble.NewCache(32 << 20)
	defer c.Unref()
	opts := pebbleOptions(e, readOnly)
	opts.Cache = c
	gate := newCompactionGate()
	opts.Experimental.CompactionScheduler = gate
	// Pebble may panic on some damaged files; the store must not.
	defer func() {
		if r := recover(); r != nil {
			gate.Unregister()
			err = fmt.Errorf("%w: pebble panicked while opening: %v", errCorrupt, r)
		}
	}()
	db, err := pebble.Open(dir, opts)
	if err == nil {
		err = e.failure() // a fatal error during Open
		if err != nil {
			_ = closePebble(db)
		}
	} else {
		gate.Unregister() // Close, which would, never comes
	}
	if err != nil {
		return nil, err
	}
	e.db = db
	e.opened.Store(true)
	if !hooks.holdCompactions {
		gate.open()
	}
	return e, nil
}

// closePebble closes db; Pebble may panic closing a database after a fatal
// error, which becomes an error here.
func closePebble(db *pebble.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble: close: %v", r)
		}
	}()
	return db.Close()
}

// errReadOnly is returned by a write to a read-only engine.
var errReadOnly = errors.New("the engine is open read-only")

func (e *pebbleEngine) apply(ops []op, sync bool) (err error) {
	if err := e.failure(); err != nil {
		return err
	}
	if e.ro {
		return errReadOnly
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pebble: commit: %v", r)
		}
		if f := e.failure(); f != nil {
			// Pebble may report a failed commit only to Fatalf.
			err = f
		}
		if err != nil {
			e.setFault(err)
		}
	}()
	sortOps(ops)
	size := 12 // the batch header
	for _, o := range ops {
		size += 1 + 2*binary.MaxVarintLen32 + len(o.key) + len(o.val)
	}
	b := e.db.NewBatchWithSize(size) // grown once, not step by step
	defer func() { _ = b.Close() }()
	for _, o := range ops {
		var err error
		switch {
		case o.val == nil && o.once:
			err = b.SingleDelete(o.key, nil)
		case o.val == nil:
			err = b.Delete(o.key, nil)
		default:
			err = b.Set(o.key, o.val, nil)
		}
		if err != nil {
			return err
		}
	}
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	return b.Commit(wo)
}

// sortOps puts ops in key order, keeping the order of the ops on one key,
// which changes nothing a batch means (it is applied at once). Pebble
// inserts a batch into its memtable, a skiplist, key by key: a key that
// comes right after the one inserted before it is linked in a few steps,
// while one elsewhere is searched from the top of the list. Most keys of a
// batch are new and ascending within their kind (sequence numbers, ids and
// times only grow), so in key order most of them are such appends; in the
// order the store queued them (each task's keys of every kind in turn),
// none is.
//
// The ops are first grouped by their first byte (the key kind), keeping
// their order; a group is then sorted only when it is not in order already.
func sortOps(ops []op) {
	if len(ops) < 2 {
		return
	}
	var count [256]int
	sorted := true
	for i := range ops {
		count[firstByte(ops[i].key)]++
		if sorted && i > 0 && bytes.Compare(ops[i-1].key, ops[i].key) > 0 {
			sorted = false
		}
	}
	if sorted {
		return
	}
	var start [256]int
	n := 0
	for k := range count {
		start[k] = n
		n += count[k]
	}
	var tmp []op
	if p := sortBuf.Swap(nil); p != nil && cap(*p) >= len(ops) {
		tmp = (*p)[:len(ops)]
	} else {
		tmp = make([]op, len(ops))
	}
	next := start
	for _, o := range ops {
		k := firstByte(o.key)
		tmp[next[k]] = o
		next[k]++
	}
	copy(ops, tmp)
	clear(tmp)
	if cap(tmp) <= spareOpsMax {
		sortBuf.Store(&tmp)
	}
	cmp := func(a, b op) int { return bytes.Compare(a.key, b.key) }
	for k := range count {
		if count[k] < 2 {
			continue
		}
		g := ops[start[k] : start[k]+count[k]]
		if !slices.IsSortedFunc(g, cmp) {
			slices.SortStableFunc(g, cmp)
		}
	}
}

// sortBuf keeps sortOps's scratch slice for its next call.
var sortBuf atomic.Pointer[[]op]

func firstByte(k []byte) byte {
	if len(k) == 0 {
		return 0
	}
	return k[0]
}

func (e *pebbleEngine) get(key []byte) (_ []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: pebble: get: %v", errCorrupt, r)
		}
	}()
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(v)) // an empty value stays non-nil: it exists
	copy(out, v)
	return out, closer.Close()
}

func (e *pebbleEngine) getMany(keys [][]byte) (_ [][]byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: pebble: get: %v", errCorrupt, r)
		}
	}()
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	order := keyOrder(keys)
	// Ascending seeks let the iterator step forward instead of searching
	// each table again; the bounds keep it within the keys asked for.
	upper := append(bytes.Clone(keys[order[len(order)-1]]), 0)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: keys[order[0]], UpperBound: upper})
	if err != nil {
		return nil, err
	}
	for j, i := range order {
		k := keys[i]
		if j > 0 && bytes.Equal(k, keys[order[j-1]]) {
			if prev := out[order[j-1]]; prev != nil {
				out[i] = bytes.Clone(prev)
			}
			continue
		}
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			continue
		}
		v, verr := it.ValueAndErr()
		if verr != nil {
			return nil, errors.Join(verr, it.Close())
		}
		out[i] = make([]byte, len(v)) // an empty value stays non-nil: it exists
		copy(out[i], v)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	return out, nil
}

// keyOrder returns the indexes of keys in key order (stable for equal
// keys).
func keyOrder(keys [][]byte) []int {
	order := make([]int, len(keys))
	sorted := true
	for i := range order {
		order[i] = i
		if sorted && i > 0 && bytes.Compare(keys[i-1], keys[i]) > 0 {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
	}
	return order
}

func (e *pebbleEngine) scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: pebble: scan: %v", errCorrupt, r)
		}
	}()
	upper := prefixEnd(prefix)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return err
	}
	var ok bool
	switch {
	case reverse && start != nil:
		ok = it.SeekLT(append(append([]byte(nil), start...), 0))
	case reverse:
		ok = it.Last()
	case start != nil:
		ok = it.SeekGE(start)
	default:
		ok = it.First()
	}
	for ; ok; ok = step(it, reverse) {
		if !fn(it.Key(), it.Value()) {
			break
		}
	}
	return errors.Join(it.Error(), it.Close())
}

func step(it *pebble.Iterator, reverse bool) bool {
	if reverse {
		return it.Prev()
	}
	return it.Next()
}

func (e *pebbleEngine) close() error { return closePebble(e.db) }

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// ---- bbolt ----

type boltEngine struct{ db *bolt.DB }

var boltBucket = []byte("kiln")

func openBolt(path string, readOnly bool) (*boltEngine, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, ReadOnly: readOnly})
	if err != nil {
		return nil, err
	}
	if readOnly {
		return &boltEngine{db: db}, nil
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &boltEngine{db: db}, nil
}

func (e *boltEngine) apply(ops []op, sync bool) error {
	// bbolt always syncs on commit; NoSync is a DB-wide switch, so unsynced
	// batches are synced too. That is safe, only slower.
	_ = sync
	return e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(boltBucket)
		for _, o := range ops {
			var err error
			if o.val == nil {
				err = b.Delete(o.key)
			} else {
				err = b.Put(o.key, o.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (e *boltEngine) get(key []byte) ([]byte, error) {
	var out []byte
	err := e.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(boltBucket).Get(key); v != nil {
			out = make([]byte, len(v)) // an empty value stays non-nil: it exists
			copy(out, v)
		}
		return nil
	})
	return out, err
}

func (e *boltEngine) getMany(keys [][]byte) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	order := keyOrder(keys)
	err := e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		for _, i := range order {
			if k, v := c.Seek(keys[i]); k != nil && bytes.Equal(k, keys[i]) {
				out[i] = make([]byte, len(v)) // an empty value stays non-nil: it exists
				copy(out[i], v)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (e *boltEngine) scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) error {
	return e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		var k, v []byte
		switch {
		case reverse && start != nil:
			k, v = c.Seek(start)
			if k == nil {
				k, v = c.Last()
			}
			for k != nil && bytes.Compare(k, start) > 0 {
				k, v = c.Prev()
			}
		case reverse:
			if end := prefixEnd(prefix); end != nil {
				k, _ = c.Seek(end)
				if k == nil {
					k, v = c.Last()
				} else {
					k, v = c.Prev()
				}
			} else {
				k, v = c.Last()
			}
		case start != nil:
			k, v = c.Seek(start)
		default:
			k, v = c.Seek(prefix)
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = boltStep(c, reverse) {
			if !fn(k, v) {
				break
			}
		}
		return nil
	})
}

func boltStep(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Prev()
	}
	return c.Next()
}

func (e *boltEngine) trouble() (bool, error) { return false, nil }

func (e *boltEngine) close() error { return e.db.Close() }
