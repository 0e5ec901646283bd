// Package store defines the seam between kiln and the places tasks live:
// the embedded store, Redis, PostgreSQL and a kiln server reached over HTTP.
//
// # Roles
//
// A [Store] is composed of small role interfaces: [Enqueuer], [Leaser],
// [Reader], [Admin] and [Maintainer], plus Ping and Close. Every method takes
// a context and a params struct and returns a result struct and an error.
// Methods are batch-first: a batch of inputs gives one result per input, in
// order. The returned error means the store itself failed (I/O, closed, context
// done); a problem with one input is reported in that input's result slot with
// one of the sentinel errors of this package.
//
// # Namespaces
//
// Every record and query is scoped by a namespace. Library users get
// [DefaultNamespace]; the server maps each project onto its own namespace.
// Nothing in one namespace is visible from another.
//
// # Leases and fencing
//
// A worker takes tasks with [Leaser.Lease]. Each lease carries a LeaseID that
// is unique per lease. Heartbeats ([Leaser.Extend]) and outcomes
// ([Leaser.Report]) name the lease; a report for a lease that is no longer the
// task's current lease fails with [ErrLeaseLost] and changes nothing. Lease
// expiry and due times are judged by the store's clock ([Clock]), never the
// worker's. The attempt counter is incremented when a lease is taken, so a task
// that crashes its worker still uses up its retries.
//
// # States
//
// A task is in exactly one [State] at any time. The transitions are:
//
//	enqueue            -> scheduled (RunAt in the future) or pending
//	scheduled, retry   -> pending    (RunAt reached)
//	pending            -> active     (Lease)
//	active             -> succeeded, retry, dead, cancelled, pending (Report)
//	active             -> pending or dead (lease expired, by the sweeper)
//	pending, scheduled, retry -> cancelled (Cancel)
//	dead, cancelled    -> pending (Retry)
//
// Cancelling an active task only marks it; the store pushes the request to
// workers waiting in [Leaser.WaitCancels] (and the worker's next heartbeat
// sees the mark too, should the push be lost), the worker stops the handler
// and reports [OutcomeCancelled]. If the worker is gone, the sweeper cancels
// the task when its lease expires. A handler that returns success before it
// notices the cancel ends succeeded: done is done. Cancelling a task that
// already finished fails with [ErrTaskFinished].
//
// # Conformance
//
// Package storetest holds the suite every implementation must pass.
package store
