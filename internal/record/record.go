// Package record is the compact, versioned binary encoding of a task record
// that the embedded store keeps on disk. It is a disk format only: the
// binary worker encoding of the HTTP API (internal/wirebin) has its own
// codec and version, so that this one can change without changing the
// protocol. It encodes every field of store.Task except Namespace, which
// stores keep in their keys, and the Payload, which a record holds only
// when its writer asks (flag 32; see Append): a store keeps a large payload
// in a value of its own, written once, rather than in every record of the
// task.
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
	"slices"
	"time"

	"github.com/kilnhq/kiln/internal/binenc"
	"github.com/kilnhq/kiln/store"
)

// Version is the encoding version written by Encode. Flags added to
// version 1 since (8: trace context, 16: error history, 32: the payload)
// leave a record without them byte for byte as it was; a reader older than
// a flag refuses a record that has it.
const Version = 1

// ErrCorrupt is returned for input that is not a valid record.
var ErrCorrupt = errors.New("record: corrupt")

const maxField = 64 << 20 // no single field is larger than 64 MiB

// maxTraceParent bounds the trace context (a W3C traceparent is 55 bytes).
const maxTraceParent = 256

// Encode appends the encoding of t (and its store sequence number) to dst,
// with t's payload in it when payload is true. It grows dst at most once:
// to the record's exact size when it has not the room.
func Encode(dst []byte, seq uint64, t *store.Task, payload bool) []byte {
	return Append(slices.Grow(dst, Size(seq, t, payload)), seq, t, payload)
}

// Append appends the encoding of t (and its store sequence number) to dst
// as Encode does, without computing its size first: for a dst that has
// room for Size(seq, t, payload) more bytes already (else it grows as
// append does). With payload, the record ends with t.Payload (flag 32);
// Decode then returns it, and a nil Payload when the record has none.
func Append(dst []byte, seq uint64, t *store.Task, payload bool) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, seq)
	dst = binenc.AppendString(dst, t.ID)
	dst = binenc.AppendString(dst, t.Type)
	dst = binenc.AppendString(dst, t.Queue)
	dst = binary.AppendVarint(dst, int64(t.Priority))
	dst = binary.AppendVarint(dst, int64(t.MaxRetries))
	dst = binary.AppendVarint(dst, int64(t.Timeout))
	dst = binenc.AppendTime(dst, t.Deadline)
	dst = binenc.AppendString(dst, t.UniqueKey)
	dst = binary.AppendVarint(dst, int64(t.UniqueTTL))
	dst = binary.AppendVarint(dst, int64(t.Retention))
	dst = append(dst, byte(t.State))
	dst = binary.AppendVarint(dst, int64(t.Attempt))
	dst = binary.AppendUvarint(dst, t.LeaseID)
	dst = binenc.AppendTime(dst, t.LeaseExpiresAt)
	dst = binenc.AppendString(dst, t.WorkerID)
	var flags byte
	if t.CancelRequested {
		flags |= 1
	}
	if t.Result != nil {
		flags |= 2
	}
	if t.UniqueUntilSuccess {
		flags |= 4
	}
	if t.TraceParent != "" {
		flags |= 8 // added in version 1: the trace context ends the record
	}
	hasErrors := len(t.Errors) > 0 || t.ErrorsDropped > 0
	if hasErrors {
		flags |= 16 // added in version 1: the error history follows
	}
	if payload {
		flags |= 32 // added in version 1: the payload ends the record
	}
	dst = append(dst, flags)
	dst = binenc.AppendTime(dst, t.CreatedAt)
	dst = binenc.AppendTime(dst, t.RunAt)
	dst = binenc.AppendTime(dst, t.StartedAt)
	dst = binenc.AppendTime(dst, t.FinishedAt)
	dst = binenc.AppendTime(dst, t.ExpiresAt)
	dst = binenc.AppendBytes(dst, t.Result)
	dst = binenc.AppendString(dst, t.LastError)
	dst = binary.AppendVarint(dst, int64(t.ProgressPercent))
	dst = binenc.AppendString(dst, t.ProgressMessage)
	if t.TraceParent != "" {
		dst = binenc.AppendString(dst, t.TraceParent)
	}
	if hasErrors {
		dst = appendErrors(dst, t)
	}
	if payload {
		dst = binenc.AppendBytes(dst, t.Payload)
	}
	return dst
}

// Size returns the number of bytes Encode appends for t, seq and payload.
func Size(seq uint64, t *store.Task, payload bool) int {
	n := 1 + binenc.UvarintLen(seq) +
		binenc.StringLen(t.ID) + binenc.StringLen(t.Type) + binenc.StringLen(t.Queue) +
		binenc.VarintLen(int64(t.Priority)) + binenc.VarintLen(int64(t.MaxRetries)) + binenc.VarintLen(int64(t.Timeout)) +
		binenc.TimeLen(t.Deadline) + binenc.StringLen(t.UniqueKey) +
		binenc.VarintLen(int64(t.UniqueTTL)) + binenc.VarintLen(int64(t.Retention)) +
		1 + binenc.VarintLen(int64(t.Attempt)) + binenc.UvarintLen(t.LeaseID) +
		binenc.TimeLen(t.LeaseExpiresAt) + binenc.StringLen(t.WorkerID) +
		1 + binenc.TimeLen(t.CreatedAt) + binenc.TimeLen(t.RunAt) + binenc.TimeLen(t.StartedAt) +
		binenc.TimeLen(t.FinishedAt) + binenc.TimeLen(t.ExpiresAt) +
		binenc.UvarintLen(uint64(len(t.Result))) + len(t.Result) +
		binenc.StringLen(t.LastError) + binenc.VarintLen(int64(t.ProgressPercent)) + binenc.StringLen(t.ProgressMessage)
	if t.TraceParent != "" {
		n += binenc.StringLen(t.TraceParent)
	}
	if len(t.Errors) > 0 || t.ErrorsDropped > 0 {
		n += binenc.UvarintLen(uint64(max(t.ErrorsDropped, 0))) + binenc.UvarintLen(uint64(len(t.Errors)))
		for i := range t.Errors {
			e := &t.Errors[i]
			n += binenc.VarintLen(int64(e.Attempt)) + binenc.TimeLen(e.At) + binenc.StringLen(e.WorkerID) + binenc.StringLen(e.Error)
		}
	}
	if payload {
		n += binenc.UvarintLen(uint64(len(t.Payload))) + len(t.Payload)
	}
	return n
}

// appendErrors appends the error history (flag 16): the count of dropped
// attempts, the count of entries, then per entry its attempt, time,
// worker id and error.
func appendErrors(dst []byte, t *store.Task) []byte {
	dst = binary.AppendUvarint(dst, uint64(max(t.ErrorsDropped, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(t.Errors)))
	for i := range t.Errors {
		e := &t.Errors[i]
		dst = binary.AppendVarint(dst, int64(e.Attempt))
		dst = binenc.AppendTime(dst, e.At)
		dst = binenc.AppendString(dst, e.WorkerID)
		dst = binenc.AppendString(dst, e.Error)
	}
	return dst
}

// same returns s when b holds the same bytes, else a new string of b.
func same(b []byte, s string) string {
	if string(b) == s {
		return s
	}
	return string(b)
}

// decodeErrors reads appendErrors's encoding into t. A history flag with
// nothing in it is refused, so that every record has one encoding.
func decodeErrors(d *binenc.Reader, t *store.Task) {
	dropped := d.Uvarint()
	n := d.Uvarint()
	if d.Err() != nil {
		return
	}
	// Every entry takes at least 4 bytes: a bound before allocating.
	if dropped > math.MaxInt32 || n > uint64(d.Len()/4) || (n == 0 && dropped == 0) { //nolint:gosec // G115: Len is never negative
		d.Fail("error history of %d entries (%d dropped)", n, dropped)
		return
	}
	t.ErrorsDropped = int(dropped)
	if n == 0 {
		return
	}
	t.Errors = make([]store.AttemptError, n)
	for i := range t.Errors {
		e := &t.Errors[i]
		e.Attempt = d.Int32()
		e.At = d.Time()
		e.WorkerID = d.String(maxField)
		e.Error = d.String(maxField)
	}
}

// Decode decodes a record into t (Namespace is left alone) and returns its
// sequence number. t.Payload is the record's payload (never nil, if only
// empty) when it holds one, else nil: the payload is then stored apart. The type, queue and worker id keep the
// strings t has when they are equal, without allocating: a caller decoding
// many records of one queue passes the queue and type of the last one.
func Decode(b []byte, t *store.Task) (uint64, error) {
	d := binenc.NewReader(b, ErrCorrupt)
	if v := d.Byte(); v != Version {
		if err := d.Err(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: unknown version %d", ErrCorrupt, v)
	}
	seq := d.Uvarint()
	t.ID = d.String(maxField)
	t.Type = same(d.Raw(maxField), t.Type)
	t.Queue = same(d.Raw(maxField), t.Queue)
	t.Priority = d.Int32()
	t.MaxRetries = d.Int32()
	t.Timeout = time.Duration(d.Varint())
	t.Deadline = d.Time()
	t.UniqueKey = d.String(maxField)
	t.UniqueTTL = time.Duration(d.Varint())
	t.Retention = time.Duration(d.Varint())
	t.State = store.State(d.Byte())
	t.Attempt = d.Int32()
	t.LeaseID = d.Uvarint()
	t.LeaseExpiresAt = d.Time()
	t.WorkerID = same(d.Raw(maxField), t.WorkerID)
	flags := d.Byte()
	t.CancelRequested = flags&1 != 0
	t.UniqueUntilSuccess = flags&4 != 0
	t.CreatedAt = d.Time()
	t.RunAt = d.Time()
	t.StartedAt = d.Time()
	t.FinishedAt = d.Time()
	t.ExpiresAt = d.Time()
	t.Result = d.Bytes(maxField)
	if flags&2 != 0 && t.Result == nil {
		t.Result = []byte{}
	} else if flags&2 == 0 {
		t.Result = nil
	}
	t.LastError = d.String(maxField)
	t.ProgressPercent = d.Int32()
	t.ProgressMessage = d.String(maxField)
	t.TraceParent = ""
	if flags&8 != 0 {
		t.TraceParent = d.String(maxTraceParent)
	}
	t.Errors, t.ErrorsDropped = nil, 0
	if flags&16 != 0 {
		decodeErrors(d, t)
	}
	t.Payload = nil
	if flags&32 != 0 {
		if t.Payload = d.Bytes(maxField); t.Payload == nil {
			t.Payload = []byte{}
		}
	}
	if err := d.End(); err != nil {
		return 0, err
	}
	if !t.State.Valid() {
		return 0, fmt.Errorf("%w: invalid state %d", ErrCorrupt, t.State)
	}
	if flags&^63 != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	return seq, nil
}
