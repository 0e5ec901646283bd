// Package changefeed keeps, in one process, the recent task state changes
// of each namespace in the order a store applied them, so that the store
// can serve store.Feed. The embedded store appends to it under the lock
// that applies the changes.
//
// Sequence numbers start at the time the feed was made (Unix nanoseconds),
// so a cursor of an earlier run of the store is older than every change of
// this one and its holder is told that it missed changes; a cursor beyond
// the newest change (another process's) is treated the same way.
package changefeed

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Feed is the change history of one store process. The zero value is not
// usable; call New.
type Feed struct {
	keep int
	base uint64

	mu     sync.Mutex
	ns     map[string]*ring
	closed bool
	done   chan struct{} // closed by Close
}

// ring holds the last keep changes of one namespace.
type ring struct {
	buf   []store.Change // circular once full
	start int            // index of the oldest change once full
	last  uint64         // Seq of the newest change
	wake  chan struct{}  // closed by the next Append; nil when nobody waits
}

// New returns an empty feed that keeps the last keep changes per namespace
// (store.ChangeFeedDefault when keep <= 0).
func New(keep int) *Feed {
	if keep <= 0 {
		keep = store.ChangeFeedDefault
	}
	return &Feed{keep: keep, base: uint64(time.Now().UnixNano()), ns: make(map[string]*ring), done: make(chan struct{})}
}

func (f *Feed) ring(ns string) *ring {
	r := f.ns[ns]
	if r == nil {
		r = &ring{last: f.base}
		f.ns[ns] = r
	}
	return r
}

// Add records one change of namespace ns, giving it its Seq.
func (f *Feed) Add(ns string, c store.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.ring(ns)
	r.last++
	c.Seq = r.last
	if len(r.buf) < f.keep {
		r.buf = append(r.buf, c)
	} else {
		r.buf[r.start] = c
		r.start = (r.start + 1) % len(r.buf)
	}
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

// Wait serves store.Feed.Changes.
func (f *Feed) Wait(ctx context.Context, p store.ChangesParams) (store.ChangesResult, error) {
	limit := p.Max
	if limit <= 0 || limit > store.MaxBatch {
		limit = store.MaxBatch
	}
	var after uint64
	if p.Cursor != "" {
		var err error
		if after, err = strconv.ParseUint(p.Cursor, 10, 64); err != nil {
			return store.ChangesResult{}, fmt.Errorf("changes: cursor %q: %w", p.Cursor, store.ErrInvalidOption)
		}
	}
	var timer *time.Timer
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return store.ChangesResult{}, store.ErrClosed
		}
		r := f.ring(p.Namespace)
		if p.Cursor == "" {
			f.mu.Unlock()
			return store.ChangesResult{Cursor: strconv.FormatUint(r.last, 10)}, nil
		}
		res := r.after(after, limit)
		if len(res.Changes) > 0 || res.Missed || p.Wait <= 0 {
			f.mu.Unlock()
			return res, nil
		}
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		f.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(p.Wait)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			return store.ChangesResult{Cursor: p.Cursor}, nil
		case <-ctx.Done():
			return store.ChangesResult{Cursor: p.Cursor}, ctx.Err()
		case <-f.done:
			return store.ChangesResult{}, store.ErrClosed
		}
	}
}

// after returns up to limit changes after seq; the caller holds the lock.
func (r *ring) after(seq uint64, limit int) store.ChangesResult {
	n := uint64(len(r.buf))
	oldest := r.last - n + 1 // Seq of r.buf's oldest change
	res := store.ChangesResult{Cursor: strconv.FormatUint(seq, 10)}
	switch {
	case seq > r.last:
		// Another process's cursor, or one of a later run: start now.
		res.Missed = true
		res.Cursor = strconv.FormatUint(r.last, 10)
		return res
	case seq == r.last:
		return res
	case seq+1 < oldest:
		res.Missed = true
		seq = oldest - 1
	}
	from := seq + 1 - oldest            // offset from the oldest change
	k := min(r.last-seq, uint64(limit)) //nolint:gosec // G115: limit is positive
	res.Changes = make([]store.Change, 0, k)
	for i := uint64(0); i < k; i++ {
		res.Changes = append(res.Changes, r.buf[(uint64(r.start)+from+i)%n]) //nolint:gosec // G115: start is an index
	}
	res.Cursor = strconv.FormatUint(res.Changes[len(res.Changes)-1].Seq, 10)
	return res
}

// Close ends the waits, which return store.ErrClosed.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.done)
	}
}
