package wirebin

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/internal/binenc"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// EnqueueType is the binary body of an enqueue, sent as Content-Type to a
// server that lists it in the Accept-Post header of its enqueue answers.
const EnqueueType = "application/x-kiln-enqueue"

// The presence flags of a task of an enqueue.
const (
	hasOptions = 1 << iota
	hasMaxRetries
	hasTimeout
	hasProcessAt
	hasDeadline
	uniqueUntilSuccess // a flag with no value: the option is true
	hasTraceParent     // the trace context ends the options
	allFlags           = hasOptions | hasMaxRetries | hasTimeout | hasProcessAt | hasDeadline | uniqueUntilSuccess | hasTraceParent
)

func ptrTimeOK(t *time.Time) bool { return t == nil || (!t.Before(minTime) && !t.After(maxTime)) }

// EnqueueEncodable reports whether every task can travel in EnqueueType
// exactly (times within the UnixNano range).
func EnqueueEncodable(ts []wire.TaskRequest) bool {
	if len(ts) > store.MaxBatch {
		return false
	}
	for i := range ts {
		if o := ts[i].Options; o != nil && (!ptrTimeOK(o.ProcessAt) || !ptrTimeOK(o.Deadline)) {
			return false
		}
	}
	return true
}

// AppendEnqueue appends the EnqueueType encoding of ts to dst: per task its
// type, payload, a flags byte saying which options are present and then
// those options, in the order of wire.TaskOptions. An empty payload travels
// as none, as in JSON. The tasks must be EnqueueEncodable.
func AppendEnqueue(dst []byte, ts []wire.TaskRequest) []byte {
	dst = append(dst, Version)
	dst = binary.AppendUvarint(dst, uint64(len(ts)))
	for i := range ts {
		t := &ts[i]
		dst = binenc.AppendString(dst, t.Type)
		dst = binary.AppendUvarint(dst, uint64(len(t.Payload)))
		dst = append(dst, t.Payload...)
		o := t.Options
		if o == nil {
			dst = append(dst, 0)
			continue
		}
		flags := byte(hasOptions)
		if o.MaxRetries != nil {
			flags |= hasMaxRetries
		}
		if o.TimeoutMS != nil {
			flags |= hasTimeout
		}
		if o.ProcessAt != nil {
			flags |= hasProcessAt
		}
		if o.Deadline != nil {
			flags |= hasDeadline
		}
		if o.UniqueUntilSuccess {
			flags |= uniqueUntilSuccess
		}
		if o.TraceParent != "" {
			flags |= hasTraceParent
		}
		dst = append(dst, flags)
		dst = binenc.AppendString(dst, o.ID)
		dst = binenc.AppendString(dst, o.Queue)
		dst = binary.AppendVarint(dst, int64(o.Priority))
		if o.ProcessAt != nil {
			dst = binary.AppendVarint(dst, o.ProcessAt.UnixNano())
		}
		dst = binary.AppendVarint(dst, o.ProcessInMS)
		if o.MaxRetries != nil {
			dst = binary.AppendVarint(dst, int64(*o.MaxRetries))
		}
		if o.TimeoutMS != nil {
			dst = binary.AppendVarint(dst, *o.TimeoutMS)
		}
		if o.Deadline != nil {
			dst = binary.AppendVarint(dst, o.Deadline.UnixNano())
		}
		dst = binenc.AppendString(dst, o.UniqueKey)
		dst = binary.AppendVarint(dst, o.UniqueTTLMS)
		dst = binary.AppendVarint(dst, o.RetentionMS)
		if o.TraceParent != "" {
			dst = binenc.AppendString(dst, o.TraceParent)
		}
	}
	return dst
}

// DecodeEnqueue decodes an EnqueueType body.
func DecodeEnqueue(b []byte) ([]wire.TaskRequest, error) {
	d := decoder{binenc.NewReader(b, ErrCorrupt)}
	n := d.header()
	if d.Err() != nil {
		return nil, d.Err()
	}
	out := make([]wire.TaskRequest, 0, n)
	for range n {
		var t wire.TaskRequest
		t.Type = string(d.Raw(math.MaxUint64))
		if p := d.Raw(math.MaxUint64); len(p) > 0 {
			t.Payload = append([]byte(nil), p...)
		}
		flags := d.Byte()
		if d.Err() == nil && (flags&^allFlags != 0 || (flags != 0 && flags&hasOptions == 0)) {
			return nil, fmt.Errorf("%w: task %d: unknown flags %#x", ErrCorrupt, len(out), flags)
		}
		if flags&hasOptions != 0 {
			o := &wire.TaskOptions{}
			o.ID = string(d.Raw(math.MaxUint64))
			o.Queue = string(d.Raw(math.MaxUint64))
			o.Priority = int(d.Varint())
			if flags&hasProcessAt != 0 {
				at := time.Unix(0, d.Varint()).UTC()
				o.ProcessAt = &at
			}
			o.ProcessInMS = d.Varint()
			if flags&hasMaxRetries != 0 {
				v := int(d.Varint())
				o.MaxRetries = &v
			}
			if flags&hasTimeout != 0 {
				v := d.Varint()
				o.TimeoutMS = &v
			}
			if flags&hasDeadline != 0 {
				at := time.Unix(0, d.Varint()).UTC()
				o.Deadline = &at
			}
			o.UniqueKey = string(d.Raw(math.MaxUint64))
			o.UniqueTTLMS = d.Varint()
			o.RetentionMS = d.Varint()
			o.UniqueUntilSuccess = flags&uniqueUntilSuccess != 0
			if flags&hasTraceParent != 0 {
				o.TraceParent = string(d.Raw(maxTraceParent))
			}
			t.Options = o
		}
		if d.Err() != nil {
			return nil, d.Err()
		}
		out = append(out, t)
	}
	if err := d.End(); err != nil {
		return nil, err
	}
	return out, nil
}
