// Package blob keeps byte streams larger than one meta record in a store's
// store.Meta, so that every server and runner sharing the store can read
// them: code packages (immutable blobs) and task logs (append-only logs).
//
// # Blobs
//
// Put writes a stream as chunks of ChunkSize bytes under "<key>/<n>" and,
// last, a manifest record under "<key>" with the size, the chunk count and
// the SHA-256 of the whole. A reader finds a blob only through its manifest,
// so a half-written blob is never visible; a failed Put removes the chunks
// it wrote. Open streams the chunks back and fails at the end if the bytes
// do not match the manifest's checksum. Delete removes the manifest first,
// then the chunks.
//
// # Logs
//
// A Log is appended to by one writer (the task's runner): the current
// chunk "<key>/<n>" is rewritten as it grows and the next one starts when it
// is full, so a reader (ReadLog) sees the output within one flush of it
// being written. A log is capped: past Cap bytes a marker line is written
// and the rest is dropped.
//
// Everything here is safe for concurrent use by several goroutines and
// processes, except that a Log has one writer.
package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// ChunkSize is the size of a chunk: a meta record holds at most 64 KiB.
const ChunkSize = 60 << 10

// ErrNotFound is returned when a blob has no manifest.
var ErrNotFound = errors.New("blob: not found")

// ErrTooLarge is returned by Put when the stream is longer than its cap.
var ErrTooLarge = errors.New("blob: too large")

// ErrCorrupt is returned by a reader when the bytes do not match the
// manifest.
var ErrCorrupt = errors.New("blob: checksum mismatch")

// Info is a blob's manifest.
type Info struct {
	Size   int64  `json:"size"`
	Chunks int    `json:"chunks"`
	SHA256 string `json:"sha256"`
}

func chunkKey(key string, n int) string { return fmt.Sprintf("%s/%08d", key, n) }

// Put stores r under key in namespace ns, reading at most maxSize bytes
// (0: no cap). It fails with ErrTooLarge beyond the cap, and when a blob
// already exists under key: blobs are immutable.
func Put(ctx context.Context, m store.Meta, ns, key string, r io.Reader, maxSize int64) (Info, error) {
	if _, found, err := Stat(ctx, m, ns, key); err != nil {
		return Info{}, err
	} else if found {
		return Info{}, fmt.Errorf("blob: %s exists", key)
	}
	h := sha256.New()
	buf := make([]byte, ChunkSize)
	var info Info
	written := 0
	fail := func(err error) (Info, error) {
		cctx := context.WithoutCancel(ctx)
		for i := range written {
			_, _ = m.MetaDelete(cctx, store.MetaDeleteParams{Namespace: ns, Key: chunkKey(key, i)}) // best effort: the chunks are invisible without a manifest
		}
		return Info{}, err
	}
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			info.Size += int64(n)
			if maxSize > 0 && info.Size > maxSize {
				return fail(fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxSize))
			}
			_, _ = h.Write(buf[:n])
			if _, perr := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: chunkKey(key, written), Value: bytes.Clone(buf[:n])}); perr != nil {
				return fail(fmt.Errorf("blob: write %s: %w", key, perr))
			}
			written++
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("blob: read: %w", err))
		}
	}
	info.Chunks = written
	info.SHA256 = hex.EncodeToString(h.Sum(nil))
	b, _ := json.Marshal(info) // cannot fail
	res, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: b, IfAbsent: true})
	if err != nil {
		return fail(fmt.Errorf("blob: write %s: %w", key, err))
	}
	if !res.Stored {
		return fail(fmt.Errorf("blob: %s exists", key))
	}
	return info, nil
}

// Stat reads a blob's manifest.
func Stat(ctx context.Context, m store.Meta, ns, key string) (Info, bool, error) {
	res, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: key})
	if err != nil {
		return Info{}, false, fmt.Errorf("blob: %w", err)
	}
	if !res.Found {
		return Info{}, false, nil
	}
	var info Info
	if err := json.Unmarshal(res.Value, &info); err != nil {
		return Info{}, false, fmt.Errorf("blob: manifest %s: %w", key, err)
	}
	return info, true, nil
}

// Open returns a reader of the blob under key; ErrNotFound if there is
// none. The reader fetches one chunk at a time and returns ErrCorrupt at
// the end when the bytes do not match the manifest (a chunk vanished, the
// blob was deleted while being read).
func Open(ctx context.Context, m store.Meta, ns, key string) (io.Reader, Info, error) {
	info, found, err := Stat(ctx, m, ns, key)
	if err != nil {
		return nil, Info{}, err
	}
	if !found {
		return nil, Info{}, ErrNotFound
	}
	return &reader{ctx: ctx, m: m, ns: ns, key: key, info: info, h: sha256.New()}, info, nil
}

type reader struct {
	ctx  context.Context //nolint:containedctx // a reader's Read has no ctx; it lives as long as the call that opened it
	m    store.Meta
	ns   string
	key  string
	info Info
	next int
	read int64
	cur  []byte
	h    interface {
		io.Writer
		Sum([]byte) []byte
	}
	err error
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.next >= r.info.Chunks {
			if r.read != r.info.Size || hex.EncodeToString(r.h.Sum(nil)) != r.info.SHA256 {
				r.err = fmt.Errorf("%w: %s", ErrCorrupt, r.key)
			} else {
				r.err = io.EOF
			}
			return 0, r.err
		}
		res, err := r.m.MetaGet(r.ctx, store.MetaGetParams{Namespace: r.ns, Key: chunkKey(r.key, r.next)})
		if err != nil {
			r.err = fmt.Errorf("blob: read %s: %w", r.key, err)
			return 0, r.err
		}
		if !res.Found {
			r.err = fmt.Errorf("%w: %s: chunk %d is missing", ErrCorrupt, r.key, r.next)
			return 0, r.err
		}
		r.next++
		r.cur = res.Value
		r.read += int64(len(res.Value))
		_, _ = r.h.Write(res.Value)
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Delete removes the blob under key: the manifest first (the blob is gone
// for readers at once), then its chunks. Deleting a missing blob is not an
// error; chunks left by a failed Put are removed too.
func Delete(ctx context.Context, m store.Meta, ns, key string) error {
	if _, err := m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: key}); err != nil {
		return fmt.Errorf("blob: delete %s: %w", key, err)
	}
	return DeletePrefix(ctx, m, ns, key+"/")
}

// DeletePrefix deletes every record whose key starts with prefix.
func DeletePrefix(ctx context.Context, m store.Meta, ns, prefix string) error {
	res, err := m.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: prefix})
	if err != nil {
		return fmt.Errorf("blob: delete %s: %w", prefix, err)
	}
	for _, it := range res.Items {
		if _, err := m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: it.Key}); err != nil {
			return fmt.Errorf("blob: delete %s: %w", it.Key, err)
		}
	}
	return nil
}

// LogCapDefault is the default cap of a Log.
const LogCapDefault = 8 << 20

// LogFlushDefault is how often a Log writes its current chunk while output
// keeps coming.
const LogFlushDefault = 500 * time.Millisecond

// Log is an append-only log kept in chunks under "<key>/<n>". Write
// buffers; the current chunk is written to the store when it is full, at
// most every Flush interval while output comes, and by Close. Write and
// Close are safe for concurrent use.
type Log struct {
	m     store.Meta
	ns    string
	key   string
	cap   int64
	flush time.Duration

	mu        sync.Mutex
	ctx       context.Context //nolint:containedctx // io.Writer has no ctx; the log lives as long as the task run that made it
	n         int             // index of the current chunk
	cur       []byte          // its bytes
	dirty     bool
	total     int64
	truncated bool
	lastFlush time.Time
	timer     *time.Timer // flushes buffered output that no later write flushes
	closed    bool
	err       error
	before    func(ctx context.Context) error // LogConfig.BeforeFirstPut, until it ran
}

// LogConfig configures OpenLog; zero fields mean the defaults.
type LogConfig struct {
	// Cap is the most bytes kept; default LogCapDefault.
	Cap int64
	// Flush is the longest time buffered output waits; default
	// LogFlushDefault.
	Flush time.Duration
	// BeforeFirstPut, if set, runs once before this Log writes its first
	// chunk to the store (with the context of that write); its error fails
	// that write, and the log keeps failing. A Log that is never written to
	// never runs it: a task's log records, for instance, that the task
	// has a log only when it has one.
	BeforeFirstPut func(ctx context.Context) error
}

// OpenLog opens the log under key for appending: output goes after what
// the log already holds, starting a new chunk.
func OpenLog(ctx context.Context, m store.Meta, ns, key string, cfg LogConfig) (*Log, error) {
	if cfg.Cap <= 0 {
		cfg.Cap = LogCapDefault
	}
	if cfg.Flush <= 0 {
		cfg.Flush = LogFlushDefault
	}
	res, err := m.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: key + "/"})
	if err != nil {
		return nil, fmt.Errorf("blob: open log %s: %w", key, err)
	}
	l := &Log{m: m, ns: ns, key: key, cap: cfg.Cap, flush: cfg.Flush, ctx: ctx, n: len(res.Items), before: cfg.BeforeFirstPut}
	for _, it := range res.Items {
		l.total += int64(len(it.Value))
	}
	return l, nil
}

// Size returns the bytes written so far (including those of earlier
// writers).
func (l *Log) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Write appends p. It fails only when the store does, and then keeps
// failing; output past the cap is dropped silently after a marker line.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	n := len(p)
	if l.truncated {
		return n, nil
	}
	if room := l.cap - l.total; int64(len(p)) > room {
		p = p[:max(room, 0)]
		l.truncated = true
	}
	for len(p) > 0 {
		k := min(len(p), ChunkSize-len(l.cur))
		l.cur = append(l.cur, p[:k]...)
		l.total += int64(k)
		l.dirty = true
		p = p[k:]
		if len(l.cur) == ChunkSize {
			if err := l.put(); err != nil {
				return 0, err
			}
			l.n++
			l.cur = l.cur[:0]
		}
	}
	if l.truncated {
		marker := fmt.Sprintf("\n[kiln: log truncated at %d bytes]\n", l.cap)
		if len(l.cur)+len(marker) > ChunkSize {
			if err := l.put(); err != nil {
				return 0, err
			}
			l.n++
			l.cur = l.cur[:0]
		}
		l.cur = append(l.cur, marker...)
		l.dirty = true
	}
	if l.dirty && time.Since(l.lastFlush) >= l.flush {
		if err := l.put(); err != nil {
			return 0, err
		}
	}
	if l.dirty && l.timer == nil {
		l.timer = time.AfterFunc(l.flush, l.tick)
	}
	return n, nil
}

// tick flushes what the writes left buffered.
func (l *Log) tick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	if l.closed || l.err != nil {
		return
	}
	_ = l.put() // a failure is kept in l.err and returned by the next Write or Close
}

// put writes the current chunk.
func (l *Log) put() error {
	if !l.dirty {
		return nil
	}
	if l.before != nil {
		if err := l.before(l.ctx); err != nil {
			l.err = fmt.Errorf("blob: log %s: %w", l.key, err)
			return l.err
		}
		l.before = nil
	}
	if _, err := l.m.MetaPut(l.ctx, store.MetaPutParams{Namespace: l.ns, Key: chunkKey(l.key, l.n), Value: bytes.Clone(l.cur)}); err != nil {
		l.err = fmt.Errorf("blob: log %s: %w", l.key, err)
		return l.err
	}
	l.dirty = false
	l.lastFlush = time.Now()
	return nil
}

// Sync writes what is buffered.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	return l.put()
}

// Close writes what is buffered, with ctx (the run's context may be done
// by now). The log stays readable.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ctx = ctx
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.err != nil {
		return l.err
	}
	return l.put()
}

// ReadLog returns the whole log under key and whether it has any chunk.
func ReadLog(ctx context.Context, m store.Meta, ns, key string) ([]byte, bool, error) {
	res, err := m.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: key + "/"})
	if err != nil {
		return nil, false, fmt.Errorf("blob: read log %s: %w", key, err)
	}
	var out []byte
	for _, it := range res.Items {
		if strings.Count(it.Key[len(key)+1:], "/") != 0 {
			continue
		}
		out = append(out, it.Value...)
	}
	return out, len(res.Items) > 0, nil
}
