// Package redisstore is kiln's Redis store: every kiln process that points at
// one Redis (or Redis Cluster) shares its tasks, with every guarantee of the
// embedded store.
//
// # Design
//
// Each task is a Redis hash. Every state change is one Lua script that checks
// the task's state and lease before it writes and keeps the indexes (ready
// sets per queue and type, due times, lease expiries, retention, enqueue
// order) and the per-queue counts in step, so a crash or a concurrent call
// never leaves a task between two structures. Lease and due-time decisions use
// Redis' own clock (TIME inside the scripts), never the hosts' clocks.
// Batches are one script call each: Lease takes up to Max tasks, Report,
// Extend and Enqueue take whole batches.
//
// Idle Leases wait for a wake-up message that the scripts publish when tasks
// become ready or a new earliest due time is set (one pattern subscription
// per Store), never in a sleep loop. The same messages carry the cancel
// requests of active tasks, which WaitCancels serves.
//
// # Keys and Redis Cluster
//
// Every key of a namespace starts with the hash tag "{prefix:namespace}", so a
// namespace lives in one slot and every script touches one slot. Namespaces
// spread over the cluster. The set of namespaces (for Sweep) is the one key
// outside: "prefix:namespaces".
//
// # Server records
//
// The store implements store.Meta: a namespace's records are a hash of values
// and a sorted set of their keys (for listing in key order) under the
// namespace's hash tag, changed together by one script per write; see meta.go.
//
// # Safety
//
// Open refuses a Redis whose maxmemory-policy is not noeviction (an evicting
// Redis deletes tasks silently) unless Config.AllowEviction is set. What an
// acknowledged enqueue survives depends on Redis' persistence and
// replication; see docs/redis.md and Config.WaitReplicas.
//
// Times are kept with microsecond precision, Redis' clock resolution: due
// times are rounded up to the next microsecond.
package redisstore
