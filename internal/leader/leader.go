// Package leader elects one holder of a role (the sweeper) among the
// processes that share a store, with a lease kept in the store's meta
// records.
//
// The lease is one meta record whose value names its holder and a counter
// that the holder raises at every renewal, by compare-and-set. Nobody
// compares clocks: a candidate that sees the same value for longer than the
// lease's TTL, by its own monotonic clock, takes the record over with a
// compare-and-set on that value, so that of several candidates exactly one
// wins. A holder that stops cleanly deletes the record (compare-and-delete)
// so that another takes over at its next tick.
package leader

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Namespace is the meta namespace of the leases.
const Namespace = "kiln.maintenance"

// Elector takes part, for one process, in the election of one role. It is
// not safe for concurrent use: one goroutine calls Tick, then Resign.
type Elector struct {
	m   store.Meta
	key string
	id  string        // this candidate: the caller's name and a random suffix
	ttl time.Duration // how long an unchanged record is trusted
	now func() time.Time

	seq        uint64    // the counter of this candidate's last write
	seen       []byte    // the value last seen while another led
	seenSince  time.Time // when seen was first seen, by now
	seenExists bool
}

// New returns an elector for role key among the users of m; name names the
// caller for operators (a worker id), ttl is how long a holder that stopped
// renewing keeps the role, and now is the local monotonic clock (nil:
// time.Now; tests pass a fake one).
func New(m store.Meta, key, name string, ttl time.Duration, now func() time.Time) *Elector {
	if now == nil {
		now = time.Now
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Elector{m: m, key: key, id: name + "/" + hex.EncodeToString(b[:]), ttl: ttl, now: now}
}

// ID returns the candidate's id, as the lease record names its holder.
func (e *Elector) ID() string { return e.id }

// Tick renews the lease when this candidate holds it, or takes it when it
// is free or its holder stopped renewing it for ttl, and reports whether
// this candidate leads until its next Tick. Call it more often than ttl
// (a third of it or less), or the lease may pass to another while this one
// believes it leads. On an error the caller does not lead.
func (e *Elector) Tick(ctx context.Context) (bool, error) {
	got, err := e.m.MetaGet(ctx, store.MetaGetParams{Namespace: Namespace, Key: e.key})
	if err != nil {
		return false, fmt.Errorf("leader: read %s: %w", e.key, err)
	}
	switch {
	case !got.Found:
		return e.put(ctx, nil)
	case e.mine(got.Value):
		// Renew. The value may be one whose write was not acknowledged
		// (the call failed after the store wrote it): it is still ours.
		return e.put(ctx, got.Value)
	}
	now := e.now()
	if !e.seenExists || !bytes.Equal(got.Value, e.seen) {
		e.seen, e.seenSince, e.seenExists = got.Value, now, true
		return false, nil
	}
	if now.Sub(e.seenSince) < e.ttl {
		return false, nil
	}
	return e.put(ctx, got.Value) // the holder stopped: take over
}

// put writes a new value of the lease: when old is nil only if the record
// is free, else only if it still holds old.
func (e *Elector) put(ctx context.Context, old []byte) (bool, error) {
	e.seq++ // even when the write fails: it may have been stored
	val := []byte(e.id + "|" + strconv.FormatUint(e.seq, 10))
	p := store.MetaPutParams{Namespace: Namespace, Key: e.key, Value: val, IfAbsent: old == nil, IfValue: old}
	res, err := e.m.MetaPut(ctx, p)
	if err != nil {
		return false, fmt.Errorf("leader: write %s: %w", e.key, err)
	}
	if !res.Stored {
		e.seenExists = false // another won: start watching its value afresh
		return false, nil
	}
	e.seenExists = false
	return true, nil
}

// mine reports whether a value of the lease names this candidate.
func (e *Elector) mine(v []byte) bool {
	return len(v) > len(e.id) && v[len(e.id)] == '|' && string(v[:len(e.id)]) == e.id
}

// Resign gives the lease up, if this candidate holds it, so that another
// takes it at its next Tick instead of after ttl. It reads the lease rather
// than trusting the last acknowledged write: a renewal cut short by a
// cancelled context may have been stored.
func (e *Elector) Resign(ctx context.Context) error {
	got, err := e.m.MetaGet(ctx, store.MetaGetParams{Namespace: Namespace, Key: e.key})
	if err != nil {
		return fmt.Errorf("leader: resign %s: %w", e.key, err)
	}
	if !got.Found || !e.mine(got.Value) {
		return nil
	}
	if _, err := e.m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: Namespace, Key: e.key, IfValue: got.Value}); err != nil {
		return fmt.Errorf("leader: resign %s: %w", e.key, err)
	}
	return nil
}

// Holder returns the id of the candidate that holds the lease of key in m,
// or "" when none does.
func Holder(ctx context.Context, m store.Meta, key string) (string, error) {
	got, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: Namespace, Key: key})
	if err != nil || !got.Found {
		return "", err
	}
	v := string(got.Value)
	if i := bytes.LastIndexByte(got.Value, '|'); i >= 0 {
		v = v[:i]
	}
	return v, nil
}
