// Package binenc holds the primitives of kiln's compact binary encodings
// (internal/record for the embedded store's task records on disk,
// internal/wirebin for the worker routes of the HTTP API):
// length-prefixed strings and bytes, varints, and times as zig-zag varints
// of UnixNano, plus a Reader that never panics and reports the first
// problem as a wrapped corruption sentinel.
//
// Both formats are frozen by golden bytes in their own tests, so what an
// Append function writes never changes: a format that needs something else
// gets a new function and a new version of its own.
package binenc

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// AppendString appends s with a uvarint length prefix.
func AppendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendBytes appends b with a uvarint length prefix (nil and empty alike).
func AppendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// AppendNilBytes appends 0 for nil, and otherwise len+1 then the bytes, so
// that nil and empty stay apart (as null and "" do in JSON).
func AppendNilBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// AppendTime appends 0 for the zero time, and otherwise UnixNano (plus one
// when not negative, so that the Unix epoch is not read back as zero) as a
// zig-zag varint. Times must lie within the range of UnixNano (years
// 1678-2262).
func AppendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, 0)
	}
	n := t.UnixNano()
	if n >= 0 {
		n++
	}
	return binary.AppendVarint(dst, n)
}

// UvarintLen returns the number of bytes binary.AppendUvarint writes for x.
func UvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// VarintLen returns the number of bytes binary.AppendVarint writes for x.
func VarintLen(x int64) int {
	ux := uint64(x) << 1 //nolint:gosec // G115: the zig-zag encoding, as encoding/binary does
	if x < 0 {
		ux = ^ux
	}
	return UvarintLen(ux)
}

// StringLen returns the number of bytes AppendString writes for s (and
// AppendBytes for a slice of the same length).
func StringLen(s string) int { return UvarintLen(uint64(len(s))) + len(s) }

// TimeLen returns the number of bytes AppendTime writes for t.
func TimeLen(t time.Time) int {
	if t.IsZero() {
		return 1
	}
	n := t.UnixNano()
	if n >= 0 {
		n++
	}
	return VarintLen(n)
}

// Reader reads what the Append functions wrote. After the first problem
// every read returns a zero value, and Err reports the problem wrapped
// around the sentinel given to NewReader.
type Reader struct {
	b        []byte
	err      error
	sentinel error
}

// NewReader returns a Reader of b whose errors wrap sentinel.
func NewReader(b []byte, sentinel error) *Reader {
	return &Reader{b: b, sentinel: sentinel}
}

// Fail records a problem (the first one wins) and stops reading.
func (r *Reader) Fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", r.sentinel, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

// Err returns the first problem, or nil.
func (r *Reader) Err() error { return r.err }

// Len returns the number of bytes left.
func (r *Reader) Len() int { return len(r.b) }

// End returns the first problem, or a corruption error when bytes are left.
func (r *Reader) End() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", r.sentinel, len(r.b))
	}
	return nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) < 1 {
		r.Fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.Fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.Fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Int32 reads a signed varint that must fit in an int32.
func (r *Reader) Int32() int {
	v := r.Varint()
	if v > math.MaxInt32 || v < math.MinInt32 {
		r.Fail("integer %d out of range", v)
		return 0
	}
	return int(v)
}

// Raw reads a length-prefixed field of at most limit bytes. The result
// shares the Reader's buffer.
func (r *Reader) Raw(limit uint64) []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > limit || n > uint64(len(r.b)) {
		r.Fail("length %d is over the limit or the bytes left", n)
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// String reads a length-prefixed string of at most limit bytes.
func (r *Reader) String(limit uint64) string { return string(r.Raw(limit)) }

// Bytes reads a length-prefixed field of at most limit bytes into a fresh
// slice; empty reads as nil.
func (r *Reader) Bytes(limit uint64) []byte {
	raw := r.Raw(limit)
	if len(raw) == 0 {
		return nil
	}
	return append([]byte(nil), raw...)
}

// NilBytes reads AppendNilBytes's encoding into a fresh slice.
func (r *Reader) NilBytes(limit uint64) []byte {
	n := r.Uvarint()
	if r.err != nil || n == 0 {
		return nil
	}
	n--
	if n > limit || n > uint64(len(r.b)) {
		r.Fail("length %d is over the limit or the bytes left", n)
		return nil
	}
	out := append(make([]byte, 0, n), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

// Time reads AppendTime's encoding (in UTC).
func (r *Reader) Time() time.Time {
	v := r.Varint()
	if r.err != nil || v == 0 {
		return time.Time{}
	}
	if v > 0 {
		v--
	}
	return time.Unix(0, v).UTC()
}
