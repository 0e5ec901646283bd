package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/kilnhq/kiln/store"
)

// Limits of the text of a rule.
const (
	// MaxCronLen is the longest cron expression accepted, in bytes.
	MaxCronLen = 256
	// MaxTimeZoneLen is the longest time zone name accepted, in bytes.
	MaxTimeZoneLen = 64
	// MaxEveryLen is the longest interval text accepted, in bytes.
	MaxEveryLen = 64
	// MaxEvery is the longest interval accepted.
	MaxEvery = 5 * 366 * 24 * time.Hour
	// Horizon is how far ahead a rule is searched for its next run time: a
	// rule that has none within it (such as "0 0 30 2 *") never fires and
	// is rejected when the schedule is created.
	Horizon = 5 * 366 * 24 * time.Hour
)

// descriptors maps the accepted cron descriptors to their six-field form.
var descriptors = map[string]string{
	"@yearly":   "0 0 0 1 1 *",
	"@annually": "0 0 0 1 1 *",
	"@monthly":  "0 0 0 1 * *",
	"@weekly":   "0 0 0 * * 0",
	"@daily":    "0 0 0 * * *",
	"@midnight": "0 0 0 * * *",
	"@hourly":   "0 0 * * * *",
}

// cronParser reads the five standard fields with an optional seconds field
// first. Descriptors are expanded before it sees them.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Rule is the parsed timing rule of a schedule: a cron expression read on
// the wall clock of a time zone, or a fixed interval from an anchor time.
// Run times are whole seconds. A Rule is immutable and safe for concurrent
// use.
type Rule struct {
	// cron rule
	spec     *cron.SpecSchedule // matches wall times written as UTC times
	loc      *time.Location
	wildcard bool // the minute or hour field starts with '*'
	// interval rule
	every  time.Duration
	anchor time.Time
}

// NewRule parses a rule: exactly one of cronExpr and every must be set.
// timeZone names the IANA time zone of a cron expression (empty means UTC)
// and is not allowed with every. anchor is the first run time of an
// interval (rounded up to a whole second); it is ignored for cron. Errors
// are *store.ValidationError values that match store.ErrInvalidOption. It
// never panics, whatever the input.
func NewRule(cronExpr, timeZone, every string, anchor time.Time) (*Rule, error) {
	switch {
	case cronExpr != "" && every != "":
		return nil, invalid("every", "set together with cron; a schedule has one rule")
	case cronExpr == "" && every == "":
		return nil, invalid("cron", "neither cron nor every is set; a schedule needs one rule")
	case every != "":
		if timeZone != "" {
			return nil, invalid("time_zone", "applies to cron rules only")
		}
		d, err := ParseEvery(every)
		if err != nil {
			return nil, err
		}
		return &Rule{every: d, anchor: ceilSecond(anchor)}, nil
	}
	loc, err := LoadTimeZone(timeZone)
	if err != nil {
		return nil, err
	}
	spec, wildcard, err := parseCron(cronExpr)
	if err != nil {
		return nil, err
	}
	return &Rule{spec: spec, loc: loc, wildcard: wildcard}, nil
}

// ParseEvery reads an interval in Go's duration syntax ("90s", "1h30m"): a
// positive whole number of seconds up to MaxEvery.
func ParseEvery(s string) (time.Duration, error) {
	if len(s) > MaxEveryLen {
		return 0, invalid("every", "longer than %d bytes", MaxEveryLen)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalid("every", "%q is not a duration such as \"90s\" or \"1h30m\"", s)
	}
	switch {
	case d <= 0:
		return 0, invalid("every", "%s is not positive", d)
	case d%time.Second != 0:
		return 0, invalid("every", "%s is not a whole number of seconds", d)
	case d > MaxEvery:
		return 0, invalid("every", "%s is longer than %s", d, MaxEvery)
	}
	return d, nil
}

// LoadTimeZone loads an IANA time zone by name; empty means UTC. "Local"
// is refused: it would mean different things on different servers.
func LoadTimeZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if len(name) > MaxTimeZoneLen {
		return nil, invalid("time_zone", "longer than %d bytes", MaxTimeZoneLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '-' || c == '+'
		if !ok {
			return nil, invalid("time_zone", "%q is not a time zone name such as \"Europe/London\"", truncate(name))
		}
	}
	if name == "Local" {
		return nil, invalid("time_zone", "\"Local\" depends on the server; name the zone, such as \"Europe/London\"")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, invalid("time_zone", "unknown time zone %q", name)
	}
	return loc, nil
}

// parseCron parses a cron expression: five fields (minute hour
// day-of-month month day-of-week), six with a seconds field first, or a
// descriptor (@yearly, @annually, @monthly, @weekly, @daily, @midnight,
// @hourly).
func parseCron(expr string) (*cron.SpecSchedule, bool, error) {
	if len(expr) > MaxCronLen {
		return nil, false, invalid("cron", "longer than %d bytes", MaxCronLen)
	}
	for i := 0; i < len(expr); i++ {
		if c := expr[i]; (c < ' ' || c > '~') && c != '\t' {
			return nil, false, invalid("cron", "has a control or non-ASCII character at byte %d", i)
		}
	}
	s := strings.TrimSpace(expr)
	if s == "" {
		return nil, false, invalid("cron", "is empty")
	}
	up := strings.ToUpper(s)
	if strings.HasPrefix(up, "TZ=") || strings.HasPrefix(up, "CRON_TZ=") {
		return nil, false, invalid("cron", "a TZ= or CRON_TZ= prefix is not accepted; name the zone in time_zone")
	}
	if strings.HasPrefix(s, "@") {
		if strings.HasPrefix(s, "@every") {
			return nil, false, invalid("cron", "@every is not accepted; use every for intervals")
		}
		six, ok := descriptors[s]
		if !ok {
			return nil, false, invalid("cron", "unknown descriptor %q (accepted: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)", truncate(s))
		}
		s = six
	}
	fields := strings.Fields(s)
	if n := len(fields); n != 5 && n != 6 {
		return nil, false, invalid("cron", "has %d fields; want 5 (minute hour day-of-month month day-of-week) or 6 (a seconds field first)", n)
	}
	sched, err := cronParser.Parse(strings.Join(fields, " "))
	if err != nil {
		return nil, false, invalid("cron", "%s", err.Error())
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, false, invalid("cron", "unsupported expression")
	}
	c := *spec
	c.Location = time.UTC
	n := len(fields)
	wildcard := strings.HasPrefix(fields[n-5], "*") || strings.HasPrefix(fields[n-4], "*")
	return &c, wildcard, nil
}

// IsCron reports whether r is a cron rule.
func (r *Rule) IsCron() bool { return r.spec != nil }

// Every returns the interval of an interval rule, or 0.
func (r *Rule) Every() time.Duration { return r.every }

// Location returns the time zone of a cron rule (UTC for intervals).
func (r *Rule) Location() *time.Location {
	if r.loc == nil {
		return time.UTC
	}
	return r.loc
}

// Next returns the first run time strictly after t, in UTC, or the zero
// time when there is none within Horizon.
//
// A cron rule is read on the wall clock of its time zone. Around daylight
// saving time changes it behaves like ISC cron:
//   - An expression whose minute and hour fields are both fixed (such as
//     "30 2 * * *") runs once a day even then: a run time that falls in a
//     spring-forward gap runs once, right after the gap (at the first
//     instant of the new offset), and a run time that falls in the repeated
//     hour of a fall-back runs once, at its first occurrence.
//   - An expression with '*' at the start of its minute or hour field (such
//     as "*/15 * * * *" or "0 * * * *") follows the clock as it is: the
//     wall times of a gap do not exist and do not run, and the repeated
//     hour runs again, so such a schedule keeps its real-time spacing.
func (r *Rule) Next(t time.Time) time.Time {
	if r.spec == nil {
		return r.nextEvery(t)
	}
	return r.nextCron(t)
}

func (r *Rule) nextEvery(t time.Time) time.Time {
	if t.Before(r.anchor) {
		return r.anchor
	}
	secs := t.Unix() - r.anchor.Unix()
	step := int64(r.every / time.Second)
	k := secs/step + 1
	if k > (1<<62)/step {
		return time.Time{}
	}
	return r.anchor.Add(time.Duration(k*step) * time.Second).UTC()
}

// naive writes the wall clock of t as a UTC time.
func naive(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// offsetAt returns the zone offset in force at instant t in loc.
func offsetAt(t time.Time, loc *time.Location) time.Duration {
	_, off := t.In(loc).Zone()
	return time.Duration(off) * time.Second
}

// nextCron walks the zone periods (spans of one UTC offset) of the rule's
// location from t on. Within a period wall time and instant move together,
// so the next matching wall time (found on a zone-free clock by the cron
// library) gives the next instant, if it falls before the period ends.
func (r *Rule) nextCron(t time.Time) time.Time {
	limit := t.Add(Horizon)
	a := t.In(r.loc)
	first := true
	for !a.After(limit) {
		start, end := a.ZoneBounds()
		off := offsetAt(a, r.loc)
		var x time.Time // search for wall times strictly after x
		if first {
			x = naive(a)
		} else {
			x = naive(a).Add(-time.Nanosecond)
		}
		if !start.IsZero() && !r.wildcard {
			prevOff := offsetAt(start.Add(-time.Nanosecond), r.loc)
			wallStart := naive(start.In(r.loc))
			switch {
			case prevOff > off: // fall-back: walls before wallStart+(prevOff-off) ran already
				if skip := wallStart.Add(prevOff - off).Add(-time.Nanosecond); skip.After(x) {
					x = skip
				}
			case prevOff < off && !first: // spring-forward: walls in the gap run at start
				gapStart := wallStart.Add(prevOff - off)
				if w := r.spec.Next(gapStart.Add(-time.Nanosecond)); !w.IsZero() && w.Before(wallStart) {
					return start.UTC()
				}
			}
		}
		w := r.spec.Next(x)
		if w.IsZero() {
			return time.Time{} // no match on any calendar within five years
		}
		inst := w.Add(-off)
		if end.IsZero() || inst.Before(end) {
			if inst.After(limit) {
				return time.Time{}
			}
			return inst.UTC()
		}
		a = end.In(r.loc)
		first = false
	}
	return time.Time{}
}

// Latest returns the last run time of r in [from, now], or the zero time
// when there is none. from is usually a run time itself.
func (r *Rule) Latest(from, now time.Time) time.Time {
	if now.Before(from) {
		return time.Time{}
	}
	lower := from.Add(-time.Nanosecond)
	if r.spec == nil {
		if now.Before(r.anchor) {
			return time.Time{}
		}
		step := int64(r.every / time.Second)
		k := (now.Unix() - r.anchor.Unix()) / step
		f := r.anchor.Add(time.Duration(k*step) * time.Second).UTC()
		if f.Before(from) {
			return time.Time{}
		}
		return f
	}
	// Widen a window back from now until it holds a run time, then walk
	// forward to the last one.
	for w := time.Second; ; w *= 2 {
		x := now.Add(-w)
		if x.Before(lower) || w > Horizon {
			x = lower
		}
		f := r.Next(x)
		if !f.IsZero() && !f.After(now) {
			for {
				g := r.Next(f)
				if g.IsZero() || g.After(now) {
					return f
				}
				f = g
			}
		}
		if x.Equal(lower) {
			return time.Time{}
		}
	}
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	if tr := t.Truncate(time.Second); !tr.Equal(t) {
		return tr.Add(time.Second)
	}
	return t
}

func invalid(field, format string, args ...any) error {
	return &store.ValidationError{Field: field, Reason: fmt.Sprintf(format, args...), Err: store.ErrInvalidOption}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
