// Package cancelfeed keeps, in one process, the recent cancel requests of
// active tasks per namespace, so that a store can serve
// store.Leaser.WaitCancels: the embedded store publishes into it when an
// active task is asked to cancel, the Redis store when the notification of
// another process arrives.
//
// A cursor names a point in one feed's history: "<epoch>.<sequence>". The
// epoch is random per feed, so a cursor of another process (or of a store
// opened again) is recognised as foreign, and its holder told that it may
// have missed cancels. The feed keeps the last Keep requests per namespace;
// a cursor older than them has missed some too.
package cancelfeed

import (
	"context"
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Keep is how many cancel requests a namespace's feed remembers.
const Keep = 4096

// Feed is the cancel history of one store process. The zero value is not
// usable; call New.
type Feed struct {
	epoch string

	mu     sync.Mutex
	ns     map[string]*nsFeed
	closed bool
	done   chan struct{} // closed by Close
}

type nsFeed struct {
	next uint64           // sequence of the next request; the first is 1
	ring []store.LeaseRef // the last Keep requests; ring[(seq-1)%Keep] is seq
	wake chan struct{}    // closed by the next request, when someone waits
}

// New returns an empty feed with a fresh epoch.
func New() *Feed {
	return &Feed{epoch: rand.Text()[:12], ns: make(map[string]*nsFeed), done: make(chan struct{})}
}

func (f *Feed) feed(ns string) *nsFeed {
	n := f.ns[ns]
	if n == nil {
		n = &nsFeed{next: 1}
		f.ns[ns] = n
	}
	return n
}

// Publish records that the leases refs of namespace ns were asked to
// cancel, and wakes the waiters of ns.
func (f *Feed) Publish(ns string, refs ...store.LeaseRef) {
	if len(refs) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.feed(ns)
	for _, r := range refs {
		if n.ring == nil {
			n.ring = make([]store.LeaseRef, 0, 64)
		}
		if len(n.ring) < Keep {
			n.ring = append(n.ring, r)
		} else {
			n.ring[(n.next-1)%Keep] = r
		}
		n.next++
	}
	if n.wake != nil {
		close(n.wake)
		n.wake = nil
	}
}

// Close wakes every waiter; Wait then fails with store.ErrClosed.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.done)
	}
}

// cursor returns the cursor that follows sequence seq.
func (f *Feed) cursor(seq uint64) string { return f.epoch + "." + strconv.FormatUint(seq, 10) }

// parse returns the sequence of the last request a cursor of this feed has
// seen, and false for an empty, malformed or foreign cursor.
func (f *Feed) parse(c string) (uint64, bool) {
	epoch, seq, ok := strings.Cut(c, ".")
	if !ok || epoch != f.epoch {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	return n, err == nil
}

// Wait serves store.Leaser.WaitCancels for namespace p.Namespace; see
// there. closed, when not nil, ends the wait with store.ErrClosed too.
func (f *Feed) Wait(ctx context.Context, p store.WaitCancelsParams, closed <-chan struct{}) (store.WaitCancelsResult, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	deadline := time.Now().Add(p.Wait)
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return store.WaitCancelsResult{}, store.ErrClosed
		}
		n := f.feed(p.Namespace)
		last := n.next - 1
		seen, ok := f.parse(p.Cursor)
		if !ok || seen > last {
			// A first call, or a cursor of another process: start now.
			res := store.WaitCancelsResult{Cursor: f.cursor(last), Missed: p.Cursor != ""}
			f.mu.Unlock()
			return res, nil
		}
		if seen < last {
			res := store.WaitCancelsResult{Cursor: f.cursor(last)}
			from := seen + 1
			if last-seen > uint64(len(n.ring)) {
				res.Missed = true
				from = last - uint64(len(n.ring)) + 1
			}
			for s := from; s <= last; s++ {
				res.Leases = append(res.Leases, n.ring[(s-1)%Keep])
			}
			f.mu.Unlock()
			return res, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			f.mu.Unlock()
			return store.WaitCancelsResult{Cursor: f.cursor(last)}, nil
		}
		if n.wake == nil {
			n.wake = make(chan struct{})
		}
		wake := n.wake
		f.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-f.done:
		case <-closed:
			return store.WaitCancelsResult{}, store.ErrClosed
		case <-ctx.Done():
			return store.WaitCancelsResult{}, ctx.Err()
		}
	}
}
