package store

import (
	"time"
)

// Limits bounds what a store accepts. The zero value means the defaults.
type Limits struct {
	// MaxPayloadBytes caps payloads and results; default MaxPayloadBytesDefault.
	MaxPayloadBytes int
	// MaxRetries caps TaskInput.MaxRetries; default MaxRetriesLimitDefault.
	MaxRetries int
	// MaxTimeout caps TaskInput.Timeout; default MaxTimeoutDefault.
	MaxTimeout time.Duration
	// MaxScheduleAhead caps how far in the future RunAt and Deadline may be;
	// default MaxScheduleAheadDefault.
	MaxScheduleAhead time.Duration
	// MaxRetention caps TaskInput.Retention; default MaxRetentionDefault.
	MaxRetention time.Duration
}

// Defaults of Limits and of task records.
const (
	MaxPayloadBytesDefault  = 1 << 20
	MaxRetriesLimitDefault  = 1000
	MaxTimeoutDefault       = 24 * time.Hour
	MaxScheduleAheadDefault = 366 * 24 * time.Hour
	MaxRetentionDefault     = 366 * 24 * time.Hour
	// RetentionDefault is how long terminal tasks are kept when the task
	// names no retention.
	RetentionDefault = 24 * time.Hour
	// MinUniqueTTL and MaxUniqueTTL bound TaskInput.UniqueTTL.
	MinUniqueTTL = time.Second
	MaxUniqueTTL = 30 * 24 * time.Hour
	// MaxPriority is the highest task priority.
	MaxPriority = 9
	// MaxNameLen is the longest type, queue, namespace, unique key or id.
	MaxNameLen = 255
	// MaxListLimit is the largest page List returns.
	MaxListLimit = 1000
	// MaxListScan is the most tasks one List call examines: a filter that
	// matches few tasks gets a short (even empty) page with a NextCursor
	// instead of a scan of the whole namespace in one call.
	MaxListScan = 10000
	// MaxBatch is the largest batch a store call accepts.
	MaxBatch = 10000
)

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = MaxPayloadBytesDefault
	}
	if l.MaxRetries <= 0 {
		l.MaxRetries = MaxRetriesLimitDefault
	}
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = MaxTimeoutDefault
	}
	if l.MaxScheduleAhead <= 0 {
		l.MaxScheduleAhead = MaxScheduleAheadDefault
	}
	if l.MaxRetention <= 0 {
		l.MaxRetention = MaxRetentionDefault
	}
	return l
}

// ValidName reports whether s is a valid type, queue, namespace or id: 1 to
// MaxNameLen bytes of [A-Za-z0-9._:-], not "." or "..".
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte[s[i]] {
			return false
		}
	}
	return true
}

// nameByte says which bytes a name may hold: [A-Za-z0-9._:-] (one lookup
// per byte; every task's id, type and queue are checked on each enqueue).
var nameByte = func() (t [256]bool) {
	for c := range t {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			t[c] = true
		case c == '.', c == '_', c == ':', c == '-':
			t[c] = true
		}
	}
	return t
}()

// CheckName returns a ValidationError for field unless name is valid.
func CheckName(field, name string) error {
	if !ValidName(name) {
		if len(name) > MaxNameLen {
			return invalid(ErrInvalidName, field, "longer than %d bytes", MaxNameLen)
		}
		return invalid(ErrInvalidName, field, "%q must be 1-%d characters of [A-Za-z0-9._:-]", truncate(name), MaxNameLen)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Validate checks in against l (after WithDefaults) at time now and returns
// every problem joined, or nil. Empty Queue is valid (it means DefaultQueue).
func (in *TaskInput) Validate(l Limits, now time.Time) error {
	l = l.WithDefaults()
	var errs []error
	if err := CheckName("id", in.ID); err != nil {
		errs = append(errs, err)
	}
	if err := CheckName("type", in.Type); err != nil {
		errs = append(errs, err)
	}
	if in.Queue != "" {
		if err := CheckName("queue", in.Queue); err != nil {
			errs = append(errs, err)
		}
	}
	if len(in.Payload) > l.MaxPayloadBytes {
		errs = append(errs, invalid(ErrPayloadTooLarge, "payload", "%d bytes is more than the cap of %d", len(in.Payload), l.MaxPayloadBytes))
	}
	if in.Priority < 0 || in.Priority > MaxPriority {
		errs = append(errs, invalid(ErrInvalidOption, "priority", "%d is outside 0..%d", in.Priority, MaxPriority))
	}
	if in.MaxRetries < 0 || in.MaxRetries > l.MaxRetries {
		errs = append(errs, invalid(ErrInvalidOption, "max_retries", "%d is outside 0..%d", in.MaxRetries, l.MaxRetries))
	}
	if in.Timeout < 0 || in.Timeout > l.MaxTimeout {
		errs = append(errs, invalid(ErrInvalidOption, "timeout", "%s is outside 0..%s", in.Timeout, l.MaxTimeout))
	}
	if !in.Deadline.IsZero() {
		if !in.Deadline.After(now) {
			errs = append(errs, invalid(ErrInvalidOption, "deadline", "%s is not in the future", in.Deadline.Format(time.RFC3339Nano)))
		} else if in.Deadline.Sub(now) > l.MaxScheduleAhead {
			errs = append(errs, invalid(ErrInvalidOption, "deadline", "more than %s ahead", l.MaxScheduleAhead))
		}
	}
	if !in.RunAt.IsZero() && in.RunAt.Sub(now) > l.MaxScheduleAhead {
		errs = append(errs, invalid(ErrInvalidOption, "run_at", "%s is more than %s ahead", in.RunAt.Format(time.RFC3339), l.MaxScheduleAhead))
	}
	if in.UniqueKey != "" {
		if len(in.UniqueKey) > MaxNameLen {
			errs = append(errs, invalid(ErrInvalidName, "unique_key", "longer than %d bytes", MaxNameLen))
		}
		if in.UniqueTTL < MinUniqueTTL || in.UniqueTTL > MaxUniqueTTL {
			errs = append(errs, invalid(ErrInvalidOption, "unique_ttl", "%s is outside %s..%s", in.UniqueTTL, MinUniqueTTL, MaxUniqueTTL))
		}
	} else {
		if in.UniqueTTL != 0 {
			errs = append(errs, invalid(ErrInvalidOption, "unique_ttl", "set without unique_key"))
		}
		if in.UniqueUntilSuccess {
			errs = append(errs, invalid(ErrInvalidOption, "unique_until_success", "set without unique_key"))
		}
	}
	if in.Retention < 0 || in.Retention > l.MaxRetention {
		errs = append(errs, invalid(ErrInvalidOption, "retention", "%s is outside 0..%s", in.Retention, l.MaxRetention))
	}
	if in.TraceParent != "" && !ValidTraceParent(in.TraceParent) {
		errs = append(errs, invalid(ErrInvalidOption, "traceparent", "%q is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zeros)", in.TraceParent))
	}
	return joinErrs(errs)
}

// ValidTraceParent reports whether s is a W3C traceparent of version 00:
// "00-" then a trace id of 32 lower-case hex digits, "-", a span id of 16,
// "-" and 2 of flags, the ids not all zeros.
func ValidTraceParent(s string) bool {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	hex := func(part string) (nonZero, ok bool) {
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case c >= '1' && c <= '9', c >= 'a' && c <= 'f':
				nonZero = true
			case c == '0':
			default:
				return false, false
			}
		}
		return nonZero, true
	}
	tnz, tok := hex(s[3:35])
	snz, sok := hex(s[36:52])
	_, fok := hex(s[53:])
	return tok && sok && fok && tnz && snz
}

// CheckNamespace validates a namespace name.
func CheckNamespace(ns string) error { return CheckName("namespace", ns) }

// Validate checks an outcome against l.
func (o *Outcome) Validate(l Limits) error {
	l = l.WithDefaults()
	if o.Kind < OutcomeSucceeded || o.Kind > OutcomeRelease {
		return invalid(ErrInvalidOption, "kind", "unknown outcome %d", o.Kind)
	}
	if len(o.Result) > l.MaxPayloadBytes {
		return invalid(ErrPayloadTooLarge, "result", "%d bytes is more than the cap of %d", len(o.Result), l.MaxPayloadBytes)
	}
	return nil
}
