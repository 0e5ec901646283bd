// Package ironapi is the IronWorker API v2 of a kiln server: code
// packages, tasks, logs and progress, as IronWorker's official clients use
// them (see docs/ironworker.md). The server mounts it under /2/.
//
// An IronWorker project is a kiln project (a store namespace); a token is
// a kiln token of that project (or an admin token), sent as
// "Authorization: OAuth <token>" or in the oauth query parameter (the
// server never logs query strings). Code packages live in the store
// through runner/hosted's Registry, so that every server and runner sharing
// the store can run them; a package's tasks are kiln tasks of type and
// queue "code:<name>", run by runner/hosted.
//
// Answers follow IronWorker: 200 with JSON on success (the clients take
// nothing else as success), {"msg": ...} with 400, 401, 404, 405 or 413 on
// failure (503 with Retry-After while the store does not answer), times in RFC 3339, integers as integers, never a compressed
// body. Requests are checked in full before anything is written: a bad
// upload or a batch with one bad task changes nothing.
package ironapi

import "fmt"

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
