// Package chaos is test support for kiln's multi-process tests: child
// processes that are the test binary itself playing a role, network
// namespaces to put them in and cut them off, a private redis-server to kill,
// a small tmpfs to fill, and the ledger that checks a run.
//
// Nothing here is compiled into kiln: only tests import it. The chaos suite
// itself is this package's tests (TestChaos*, `make chaos`); the multi-process
// tests of store/remote and store/redisstore use the same helpers.
//
// # The ledger
//
// A run is checked against three records, each written by the party that
// knows it:
//
//   - the load generator records every enqueue the store acknowledged
//     ([Ledger.Ack]: only after a nil error);
//   - every worker process appends every handler start and finish to its own
//     file ([RunLog]: O_APPEND, one write per line, so a SIGKILL loses at most
//     the run it cut short, never a line already written);
//   - the harness records every fault it made ([Ledger.Event]: a kill, a
//     partition, a revoke, a store outage), with its target and time.
//
// [Ledger.Check] then reads the final state of every acknowledged task and
// computes the [Report]: acknowledged, completed, lost (must be 0),
// duplicates (tasks whose handler started more than once) and burned
// attempts (attempt numbers counted without a handler start), each with the
// fault that explains it or none. A duplicate is explained by a fault of
// the process that ran the earlier start (or of the whole store), between
// that start and the next one; a graceful stop explains nothing.
package chaos
