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
// Run starts the package's program in a task directory holding a copy of
// the package, the payload and the config (see "Task directories" below),
// with the IronWorker arguments
// "-d <dir> -payload <file> -config <file> -id <task id>" (in that order),
// an environment built from scratch (TASK_ID, TASK_DIR, PAYLOAD_FILE,
// CONFIG_FILE, PATH, HOME and the package's env_vars: nothing of the
// server's own environment), stdin from /dev/null, and stdout and stderr
// captured together, live and capped, as the task log. A binary that uses
// Run must call Main first thing in main. With Config.LinkPackage, where
// the task runs as a user of its own, the package's files are hard links
// the task can read but not change, instead of copies: a task of a
// package of many files then costs a fraction of what copies cost.
//
// # Task directories
//
// A task's directory is new, or kept from an earlier task of the same
// package directory and user: a task that ended with every process of it
// known to have exited (under SandboxNamespaces its pid 1 waited for, which
// the kernel lets end only after the others; else its cgroup seen empty)
// leaves its directory to the next one. Before it waits, the directory is
// reset: whatever the task added, replaced by another kind of file, linked
// elsewhere or gave user extended attributes or ACLs is removed, the payload
// and config are emptied, and the directory and its folders become the
// runner's, 0700, so that nothing can be added meanwhile. The next task's
// prepare then writes its payload and config over the kept files, and the
// package's copies: one whose bytes are still the package's is left as it
// is, its mode and owner set again, any other is written over. So a task
// finds what a new directory would give it, and the common task makes no
// new inode and frees none: a new inode costs more than reading a small
// file, and much more on a file system that searches past recently freed
// ones (ext4 without a journal). At most 64 directories wait, none longer
// than a minute unused (a package no longer run leaves no copy behind for
// long); Close removes them. Spec.Keep and runners without group kills
// (and bwrap, whose sandbox leaves no cgroup of the task's) never keep one.
//
// Only the same package directory (per project and checksum on a server)
// and the same user get a kept directory: what a task could leave for a
// later one (a process of the same user outside the sandbox holding one
// of its open files, given to it through a socket) reaches only a later
// task of its own project.
//
// # The sandbox
//
// Config.Sandbox (default SandboxAuto) keeps a task away from the runner and
// from other tasks; New resolves it and Runner.Sandbox says what is in
// force. docs/sandbox.md has the full account, including a table per mode.
//
// SandboxNamespaces gives each task SandboxBwrap's isolation (below)
// without bubblewrap: resident helper processes (one per CPU, at most
// eight, taken in turn: each starts one sandbox at a time), the runner's
// own binary started once each (runner/internal/zygote: C run before the
// Go runtime, so one thread that may fork), clone each task's pid 1 into
// new PID, mount and IPC namespaces (and a network one with
// Config.IsolateNetwork) as a child of the runner (CLONE_PARENT); pid 1
// builds the same mount view and starts the program, which sets its own
// limits, user and no_new_privs before its exec. One exec per task, no
// trampoline, no bwrap: it needs a root runner and a build with cgo.
//
// SandboxBwrap runs the trampoline and the program inside bubblewrap
// (bwrap, found in Config.Path): a PID namespace of their own (the runner
// and other tasks cannot be seen, read through /proc or signalled), an IPC
// namespace, a mount view in which the host's root is read-only, /tmp,
// /var/tmp and /dev/shm are private and empty, Config.Hide and WorkDir are
// empty, and the task directory is the only writable folder of the host, at
// SandboxTaskDir (/tmp/task: the program's -d, TASK_DIR, HOME and working
// directory); with Config.IsolateNetwork no network either. A root runner
// also runs the task as another user (as SandboxUser); otherwise bwrap puts
// it in a user namespace of the runner's user, where it cannot create
// another. bwrap's options come through a memory file, so that its command
// line (visible to the task as pid 1) shows no host path.
//
// SandboxUser (root runner) runs each task as Spec.Credential, else
// Config.Credential, else NobodyID, never as uid or gid 0, with its task
// directory owned by that user (mode 0700); no namespaces.
//
// SandboxAuto picks ns for a root runner built with cgo whose
// Config.Limiter and Config.TrampolinePath are unset, when a trial task
// works; else bwrap when a trial run of it works, else user when the
// runner is root (a root runner never runs a task as root), else off;
// SandboxState.Note says why. An explicit mode that cannot work is an error
// of New wrapping ErrSandbox.
//
// In every mode:
//
//   - Zip slip and friends: nothing is ever written outside the package
//     directory, and a rejected archive writes nothing at all.
//   - Runaway tasks: a wall-clock timeout and cancellation send SIGTERM to
//     the program's process group, then SIGKILL after a grace period, and
//     what is left is killed when the program exits. Under bwrap the
//     program's group is led by the sandbox's init (SIGTERM reaches the
//     program's handler, not bwrap), and the end of the PID namespace kills
//     every process in it, also those that started a session of their own,
//     and also when the runner dies (--die-with-parent). Without bwrap, each
//     task starts in a cgroup v2 of its own where the runner can make one
//     (Config.Cgroup, SandboxState.GroupKill): at the task's end its
//     cgroup.kill ends every process in it, also those that left the
//     group, and Run returns once the cgroup is empty and removed.
//   - Resource exhaustion by one task, through rlimits applied before the
//     program's first instruction (LimiterPtrace: the program stopped by
//     the kernel at its exec takes them by prlimit; LimiterTrampoline, and
//     always under bwrap: a re-exec of the runner's binary sets them and
//     execs the program, in C before the Go runtime starts in a build with
//     cgo, else in Main; SandboxState.Limiter says which): memory
//     (RLIMIT_DATA, 512 MiB), CPU time
//     (3600 s), open files (1024), processes (256), file size (1 GiB), no
//     core dumps. Flooding the log costs only the cap (8 MiB): the rest is
//     read and discarded, and the program is never blocked on a full pipe.
//   - Leaking the runner's secrets through the environment or descriptors:
//     the environment is built from scratch, and every descriptor but 0, 1
//     and 2 is closed at the program's exec. No shell injection: the program
//     is exec'd with an argv, never through a shell (unless its runtime is a
//     shell running the package's own script).
//   - Privilege gain through set-user-id programs: no_new_privs is set. The
//     task has its own session: no controlling terminal to inject into.
//
// # What it does not protect against
//
// This is defence in depth, not a virtual machine.
//
//   - SandboxOff: a task runs as Config.Credential or as the runner's own
//     user (root if the runner is root) and can read and write whatever that
//     user can, signal the runner, and RLIMIT_NPROC does not hold for root.
//   - SandboxUser: no mount or PID isolation: a task sees every process,
//     reads every world-readable file, writes every world-writable folder
//     (/tmp is shared), and, without group kills (SandboxState.GroupKill),
//     a process that leaves its group (setsid) survives the task. Tasks sharing a user (a project) can read each
//     other's task directories through /proc/<pid>/cwd and signal each
//     other.
//   - Every mode: the network is the host's unless IsolateNetwork (the
//     runner's own ports, the cloud's metadata endpoint); world-readable
//     files outside the hidden paths stay readable; there is no seccomp
//     filter, so the kernel's whole system call surface is reachable (and,
//     as another user of a root runner, unprivileged user namespaces if the
//     host allows them); limits are per process (and RLIMIT_NPROC per
//     user), not per task: a task's processes together can use more memory
//     than Memory, and there is no disk quota beyond the file-size limit.
//     cgroup controllers would close these gaps; a task's cgroup serves only
//     to kill it.
//   - A runner that is not root runs tasks as its own user even under
//     bwrap: anything that user can read outside the hidden paths, the
//     task can read.
//
// The reasoning behind the exec stop and the trampoline that apply the
// limits is in docs/decisions/003-runner-limits.md, the sandbox's in
// docs/decisions/004-runner-sandbox.md.
package runner
