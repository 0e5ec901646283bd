// Package embedded is kiln's default store: one data folder on local disk,
// nothing to install.
//
// # Design
//
// Every live task (scheduled, pending, active, retry) is held in memory with
// its indexes: a heap of ready tasks per queue and type, a heap of delayed
// tasks per namespace, and heaps of lease and retention expiries. Every change
// is also written to a durable key-value engine (Pebble; see
// docs/decisions/001-embedded-engine.md). On Open the store reads the engine
// once and rebuilds its indexes. Finished tasks stay only on disk; Get and List
// read them from there.
//
// # Durability
//
// Writes are grouped: one goroutine commits everything that arrived while the
// previous commit was syncing, with one fsync. Enqueue, Report and the admin
// calls return only after their writes are synced, so an acknowledged task or
// outcome survives a crash or power loss. Lease and Extend do not wait for the
// sync (it follows within about a millisecond): if the process dies in that
// window the lease is forgotten and the task is pending again, which
// at-least-once delivery allows. If a commit fails, the store refuses every
// later call until it is reopened.
//
// # Limits
//
// Live tasks, their payloads included, must fit in memory. Only one process
// may open a data folder at a time; to share tasks between machines use the
// Redis or PostgreSQL store, or a kiln server.
package embedded
