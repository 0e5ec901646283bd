package redisstore

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Task record fields (T:t:<id>). Times the scripts compare or compute are
// microseconds since the Unix epoch (Redis' TIME resolution); the deadline
// and the durations, which only Go reads, are nanoseconds.
//
//	id ty q p   id, type, queue, payload
//	pr mr to dl priority, max retries, timeout (ns), deadline (ns, "" none)
//	uk ut       unique key, unique TTL (ns)
//	rt rtu      retention (ns; µs for the scripts; 0 = default)
//	st a l le w state, attempt, lease id, lease expiry, worker id
//	c           "1" when cancel was requested
//	ca ra sa fa ea  created, run at, started, finished, expires (µs)
//	r e pp pm   result (absent = nil), last error, progress percent and message
//	sq m        enqueue sequence, member in the ready set (pending only)

// listFields are the fields List reads without payloads.
var listFields = []string{"id", "ty", "q", "pr", "mr", "to", "dl", "uk", "ut", "rt", "st", "a", "l", "le", "w", "c", "ca", "ra", "sa", "fa", "ea", "e", "pp", "pm", "sq"}

// allFields are listFields and the payload and result.
var allFields = append(append([]string(nil), listFields...), "p", "r")

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

func nanoTimeArg(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return itoa(t.UnixNano())
}

// parseState parses a state field; anything else is State 0 (invalid).
func parseState(s string) store.State {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0
	}
	return store.State(n)
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// setField sets the task field named name from a record value.
func setField(t *store.Task, name string, v string, present bool) {
	switch name {
	case "id":
		t.ID = v
	case "ty":
		t.Type = v
	case "q":
		t.Queue = v
	case "p":
		t.Payload = []byte(v)
	case "pr":
		t.Priority = int(atoi(v))
	case "mr":
		t.MaxRetries = int(atoi(v))
	case "to":
		t.Timeout = time.Duration(atoi(v))
	case "dl":
		if v != "" {
			t.Deadline = time.Unix(0, atoi(v)).UTC()
		}
	case "uk":
		t.UniqueKey = v
	case "ut":
		t.UniqueTTL = time.Duration(atoi(v))
	case "rt":
		t.Retention = time.Duration(atoi(v))
	case "st":
		t.State = parseState(v)
	case "a":
		t.Attempt = int(atoi(v))
	case "l":
		n, _ := strconv.ParseUint(v, 10, 64)
		t.LeaseID = n
	case "le":
		t.LeaseExpiresAt = microTime(v)
	case "w":
		t.WorkerID = v
	case "c":
		t.CancelRequested = v == "1"
	case "ca":
		t.CreatedAt = microTime(v)
	case "ra":
		t.RunAt = microTime(v)
	case "sa":
		t.StartedAt = microTime(v)
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
	case "pp":
		t.ProgressPercent = int(atoi(v))
	case "pm":
		t.ProgressMessage = v
	}
}

// decodePairs decodes a record given as HGETALL returns it from a script:
// field, value, field, value...
func decodePairs(ns string, v any) (*store.Task, error) {
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, fmt.Errorf("bad task record %T", v)
	}
	t := &store.Task{Namespace: ns}
	for i := 0; i < len(arr); i += 2 {
		name, _ := arr[i].(string)
		val, _ := arr[i+1].(string)
		setField(t, name, val, true)
	}
	if t.Payload == nil {
		t.Payload = []byte{}
	}
	return t, nil
}

// decodeFields decodes a record read with HMGET fields; nil when the task
// does not exist.
func decodeFields(ns string, fields []string, vals []any) *store.Task {
	if len(vals) == 0 || vals[0] == nil {
		return nil
	}
	t := &store.Task{Namespace: ns}
	for i, name := range fields {
		s, ok := vals[i].(string)
		setField(t, name, s, ok)
	}
	return t
}
