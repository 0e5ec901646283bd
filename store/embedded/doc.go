// Package embedded is kiln's default store: one data folder on local disk,
// nothing to install.
//
// # Design
//
// Every live task (scheduled, pending, active, retry) is held in memory with
// its indexes: a heap of ready tasks per queue and type, a heap of delayed
// tasks per namespace, and heaps of lease, retention and unique-key expiries. Every change
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
// at-least-once delivery allows.
//
// # Full disk and damage
//
// The store keeps Config.ReserveBytes of disk space for itself: it refuses
// writes with store.ErrStorageFull while its disk has less than that free,
// and it keeps a file of that size to give back to the engine when another
// program fills the disk. When a commit fails anyway, the store fails every
// write not yet durable, reopens the engine read-only and rebuilds memory
// from it: reads keep working, writes fail with store.ErrStorageFull (or
// the I/O error), and a monitor opens the engine for writing again once
// there is room, without a restart. The tasks of a failed enqueue never run.
// See disk.go and docs/reliability.md.
//
// Open fails, with the damaged file or record and what to do, on a damaged
// data folder; Check verifies a folder and Recover copies what can be read
// of it into a new one (`kiln store check`, `kiln store recover`).
//
// # Limits
//
// Live tasks, their payloads included, must fit in memory. Only one Store
// may have a data folder open at a time: Open locks the file kiln.lock in the
// folder and writes its process id there, and a second Open (in another
// process or the same one) fails with ErrInUse, naming that process. To share
// tasks between machines use the Redis or PostgreSQL store, or a kiln server.
//
// Unique keys are held in memory with an index by the end of their window,
// so a sweep forgets the expired ones without looking at the others.
package embedded
