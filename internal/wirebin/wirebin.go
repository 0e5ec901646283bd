// Package wirebin is the optional compact binary encoding of the hot worker
// routes of kiln's native API (docs/api.md, "Binary encoding for workers"):
// the answer of POST .../lease (TasksType), the body of POST .../report
// (OutcomesType) and the body of POST .../tasks (EnqueueType). JSON stays the default and the documented contract; a
// client asks for these media types with Accept and Content-Type.
//
// Both formats start with a version byte and a uvarint count (at most
// store.MaxBatch). A task is the internal/record encoding of every field
// but Namespace and Payload (which comes from the URL), length-prefixed,
// then its payload. Decoders check every length against the bytes left,
// reject unknown versions, out-of-range values and trailing bytes with
// ErrCorrupt, and never panic, whatever the input (fuzzed by FuzzDecode).
//
// The package imports only the standard library, package store,
// internal/record and internal/wire.
package wirebin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// The media types of the binary bodies.
const (
	// TasksType is the binary answer of a lease, asked for with Accept.
	TasksType = "application/x-kiln-tasks"
	// OutcomesType is the binary body of a report, sent as Content-Type.
	OutcomesType = "application/x-kiln-outcomes"
)

// Version is the version byte of both formats.
const Version = 1

// ErrCorrupt is returned for a body that is not a valid encoding.
var ErrCorrupt = errors.New("wirebin: corrupt")

// maxResult mirrors internal/record's cap on a single field.
const maxResult = 64 << 20

// The range of times the encodings carry: UnixNano must fit, with room for
// internal/record's +1 of non-negative values.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64-1)
)

func timeOK(t time.Time) bool {
	return t.IsZero() || (!t.Before(minTime) && !t.After(maxTime))
}

func int32OK(v int) bool { return v >= math.MinInt32 && v <= math.MaxInt32 }

// Encodable reports whether every task can travel in TasksType exactly
// (times within the UnixNano range, small ints within int32, the result
// within 64 MiB). A server answers JSON when it is false.
func Encodable(ts []*store.Task) bool {
	if len(ts) > store.MaxBatch {
		return false
	}
	for _, t := range ts {
		if t == nil || !t.State.Valid() || len(t.Result) > maxResult {
			return false
		}
		for _, v := range [...]int{t.Priority, t.MaxRetries, t.Attempt, t.ProgressPercent} {
			if !int32OK(v) {
				return false
			}
		}
		for _, tm := range [...]time.Time{t.Deadline, t.LeaseExpiresAt, t.CreatedAt, t.RunAt, t.StartedAt, t.FinishedAt, t.ExpiresAt} {
			if !timeOK(tm) {
				return false
			}
		}
	}
	return true
}

// AppendTasks appends the TasksType encoding of ts to dst. The tasks must
// be Encodable.
func AppendTasks(dst []byte, ts []*store.Task) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(len(ts)))
	var rec []byte
	for _, t := range ts {
		rec = record.Encode(rec[:0], 0, t)
		dst = binary.AppendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
		dst = appendNilBytes(dst, t.Payload)
	}
	return dst
}

// DecodeTasks decodes a TasksType body; every task gets Namespace ns.
func DecodeTasks(b []byte, ns string) ([]*store.Task, error) {
	d := decoder{b: b}
	n := d.header()
	if d.err != nil {
		return nil, d.err
	}
	out := make([]*store.Task, 0, n)
	for range n {
		rec := d.raw(uint64(len(d.b)))
		payload := d.nilBytes()
		if d.err != nil {
			return nil, d.err
		}
		t := &store.Task{Namespace: ns}
		if _, err := record.Decode(rec, t); err != nil {
			return nil, fmt.Errorf("%w: task %d: %w", ErrCorrupt, len(out), err)
		}
		t.Payload = payload
		out = append(out, t)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return out, nil
}

// OutcomesEncodable reports whether every outcome can travel in
// OutcomesType exactly (a known kind, RetryAt within the UnixNano range).
func OutcomesEncodable(outs []store.Outcome) bool {
	if len(outs) > store.MaxBatch {
		return false
	}
	for _, o := range outs {
		if o.Kind < store.OutcomeSucceeded || o.Kind > store.OutcomeRelease || !timeOK(o.RetryAt) {
			return false
		}
	}
	return true
}

// AppendOutcomes appends the OutcomesType encoding of outs to dst: per
// outcome its id, lease id, kind, result, error, retry time and a flags
// byte (1: not started). The outcomes must be OutcomesEncodable. An empty
// result travels as none, as in JSON.
func AppendOutcomes(dst []byte, outs []store.Outcome) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(len(outs)))
	for i := range outs {
		o := &outs[i]
		dst = appendString(dst, o.ID)
		dst = binary.AppendUvarint(dst, o.LeaseID)
		dst = append(dst, byte(o.Kind))
		dst = binary.AppendUvarint(dst, uint64(len(o.Result)))
		dst = append(dst, o.Result...)
		dst = appendString(dst, o.Error)
		dst = appendTime(dst, o.RetryAt)
		var flags byte
		if o.NotStarted {
			flags |= 1
		}
		dst = append(dst, flags)
	}
	return dst
}

// DecodeOutcomes decodes an OutcomesType body.
func DecodeOutcomes(b []byte) ([]store.Outcome, error) {
	d := decoder{b: b}
	n := d.header()
	if d.err != nil {
		return nil, d.err
	}
	out := make([]store.Outcome, 0, n)
	for range n {
		var o store.Outcome
		o.ID = string(d.raw(uint64(len(d.b))))
		o.LeaseID = d.uvarint()
		o.Kind = store.OutcomeKind(d.byte())
		if r := d.raw(uint64(len(d.b))); len(r) > 0 {
			o.Result = append([]byte(nil), r...)
		}
		o.Error = string(d.raw(uint64(len(d.b))))
		o.RetryAt = d.time()
		flags := d.byte()
		if d.err != nil {
			return nil, d.err
		}
		if o.Kind < store.OutcomeSucceeded || o.Kind > store.OutcomeRelease {
			return nil, fmt.Errorf("%w: outcome %d: unknown kind %d", ErrCorrupt, len(out), o.Kind)
		}
		if flags&^1 != 0 {
			return nil, fmt.Errorf("%w: outcome %d: unknown flags %#x", ErrCorrupt, len(out), flags)
		}
		o.NotStarted = flags&1 != 0
		out = append(out, o)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return out, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendNilBytes writes 0 for nil and len+1 then the bytes otherwise, so
// that nil and empty stay apart (as null and "" do in JSON).
func appendNilBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// appendTime writes 0 for the zero time and UnixNano+1 (for non-negative
// values) otherwise, as a zig-zag varint: internal/record's convention.
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

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

// header reads the version and the count, which is at most store.MaxBatch
// and at most the bytes left (every item takes at least one).
func (d *decoder) header() int {
	if v := d.byte(); d.err == nil && v != Version {
		d.fail("unknown version %d", v)
	}
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > store.MaxBatch || n > uint64(len(d.b)) {
		d.fail("count %d is over %d or the bytes left", n, store.MaxBatch)
		return 0
	}
	return int(n)
}

func (d *decoder) end() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// raw reads a length-prefixed field of at most limit bytes.
func (d *decoder) raw(limit uint64) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > limit || n > uint64(len(d.b)) {
		d.fail("length %d is over the bytes left", n)
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

// nilBytes reads appendNilBytes's encoding into a fresh slice.
func (d *decoder) nilBytes() []byte {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	n--
	if n > uint64(len(d.b)) {
		d.fail("length %d is over the bytes left", n)
		return nil
	}
	out := append(make([]byte, 0, n), d.b[:n]...)
	d.b = d.b[n:]
	return out
}

func (d *decoder) time() time.Time {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return time.Time{}
	}
	d.b = d.b[n:]
	if v == 0 {
		return time.Time{}
	}
	if v > 0 {
		v--
	}
	return time.Unix(0, v).UTC()
}
