// Package record is the compact, versioned binary encoding of a task record
// used by kiln's stores. It encodes every field of store.Task except Namespace
// and Payload, which stores keep in their keys and in a separate value.
//
// The format is a version byte followed by the fields in a fixed order, as
// varints and length-prefixed strings. Decoders reject unknown versions,
// truncated input, trailing bytes and out-of-range values with ErrCorrupt; they
// never panic, whatever the input (fuzzed by FuzzDecode).
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Version is the encoding version written by Encode.
const Version = 1

// ErrCorrupt is returned for input that is not a valid record.
var ErrCorrupt = errors.New("record: corrupt")

const maxField = 64 << 20 // no single field is larger than 64 MiB

// Encode appends the encoding of t (and its store sequence number) to dst.
func Encode(dst []byte, seq uint64, t *store.Task) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, seq)
	dst = appendString(dst, t.ID)
	dst = appendString(dst, t.Type)
	dst = appendString(dst, t.Queue)
	dst = binary.AppendVarint(dst, int64(t.Priority))
	dst = binary.AppendVarint(dst, int64(t.MaxRetries))
	dst = binary.AppendVarint(dst, int64(t.Timeout))
	dst = appendTime(dst, t.Deadline)
	dst = appendString(dst, t.UniqueKey)
	dst = binary.AppendVarint(dst, int64(t.UniqueTTL))
	dst = binary.AppendVarint(dst, int64(t.Retention))
	dst = append(dst, byte(t.State))
	dst = binary.AppendVarint(dst, int64(t.Attempt))
	dst = binary.AppendUvarint(dst, t.LeaseID)
	dst = appendTime(dst, t.LeaseExpiresAt)
	dst = appendString(dst, t.WorkerID)
	var flags byte
	if t.CancelRequested {
		flags |= 1
	}
	if t.Result != nil {
		flags |= 2
	}
	dst = append(dst, flags)
	dst = appendTime(dst, t.CreatedAt)
	dst = appendTime(dst, t.RunAt)
	dst = appendTime(dst, t.StartedAt)
	dst = appendTime(dst, t.FinishedAt)
	dst = appendTime(dst, t.ExpiresAt)
	dst = appendBytes(dst, t.Result)
	dst = appendString(dst, t.LastError)
	dst = binary.AppendVarint(dst, int64(t.ProgressPercent))
	dst = appendString(dst, t.ProgressMessage)
	return dst
}

// Decode decodes a record into t (Namespace and Payload are left alone) and
// returns its sequence number.
func Decode(b []byte, t *store.Task) (uint64, error) {
	d := decoder{b: b}
	if v := d.byte(); v != Version {
		if d.err != nil {
			return 0, d.err
		}
		return 0, fmt.Errorf("%w: unknown version %d", ErrCorrupt, v)
	}
	seq := d.uvarint()
	t.ID = d.string()
	t.Type = d.string()
	t.Queue = d.string()
	t.Priority = d.int()
	t.MaxRetries = d.int()
	t.Timeout = time.Duration(d.varint())
	t.Deadline = d.time()
	t.UniqueKey = d.string()
	t.UniqueTTL = time.Duration(d.varint())
	t.Retention = time.Duration(d.varint())
	t.State = store.State(d.byte())
	t.Attempt = d.int()
	t.LeaseID = d.uvarint()
	t.LeaseExpiresAt = d.time()
	t.WorkerID = d.string()
	flags := d.byte()
	t.CancelRequested = flags&1 != 0
	t.CreatedAt = d.time()
	t.RunAt = d.time()
	t.StartedAt = d.time()
	t.FinishedAt = d.time()
	t.ExpiresAt = d.time()
	t.Result = d.bytes()
	if flags&2 != 0 && t.Result == nil {
		t.Result = []byte{}
	} else if flags&2 == 0 {
		t.Result = nil
	}
	t.LastError = d.string()
	t.ProgressPercent = d.int()
	t.ProgressMessage = d.string()
	if d.err != nil {
		return 0, d.err
	}
	if len(d.b) != 0 {
		return 0, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if !t.State.Valid() {
		return 0, fmt.Errorf("%w: invalid state %d", ErrCorrupt, t.State)
	}
	if flags&^3 != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	return seq, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendTime writes 0 for the zero time and UnixNano+1 otherwise (as a
// zig-zag varint), so that the zero time survives a round trip.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, 0)
	}
	n := t.UnixNano()
	if n >= 0 {
		n++
	}
	return binary.AppendVarint(dst, n)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.varint()
	if v > math.MaxInt32 || v < math.MinInt32 {
		d.fail("int")
		return 0
	}
	return int(v)
}

func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxField || n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string() string { return string(d.raw()) }

func (d *decoder) bytes() []byte {
	r := d.raw()
	if len(r) == 0 {
		return nil
	}
	return append([]byte(nil), r...)
}

func (d *decoder) time() time.Time {
	n := d.varint()
	if n == 0 {
		return time.Time{}
	}
	if n > 0 {
		n--
	}
	return time.Unix(0, n).UTC()
}
