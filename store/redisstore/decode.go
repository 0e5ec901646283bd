package redisstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Task record fields (T:t:<id>). Times the scripts compare or compute are
// microseconds since the Unix epoch (Redis' TIME resolution). The fields the
// scripts never read are packed by Go into one field, d, written once at
// enqueue; the scripts read and write only the small fields of the task's
// state, so that every transition touches as few fields as possible.
//
//	d           the packed immutable part (encodeRecord): id, type, queue,
//	            priority, max retries, timeout, deadline, unique key and TTL,
//	            retention, and an optional flags byte (1: the unique key is
//	            released on success; 2: the W3C trace context follows, a
//	            string)
//	p           payload (absent when empty)
//	q ty        queue and type (the scripts' counts and ready sets)
//	m           the task's member in its ready set, kept for the task's life:
//	            (9-priority digit)(RunAt µs, 17 digits)(seq, 8 bytes big
//	            endian)<id>; the scripts rebuild it when RunAt changes, and
//	            the 8 bytes may carry the enqueue's mark of a common record
//	            (see scripts.go); Go reads only the first 18 bytes
//	mr rtu      max retries and retention µs (only when not 0; for the scripts)
//	uk          the unique key, only when it is released on success
//	st a        state, attempt (absent = 0)
//	l           lease id; meaningful only while active
//	le          lease expiry (µs), in records leased by earlier releases
//	            only: the lease's expiry is the task's score in T:l, which
//	            Get and List read for an active task without le
//	sw          "<started µs>|<worker id>" of the last lease
//	c           "1" when cancel was requested
//	ca          created (µs); absent while m's RunAt is the creation time
//	            (a task enqueued to run at once, until its RunAt changes:
//	            the scripts that change it write ca first)
//	ra          run at (µs); absent when equal to ca
//	fa          finished (µs)
//	ea          expires (µs), in records finished by earlier releases
//	            only: ExpiresAt is fa plus the retention (rtu µs when the
//	            task has one, else store.RetentionDefault), as the scripts
//	            compute it for T:x
//	r e pp pm   result (absent = nil), last error, progress percent and message
//	dp fl       "1" when held tasks wait for it; the id of its flow (see flow.go)
//	fo          of a released held task of a flow: "<succeeded> <without
//	            a result>", the tasks it waited for counted as each
//	            finished (store.Task.Upstream; see flow_release)
//	eh en ed    the error history (store.Task.Errors), absent until the first
//	            failure: eh is its entries, oldest first, each
//	            "<length>:<attempt> <failed µs> <worker id length> <worker
//	            id><error>" (length counts the bytes after the colon); en
//	            the number of entries (at most store.MaxAttemptErrors); ed
//	            the number of older ones dropped (absent = 0)

// listFields are the fields List reads without payloads.
// The field fl (the task's flow) is not decoded: read uses it to report a
// finished member's ExpiresAt as its flow's expiry when that is later.
var listFields = []string{"d", "st", "a", "l", "le", "sw", "c", "ca", "ra", "fa", "ea", "e", "pp", "pm", "eh", "ed", "fl", "m"}

// allFields are listFields and the payload and result.
var allFields = append(append([]string(nil), listFields...), "p", "r")

// outcomeFields are the fields Get reads with GetParams.Outcomes: the
// record (id, type, queue, priority), the state, the last error and the
// result.
var outcomeFields = []string{"d", "st", "e", "r"}

// recordVersion starts field d; a record of another version is corrupt.
const recordVersion = 1

// encodeRecord appends field d of a task to dst.
func encodeRecord(dst []byte, in *store.TaskInput, queue string) []byte {
	dst = append(dst, recordVersion)
	dst = appendString(dst, in.ID)
	dst = appendString(dst, in.Type)
	dst = appendString(dst, queue)
	dst = binary.AppendVarint(dst, int64(in.Priority))
	dst = binary.AppendVarint(dst, int64(in.MaxRetries))
	dst = binary.AppendVarint(dst, int64(in.Timeout))
	var dl int64
	if !in.Deadline.IsZero() {
		dl = in.Deadline.UnixNano()
	}
	dst = binary.AppendVarint(dst, dl)
	dst = appendString(dst, in.UniqueKey)
	dst = binary.AppendVarint(dst, int64(in.UniqueTTL))
	dst = binary.AppendVarint(dst, int64(in.Retention))
	var flags byte
	if in.UniqueUntilSuccess {
		flags |= recordUniqueUntilSuccess
	}
	if in.TraceParent != "" {
		flags |= recordTraceParent
	}
	if flags != 0 {
		dst = append(dst, flags) // an optional flags byte
	}
	if in.TraceParent != "" {
		dst = appendString(dst, in.TraceParent)
	}
	return dst
}

// recordUniqueUntilSuccess is a bit of the optional flags byte that ends
// field d: the task's unique key is released when it succeeds.
const recordUniqueUntilSuccess = 1

// recordTraceParent is a bit of the flags byte: the task's trace context
// (a string) follows it.
const recordTraceParent = 2

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decodeRecord fills t's immutable fields from field d.
func decodeRecord(d string, t *store.Task) error {
	r := recordReader{s: d}
	if v := r.byte(); v != recordVersion {
		return fmt.Errorf("task record of version %d (want %d)", v, recordVersion)
	}
	t.ID = r.string()
	t.Type = r.string()
	t.Queue = r.string()
	t.Priority = int(r.varint())
	t.MaxRetries = int(r.varint())
	t.Timeout = time.Duration(r.varint())
	if dl := r.varint(); dl != 0 {
		t.Deadline = time.Unix(0, dl).UTC()
	}
	t.UniqueKey = r.string()
	t.UniqueTTL = time.Duration(r.varint())
	t.Retention = time.Duration(r.varint())
	if len(r.s) > 0 {
		flags := r.byte()
		t.UniqueUntilSuccess = flags&recordUniqueUntilSuccess != 0
		if flags&recordTraceParent != 0 {
			t.TraceParent = r.string()
		}
		if flags&^(recordUniqueUntilSuccess|recordTraceParent) != 0 {
			r.bad = true
		}
	}
	if r.bad || len(r.s) != 0 {
		return errors.New("corrupt task record")
	}
	return nil
}

type recordReader struct {
	s   string
	bad bool
}

func (r *recordReader) byte() byte {
	if len(r.s) == 0 {
		r.bad = true
		return 0
	}
	b := r.s[0]
	r.s = r.s[1:]
	return b
}

func (r *recordReader) varint() int64 {
	v, n := binary.Varint([]byte(r.s[:min(len(r.s), binary.MaxVarintLen64)]))
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.s = r.s[n:]
	return v
}

func (r *recordReader) string() string {
	n, k := binary.Uvarint([]byte(r.s[:min(len(r.s), binary.MaxVarintLen64)]))
	if k <= 0 || n > store.MaxBatch<<20 {
		r.bad = true
		return ""
	}
	end := k + int(n) // n is small: no overflow
	if end > len(r.s) {
		r.bad = true
		return ""
	}
	v := r.s[k:end]
	r.s = r.s[end:]
	return v
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// microTime turns a µs field into a time; empty or 0 is the zero time.
func microTime(s string) time.Time {
	if s == "" || s == "0" {
		return time.Time{}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMicro(n).UTC()
}

// microCeil is t in µs, rounded up so that a due time is never early; 0 for
// the zero time.
func microCeil(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	us := t.UnixMicro()
	if t.Nanosecond()%1000 != 0 && t.UnixNano() > 0 {
		us++
	}
	return us
}

// parseState parses a state field; anything else is State 0 (invalid).
func parseState(s string) store.State {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0
	}
	return store.State(n)
}

// atoi parses a number field; empty (absent) or malformed is 0. An absent
// field is the common case, and strconv's error for it allocates.
func atoi(s string) int64 {
	if s == "" {
		return 0
	}
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// setField sets the task field named name from a record value.
func setField(t *store.Task, name string, v string, present bool) error {
	switch name {
	case "d":
		if !present {
			return errors.New("task record without field d")
		}
		return decodeRecord(v, t)
	case "p":
		t.Payload = []byte(v)
	case "st":
		t.State = parseState(v)
	case "a":
		t.Attempt = int(atoi(v))
	case "l":
		n, _ := strconv.ParseUint(v, 10, 64)
		t.LeaseID = n
	case "le":
		t.LeaseExpiresAt = microTime(v)
	case "sw":
		sa, w, _ := strings.Cut(v, "|")
		t.StartedAt = microTime(sa)
		t.WorkerID = w
	case "c":
		t.CancelRequested = v == "1"
	case "ca":
		t.CreatedAt = microTime(v)
	case "ra":
		t.RunAt = microTime(v)
	case "fa":
		t.FinishedAt = microTime(v)
	case "ea":
		t.ExpiresAt = microTime(v)
	case "r":
		if present {
			t.Result = []byte(v)
		}
	case "e":
		t.LastError = v
	case "eh":
		if present {
			errs, err := decodeErrors(v)
			if err != nil {
				return err
			}
			t.Errors = errs
		}
	case "ed":
		t.ErrorsDropped = int(atoi(v))
	case "pp":
		t.ProgressPercent = int(atoi(v))
	case "pm":
		t.ProgressMessage = v
	case "fo":
		ok, nr, _ := strings.Cut(v, " ")
		t.Upstream = &store.Upstream{OK: int(atoi(ok)), NoResult: int(atoi(nr))}
	}
	return nil
}

// memberCreated is the creation time of a task without field ca: the RunAt
// in its ready-set member m (9-priority digit, then 17 digits of µs).
func memberCreated(m string) time.Time {
	if len(m) < 18 {
		return time.Time{}
	}
	return microTime(strings.TrimLeft(m[1:18], "0"))
}

// finishDecode applies the rules of the fields' absence: CreatedAt absent
// is the RunAt in member m, RunAt absent is CreatedAt, ExpiresAt absent is
// FinishedAt plus the retention, and the lease fields count only while the
// task is active.
func finishDecode(t *store.Task, caPresent, raPresent bool, m string) {
	if !caPresent {
		t.CreatedAt = memberCreated(m)
	}
	if !raPresent {
		t.RunAt = t.CreatedAt
	}
	if t.State != store.StateActive {
		t.LeaseID = 0
		t.LeaseExpiresAt = time.Time{}
	}
	if t.ExpiresAt.IsZero() && t.State.Terminal() && !t.FinishedAt.IsZero() {
		t.ExpiresAt = t.FinishedAt.Add(retention(t.Retention))
	}
}

// retention is how long after it finishes a task of retention r is kept, as
// the scripts count it: r in whole µs (the field rtu), or
// store.RetentionDefault when r is 0.
func retention(r time.Duration) time.Duration {
	if r == 0 {
		return store.RetentionDefault
	}
	return r.Truncate(time.Microsecond)
}

// noteFields is what decodePairs tells Lease for the task's lease note
// (see hints.go): whether the record has a field the note cannot carry
// (extra), and its workflow fields dp and fl, which the note carries.
type noteFields struct {
	extra                bool
	dp, fl, rtu          string
	hasDP, hasFL, hasRTU bool
}

// decodePairs decodes a record given as HGETALL returns it from a script:
// field, value, field, value...
func decodePairs(ns string, v any) (t *store.Task, nf noteFields, err error) {
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, nf, fmt.Errorf("bad task record %T", v)
	}
	t = &store.Task{Namespace: ns}
	hasD, hasCA, hasRA := false, false, false
	var m string
	for i := 0; i < len(arr); i += 2 {
		name, _ := arr[i].(string)
		val, _ := arr[i+1].(string)
		if err := setField(t, name, val, true); err != nil {
			return nil, nf, err
		}
		switch name {
		case "d":
			hasD = true
		case "ca":
			hasCA = true
		case "ra":
			hasRA = true
		case "m":
			m = val
		case "uk":
			nf.extra = true
		case "rtu":
			nf.rtu, nf.hasRTU = val, true
		case "dp":
			nf.dp, nf.hasDP = val, true
		case "fl":
			nf.fl, nf.hasFL = val, true
		}
	}
	if !hasD {
		return nil, nf, errors.New("task record without field d")
	}
	finishDecode(t, hasCA, hasRA, m)
	if t.Payload == nil {
		t.Payload = []byte{}
	}
	return t, nf, nil
}

// The default record: field d of a task enqueued with no settings but
// its id, type, queue and priority, and kiln's default max retries and
// timeout (MaxRetriesDefault and TimeoutDefault of package kiln). The
// enqueue marks its ready-set member so (the mark's bit 4, see the key list
// in scripts.go), and the lease, which finds the id and the priority in
// the member and the queue and the type in the ready set's key, reads
// nothing of such a record but its payload (decodeDefault). These two
// values are part of the stored format: a member marked so by a kiln of
// other values would be read with these.
const (
	defaultRecordMaxRetries = 25
	defaultRecordTimeout    = 30 * time.Minute
)

// isDefaultRecord says whether in's field d is the default record.
func isDefaultRecord(in *store.TaskInput) bool {
	return in.MaxRetries == defaultRecordMaxRetries && in.Timeout == defaultRecordTimeout &&
		in.Deadline.IsZero() && in.UniqueKey == "" && in.UniqueTTL == 0 && !in.UniqueUntilSuccess &&
		in.Retention == 0 && in.TraceParent == "" && in.RunAt.IsZero() &&
		in.Priority >= 0 && in.Priority <= store.MaxPriority
}

// decodeDefault makes the task of a default record from its ready-set
// member m, its queue and type, and its payload (hasP false: none), as
// decodeLeased makes it from the record.
func decodeDefault(ns, m, q, ty, p string, hasP bool) (*store.Task, error) {
	if len(m) <= memberIDStart || m[0] < '0' || m[0] > '0'+store.MaxPriority || q == "" || ty == "" {
		return nil, fmt.Errorf("bad member %q of a default record (queue %q, type %q)", m, q, ty)
	}
	t := &store.Task{
		Namespace: ns, ID: m[memberIDStart:], Type: ty, Queue: q,
		Priority: store.MaxPriority - int(m[0]-'0'), MaxRetries: defaultRecordMaxRetries, Timeout: defaultRecordTimeout,
		CreatedAt: memberCreated(m), Payload: []byte{},
	}
	t.RunAt = t.CreatedAt
	if hasP {
		t.Payload = []byte(p)
	}
	return t, nil
}

// memberIDStart is where the task id starts in a ready-set member.
const memberIDStart = 26

// leaseStride is the most values per task in the lease script's reply
// (see leaseScript); decodeLeased takes them all, nil where the script
// returned fewer.
const leaseStride = 4

// decodeLeased decodes a task as the lease script returns it: the fields
// d, m, p and a of a record that has no others but q, ty, st, mr (all in
// d), the lease fields l, le, sw (which Lease sets) and the workflow
// fields rtu, dp, fl (when it has one of those, the fourth value is the
// list a, rtu, dp, fl), or the whole record as HGETALL gives it followed
// by three nils.
func decodeLeased(ns string, v []any) (*store.Task, noteFields, error) {
	d, ok := v[0].(string)
	if !ok {
		return decodePairs(ns, v[0])
	}
	t := &store.Task{Namespace: ns}
	if err := decodeRecord(d, t); err != nil {
		return nil, noteFields{}, err
	}
	m, _ := v[1].(string)
	t.CreatedAt = memberCreated(m)
	t.RunAt = t.CreatedAt
	t.Payload = []byte{}
	if p, ok := v[2].(string); ok {
		t.Payload = []byte(p)
	}
	var nf noteFields
	a := v[3]
	if x, ok := a.([]any); ok {
		if len(x) != 4 {
			return nil, nf, fmt.Errorf("bad lease reply of %d workflow values", len(x))
		}
		a = x[0]
		nf.rtu, nf.hasRTU = x[1].(string)
		nf.dp, nf.hasDP = x[2].(string)
		nf.fl, nf.hasFL = x[3].(string)
	}
	if a, ok := a.(string); ok {
		t.Attempt = int(atoi(a))
	}
	return t, nf, nil
}

// decodeFields decodes a record read with HMGET fields (fields[0] is "d");
// nil when the task does not exist.
func decodeFields(ns string, fields []string, vals []any) (*store.Task, error) {
	if len(vals) == 0 || vals[0] == nil {
		return nil, nil
	}
	t := &store.Task{Namespace: ns}
	hasCA, hasRA := false, false
	var m string
	for i, name := range fields {
		s, ok := vals[i].(string)
		if err := setField(t, name, s, ok); err != nil {
			return nil, err
		}
		switch name {
		case "ca":
			hasCA = ok
		case "ra":
			hasRA = ok
		case "m":
			m = s
		}
	}
	finishDecode(t, hasCA, hasRA, m)
	return t, nil
}

// decodeErrors decodes field eh, the error history the scripts append to
// (add_err in scripts.go).
func decodeErrors(v string) ([]store.AttemptError, error) {
	var out []store.AttemptError
	for v != "" {
		ls, rest, ok := strings.Cut(v, ":")
		n, err := strconv.Atoi(ls)
		if !ok || err != nil || n < 0 || n > len(rest) {
			return nil, fmt.Errorf("bad error history entry %d", len(out))
		}
		body := rest[:n]
		v = rest[n:]
		as, body, ok1 := strings.Cut(body, " ")
		at, body, ok2 := strings.Cut(body, " ")
		wl, body, ok3 := strings.Cut(body, " ")
		wn, err := strconv.Atoi(wl)
		if !ok1 || !ok2 || !ok3 || err != nil || wn < 0 || wn > len(body) {
			return nil, fmt.Errorf("bad error history entry %d", len(out))
		}
		out = append(out, store.AttemptError{
			Attempt: int(atoi(as)), At: microTime(at), WorkerID: body[:wn], Error: body[wn:],
		})
	}
	return out, nil
}
