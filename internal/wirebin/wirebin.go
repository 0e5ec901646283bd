// Package wirebin is the optional compact binary encoding of the hot worker
// routes of kiln's native API (docs/api.md, "Binary encoding for workers"):
// the answer of POST .../lease (TasksType), the body of POST .../report
// (OutcomesType) and the body of POST .../tasks (EnqueueType). JSON stays
// the default and the documented contract; a client asks for these media
// types with Accept and Content-Type.
//
// Every body starts with a version byte (Version) and a uvarint count (at
// most store.MaxBatch). A task is length-prefixed: its own version byte
// (TaskVersion), then every field but Namespace and Payload (the project
// comes from the URL), then its payload. The task encoding is the wire's
// own, versioned apart from the embedded store's on-disk record
// (internal/record), so that the disk format can change without changing
// the protocol; version 1 of both happen to lay a task out alike.
//
// Decoders check every length against the bytes left, reject unknown
// versions, out-of-range values and trailing bytes with ErrCorrupt, and
// never panic, whatever the input (fuzzed by FuzzDecode).
//
// The package imports only the standard library, package store,
// internal/binenc and internal/wire; never internal/record.
package wirebin

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/internal/binenc"
	"github.com/kilnhq/kiln/store"
)

// The media types of the binary bodies.
const (
	// TasksType is the binary answer of a lease, asked for with Accept.
	TasksType = "application/x-kiln-tasks"
	// OutcomesType is the binary body of a report, sent as Content-Type.
	OutcomesType = "application/x-kiln-outcomes"
)

// TasksTraceParam is the media type parameter ("trace=1") with which a
// client's Accept says that it reads tasks' trace contexts in TasksType.
const TasksTraceParam = "trace"

// HasTrace reports whether a task of ts carries a trace context, which only
// a client that accepts TasksType with TasksTraceParam reads.
func HasTrace(ts []*store.Task) bool {
	for _, t := range ts {
		if t != nil && t.TraceParent != "" {
			return true
		}
	}
	return false
}

// TasksErrorsParam is the media type parameter ("errors=1") with which a
// client's Accept says that it reads tasks' error histories
// (store.Task.Errors) in TasksType.
const TasksErrorsParam = "errors"

// HasErrors reports whether a task of ts has an error history, which only
// a client that accepts TasksType with TasksErrorsParam reads.
func HasErrors(ts []*store.Task) bool {
	for _, t := range ts {
		if t != nil && (len(t.Errors) > 0 || t.ErrorsDropped > 0) {
			return true
		}
	}
	return false
}

// WithoutErrors returns ts with the tasks that have an error history
// replaced by shallow copies without it, for a client that does not read
// it (a worker needs no history to run a task); ts itself when no task
// has one.
func WithoutErrors(ts []*store.Task) []*store.Task {
	var out []*store.Task
	for i, t := range ts {
		if t == nil || (len(t.Errors) == 0 && t.ErrorsDropped == 0) {
			continue
		}
		if out == nil {
			out = append([]*store.Task(nil), ts...)
		}
		c := *t
		c.Errors, c.ErrorsDropped = nil, 0
		out[i] = &c
	}
	if out == nil {
		return ts
	}
	return out
}

// Version is the version byte of both formats.
const Version = 1

// ErrCorrupt is returned for a body that is not a valid encoding.
var ErrCorrupt = errors.New("wirebin: corrupt")

// maxResult is the cap on a task's result, as on its other fields.
const maxResult = maxField

// The range of times the encodings carry: UnixNano must fit, with room for
// the +1 of non-negative values (internal/binenc.AppendTime).
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
		if t == nil || wireState(t.State) == 0 || len(t.Result) > maxResult {
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
		for _, e := range t.Errors {
			if !timeOK(e.At) || !int32OK(e.Attempt) {
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
		rec = appendTask(rec[:0], t)
		dst = binary.AppendUvarint(dst, uint64(len(rec)))
		dst = append(dst, rec...)
		dst = binenc.AppendNilBytes(dst, t.Payload)
	}
	return dst
}

// DecodeTasks decodes a TasksType body; every task gets Namespace ns.
func DecodeTasks(b []byte, ns string) ([]*store.Task, error) {
	d := decoder{binenc.NewReader(b, ErrCorrupt)}
	n := d.header()
	if d.Err() != nil {
		return nil, d.Err()
	}
	out := make([]*store.Task, 0, n)
	for range n {
		rec := d.Raw(math.MaxUint64)
		payload := d.NilBytes(math.MaxUint64)
		if d.Err() != nil {
			return nil, d.Err()
		}
		t := &store.Task{Namespace: ns}
		if err := decodeTask(rec, t); err != nil {
			return nil, fmt.Errorf("%w: task %d: %w", ErrCorrupt, len(out), err)
		}
		t.Payload = payload
		out = append(out, t)
	}
	if err := d.End(); err != nil {
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
		dst = binenc.AppendString(dst, o.ID)
		dst = binary.AppendUvarint(dst, o.LeaseID)
		dst = append(dst, byte(o.Kind))
		dst = binary.AppendUvarint(dst, uint64(len(o.Result)))
		dst = append(dst, o.Result...)
		dst = binenc.AppendString(dst, o.Error)
		dst = binenc.AppendTime(dst, o.RetryAt)
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
	d := decoder{binenc.NewReader(b, ErrCorrupt)}
	n := d.header()
	if d.Err() != nil {
		return nil, d.Err()
	}
	out := make([]store.Outcome, 0, n)
	for range n {
		var o store.Outcome
		o.ID = string(d.Raw(math.MaxUint64))
		o.LeaseID = d.Uvarint()
		o.Kind = store.OutcomeKind(d.Byte())
		if r := d.Raw(math.MaxUint64); len(r) > 0 {
			o.Result = append([]byte(nil), r...)
		}
		o.Error = string(d.Raw(math.MaxUint64))
		o.RetryAt = d.Time()
		flags := d.Byte()
		if d.Err() != nil {
			return nil, d.Err()
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
	if err := d.End(); err != nil {
		return nil, err
	}
	return out, nil
}

// decoder reads wirebin bodies.
type decoder struct{ *binenc.Reader }

// header reads the version and the count, which is at most store.MaxBatch
// and at most the bytes left (every item takes at least one).
func (d decoder) header() int {
	if v := d.Byte(); d.Err() == nil && v != Version {
		d.Fail("unknown version %d", v)
	}
	n := d.Uvarint()
	if d.Err() != nil {
		return 0
	}
	if n > store.MaxBatch || n > uint64(d.Len()) { //nolint:gosec // G115: Len is never negative
		d.Fail("count %d is over %d or the bytes left", n, store.MaxBatch)
		return 0
	}
	return int(n)
}
