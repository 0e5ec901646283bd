package kilntest

import (
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store/storetest"
)

// WaitLimit bounds every wait of this package ([Eventually], [Drain], a
// worker's shutdown at the end of a test). It guards against hanging tests
// and is never a measurement: it is long (a minute), so that a loaded
// machine does not fail a correct test.
const WaitLimit = testenv.WaitLimit

// RedisURL returns the test Redis's URL, from KILN_TEST_REDIS_URL. When the
// variable is not set or Redis does not answer, it skips the test with the
// reason, or fails it when KILN_TEST_REQUIRE_ALL=1.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	return testenv.RedisURL(tb)
}

// PostgresURL returns the test PostgreSQL's URL, from KILN_TEST_POSTGRES_URL.
// When the variable is not set or nothing listens at its address, it skips
// the test with the reason, or fails it when KILN_TEST_REQUIRE_ALL=1.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	return testenv.PostgresURL(tb)
}

// Eventually calls cond until it returns true, and fails the test when
// WaitLimit passes first. what names what the test waits for, for the
// failure message.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	testenv.Eventually(tb, what, cond)
}

// FakeClock is a clock that moves only when told to (Advance, Set). Give it
// to a store ([StoreOptions].Clock) or a server ([ServerOptions].Clock):
// lease expiry, due times, unique-key windows and retention then follow it
// instead of the wall clock. It is safe for concurrent use.
type FakeClock = storetest.FakeClock

// Epoch is the time NewFakeClock starts at when given the zero time.
var Epoch = storetest.Epoch

// NewFakeClock returns a clock that reads start until it is advanced or set;
// the zero start means Epoch.
func NewFakeClock(start time.Time) *FakeClock {
	if start.IsZero() {
		start = Epoch
	}
	return storetest.NewFakeClock(start)
}
