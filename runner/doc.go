// Package runner runs uploaded code packages (IronWorker-style): it unpacks
// a package's zip archive safely and runs one task of it as a separate,
// limited OS process. It is a library with no HTTP and no store: the server
// and the remote runners call it.
//
// # Unpacking
//
// Unpack extracts a zip archive into a new directory, all or nothing. It
// accepts regular files and directories with plain relative names, and
// rejects with a typed error (for an HTTP 400) everything of the hostile
// archive catalogue: "..", absolute, drive and UNC names, backslashes, NUL
// and control characters, duplicates (also by letter case), symbolic links,
// devices, FIFOs, sockets, overlapping entries, encryption, and archives
// above the size, file-count or compression-ratio limits (Limits: 512 MiB,
// 10,000 entries, 200:1 by default). Sizes are counted on the bytes actually
// produced while streaming, never taken from the headers. Modes become 0644
// or 0755; set-id and sticky bits are dropped.
//
// # Running
//
// Run starts the package's program in a fresh task directory holding a copy
// of the package, the payload and the config, with the IronWorker arguments
// "-d <dir> -payload <file> -config <file> -id <task id>" (in that order),
// an environment built from scratch (TASK_ID, TASK_DIR, PAYLOAD_FILE,
// CONFIG_FILE, PATH, HOME and the package's env_vars: nothing of the
// server's own environment), stdin from /dev/null, and stdout and stderr
// captured together, live and capped, as the task log. A binary that uses
// Run must call Main first thing in main.
//
// # The sandbox: what it protects against
//
//   - Zip slip and friends: nothing is ever written outside the package
//     directory, and a rejected archive writes nothing at all.
//   - Runaway tasks: a wall-clock timeout and cancellation kill the task's
//     whole process group (SIGTERM, then SIGKILL after a grace period), and
//     what is left of the group is killed when the program exits.
//   - Resource exhaustion by one task, through setrlimit applied before the
//     program's first instruction: memory (RLIMIT_DATA, 512 MiB), CPU time
//     (3600 s), open files (1024), processes (256), file size (1 GiB), no
//     core dumps. Flooding the log costs only the cap (8 MiB): the rest is
//     read and discarded, and the program is never blocked on a full pipe.
//   - Leaking the server's secrets through the environment, and shell
//     injection: the program is exec'd with an argv, never through a shell
//     (unless its runtime is a shell running the package's own script).
//   - Privilege gain through set-user-id programs: no_new_privs is set.
//
// # What it does not protect against
//
// This is defence in depth, not a container boundary.
//
//   - Without Config.Credential a task runs as the server's own user: it can
//     read and write whatever the server can (its data directory, its
//     configuration files, other tasks' directories), signal the server, and
//     RLIMIT_NPROC does not hold for root and counts all of that user's
//     processes. Run tasks as a dedicated unprivileged user (Credential) in
//     production; with it, a task can still read every world-readable file.
//   - There is no file-system, network, PID or IPC isolation (no namespaces,
//     no chroot): a task can reach the network, including the server's and
//     the cloud provider's metadata endpoints, and see other processes.
//   - Resource limits are per process (and RLIMIT_NPROC per user), not per
//     task: a task's processes together can use more memory than
//     AddressSpace, and there is no disk quota beyond the file-size limit.
//     A process that leaves its group (setsid) escapes the group kill.
//     cgroups would close these gaps; they are not used yet.
//   - If the server dies, its running tasks keep running until they exit.
//
// The reasoning behind the trampoline that applies the limits is in
// docs/decisions/003-runner-limits.md.
package runner
