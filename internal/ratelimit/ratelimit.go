// Package ratelimit keeps a token bucket (golang.org/x/time/rate) per key,
// such as a client address or a project, in a table of bounded size: when
// the table is full, the key used least recently is forgotten.
//
// Times are passed in, not read from the system clock, so that a server's
// injected clock (a fake one in tests) drives the buckets.
package ratelimit

import (
	"container/list"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Keyed is a set of token buckets, one per key, all with the same rate and
// burst. A nil *Keyed allows everything. It is safe for concurrent use.
type Keyed struct {
	limit rate.Limit
	burst int
	max   int

	mu   sync.Mutex
	keys map[string]*list.Element // of *entry
	lru  list.List                // front: used most recently
}

type entry struct {
	key string
	lim *rate.Limiter
}

// New returns buckets that refill perSecond tokens a second up to burst,
// for at most maxKeys keys at a time. perSecond must be positive, burst
// and maxKeys at least 1 (smaller values are raised to the minimum).
func New(perSecond float64, burst, maxKeys int) *Keyed {
	return &Keyed{
		limit: rate.Limit(math.Max(perSecond, math.SmallestNonzeroFloat64)),
		burst: max(burst, 1),
		max:   max(maxKeys, 1),
		keys:  make(map[string]*list.Element),
	}
}

// Allow takes one token from key's bucket at now. When the bucket is
// empty it takes nothing and returns false and how long until a token is
// there.
func (k *Keyed) Allow(key string, now time.Time) (bool, time.Duration) {
	if k == nil {
		return true, 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var e *entry
	if el, ok := k.keys[key]; ok {
		k.lru.MoveToFront(el)
		e = el.Value.(*entry)
	} else {
		for len(k.keys) >= k.max {
			old := k.lru.Back()
			k.lru.Remove(old)
			delete(k.keys, old.Value.(*entry).key)
		}
		e = &entry{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
		k.keys[key] = k.lru.PushFront(e)
	}
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - e.lim.TokensAt(now)
	return false, time.Duration(math.Ceil(missing / float64(k.limit) * float64(time.Second)))
}

// Len returns how many keys have a bucket now.
func (k *Keyed) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}
