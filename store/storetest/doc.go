// Package storetest is the conformance suite every kiln store must pass, with
// the tools that store and worker tests share: a fake clock, a fault-injecting
// store wrapper and an invariant checker.
//
// # Running the suite
//
// A store package runs the whole suite from one test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			New: func(t testing.TB, clock store.Clock) (store.Store, func() store.Store) {
//				dir := t.TempDir()
//				s, err := embedded.Open(dir, &embedded.Config{Clock: clock})
//				// ... register t.Cleanup, return s and a reopen function
//			},
//		})
//	}
//
// Every test asks the harness for a fresh store over empty data, driven by a
// [FakeClock], so lease expiry, due times, unique-key windows and retention are
// tested without sleeping. Tests that need durability (reopen) are skipped when
// the harness's reopen function is nil.
//
// # What the suite assumes
//
// The suite follows the semantics documented in package store. Where that
// documentation leaves a choice open, the suite states the choice it checks in
// the test's comment. In particular:
//
//   - LeaseParams.Wait is real (wall-clock) time: a store waits with timers or
//     notifications, not with its Clock, so a fake clock that stands still
//     never blocks a Lease for longer than Wait.
//   - A task whose RunAt has been reached on the store's clock is leasable
//     without a Sweep, whether it is scheduled or in retry.
//   - A Lease whose context is cancelled while it waits returns promptly,
//     either with an error matching the context's error or with no tasks.
//   - Times are kept to the nanosecond: a task is not leasable 1ns before its
//     RunAt, and every time field reads back equal (by time.Time.Equal).
//   - A unique key is held for UniqueTTL from the enqueue, whatever becomes of
//     the task in that time.
//   - A report on a lease that expired but was not swept yet may be accepted
//     or rejected; the suite checks neither.
//   - A success reported for a task that was asked to cancel is accepted.
//
// Besides the tests of each feature, a seeded random walk of store calls
// checks every observed change against the state diagram; its seed is logged.
//
// # Benchmarks
//
// [Bench] runs the same workloads as benchmarks and reports tasks/s.
package storetest
