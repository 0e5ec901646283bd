package embedded

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	bolt "go.etcd.io/bbolt"
)

// engine is the durable key-value layer under the store. The store keeps its
// indexes in memory and writes every change through an engine; an engine only
// has to apply ordered batches atomically and durably and to scan by prefix.
// docs/decisions/001-embedded-engine.md records why Pebble is the default.
type engine interface {
	// apply writes a batch atomically; with sync it returns once the batch is
	// on stable storage. A nil value deletes the key.
	apply(ops []op, sync bool) error
	// get returns a copy of the value of key, or nil when absent.
	get(key []byte) ([]byte, error)
	// scan calls fn for every key with the prefix, in key order (reverse
	// order with reverse), starting at start (inclusive) when not nil. fn's
	// arguments are valid only during the call. fn returns false to stop.
	scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) error
	close() error
}

type op struct {
	key, val []byte
}

const (
	enginePebble = "pebble"
	engineBolt   = "bbolt"
)

func openEngine(kind, dir string) (engine, error) {
	switch kind {
	case enginePebble, "":
		return openPebble(filepath.Join(dir, "pebble"))
	case engineBolt:
		return openBolt(filepath.Join(dir, "kiln.bolt"))
	default:
		return nil, fmt.Errorf("unknown engine %q", kind)
	}
}

// ---- Pebble ----

type pebbleEngine struct{ db *pebble.DB }

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

func openPebble(dir string) (*pebbleEngine, error) {
	// Enqueue checks that a task id is new with a point lookup that misses
	// almost always: bloom filters on every level answer it without reading
	// blocks (without them, enqueue spent half its time in those lookups).
	c := pebble.NewCache(32 << 20)
	defer c.Unref()
	opts := &pebble.Options{Logger: quietLogger{}, Cache: c}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db: db}, nil
}

func (e *pebbleEngine) apply(ops []op, sync bool) error {
	b := e.db.NewBatch()
	defer func() { _ = b.Close() }()
	for _, o := range ops {
		var err error
		if o.val == nil {
			err = b.Delete(o.key, nil)
		} else {
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

func (e *pebbleEngine) get(key []byte) ([]byte, error) {
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

func (e *pebbleEngine) scan(prefix, start []byte, reverse bool, fn func(k, v []byte) bool) error {
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

func (e *pebbleEngine) close() error { return e.db.Close() }

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

func openBolt(path string) (*boltEngine, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
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

func (e *boltEngine) close() error { return e.db.Close() }
