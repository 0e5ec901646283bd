// Package ids makes task ids: 26 characters of Crockford base32 that sort by
// creation time. The first 10 characters encode the milliseconds since the
// Unix epoch (48 bits), the last 16 encode 80 bits from crypto/rand. Ids made
// by one process in the same millisecond are strictly increasing: the random
// part of the previous id is increased by a random step of 1 to 2^32 (from a
// ChaCha8 stream seeded by crypto/rand) instead of drawn again, so that the
// next id cannot be told from the last one. Stores rely on that: an id made
// here for an enqueue is one no caller can have used before
// (store.TaskInput.NewID).
package ids

import (
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// Len is the length of an id.
const Len = 26

const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

var gen generator

// New returns a new id. It is safe for concurrent use.
func New() string { return gen.next(time.Now()) }

// Time returns the creation time encoded in id, with millisecond precision,
// and false when id is not a well-formed id.
func Time(id string) (time.Time, bool) {
	if !Valid(id) {
		return time.Time{}, false
	}
	var ms int64
	for i := 0; i < 10; i++ {
		ms = ms<<5 | int64(digits[id[i]])
	}
	return time.UnixMilli(ms), true
}

// Valid reports whether id has the form New produces.
func Valid(id string) bool {
	if len(id) != Len || id[0] > '7' { // 26*5 = 130 bits; the top 2 must be 0
		return false
	}
	for i := 0; i < Len; i++ {
		if digits[id[i]] == invalid {
			return false
		}
	}
	return true
}

const invalid = 0xff

// digits maps a character to its value in alphabet, or invalid.
var digits = func() (d [256]byte) {
	for i := range d {
		d[i] = invalid
	}
	for i := 0; i < len(alphabet); i++ {
		d[alphabet[i]] = byte(i)
	}
	return d
}()

type generator struct {
	mu     sync.Mutex
	lastMs uint64
	rnd    [10]byte       // big-endian 80-bit random part of the last id
	steps  *mrand.ChaCha8 // the steps within one millisecond; seeded on first use
}

func (g *generator) next(now time.Time) string {
	ms := uint64(max(now.UnixMilli(), 0))
	g.mu.Lock()
	if ms <= g.lastMs {
		// Same millisecond (or the wall clock stepped back): keep the
		// order by incrementing the random part of the last id.
		ms = g.lastMs
		if g.steps == nil {
			var seed [32]byte
			_, _ = rand.Read(seed[:]) // never fails (Go 1.24 and later)
			g.steps = mrand.NewChaCha8(seed)
		}
		if !add(&g.rnd, g.steps.Uint64()&0xffffffff+1) {
			ms++ // 80 bits ran over: move to the next millisecond
			fill(&g.rnd)
		}
	} else {
		fill(&g.rnd)
	}
	g.lastMs = ms
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], ms<<16) // the low 48 bits of ms in b[0:6]
	copy(b[6:], g.rnd[:])
	g.mu.Unlock()
	return encode(&b)
}

func fill(r *[10]byte) {
	// crypto/rand.Read never returns an error (Go 1.24 and later).
	_, _ = rand.Read(r[:])
	r[0] &= 0x7f // leave room for increments within one millisecond
}

// add adds n to r and reports false when it overflowed.
func add(r *[10]byte, n uint64) bool {
	lo := binary.BigEndian.Uint64(r[2:])
	sum := lo + n
	binary.BigEndian.PutUint64(r[2:], sum)
	if sum >= lo {
		return true
	}
	for i := 1; i >= 0; i-- { // carry into the top 16 bits
		r[i]++
		if r[i] != 0 {
			return true
		}
	}
	return false
}

// encode writes the 128-bit value in b (of which the top 2 bits of the 130
// encoded are zero) as 26 base32 characters.
func encode(b *[16]byte) string {
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
		uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	var out [Len]byte
	// Emit 5 bits at a time from the least significant end.
	for i := Len - 1; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
