// Package kilntest helps test programs that use kiln, and kiln itself.
//
// It gives a test what it needs in a line or two, and cleans up after it:
//
//   - [Embedded]: a fresh embedded store in a temporary folder.
//   - [Redis]: a store on the test Redis, under a key prefix of its own that
//     is deleted when the test ends.
//   - [StartServer]: a whole kiln server (native API, IronWorker API,
//     scheduler, and with [ServerOptions].Runner a code runner) on a loopback
//     port, with its URL, admin token, project, a project token, and a
//     registered remote worker's id and secret; [Server.Remote] opens a
//     store that talks to it over HTTP.
//   - [FakeClock]: a clock for stores and servers that moves only when the
//     test says so.
//   - [RunWorker] runs a kiln.Worker for the rest of the test; [Drain] runs
//     one until its queues are empty.
//   - [Eventually] waits for a condition, bounded by [WaitLimit].
//   - [Main] is a whole TestMain: the code runner's trampoline, the tests,
//     a check for leaked goroutines.
//
// # Finding Redis and PostgreSQL
//
// One rule for every test: [RedisURL] reads KILN_TEST_REDIS_URL and
// [PostgresURL] reads KILN_TEST_POSTGRES_URL. When the variable is not set or
// nothing answers there, the test is skipped with the reason, unless
// KILN_TEST_REQUIRE_ALL=1 is set (as `make test` does): then it fails, so a
// CI run cannot pass by skipping.
//
// # Code runner
//
// A server with a code runner starts task processes through the test binary
// itself, so the package's TestMain must let the binary serve as their
// trampoline (runner.Main() first thing), as [Main] does:
//
//	func TestMain(m *testing.M) { kilntest.Main(m) }
//
// # Import cycles
//
// kilntest imports kiln, server and the stores. Tests in package kiln itself
// must therefore be in package kiln_test to use it, and the internal tests
// of the packages it imports cannot use it at all: kiln's own use the
// module's internal/testenv, on which kilntest is built (the same rule for
// Redis, the same waits).
package kilntest
