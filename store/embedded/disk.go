package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// This file keeps the store up when its disk fills up or fails a write:
// writes then fail with store.ErrStorageFull, reads keep working, and writes
// work again by themselves once there is space, without a restart.
//
// Pebble treats a failed WAL or MANIFEST write as fatal, and a few of its
// code paths (rotating the WAL) end the process on one whatever its logger
// does. So the store keeps the engine from finding the disk full:
//
//   - It keeps a reserve: a file of Config.ReserveBytes in the data folder,
//     and it refuses writes while the disk has less than that much free
//     besides (checked at most every spaceCheckEvery, and after every
//     eighth of the reserve written).
//   - When another program fills the disk between two checks, the engine's
//     next write fails with ENOSPC; the file system wrapper given to Pebble
//     (vfs.OnDiskFull) then deletes the reserve and retries the write once,
//     which succeeds, so Pebble never sees the error. The engine is marked
//     full at once and the committer sends it nothing more.
//   - Whenever the engine fails (full, or a write error, or a fault Pebble
//     reports as fatal), the store fails every write not yet durable,
//     closes the engine, opens it again read-only (which replays its WAL,
//     so it holds exactly what is on disk) and rebuilds memory from it.
//     Reads go on; writes fail with ErrStorageFull (or, for another I/O
//     error, with that error).
//   - The monitor goroutine checks every retryEvery whether there is room
//     again (the reserve, what opening read-write takes, and the free space
//     the store keeps); then it recreates the reserve, opens the engine
//     read-write, deletes what failed enqueues may have left on disk, and
//     rebuilds memory once more.
//
// An enqueue that failed never runs: its tasks leave memory with the failed
// batch, are hidden from reads while the engine is read-only (the failed
// batch may have reached the disk whole), and are deleted from disk before
// writes resume. Every acknowledged write was synced before it was
// acknowledged, so it survives all of this, and restarts.

const (
	// ReserveBytesDefault is the default of Config.ReserveBytes.
	ReserveBytesDefault = 32 << 20

	// reserveFile is the name of the reserve in the data folder.
	reserveFile = "disk-reserve"

	spaceCheckEvery   = 200 * time.Millisecond
	retryEveryDefault = time.Second
	// reopenHeadroom is added to the size of the WAL files to get the
	// space that opening the engine read-write needs: it replays the WAL
	// into a new table and starts a new WAL and MANIFEST.
	reopenHeadroom = 8 << 20
)

// errCorrupt marks errors about a damaged data folder.
var errCorrupt = errors.New("damaged data")

// errNoSpace is the system's "no space left on device".
var errNoSpace error = syscall.ENOSPC

// isNoSpace reports whether err means the disk (or the user's quota) is full.
func isNoSpace(err error) bool {
	return err != nil && (vfs.IsNoSpaceError(err) || isQuotaError(err))
}

// isLockError reports whether err says that another store (in this process
// or another) has the data folder open.
func isLockError(err error) bool {
	return err != nil && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "lock held"))
}

// diskFree returns the bytes available to this process on the file system
// of dir; ok is false when the system cannot tell.
func diskFree(dir string) (free int64, ok bool) {
	u, err := vfs.Default.GetDiskUsage(dir)
	if err != nil {
		return 0, false
	}
	return int64(min(u.AvailBytes, 1<<62)), true
}

// walBytes returns the size of the engine's WAL files in dir.
func walBytes(dir string) int64 {
	var n int64
	matches, _ := filepath.Glob(filepath.Join(dir, "pebble", "*.log"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// mib formats a byte count for people.
func mib(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// makeReserve creates the reserve file of n bytes in dir, if it is not
// there already. It fails (with an error matching ENOSPC) when the disk has
// no room for it.
func makeReserve(dir string, n int64) error {
	path := filepath.Join(dir, reserveFile)
	if fi, err := os.Stat(path); err == nil && fi.Size() == n { //nolint:gosec // G703: a fixed name in the operator's data folder
		return nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600) //nolint:gosec // G304: a fixed name in the data folder
	if err != nil {
		return err
	}
	err = fill(f, n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path) //nolint:gosec // G703: a fixed name in the operator's data folder
		return fmt.Errorf("creating the disk reserve %s: %w", path, err)
	}
	return nil
}

// fill makes f n bytes long, with its blocks allocated: with fallocate where
// the system has it, else by writing zeros.
func fill(f *os.File, n int64) error {
	if err := allocate(f, n); err == nil || isNoSpace(err) {
		return err
	}
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; {
		k := min(left, int64(len(zeros)))
		if _, err := f.Write(zeros[:k]); err != nil {
			return err
		}
		left -= k
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// ---- the engine holder ----

// disk holds the engine. The store swaps the engine when it reopens it;
// every use of the engine outside s.mu holds d.mu for reading, and a swap
// holds s.mu and d.mu.
type disk struct {
	mu  sync.RWMutex
	eng engine
	// hidden holds the tasks whose enqueue failed (by ns NUL id) while
	// their records may still be on disk: reads skip them.
	hidden map[string]created
}

func hiddenKey(ns, id string) string { return ns + "\x00" + id }

// isHidden reports whether the task (ns, id) at seq is one whose enqueue
// failed. Callers hold d.mu.
func (d *disk) isHidden(ns, id string, seq uint64) bool {
	if len(d.hidden) == 0 {
		return false
	}
	c, ok := d.hidden[hiddenKey(ns, id)]
	return ok && c.seq == seq
}

func (d *disk) get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.eng.get(key)
}

// brokenEngine stands in for an engine that could not be opened again: every
// call fails with err.
type brokenEngine struct{ err error }

func (b brokenEngine) apply([]op, bool) error     { return b.err }
func (b brokenEngine) get([]byte) ([]byte, error) { return nil, b.err }
func (b brokenEngine) getMany([][]byte) ([][]byte, error) {
	return nil, b.err
}
func (b brokenEngine) scan([]byte, []byte, bool, func(k, v []byte) bool) error {
	return b.err
}
func (b brokenEngine) trouble() (bool, error) { return false, b.err }
func (b brokenEngine) close() error           { return nil }

// ---- write admission ----

// created is a task an enqueue added to a batch; if the batch fails, the
// task is dropped.
type created struct {
	ns, id, unique string
	seq            uint64
}

// canWrite returns why a write cannot proceed: usable's reasons, then
// writable's. Callers hold s.mu.
func (s *Store) canWrite(ctx context.Context, need int64) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	return s.writable(need)
}

// writable returns why a write cannot proceed now: a failed engine, or too
// little free space. need estimates the bytes the write adds. Callers hold
// s.mu.
func (s *Store) writable(need int64) error {
	if s.fault != nil {
		return fmt.Errorf("embedded: %w", s.fault)
	}
	s.checkSpaceLocked(need)
	if s.full != nil {
		return fmt.Errorf("embedded: %w", s.full)
	}
	return nil
}

// checkSpaceLocked updates s.full from the free space of the data folder's
// disk, when a check is due. Callers hold s.mu.
func (s *Store) checkSpaceLocked(need int64) {
	if s.reserve <= 0 || s.spaceEvery < 0 {
		return
	}
	recent := time.Since(s.spaceAt) < s.spaceEvery
	if recent && (s.full != nil || s.written+need < max(s.reserve/8, 1<<20)) {
		return
	}
	s.spaceAt = time.Now()
	s.written = 0
	free, ok := diskFree(s.dir)
	if !ok {
		return
	}
	switch {
	case s.full == nil && free-need < s.reserve:
		s.full = s.fullError(free)
		s.log.Warn("embedded: the disk is almost full: writes are refused until space is freed",
			"dir", s.dir, "free", mib(free), "reserve", mib(s.reserve))
	case s.full != nil && free >= s.reserve+s.reserve/4+s.reserveMissing():
		if err := makeReserve(s.dir, s.reserve); err != nil {
			s.log.Debug("embedded: the disk reserve cannot be made yet", "err", err)
			return
		}
		s.full = nil
		s.log.Info("embedded: disk space is back: writes are accepted again", "dir", s.dir, "free", mib(free))
	}
}

// reserveMissing returns the bytes the reserve file lacks.
func (s *Store) reserveMissing() int64 {
	if fi, err := os.Stat(filepath.Join(s.dir, reserveFile)); err == nil && fi.Size() == s.reserve { //nolint:gosec // G703: a fixed name in the operator's data folder
		return 0
	}
	return s.reserve
}

func (s *Store) fullError(free int64) error {
	return fmt.Errorf("%w: %s free on the disk of %s, and the store keeps %s; writes are refused until space is freed",
		store.ErrStorageFull, mib(free), s.dir, mib(s.reserve))
}

// faultError is what writes return while the engine is read-only after it
// failed with cause.
func faultError(dir string, cause error) error {
	if isNoSpace(cause) {
		return fmt.Errorf("%w: the disk of %s is full; writes are refused until space is freed", store.ErrStorageFull, dir)
	}
	return fmt.Errorf("a write to %s failed, writes are refused until the store can write again: %w", dir, cause)
}

// errEngineFull is the cause of a fault when the engine found the disk full.
var errEngineFull = fmt.Errorf("the engine found the disk full: %w", errNoSpace)

// ---- failure and recovery ----

// note is given to the engine: it wakes the monitor without blocking.
func (s *Store) note() {
	select {
	case s.noteC <- struct{}{}:
	default:
	}
}

// onDiskFull is called by the engine's file system, with its writes held,
// when a write finds the disk full: giving back the reserve lets that write
// succeed on its retry.
func (s *Store) onDiskFull() {
	_ = os.Remove(filepath.Join(s.dir, reserveFile))
	s.note()
}

// degrade handles a failed engine: failed is the batch whose commit failed
// (nil when the engine failed in the background). It fails every write not
// yet durable, reopens the engine read-only and rebuilds memory from it.
func (s *Store) degrade(failed *batch, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.fault == nil {
		s.fault = faultError(s.dir, cause)
		s.log.Error("embedded: the store cannot write: it serves reads and refuses writes until it can write again", "dir", s.dir, "err", cause)
	}
	drop := func(b *batch) {
		for _, c := range b.created {
			s.d.hidden[hiddenKey(c.ns, c.id)] = c
		}
		b.created = nil
	}
	if failed != nil {
		drop(failed)
	}
	// The writes queued since fail too: memory is rebuilt from the disk
	// below, without them.
	s.c.mu.Lock()
	cur := s.c.cur
	sealed := s.c.sealed
	s.c.sealed = nil
	s.c.cur = &batch{gen: cur.gen + 1, done: make(chan struct{})}
	if len(cur.ops) > 0 {
		s.c.last = cur
	} else if len(sealed) > 0 {
		s.c.last = sealed[len(sealed)-1]
	}
	s.c.mu.Unlock()
	for _, b := range append(sealed, cur) {
		drop(b)
		b.ops = nil
		b.err = s.fault
		close(b.done)
	}
	s.reopenLocked(true)
}

// reopenLocked closes the engine and opens it again (read-only or not),
// then rebuilds memory from it. It reports whether the engine opened.
// Callers hold s.mu.
func (s *Store) reopenLocked(readOnly bool) bool {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if err := s.d.eng.close(); err != nil {
		s.log.Debug("embedded: closing the failed engine", "err", err)
	}
	eng, err := s.openEngine(readOnly)
	if err != nil {
		s.d.eng = brokenEngine{err: fmt.Errorf("embedded: the data folder %s cannot be opened again: %w", s.dir, err)}
		s.log.Error("embedded: opening the engine again failed", "dir", s.dir, "read_only", readOnly, "err", err)
		return false
	}
	s.d.eng = eng
	if err := s.reloadLocked(); err != nil {
		_ = eng.close()
		s.d.eng = brokenEngine{err: fmt.Errorf("embedded: reading %s again failed: %w", s.dir, err)}
		s.log.Error("embedded: reading the data folder again failed", "dir", s.dir, "err", err)
		return false
	}
	return true
}

// reloadLocked rebuilds every in-memory index from the engine. Callers hold
// s.mu and s.d.mu.
func (s *Store) reloadLocked() error {
	old := s.nss
	seq := s.seq
	s.nss = make(map[string]*namespace)
	s.leases = taskHeap{less: leaseLess}
	s.uniqueExp, s.evict = nil, nil
	// The staged entries go with the old memory: what is on disk is durable,
	// and load puts its pending tasks in their ready heaps.
	s.staged, s.unassigned = nil, nil
	s.gone, s.goneList, s.spill = make(map[goneKey]uint64), nil, nil
	s.diskEpoch.Add(1)
	s.metaPending = make(map[string][]byte)
	s.metaGen = make(map[string]uint64)
	s.seq = 0
	err := s.load(s.d.eng, s.d.hidden)
	// Never reuse a sequence number: a failed batch may have used some.
	s.seq = max(s.seq, seq)
	// Leasers waiting on the old namespaces look again.
	for _, ns := range old {
		ns.notify()
	}
	return err
}

// monitor runs until Close: it handles the engine's notes (a fault found in
// the background, a full disk) and, while writes are refused, checks every
// retryEvery whether they can resume.
func (s *Store) monitor() {
	defer s.wg.Done()
	t := time.NewTicker(s.retryEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.noteC:
			s.applyNotes()
		case <-t.C:
			s.retry()
		}
	}
}

// applyNotes degrades the store when the engine found the disk full or
// failed in the background.
func (s *Store) applyNotes() {
	s.d.mu.RLock()
	full, fault := s.d.eng.trouble()
	s.d.mu.RUnlock()
	switch {
	case fault != nil:
		s.degrade(nil, fault)
	case full:
		s.degrade(nil, errEngineFull)
	}
}

// retry lets writes resume when they can. Without a fault it rechecks the
// free space; after one, it opens the engine read-write again once there
// is room.
func (s *Store) retry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.fault == nil {
		if s.full != nil {
			s.checkSpaceLocked(0)
		}
		return
	}
	if !s.roomToOpen(true) {
		if _, broken := s.d.eng.(brokenEngine); broken {
			s.reopenLocked(true) // so that reads work again
		}
		return
	}
	if s.reserve > 0 {
		if err := makeReserve(s.dir, s.reserve); err != nil {
			s.log.Debug("embedded: the disk reserve cannot be made yet", "err", err)
			return
		}
	}
	if !s.reopenLocked(false) {
		s.reopenLocked(true)
		return
	}
	if err := s.purgeHiddenLocked(); err != nil {
		s.log.Error("embedded: deleting the tasks of failed enqueues failed", "err", err)
		s.reopenLocked(true)
		return
	}
	s.fault = nil
	s.full = nil
	s.spaceAt = time.Time{}
	s.checkSpaceLocked(0)
	s.log.Info("embedded: the store can write again", "dir", s.dir)
}

// roomToOpen reports whether the disk has room to open the engine
// read-write (which replays the WAL into a new table) and, with
// withReserve, to make the reserve and keep it free besides.
func (s *Store) roomToOpen(withReserve bool) bool {
	free, ok := diskFree(s.dir)
	if !ok {
		return true
	}
	need := walBytes(s.dir) + reopenHeadroom
	if withReserve && s.reserve > 0 {
		need = s.reserve + max(need, s.reserve+s.reserve/4)
	}
	return free >= need
}

// purgeHiddenLocked deletes from disk what failed enqueues may have left
// there, and forgets them. Callers hold s.mu.
func (s *Store) purgeHiddenLocked() error {
	if len(s.d.hidden) == 0 {
		return nil
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var ops []op
	for _, c := range s.d.hidden {
		v, err := s.d.eng.get(nameKey(kID, c.ns, c.id))
		if err != nil {
			return err
		}
		if len(v) == 8 && binary.BigEndian.Uint64(v) == c.seq {
			ops = append(ops, op{key: nameKey(kID, c.ns, c.id)})
		}
		// The records under seq belong to that task alone, and so does
		// the index key its record names.
		rec, err := s.d.eng.get(seqKey(kTask, c.ns, c.seq))
		if err != nil {
			return err
		}
		var t store.Task
		inline := false
		if _, err := record.Decode(rec, &t); rec != nil && err == nil {
			ops = append(ops, op{key: indexKey(c.ns, &t, c.seq)})
			inline = t.Payload != nil
		}
		ops = append(ops, op{key: seqKey(kTask, c.ns, c.seq)})
		if !inline {
			ops = append(ops, op{key: seqKey(kPayload, c.ns, c.seq)})
		}
		if c.unique != "" {
			v, err := s.d.eng.get(nameKey(kUnique, c.ns, c.unique))
			if err != nil {
				return err
			}
			if _, w := binary.Varint(v); w > 0 && string(v[w:]) == c.id {
				ops = append(ops, op{key: nameKey(kUnique, c.ns, c.unique)})
			}
		}
	}
	if err := s.d.eng.apply(ops, true); err != nil {
		return err
	}
	clear(s.d.hidden)
	return nil
}
