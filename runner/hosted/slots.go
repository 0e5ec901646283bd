package hosted

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/store"
)

// keySlot + code id + "/" + n is one of a package's max_concurrency slots.
const keySlot = "iron/slot/"

// Defaults of the slots that hold max_concurrency across runners.
const (
	// SlotTTLDefault is how long a slot stays taken without a renewal: a
	// runner that dies frees its slots after it.
	SlotTTLDefault = 30 * time.Second
	// SlotPollDefault is how often a task waiting for a slot tries again.
	SlotPollDefault = 250 * time.Millisecond
)

type slotValue struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// slot is a taken slot.
type slot struct {
	m     store.Meta
	clock store.Clock
	ns    string
	key   string
	ttl   time.Duration
	value []byte
}

// acquireSlot takes one of the first slots slots of package codeID, waiting until
// one is free, expired, or ctx is done. Slots are meta records taken with
// put-if-absent; an expired one (its holder died) is removed with
// compare-and-delete before it is taken, so two runners never hold one.
func acquireSlot(ctx context.Context, m store.Meta, clock store.Clock, ns, codeID string, slots int, holder string, ttl, poll time.Duration) (*slot, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for n := range slots {
			key := fmt.Sprintf("%s%s/%d", keySlot, codeID, n)
			s := &slot{m: m, clock: clock, ns: ns, key: key, ttl: ttl}
			ok, err := s.take(ctx, holder)
			if err != nil {
				return nil, err
			}
			if ok {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-t.C:
		}
	}
}

func (s *slot) newValue(holder string) []byte {
	b, _ := json.Marshal(slotValue{Holder: holder, Expires: s.clock.Now().Add(s.ttl).UTC()}) // cannot fail
	return b
}

// take tries the slot once.
func (s *slot) take(ctx context.Context, holder string) (bool, error) {
	v := s.newValue(holder)
	res, err := s.m.MetaPut(ctx, store.MetaPutParams{Namespace: s.ns, Key: s.key, Value: v, IfAbsent: true})
	if err != nil {
		return false, err
	}
	if res.Stored {
		s.value = v
		return true, nil
	}
	cur, err := s.m.MetaGet(ctx, store.MetaGetParams{Namespace: s.ns, Key: s.key})
	if err != nil || !cur.Found {
		return false, err
	}
	var old slotValue
	if json.Unmarshal(cur.Value, &old) == nil && s.clock.Now().Before(old.Expires) {
		return false, nil
	}
	// Expired (or unreadable): free it, unless someone renewed it meanwhile.
	if _, err := s.m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: s.ns, Key: s.key, IfValue: cur.Value}); err != nil {
		return false, err
	}
	res, err = s.m.MetaPut(ctx, store.MetaPutParams{Namespace: s.ns, Key: s.key, Value: v, IfAbsent: true})
	if err != nil || !res.Stored {
		return false, err
	}
	s.value = v
	return true, nil
}

// renew extends the slot; false when it was lost (it expired and another
// runner took it).
func (s *slot) renew(ctx context.Context, holder string) (bool, error) {
	cur, err := s.m.MetaGet(ctx, store.MetaGetParams{Namespace: s.ns, Key: s.key})
	if err != nil {
		return false, err
	}
	if !cur.Found || !bytes.Equal(cur.Value, s.value) {
		return false, nil
	}
	v := s.newValue(holder)
	if _, err := s.m.MetaPut(ctx, store.MetaPutParams{Namespace: s.ns, Key: s.key, Value: v}); err != nil {
		return false, err
	}
	s.value = v
	return true, nil
}

// release frees the slot if it is still this holder's.
func (s *slot) release(ctx context.Context) error {
	_, err := s.m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: s.ns, Key: s.key, IfValue: s.value})
	return err
}

// hold keeps the slot renewed until ctx is done, then releases it.
func (s *slot) hold(ctx context.Context, holder string, onLost func()) {
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = s.release(context.WithoutCancel(ctx)) // an unreleased slot expires after its TTL
			return
		case <-t.C:
			if ok, err := s.renew(ctx, holder); err == nil && !ok {
				onLost()
			}
		}
	}
}
