package runner

import (
	"fmt"
	"slices"
)

// Sandbox says how a Runner keeps a task away from the runner (its
// environment, memory, files and process) and from other tasks. See the
// package documentation for what each mode stops and what it does not.
type Sandbox string

// Sandbox modes of Config.Sandbox.
const (
	// SandboxAuto, the default, picks the strongest mode that works here,
	// the cheapest first: SandboxNamespaces when the runner is root, this
	// build has cgo and Config.Limiter and Config.TrampolinePath are not
	// set; else SandboxBwrap when bubblewrap can create its namespaces;
	// else SandboxUser when the runner is root; else SandboxOff.
	SandboxAuto Sandbox = "auto"
	// SandboxNamespaces gives every task the isolation of SandboxBwrap —
	// its own PID, IPC and mount namespaces, the root file system
	// read-only, private /tmp, /var/tmp and /dev/shm, a minimal /dev,
	// Config.Hide absent, the task directory the only writable folder of
	// the host, at SandboxTaskDir, another user than root — set up by the
	// runner's own resident helper process, which clones each task into
	// fresh namespaces: no bubblewrap, no trampoline, one exec per task.
	// The helper sets the limits itself; Config.Limiter does not apply.
	// It needs a root runner and a build with cgo on Linux; New fails
	// without them or when a trial task fails.
	SandboxNamespaces Sandbox = "ns"
	// SandboxBwrap runs every task inside bubblewrap (bwrap): its own PID,
	// IPC and mount namespaces, the root file system read-only, private
	// /tmp, /var/tmp and /dev/shm, Config.Hide absent, the task directory
	// the only writable folder of the host, at SandboxTaskDir. When the
	// runner is root the task also runs as another user, as in SandboxUser;
	// otherwise bwrap puts it in a user namespace of the runner's own user.
	// New fails when bwrap is missing or cannot create its namespaces.
	SandboxBwrap Sandbox = "bwrap"
	// SandboxUser runs every task as an unprivileged user (Spec.Credential,
	// else Config.Credential, else nobody), never as root, with its task
	// directory private to that user; no namespaces. It needs a root
	// runner, and WorkDir and every folder above it searchable by others.
	SandboxUser Sandbox = "user"
	// SandboxOff runs tasks as before sandboxes existed: as Config.Credential
	// or as the runner's own user, who may be root.
	SandboxOff Sandbox = "off"
)

// SandboxTaskDir is where a task finds its task directory inside the bwrap
// and ns sandboxes: its -d argument, TASK_DIR, HOME and working directory.
// Without them the task sees the directory at its real path
// (Result.TaskDir).
const SandboxTaskDir = "/tmp/task"

// NobodyID is the user and group id a task runs as under SandboxUser and a
// root SandboxBwrap when neither Spec.Credential nor Config.Credential names
// one (Debian's nobody and nogroup).
const NobodyID = 65534

var sandboxModes = []Sandbox{SandboxAuto, SandboxNamespaces, SandboxBwrap, SandboxUser, SandboxOff}

// ParseSandbox returns the Sandbox that s names: auto, ns, bwrap, user or
// off.
func ParseSandbox(s string) (Sandbox, error) {
	if !slices.Contains(sandboxModes, Sandbox(s)) {
		return "", fmt.Errorf("%w: sandbox %q: want auto, ns, bwrap, user or off", ErrInvalidSpec, s)
	}
	return Sandbox(s), nil
}

// SandboxState is the protection a Runner gives its tasks, resolved by New
// from Config.Sandbox.
type SandboxState struct {
	// Mode is SandboxNamespaces, SandboxBwrap, SandboxUser or SandboxOff,
	// never SandboxAuto.
	Mode Sandbox
	// SwitchUser is true when tasks run as another user than the runner's
	// (a root runner under SandboxUser or SandboxBwrap): Spec.Credential,
	// else Config.Credential, else NobodyID.
	SwitchUser bool
	// Note explains the choice in one line, for the runner's log: why auto
	// did not pick bwrap, or that tasks run as root.
	Note string
	// Limiter is how the limits are applied: LimiterPtrace or
	// LimiterTrampoline, never LimiterAuto; "" under SandboxNamespaces,
	// whose helper sets them in the task's process before its exec.
	Limiter Limiter
	// Under SandboxBwrap, LimiterPtrace means bwrap itself is stopped at
	// its exec and limited, and runs as the task's user in a user
	// namespace (docs/decisions/004-runner-sandbox.md, "Update 2").
	//
	// LimiterNote explains the limiter in one line, for the runner's log:
	// why LimiterAuto did not pick LimiterPtrace, or how LimiterPtrace
	// limits a task of another user; "" otherwise.
	LimiterNote string
	// GroupKill is true when every task runs in a cgroup v2 of its own
	// (Config.Cgroup), whose processes are all killed at the task's end,
	// including those that left its process group. Cgroup is then the
	// runner's sub-tree of these cgroups; otherwise GroupKillNote says
	// why not, for the runner's log.
	GroupKill     bool
	Cgroup        string
	GroupKillNote string
}

// String describes the state in a few words.
func (s SandboxState) String() string {
	out := string(s.Mode)
	if s.SwitchUser {
		out += ", tasks as separate users"
	}
	if s.Note != "" {
		out += " (" + s.Note + ")"
	}
	if s.Limiter != "" {
		out += ", limits by " + string(s.Limiter)
	}
	if s.LimiterNote != "" {
		out += " (" + s.LimiterNote + ")"
	}
	if s.GroupKill {
		out += ", a cgroup per task in " + s.Cgroup
	} else if s.GroupKillNote != "" {
		out += ", group kills " + s.GroupKillNote
	}
	return out
}
