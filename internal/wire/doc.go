// Package wire holds the JSON shapes of kiln's native HTTP API (docs/api.md)
// and its error catalogue, shared by the server (server/api) and its clients
// (store/remote, the CLI), so that both sides encode the same bytes and map
// errors to the same store sentinels.
//
// # Conventions
//
// Byte fields ([]byte) are base64 strings; times are RFC 3339 with
// nanoseconds (UTC), and a zero time is null; durations are integer
// milliseconds in fields named *_ms; lease ids are decimal strings.
//
// # Errors
//
// [Error] is the error object of every failed answer. [ErrorFor] turns any
// error of the server into its HTTP status and object; [Err] and
// [Error.Err] turn an object back into an error that errors.Is matches
// against the store sentinel of its code (store.ErrNotFound for
// "not_found", ...). The table is [Codes].
//
// # Generated
//
// The Code* and Event* constants, [Codes], [EventKinds] and the order in
// which errors are matched against the store's sentinels are generated
// (catalogue_gen.go) from server/api/errors.json and server/api/events.json
// by go generate; edit the JSON, not the Go file.
//
// The package imports only the standard library and package store.
package wire
