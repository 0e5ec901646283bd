// Package zygote starts sandboxed task processes from a resident helper
// process, so that a task costs one cheap clone, one vfork and one exec
// instead of a bubblewrap start and its extra processes
// (docs/decisions/004, updates 5 and 6).
//
// The helper is the server's own binary, started once with argv[0]
// "kiln-sandbox-helper": a C constructor (cgo) takes it over before the Go
// runtime starts, so it is one thread and may clone. For each task the
// runner sends it, over a socket pair, a request (a memory file of
// NUL-terminated strings: the user, the limits, the task directory, the
// program, its arguments and environment, the paths to hide, the private
// folders) and three pipes (log, start status, info). The helper clones
// the sandbox's pid 1 in new PID, mount and IPC namespaces (and a network
// one on request) as a child of the server (CLONE_PARENT), which the
// runner waits for like any process it started. Pid 1 shares the helper's
// memory (CLONE_VM) and runs on a stack of its own that the helper takes
// back once pid 1 has exited, so neither its start nor its exit copies or
// frees page tables. Pid 1 mounts the task's view of the files and vforks
// the task; the task sets its limits, user and no_new_privs and execs the
// program. The start status and info pipes speak the runner's trampoline
// handshake and bubblewrap's info JSON.
package zygote

import "errors"

// ErrUnsupported is returned by Start when this build has no helper
// (built without cgo, or not on Linux).
var ErrUnsupported = errors.New("the sandbox helper needs a build with cgo on Linux")

// KeeperFunc names the goroutine that starts helpers, for goroutine leak
// checks in tests (goleak.IgnoreAnyFunction): it lives as long as the
// process once a helper has been started.
const KeeperFunc = "github.com/kilnhq/kiln/runner/internal/zygote.keeperLoop"
