package store

import "time"

// Clock tells a store the time. Lease expiry and due times are judged by the
// store's clock; tests inject a fake one (storetest.FakeClock).
type Clock interface {
	Now() time.Time
}

// SystemClock is the real wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
