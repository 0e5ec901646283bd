// Package api is the native JSON API of the kiln server (docs/api.md,
// docs/openapi.yaml): its routes, its authentication (bearer tokens stored
// as SHA-256 hashes, worker session keys from a challenge-response
// handshake), its strict request decoder and its error catalogue
// (errors.json and the event kinds of events.json, from which the Go side
// in internal/wire is generated).
//
// # Requests
//
// Every body is read through http.MaxBytesReader and decoded by [Decode]:
// one JSON object, no duplicate keys, no unknown fields, no trailing data.
// Query parameters are checked against each route's list.
//
// # Records
//
// Projects, token hashes and worker sessions live in the store's Meta
// ability, in [SystemNamespace]; remote workers and their single-use
// challenges live in their project's namespace. A challenge is consumed by
// a compare-and-delete, so that of many servers sharing a store only one
// accepts an answer. Every write of a worker record (verify, refresh,
// revoke, the last-seen time) is a compare-and-set against what it read,
// retried from a fresh read when another write came between, and a revoked
// record is never written again: a revoke wins every race, on every server.
// A session key authenticates only while its worker's record says verified,
// read on every request.
package api
