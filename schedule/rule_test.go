package schedule_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

func mustRule(t *testing.T, cron, tz, every string, anchor time.Time) *schedule.Rule {
	t.Helper()
	r, err := schedule.NewRule(cron, tz, every, anchor)
	if err != nil {
		t.Fatalf("NewRule(%q, %q, %q): %v", cron, tz, every, err)
	}
	return r
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// runs returns the first n run times after t.
func runs(r *schedule.Rule, after time.Time, n int) []time.Time {
	var out []time.Time
	for t := after; len(out) < n; {
		t = r.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func TestIntervalRule(t *testing.T) {
	t.Parallel()
	anchor := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	r := mustRule(t, "", "", "90s", anchor.Add(300*time.Millisecond)) // rounded up to 12:00:01
	start := anchor.Add(time.Second)
	for _, tc := range []struct {
		after, want time.Time
	}{
		{anchor.Add(-time.Hour), start},
		{start.Add(-time.Nanosecond), start},
		{start, start.Add(90 * time.Second)},
		{start.Add(89 * time.Second), start.Add(90 * time.Second)},
		{start.Add(90*time.Second + time.Nanosecond), start.Add(180 * time.Second)},
		{start.Add(1000 * 90 * time.Second), start.Add(1001 * 90 * time.Second)},
	} {
		if got := r.Next(tc.after); !got.Equal(tc.want) {
			t.Errorf("Next(%s) = %s, want %s", tc.after, got, tc.want)
		}
	}
	if got, want := r.Latest(start, start.Add(200*time.Second)), start.Add(180*time.Second); !got.Equal(want) {
		t.Errorf("Latest = %s, want %s", got, want)
	}
	if got := r.Latest(start, start.Add(-time.Second)); !got.IsZero() {
		t.Errorf("Latest before the start = %s, want zero", got)
	}
}

func TestCronRuleInZones(t *testing.T) {
	t.Parallel()
	ny := mustZone(t, "America/New_York")
	for _, tc := range []struct {
		name, cron, tz string
		after          time.Time
		want           []time.Time
	}{
		{"weekdays at nine in New York", "0 9 * * 1-5", "America/New_York", time.Date(2030, 1, 4, 12, 0, 0, 0, ny), // a Friday
			[]time.Time{time.Date(2030, 1, 7, 9, 0, 0, 0, ny), time.Date(2030, 1, 8, 9, 0, 0, 0, ny)}},
		{"seconds field", "*/20 * * * * *", "", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			[]time.Time{time.Date(2030, 1, 1, 0, 0, 20, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 40, 0, time.UTC), time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC)}},
		{"hourly descriptor in Kolkata", "@hourly", "Asia/Kolkata", time.Date(2030, 1, 1, 0, 10, 0, 0, time.UTC),
			[]time.Time{time.Date(2030, 1, 1, 0, 30, 0, 0, time.UTC), time.Date(2030, 1, 1, 1, 30, 0, 0, time.UTC)}},
		{"daily in Tokyo", "@daily", "Asia/Tokyo", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			[]time.Time{time.Date(2030, 1, 1, 15, 0, 0, 0, time.UTC), time.Date(2030, 1, 2, 15, 0, 0, 0, time.UTC)}},
		{"leap day", "0 12 29 2 *", "", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			[]time.Time{time.Date(2032, 2, 29, 12, 0, 0, 0, time.UTC), time.Date(2036, 2, 29, 12, 0, 0, 0, time.UTC)}},
		{"day of month or day of week", "0 0 13 * 5", "", time.Date(2030, 9, 1, 0, 0, 0, 0, time.UTC), // Fridays and the 13th
			[]time.Time{time.Date(2030, 9, 6, 0, 0, 0, 0, time.UTC), time.Date(2030, 9, 13, 0, 0, 0, 0, time.UTC), time.Date(2030, 9, 20, 0, 0, 0, 0, time.UTC)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRule(t, tc.cron, tc.tz, "", time.Time{})
			got := runs(r, tc.after, len(tc.want))
			if len(got) != len(tc.want) {
				t.Fatalf("runs = %v, want %v", got, tc.want)
			}
			for i := range got {
				if !got[i].Equal(tc.want[i]) {
					t.Errorf("run %d = %s, want %s", i, got[i], tc.want[i].UTC())
				}
			}
		})
	}
}

// TestDST checks the daylight saving time rules (Rule.Next): a fixed time
// in a spring-forward gap runs once, right after the gap; a fixed time in
// a fall-back's repeated hour runs once, at its first occurrence; specs
// with '*' in the minute or hour field follow the clock as it is.
func TestDST(t *testing.T) {
	t.Parallel()
	la := mustZone(t, "America/Los_Angeles")
	lon := mustZone(t, "Europe/London")
	lh := mustZone(t, "Australia/Lord_Howe")
	utc := func(y int, m time.Month, d, h, mi int) time.Time { return time.Date(y, m, d, h, mi, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name, cron string
		loc        *time.Location
		after      time.Time
		want       []time.Time // UTC
	}{
		// Los Angeles, 2024-03-10 02:00 PST -> 03:00 PDT.
		{"LA gap fixed", "30 2 * * *", la, time.Date(2024, 3, 9, 12, 0, 0, 0, la),
			[]time.Time{utc(2024, 3, 10, 10, 0) /* 03:00 PDT */, utc(2024, 3, 11, 9, 30) /* 02:30 PDT */}},
		{"LA gap, several times in it run once", "0,15,30,45 2 * * *", la, time.Date(2024, 3, 10, 0, 0, 0, 0, la),
			[]time.Time{utc(2024, 3, 10, 10, 0), utc(2024, 3, 11, 9, 0), utc(2024, 3, 11, 9, 15)}},
		{"LA gap, the first time after it runs with it", "0 3 * * *", la, time.Date(2024, 3, 10, 0, 0, 0, 0, la),
			[]time.Time{utc(2024, 3, 10, 10, 0), utc(2024, 3, 11, 10, 0)}},
		// Los Angeles, 2024-11-03 02:00 PDT -> 01:00 PST.
		{"LA overlap fixed", "30 1 * * *", la, time.Date(2024, 11, 2, 12, 0, 0, 0, la),
			[]time.Time{utc(2024, 11, 3, 8, 30) /* 01:30 PDT */, utc(2024, 11, 4, 9, 30) /* 01:30 PST, next day */}},
		{"LA hourly wildcard, gap", "30 * * * *", la, time.Date(2024, 3, 10, 1, 0, 0, 0, la),
			[]time.Time{utc(2024, 3, 10, 9, 30) /* 01:30 PST */, utc(2024, 3, 10, 10, 30) /* 03:30 PDT */}},
		{"LA hourly wildcard, overlap", "30 * * * *", la, time.Date(2024, 11, 3, 1, 0, 0, 0, la),
			[]time.Time{utc(2024, 11, 3, 8, 30), utc(2024, 11, 3, 9, 30), utc(2024, 11, 3, 10, 30)}},
		{"LA every 20 minutes keeps its spacing", "*/20 * * * *", la, time.Date(2024, 11, 3, 1, 30, 0, 0, la),
			[]time.Time{utc(2024, 11, 3, 8, 40), utc(2024, 11, 3, 9, 0), utc(2024, 11, 3, 9, 20), utc(2024, 11, 3, 9, 40), utc(2024, 11, 3, 10, 0)}},
		// London, 2024-03-31 01:00 GMT -> 02:00 BST; 2024-10-27 02:00 BST -> 01:00 GMT.
		{"London gap fixed", "30 1 * * *", lon, time.Date(2024, 3, 30, 12, 0, 0, 0, lon),
			[]time.Time{utc(2024, 3, 31, 1, 0) /* 02:00 BST */, utc(2024, 4, 1, 0, 30)}},
		{"London overlap fixed", "30 1 * * *", lon, time.Date(2024, 10, 26, 12, 0, 0, 0, lon),
			[]time.Time{utc(2024, 10, 27, 0, 30) /* 01:30 BST */, utc(2024, 10, 28, 1, 30)}},
		{"London overlap, seconds field", "10 30 1 * * *", lon, time.Date(2024, 10, 26, 12, 0, 0, 0, lon),
			[]time.Time{utc(2024, 10, 27, 0, 30).Add(10 * time.Second), utc(2024, 10, 28, 1, 30).Add(10 * time.Second)}},
		// Lord Howe (30-minute DST): 2024-10-06 02:00 +10:30 -> 02:30 +11;
		// 2024-04-07 02:00 +11 -> 01:30 +10:30.
		{"Lord Howe gap fixed", "15 2 * * *", lh, time.Date(2024, 10, 5, 12, 0, 0, 0, lh),
			[]time.Time{utc(2024, 10, 5, 15, 30) /* 02:30 +11 */, utc(2024, 10, 6, 15, 15) /* 02:15 +11 */}},
		{"Lord Howe overlap fixed", "45 1 * * *", lh, time.Date(2024, 4, 6, 12, 0, 0, 0, lh),
			[]time.Time{utc(2024, 4, 6, 14, 45) /* 01:45 +11 */, utc(2024, 4, 7, 15, 15) /* 01:45 +10:30, next day */}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := mustRule(t, tc.cron, tc.loc.String(), "", time.Time{})
			got := runs(r, tc.after, len(tc.want))
			for i := range tc.want {
				if i >= len(got) || !got[i].Equal(tc.want[i]) {
					t.Fatalf("runs after %s = %v, want %v", tc.after, got, tc.want)
				}
			}
		})
	}
}

// TestDSTTransitions checks every transition of 2014-2030 in four zones:
// a fixed daily time in the gap runs once that day, right after the gap;
// a fixed daily time in the repeated hour runs once that day, at its first
// occurrence.
func TestDSTTransitions(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"America/Los_Angeles", "Europe/London", "America/Sao_Paulo", "Australia/Lord_Howe"} {
		loc := mustZone(t, name)
		n := 0
		for at := time.Date(2014, 1, 1, 0, 0, 0, 0, loc); at.Year() <= 2030; {
			_, end := at.ZoneBounds()
			if end.IsZero() {
				break
			}
			at = end
			n++
			_, before := end.Add(-time.Second).Zone()
			_, after := end.Zone()
			shift := time.Duration(after-before) * time.Second
			wallOld := end.UTC().Add(time.Duration(before) * time.Second) // the old wall clock at the change, as UTC
			var cron string
			var want time.Time
			if shift > 0 { // gap: [wall, wall+shift) does not exist
				mid := wallOld.Add(shift / 2)
				cron = strings.Join([]string{itoa(mid.Minute()), itoa(mid.Hour()), "*", "*", "*"}, " ")
				want = end
			} else { // overlap: [wall+shift, wall) repeats
				first := end.Add(shift / 2) // in the first occurrence
				w := first.In(loc)
				cron = strings.Join([]string{itoa(w.Minute()), itoa(w.Hour()), "*", "*", "*"}, " ")
				want = first.Truncate(time.Minute)
			}
			r := mustRule(t, cron, name, "", time.Time{})
			from := end.Add(-12 * time.Hour)
			got := runs(r, from, 3)
			count := 0
			for _, g := range got {
				if g.Sub(end) < 12*time.Hour {
					count++
				}
			}
			if len(got) == 0 || !got[0].Equal(want) || count != 1 {
				t.Errorf("%s transition at %s (shift %s), cron %q: runs %v, want one at %s", name, end.In(loc), shift, cron, got, want.In(loc))
			}
		}
		if n < 10 {
			t.Errorf("%s: only %d transitions found in 2014-2030", name, n)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCronLatest(t *testing.T) {
	t.Parallel()
	r := mustRule(t, "0 0 1 * *", "", "", time.Time{}) // monthly
	from := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if got, want := r.Latest(from, time.Date(2030, 7, 15, 0, 0, 0, 0, time.UTC)), time.Date(2030, 7, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Latest = %s, want %s", got, want)
	}
	r = mustRule(t, "* * * * * *", "", "", time.Time{}) // every second
	now := from.Add(3*time.Hour + 500*time.Millisecond)
	if got, want := r.Latest(from, now), from.Add(3*time.Hour); !got.Equal(want) {
		t.Errorf("Latest = %s, want %s", got, want)
	}
	if got := r.Latest(from, from.Add(-time.Second)); !got.IsZero() {
		t.Errorf("Latest before from = %s, want zero", got)
	}
}

func TestRuleErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cron, tz, every, field, reason string
	}{
		{"no rule", "", "", "", "cron", "neither"},
		{"both rules", "* * * * *", "", "1m", "every", "together"},
		{"four fields", "* * * *", "", "", "cron", "4 fields"},
		{"seven fields", "0 0 0 * * * 2030", "", "", "cron", "7 fields"},
		{"step zero", "*/0 * * * *", "", "", "cron", "step"},
		{"minute out of range", "61 * * * *", "", "", "cron", "above maximum"},
		{"hour out of range", "0 24 * * *", "", "", "cron", "above maximum"},
		{"month zero", "0 0 1 0 *", "", "", "cron", "below minimum"},
		{"reboot", "@reboot", "", "", "cron", "unknown descriptor"},
		{"every descriptor", "@every 1h", "", "", "cron", "@every"},
		{"TZ prefix", "TZ=UTC 0 0 * * *", "", "", "cron", "TZ="},
		{"CRON_TZ prefix", "CRON_TZ=Europe/London 0 0 * * *", "", "", "cron", "TZ="},
		{"TZ prefix without space", "TZ=UTC", "", "", "cron", "TZ="},
		{"10 KB", strings.Repeat("*", 10<<10), "", "", "cron", "longer"},
		{"control character", "0 0 * * *\x00", "", "", "cron", "control"},
		{"newline", "0 0 * *\n*", "", "", "cron", "control"},
		{"not a number", "a * * * *", "", "", "cron", ""},
		{"empty", "   ", "", "", "cron", "empty"},
		{"unknown zone", "0 0 * * *", "Mars/Olympus", "", "time_zone", "unknown"},
		{"Local", "0 0 * * *", "Local", "", "time_zone", "Local"},
		{"zone path", "0 0 * * *", "../../etc/passwd", "", "time_zone", "not a time zone"},
		{"zone too long", "0 0 * * *", strings.Repeat("A", 10<<10), "", "time_zone", "longer"},
		{"zone with every", "", "UTC", "1m", "time_zone", "cron rules only"},
		{"every overflow", "", "", "9223372036854775807s", "every", "not a duration"},
		{"every zero", "", "", "0s", "every", "not positive"},
		{"every negative", "", "", "-5s", "every", "not positive"},
		{"every fraction", "", "", "1.5s", "every", "whole number"},
		{"every too long", "", "", "50000h", "every", "longer than"},
		{"every garbage", "", "", "soon", "every", "not a duration"},
		{"every 10 KB", "", "", strings.Repeat("1", 10<<10) + "s", "every", "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := schedule.NewRule(tc.cron, tc.tz, tc.every, time.Time{})
			var ve *store.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, store.ErrInvalidOption) {
				t.Fatalf("err = %v, want a ValidationError matching ErrInvalidOption", err)
			}
			if ve.Field != tc.field || !strings.Contains(ve.Reason, tc.reason) {
				t.Errorf("err = %v, want field %q and a reason with %q", err, tc.field, tc.reason)
			}
		})
	}
}
