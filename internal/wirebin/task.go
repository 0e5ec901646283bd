package wirebin

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/kilnhq/kiln/internal/binenc"
	"github.com/kilnhq/kiln/store"
)

// TaskVersion is the version byte that starts each task of a TasksType
// body. It is the wire's own: the embedded store's on-disk record
// (internal/record) has its own version and may change without changing
// what goes over the wire. Version 1 lays a task out as the first disk
// record did, so servers and workers of either side of the split agree.
const TaskVersion = 1

// maxField caps each string and byte field of a task.
const maxField = 64 << 20

// task flags.
const (
	taskCancelRequested = 1 << iota
	taskHasResult
	// taskHasTrace: the trace context ends the task. Added to version 1:
	// a server sends it only to a client whose Accept says it reads it
	// (TasksTraceParam), others get such tasks in JSON.
	taskHasTrace
	// taskHasErrors: the error history ends the task (after the trace
	// context). Added to version 1: a server sends it only to a client
	// whose Accept says it reads it (TasksErrorsParam); others get the
	// tasks without their history (WithoutErrors).
	taskHasErrors
	taskFlagsKnown = taskCancelRequested | taskHasResult | taskHasTrace | taskHasErrors
)

// maxTraceParent bounds a trace context (a W3C traceparent is 55 bytes).
const maxTraceParent = 256

// appendTask appends the wire encoding of every field of t but Namespace
// and Payload: TaskVersion, a uvarint that is always 0 (reserved), then the
// fields in a fixed order.
func appendTask(dst []byte, t *store.Task) []byte {
	dst = append(dst, TaskVersion)
	dst = binary.AppendUvarint(dst, 0)
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
	dst = append(dst, wireState(t.State))
	dst = binary.AppendVarint(dst, int64(t.Attempt))
	dst = binary.AppendUvarint(dst, t.LeaseID)
	dst = binenc.AppendTime(dst, t.LeaseExpiresAt)
	dst = binenc.AppendString(dst, t.WorkerID)
	var flags byte
	if t.CancelRequested {
		flags |= taskCancelRequested
	}
	if t.Result != nil {
		flags |= taskHasResult
	}
	if t.TraceParent != "" {
		flags |= taskHasTrace
	}
	hasErrors := len(t.Errors) > 0 || t.ErrorsDropped > 0
	if hasErrors {
		flags |= taskHasErrors
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
	return dst
}

// appendErrors appends the error history (taskHasErrors): the count of
// dropped attempts, the count of entries, then per entry its attempt,
// time, worker id and error.
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

// decodeErrors reads appendErrors's encoding into t. A history flag with
// nothing in it is refused, so that every task has one encoding.
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

// decodeTask decodes appendTask's encoding into t (Namespace and Payload
// are left alone).
func decodeTask(b []byte, t *store.Task) error {
	d := binenc.NewReader(b, ErrCorrupt)
	if v := d.Byte(); d.Err() == nil && v != TaskVersion {
		return fmt.Errorf("%w: unknown task version %d", ErrCorrupt, v)
	}
	if r := d.Uvarint(); d.Err() == nil && r != 0 {
		return fmt.Errorf("%w: reserved field is %d, not 0", ErrCorrupt, r)
	}
	t.ID = d.String(maxField)
	t.Type = d.String(maxField)
	t.Queue = d.String(maxField)
	t.Priority = d.Int32()
	t.MaxRetries = d.Int32()
	t.Timeout = time.Duration(d.Varint())
	t.Deadline = d.Time()
	t.UniqueKey = d.String(maxField)
	t.UniqueTTL = time.Duration(d.Varint())
	t.Retention = time.Duration(d.Varint())
	state, stateOK := storeState(d.Byte())
	t.State = state
	t.Attempt = d.Int32()
	t.LeaseID = d.Uvarint()
	t.LeaseExpiresAt = d.Time()
	t.WorkerID = d.String(maxField)
	flags := d.Byte()
	t.CancelRequested = flags&taskCancelRequested != 0
	t.CreatedAt = d.Time()
	t.RunAt = d.Time()
	t.StartedAt = d.Time()
	t.FinishedAt = d.Time()
	t.ExpiresAt = d.Time()
	t.Result = d.Bytes(maxField)
	switch {
	case flags&taskHasResult == 0:
		t.Result = nil
	case t.Result == nil:
		t.Result = []byte{}
	}
	t.LastError = d.String(maxField)
	t.ProgressPercent = d.Int32()
	t.ProgressMessage = d.String(maxField)
	if flags&taskHasTrace != 0 {
		t.TraceParent = d.String(maxTraceParent)
	}
	if flags&taskHasErrors != 0 {
		decodeErrors(d, t)
	}
	if err := d.End(); err != nil {
		return err
	}
	if !stateOK {
		return fmt.Errorf("%w: invalid state", ErrCorrupt)
	}
	if flags&^taskFlagsKnown != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	return nil
}

// wireStates are the wire's state numbers (the index), fixed by
// TaskVersion 1 whatever store.State's values become.
var wireStates = [...]store.State{
	1: store.StateScheduled,
	2: store.StatePending,
	3: store.StateActive,
	4: store.StateRetry,
	5: store.StateSucceeded,
	6: store.StateDead,
	7: store.StateCancelled,
}

// wireState returns the wire's number of s, or 0 for a state the wire
// cannot carry.
func wireState(s store.State) byte {
	for i, w := range wireStates {
		if i > 0 && w == s {
			return byte(i)
		}
	}
	return 0
}

func storeState(b byte) (store.State, bool) {
	if b == 0 || int(b) >= len(wireStates) {
		return 0, false
	}
	return wireStates[b], true
}
