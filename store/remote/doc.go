// Package remote is a store.Store served by a kiln server over its native
// HTTP API (docs/api.md), so that the same kiln.Client and kiln.Worker run on
// another machine, unchanged:
//
//	s, err := remote.Open(ctx, "http://kiln.internal:7878", &remote.Config{
//		Project: "acme", WorkerSecret: os.Getenv("KILN_WORKER_SECRET"),
//	})
//	w, err := kiln.NewWorker(s, nil) // serves "acme", the store's project
//
// # Authentication
//
// A store authenticates in one of two ways (Config):
//
//   - with an API token (an admin token, or a project token for its own
//     project), sent as "Authorization: Bearer <token>";
//   - as a remote worker of a project, GoWork style: Open registers the
//     worker, answers the server's single-use challenge with the hex
//     HMAC-SHA256 of the challenge under the project's worker secret, and
//     receives a session key with an expiry. The store refreshes the session
//     when three quarters of its life have passed and redoes the whole
//     handshake when the server answers "session_expired". A revoked worker
//     gets "unauthorized" on every call.
//
// # TLS
//
// An https:// URL is checked against the system's roots, or against the CA
// certificates of Config.CAFile only (a server with a certificate of a
// private CA). A certificate that does not verify fails Open, naming the
// problem (an unknown authority, a name mismatch). A server that serves
// plain HTTP on a non-loopback address refuses the worker routes
// ("tls_required") unless it runs with --allow-insecure-workers.
//
// # Namespaces
//
// The Namespace of every call is the project of the URL
// (/v1/projects/{namespace}/...). A token of one project gets
// store.ErrNotFound for another project's tasks, as for a project that does
// not exist. A store with a worker secret reaches Config.Project only: it
// implements store.Scoped, so kiln.NewWorker and kiln.NewClient take the
// project as their namespace when their config names none, and refuse
// another namespace with kiln.ErrInvalidOption (a worker on another
// namespace could never lease a task).
//
// # Errors
//
// The server's error objects come from one catalogue (internal/wire); the
// store turns each back into an error that errors.Is matches against the
// same sentinel a local store returns (store.ErrNotFound, ErrLeaseLost,
// ErrDuplicate, ...), for the call as a whole and for each item of a batch.
// Validation errors that name a field are *store.ValidationError values.
// Durations travel in whole milliseconds: an option with a sub-millisecond
// remainder fails with store.ErrInvalidOption, and lease durations and
// waits are rounded up to the next millisecond.
//
// # Leasing
//
// Lease uses the long-poll route: the server holds the request until a task
// is ready or the wait ends (at most MaxWaitPerRequest per request; a longer
// Wait asks again). Close cancels every call in progress; they return
// store.ErrClosed. A lease request whose context ends is cancelled only if
// no answer starts to arrive within apiclient.AnswerGrace (250 ms), and an
// answer that arrives is returned: tasks the server leased are not dropped
// on the way (see Store.Lease).
//
// WaitCancels is a long poll too (cancels:wait): the server answers as soon
// as an active task of the project is asked to cancel, so a remote worker
// stops the handler within milliseconds, not at its next heartbeat.
//
// # Maintenance
//
// Sweep calls POST /v1/admin/sweep, which needs an admin token. The server
// sweeps on its own every second, so with worker credentials or a project
// token Sweep does nothing and returns zero counts.
//
// store.Meta is not implemented: the server keeps its records in its own
// store.
package remote
