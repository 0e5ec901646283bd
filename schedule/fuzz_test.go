package schedule_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// FuzzRule feeds the cron, time zone and interval parser arbitrary text: it
// never panics, fails only with a validation error, and a rule it accepts
// gives increasing run times.
func FuzzRule(f *testing.F) {
	for _, s := range [][3]string{
		{"* * * * *", "", ""}, {"0 0 30 2 *", "", ""}, {"*/0 * * * *", "", ""}, {"61 * * * *", "", ""},
		{"@reboot", "", ""}, {"@hourly", "Asia/Kolkata", ""}, {"TZ=UTC", "", ""}, {"CRON_TZ=x 0 0 * * *", "", ""},
		{"0 30 2 * * *", "America/Los_Angeles", ""}, {"1-5/2,jan-mar 0 ? * mon-fri", "Europe/London", ""},
		{"0 0 1 1 * 2030", "", ""}, {"", "", "90s"}, {"", "", "9223372036854775807s"}, {"", "", "-1s"},
		{"", "UTC", "1h"}, {"5/70 * * * *", "Australia/Lord_Howe", ""}, {"0-0/99999999999 * * * *", "", ""},
		{",,, * * * *", "", ""}, {"- * * * *", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	after := time.Date(2030, 10, 6, 1, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, cron, tz, every string) {
		r, err := schedule.NewRule(cron, tz, every, after)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidOption) {
				t.Fatalf("NewRule error %v does not match ErrInvalidOption", err)
			}
			return
		}
		prev := after
		for range 3 {
			next := r.Next(prev)
			if next.IsZero() {
				return
			}
			if !next.After(prev) {
				t.Fatalf("Next(%s) = %s, not after", prev, next)
			}
			prev = next
		}
		if l := r.Latest(after, prev); l.IsZero() || l.After(prev) {
			t.Fatalf("Latest(%s, %s) = %s", after, prev, l)
		}
	})
}
