// Package embedded is kiln's default store: one data folder on local disk,
// nothing to install.
//
// # Design
//
// Every task is written to a durable key-value engine (Pebble; see
// docs/decisions/001-embedded-engine.md) with one index key chosen by its
// state, in the same batch as its record: pending tasks in the order they
// are leased (per queue and type: priority, then RunAt, then enqueue
// order), scheduled and retry tasks by due time, active tasks, and
// finished ones by the end of their retention (index.go). Memory holds a
// window of the first pending tasks of each queue and type and of the
// first due tasks of each namespace (a constant, 2048 by default, up to
// twice that), the active tasks, and per-queue counts, which each commit
// writes to the engine too. A window that runs out is filled again from
// its index; a task that comes after a full window stays on disk alone.
// So memory does not grow with the backlog: it grows with the number of
// queues and types, the leases held by workers, and the unique keys (see
// Limits). Finished tasks leave memory once their last record is
// durable, and Sweep deletes them by reading the retention index, not a
// list in memory. Open reads the counts, the windows and the active
// tasks, whatever the backlog. Get, List, and the admin calls read tasks
// that are not in memory from the engine.
//
// A payload of up to 128 bytes is kept inside its task's record, and
// rewritten with it at every change of state: one key fewer to write,
// compact and delete per task, and one read fewer per task a window reads
// back. A larger payload is written once, in a key of its own. The tasks of
// a data folder written by an earlier version keep their payloads apart
// until they are deleted; the record says which layout it has. A version
// that predates payloads in records refuses such a record as corrupt, so
// a data folder this version has written to cannot be opened by an
// earlier one.
//
// A data folder written before the indexes existed gets them once, when
// it is opened (every task record is read then); opened read-only (a full
// disk), it is loaded whole into memory instead, as before.
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
// A task is durable before it is visible to a leaser: every change that makes
// a task pending (an enqueue, a workflow releasing a held task, a retry or a
// hand-back by a worker, an expired lease, an admin retry) keeps it out of
// its queue until the commit that holds the change is synced; the committer
// then queues it and wakes the waiting leasers, before the call that made the
// change returns. So no handler ever runs a task whose enqueue a crash could
// still undo, or whose enqueue failed: a failed commit queues nothing, and
// memory is rebuilt from the disk (see below). A task that leaves memory
// for its index (after a full window) leaves only once its records are
// durable, and a window is filled again from durable records only. A
// scheduled or retry task that falls due is leasable at once when the write that scheduled it is synced
// (its promotion to pending need not be: the disk has it due either way).
// Readers are not held back: Get, Stats and the change feed (Changes) see a
// change as soon as it is made, before it is synced (List waits for the
// sync). A task whose enqueue then fails leaves Get and Stats; the feed
// keeps its enqueued change.
//
// Enqueue checks that a task's id is free against the tasks in memory and,
// with a read of the engine, against those on disk. The read is made before
// the store's lock is taken; under the lock it is made again only if a task
// left memory for the disk alone since (which, with a backlog larger than
// the windows, happens at nearly every commit). An id made for the
// call (store.TaskInput.NewID, which kiln's Client and server set when they
// make the id) skips the read: no stored task can have it.
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
// Open fails, with the damaged file or record and what to do, when what it
// reads of a data folder is damaged (see Limits); Check verifies a folder and Recover copies what can be read
// of it into a new one (`kiln store check`, `kiln store recover`).
//
// # Limits
//
// Only one Store may have a data folder open at a time: Open locks the file
// kiln.lock in the folder and writes its process id there, and a second Open
// (in another process or the same one) fails with ErrInUse, naming that
// process. To share tasks between machines use the Redis or PostgreSQL
// store, or a kiln server.
//
// Memory still holds, besides the windows: the active tasks with their
// payloads, every unique key still within its window (with an index by the
// end of the window, so a sweep forgets the expired ones without looking at
// the others), the flows' held tasks and members, and the last changes of
// the change feed. Open reads the unique keys and flows whole.
//
// Open reads only what it loads: damage in the records of tasks it does not
// load is found when they are read (the read fails, naming the damaged
// file), or by Check.
package embedded
