package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kilnhq/kiln/runner/internal/zygote"
)

// Defaults of Config.
const (
	// TimeoutDefault is a task's wall-clock limit when neither the Spec nor
	// the Config sets one: 3600 s, IronWorker's default and maximum.
	TimeoutDefault = time.Hour
	// KillGraceDefault is how long a task has between SIGTERM and SIGKILL: 5 s.
	KillGraceDefault = 5 * time.Second
	// LogLimitDefault caps the log bytes passed to the sink: 8 MiB.
	LogLimitDefault = 8 << 20
	// DrainTimeoutDefault is how long Run keeps reading the log after the
	// process group has been killed, for output still in the pipe or held
	// by a process that left the group: 2 s.
	DrainTimeoutDefault = 2 * time.Second
	// PathDefault is the PATH a task gets and the one interpreters are
	// looked up in (never the server's own PATH).
	PathDefault = "/usr/local/bin:/usr/bin:/bin"

	// MemoryDefault is RLIMIT_DATA: 512 MiB, about IronWorker's memory.
	MemoryDefault = 512 << 20
	// AddressSpaceDefault is RLIMIT_AS: Unlimited. A Go program needs
	// 600-700 MiB of address space just to start, Java more: Memory is the
	// limit that works for every runtime.
	AddressSpaceDefault = Unlimited
	// CPUTimeDefault is RLIMIT_CPU: 3600 s.
	CPUTimeDefault = time.Hour
	// OpenFilesDefault is RLIMIT_NOFILE: 1024.
	OpenFilesDefault = 1024
	// ProcessesDefault is RLIMIT_NPROC: 256 (see ProcLimits.Processes).
	ProcessesDefault = 256
	// FileSizeDefault is RLIMIT_FSIZE: 1 GiB.
	FileSizeDefault = 1 << 30
)

// SpawnLoopFunc names the function of the goroutines that start the
// programs of LimiterPtrace (a small pool, grown while every one is busy),
// for goroutine leak checks in tests (goleak.IgnoreAnyFunction): they live
// as long as the process, once a Runner has used LimiterPtrace (or tried
// it in New).
const SpawnLoopFunc = "github.com/kilnhq/kiln/runner.spawnLoop"

// SandboxHelperFunc names the function of the goroutine, locked to its
// thread, that starts SandboxNamespaces' helper process (whose
// parent-death signal is tied to that thread), for goroutine leak checks
// in tests, like SpawnLoopFunc: it lives as long as the process once a
// Runner has tried SandboxNamespaces.
const SandboxHelperFunc = zygote.KeeperFunc

// Unlimited is the ProcLimits value that leaves a limit as the runner's own.
const Unlimited = -1

// ProcLimits are the resource limits (setrlimit) of a task's process; its
// children inherit them. A zero field means its default, Unlimited leaves the
// limit alone. Core dumps are always off. Above the runner's own hard limit a
// value is lowered to it unless the runner is root.
type ProcLimits struct {
	// Memory is RLIMIT_DATA in bytes: since Linux 4.7 it caps the heap and
	// every private writable mapping, that is the memory a process has
	// committed, while address space merely reserved (PROT_NONE, as Go and
	// Java runtimes do) does not count. An allocation beyond it fails.
	// Default MemoryDefault.
	Memory int64
	// AddressSpace is RLIMIT_AS in bytes (virtual memory, reservations
	// included). Default AddressSpaceDefault (Unlimited).
	AddressSpace int64
	// CPUTime is RLIMIT_CPU, rounded up to whole seconds: SIGXCPU, then
	// SIGKILL. Default CPUTimeDefault.
	CPUTime time.Duration
	// OpenFiles is RLIMIT_NOFILE. Default OpenFilesDefault.
	OpenFiles int64
	// Processes is RLIMIT_NPROC. Linux counts it per user across the whole
	// machine (threads included) and does not apply it to root, so it only
	// stops a fork bomb when tasks run as a dedicated user (Config.Credential).
	// Default ProcessesDefault.
	Processes int64
	// FileSize is RLIMIT_FSIZE in bytes: the largest file a task may write
	// (SIGXFSZ beyond). Default FileSizeDefault.
	FileSize int64
}

func (l ProcLimits) withDefaults() ProcLimits {
	if l.Memory == 0 {
		l.Memory = MemoryDefault
	}
	if l.AddressSpace == 0 {
		l.AddressSpace = AddressSpaceDefault
	}
	if l.CPUTime == 0 {
		l.CPUTime = CPUTimeDefault
	}
	if l.OpenFiles == 0 {
		l.OpenFiles = OpenFilesDefault
	}
	if l.Processes == 0 {
		l.Processes = ProcessesDefault
	}
	if l.FileSize == 0 {
		l.FileSize = FileSizeDefault
	}
	return l
}

func (l ProcLimits) validate() []error {
	var errs []error
	check := func(name string, v int64) {
		if v < Unlimited {
			errs = append(errs, fmt.Errorf("%w: ProcLimits.%s is %d (use Unlimited, 0 for the default, or a positive value)", ErrInvalidSpec, name, v))
		}
	}
	check("Memory", l.Memory)
	check("AddressSpace", l.AddressSpace)
	check("CPUTime", int64(l.CPUTime))
	check("OpenFiles", l.OpenFiles)
	check("Processes", l.Processes)
	check("FileSize", l.FileSize)
	return errs
}

// Config configures a Runner. A nil *Config means all defaults.
type Config struct {
	// WorkDir is where task directories are created. Default os.TempDir().
	WorkDir string
	// Limits are the resource limits of every task.
	Limits ProcLimits
	// Timeout is the wall-clock limit of a task whose Spec sets none.
	// Default TimeoutDefault.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL when a task times
	// out or is cancelled. Default KillGraceDefault.
	KillGrace time.Duration
	// LogLimit caps the bytes of output passed to Spec.Log; the rest is read
	// and discarded. Default LogLimitDefault.
	LogLimit int64
	// DrainTimeout bounds the reading of the log once the task's process
	// group is gone. Default DrainTimeoutDefault.
	DrainTimeout time.Duration
	// Path is the PATH of every task, and where interpreters are looked up.
	// Default PathDefault.
	Path string
	// Runtimes adds to or overrides the runtime table (see Spec.Runtime):
	// each value is the interpreter's argv before the script; a nil or empty
	// value runs the file itself.
	Runtimes map[string][]string
	// Credential, if set, runs every task whose Spec names none as this
	// user and group (and these supplementary groups, none if empty), with
	// the task directory owned by it. Changing user needs root; without
	// bwrap, WorkDir and its parents must be searchable (x) by that user.
	// Default nil: the runner's own user under SandboxOff, NobodyID when
	// the sandbox switches users (SandboxState.SwitchUser).
	Credential *syscall.Credential
	// LinkPackage gives a task hard links to its package's files instead
	// of copies, where the task cannot change them: the sandbox switches
	// users (SandboxState.SwitchUser), the task's user is not the file's
	// owner, and the file is writable by its owner only (and has no set-id
	// bit). Such a file is read-only to the task, which may still delete,
	// rename or replace it in its directory and create new files; but a
	// program that changes a file of its package in place, or its mode
	// (the "chmod +x" of an IronWorker __runner__.sh), fails. A link costs
	// no copy and no new inode, which a package of many files pays on
	// every task otherwise (docs/benchmarks.md). The package's folders are
	// the task's own either way, and so is a file that cannot be linked
	// (another file system, too many links). Default false: copies.
	LinkPackage bool
	// Sandbox is how tasks are kept away from the runner and from each
	// other; default SandboxAuto. See the package doc and SandboxState.
	Sandbox Sandbox
	// BwrapPath is the bubblewrap binary; default "bwrap" looked up in
	// Path.
	BwrapPath string
	// Hide lists absolute paths of the host (folders or files) that a task
	// in the bwrap sandbox must not see: each becomes an empty folder (or
	// an empty file). Put here the server's data folder, its store and its
	// configuration files. WorkDir (every task's directory) is hidden too,
	// and /tmp, /var/tmp and /dev/shm are always private. Without bwrap it
	// has no effect: file modes and the task's user protect those paths.
	Hide []string
	// IsolateNetwork gives each task in the bwrap sandbox its own network
	// namespace with only a loopback interface: no network at all. Default
	// false: tasks share the host's network.
	IsolateNetwork bool
	// TrampolinePath is the binary started to apply the limits before the
	// program runs under LimiterTrampoline; it must call Main first thing
	// in main. Default: the running binary, provided it has called Main.
	// Setting it picks LimiterTrampoline under LimiterAuto.
	TrampolinePath string
	// Limiter is how the limits, the user and no_new_privs are put on a
	// task's program before its first instruction; default LimiterAuto.
	// See SandboxState.Limiter for the one a Runner uses.
	Limiter Limiter
	// Cgroup is where the runner makes a cgroup v2 for each task, to kill
	// every process of the task at its end (cgroup.kill), including those
	// that left its process group (setsid): CgroupAuto (the default) under
	// the runner's own cgroup in the cgroup2 mount, CgroupOff for none, or
	// the absolute path of a cgroup v2 folder. The runner makes its
	// sub-tree kiln-runner-<pid> there. Where that cannot work (no cgroup2
	// mount, no right to make cgroups there, a kernel before 5.14) tasks
	// run without, as with CgroupOff, and SandboxState.GroupKillNote says
	// why. Not used under SandboxBwrap, whose PID namespace ends every
	// process of a task.
	Cgroup string
	// goTrampoline (tests) has the trampoline run Main's Go code where
	// the binary also has the C one (trampoline_cgo.go).
	goTrampoline bool
}

// Values of Config.Cgroup besides a path.
const (
	CgroupAuto = "auto"
	CgroupOff  = "off"
)

// Limiter says how a Runner puts a task's limits (ProcLimits, no core
// dumps), its user and no_new_privs on the program before the program's
// first instruction (docs/decisions/003-runner-limits.md).
type Limiter string

// Limiters of Config.Limiter.
const (
	// LimiterAuto, the default, picks LimiterPtrace where it works and the
	// trampoline is not needed, else LimiterTrampoline.
	LimiterAuto Limiter = "auto"
	// LimiterPtrace starts the program itself, stopped by the kernel at
	// its exec (PTRACE_TRACEME), sets the limits on the stopped process
	// with prlimit and lets it go: one process start per task. The user
	// is set before the exec, no_new_privs comes from the starting thread.
	// Not under SandboxBwrap, where the user is changed inside the
	// sandbox by the trampoline. New fails with it when a trial run does.
	LimiterPtrace Limiter = "ptrace"
	// LimiterTrampoline starts a copy of the running binary (or
	// Config.TrampolinePath), whose Main sets the limits, the user and
	// no_new_privs and then execs the program: two process starts per
	// task, and it needs Main called first thing in main.
	LimiterTrampoline Limiter = "trampoline"
)

var limiters = []Limiter{LimiterAuto, LimiterPtrace, LimiterTrampoline}

// ParseLimiter returns the Limiter that s names: auto, ptrace or
// trampoline.
func ParseLimiter(s string) (Limiter, error) {
	if !slices.Contains(limiters, Limiter(s)) {
		return "", fmt.Errorf("%w: limiter %q: want auto, ptrace or trampoline", ErrInvalidSpec, s)
	}
	return Limiter(s), nil
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	out.Limits = out.Limits.withDefaults()
	if out.Timeout == 0 {
		out.Timeout = TimeoutDefault
	}
	if out.KillGrace == 0 {
		out.KillGrace = KillGraceDefault
	}
	if out.LogLimit == 0 {
		out.LogLimit = LogLimitDefault
	}
	if out.DrainTimeout == 0 {
		out.DrainTimeout = DrainTimeoutDefault
	}
	if out.Path == "" {
		out.Path = PathDefault
	}
	if out.Sandbox == "" {
		out.Sandbox = SandboxAuto
	}
	if out.Limiter == "" {
		out.Limiter = LimiterAuto
	}
	if out.Cgroup == "" {
		out.Cgroup = CgroupAuto
	}
	out.Runtimes = maps.Clone(out.Runtimes)
	out.Hide = slices.Clone(out.Hide)
	return out
}

func (c *Config) validate() error {
	errs := c.Limits.validate()
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: Config.Timeout is negative", ErrInvalidSpec))
	}
	if c.KillGrace < 0 {
		errs = append(errs, fmt.Errorf("%w: Config.KillGrace is negative", ErrInvalidSpec))
	}
	if c.LogLimit < 0 {
		errs = append(errs, fmt.Errorf("%w: Config.LogLimit is negative", ErrInvalidSpec))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: Config.DrainTimeout is negative", ErrInvalidSpec))
	}
	for _, dir := range filepath.SplitList(c.Path) {
		if !filepath.IsAbs(dir) {
			errs = append(errs, fmt.Errorf("%w: Config.Path holds %q, which is not absolute", ErrInvalidSpec, dir))
		}
	}
	if c.WorkDir != "" && !filepath.IsAbs(c.WorkDir) {
		errs = append(errs, fmt.Errorf("%w: Config.WorkDir %q is not absolute", ErrInvalidSpec, c.WorkDir))
	}
	if _, err := ParseSandbox(string(c.Sandbox)); err != nil {
		errs = append(errs, fmt.Errorf("Config.Sandbox: %w", err))
	}
	if _, err := ParseLimiter(string(c.Limiter)); err != nil {
		errs = append(errs, fmt.Errorf("Config.Limiter: %w", err))
	}
	if c.Cgroup != CgroupAuto && c.Cgroup != CgroupOff && !filepath.IsAbs(c.Cgroup) {
		errs = append(errs, fmt.Errorf("%w: Config.Cgroup %q: want auto, off or an absolute path", ErrInvalidSpec, c.Cgroup))
	}
	for _, h := range c.Hide {
		if !filepath.IsAbs(h) || filepath.Clean(h) == "/" {
			errs = append(errs, fmt.Errorf("%w: Config.Hide holds %q, which is not an absolute path below /", ErrInvalidSpec, h))
		}
	}
	return errors.Join(errs...)
}

// Runtimes is the built-in runtime table: the interpreter's argv before the
// script, looked up in Config.Path. "binary", "go" and "" run the file
// itself. Config.Runtimes adds to it or overrides it.
var runtimeTable = map[string][]string{
	"":        nil,
	"binary":  nil,
	"go":      nil,
	"sh":      {"sh"},
	"bash":    {"bash"},
	"python":  {"python3"},
	"python3": {"python3"},
	"ruby":    {"ruby"},
	"php":     {"php"},
	"node":    {"node"},
	"perl":    {"perl"},
	"java":    {"java", "-jar"},
}

// Runtimes returns a copy of the built-in runtime table (see Spec.Runtime).
func Runtimes() map[string][]string {
	out := make(map[string][]string, len(runtimeTable))
	for k, v := range runtimeTable {
		out[k] = slices.Clone(v)
	}
	return out
}

// Spec describes one task run. Only TaskID and one of File or Command are
// required.
type Spec struct {
	// TaskID names the task: 1 to 128 of A-Z a-z 0-9 . _ - (it appears in a
	// directory name and in -id).
	TaskID string
	// PackageDir is an unpacked code package (see Unpack). Its files are
	// copied into the task directory, the program's working directory,
	// where IronWorker programs expect them. Empty: no package.
	PackageDir string
	// Runtime picks the interpreter of File (the code package's "runtime"):
	//
	//	"binary", "go", ""   the file itself (made executable in the task dir)
	//	"sh"                 sh ./File
	//	"bash"               bash ./File
	//	"python", "python3"  python3 ./File
	//	"ruby", "php", "node", "perl"   <runtime> ./File
	//	"java"               java -jar ./File
	//
	// Interpreters are looked up in Config.Path; Config.Runtimes extends the
	// table. There is never a shell between kiln and the program unless the
	// runtime is a shell running the package's own script.
	Runtime string
	// File is the program inside the package (the code package's
	// "file_name"), a local slash-separated path.
	File string
	// Command, if set instead of File, is the program's argv (the code
	// package's "command", already split; metacharacters are literal). A
	// Command[0] with a slash is relative to the task directory (or
	// absolute); without one it is looked up in Config.Path.
	Command []string
	// Payload is written to the file named by -payload and PAYLOAD_FILE.
	Payload []byte
	// Config is written to the file named by -config and CONFIG_FILE.
	Config []byte
	// Env is the package's env_vars, added to the task's environment. It may
	// override PATH and HOME, not the TASK_*, PAYLOAD_FILE, CONFIG_FILE
	// variables.
	Env map[string]string
	// Timeout is this task's wall-clock limit. Default Config.Timeout.
	Timeout time.Duration
	// Log receives the task's stdout and stderr, interleaved as written,
	// live, in chunks, from one goroutine at a time, up to Config.LogLimit
	// bytes followed by a marker line if there was more. A slow Log slows
	// the task (its pipe fills); a failing Log stops the copy but not the
	// task. Nil discards the output.
	Log io.Writer
	// Keep leaves the task directory in place after the run (for debugging).
	Keep bool
	// Credential, if set, runs this task as this user and group instead of
	// Config.Credential (a code package runner gives each project its own
	// user). When the sandbox switches users it may not be root (uid or
	// gid 0).
	Credential *syscall.Credential
}

// Status is how a run ended: the IronWorker task statuses a run can end in.
type Status string

// Statuses of a Result.
const (
	StatusComplete  Status = "complete"
	StatusError     Status = "error"
	StatusTimeout   Status = "timeout"
	StatusCancelled Status = "cancelled"
)

// Result describes a finished run.
type Result struct {
	// Status is complete (exit 0), error (any other exit, or not started),
	// timeout (Spec.Timeout passed, or ctx's cause is
	// context.DeadlineExceeded) or cancelled (ctx done for another cause).
	Status Status
	// Msg explains a status other than complete: "exit status 3", "killed
	// by signal: segmentation fault", "timed out after 1m0s", ...
	Msg string
	// ExitCode is the exit status, or -1 if the process was killed by a
	// signal or never started.
	ExitCode int
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal
	// Cause is context.Cause of ctx for StatusCancelled and for a timeout
	// by ctx, nil otherwise.
	Cause error
	// StartedAt is when the program was running (its exec had succeeded);
	// zero if it never started. EndedAt is when it exited.
	StartedAt, EndedAt time.Time
	// Duration is EndedAt - StartedAt.
	Duration time.Duration
	// LogBytes is how many bytes of output were passed to Spec.Log,
	// LogDropped how many more were read and discarded; LogTruncated says
	// whether the cap was hit (and the marker line written).
	LogBytes, LogDropped int64
	// LogTruncated is true when the output exceeded Config.LogLimit.
	LogTruncated bool
	// LogErr is the first error Spec.Log returned, if any.
	LogErr error
	// UserTime and SystemTime are the CPU time of the process (not of
	// children it did not wait for); MaxRSS its peak resident memory in bytes.
	UserTime, SystemTime time.Duration
	// MaxRSS is the peak resident set size in bytes.
	MaxRSS int64
	// TaskDir is the task directory: removed, or reset and kept for a
	// later task of the package, when Run returns, unless Spec.Keep.
	TaskDir string
	// PID is the process group id of the task's processes: the program's
	// own process id, or under bwrap that of the sandbox's init process (the
	// program's parent); 0 if it never started.
	PID int
}

// Runner runs tasks as separate processes. It is safe for concurrent use;
// each Run is independent.
type Runner struct {
	cfg Config
	sb  SandboxState
	bw  *bwrapSetup // under SandboxBwrap
	ns  *nsSetup    // under SandboxNamespaces
	// rlimits are the limits LimiterPtrace sets (nil under the trampoline).
	rlimits *ptraceRlimits
	// limitOthers: LimiterPtrace may limit a process of another user
	// (CAP_SYS_RESOURCE); if not, such a task sets selfRlimits itself
	// (limitAsTracee), or goes through the trampoline when selfRlimits is
	// nil (an architecture without limitAsTracee).
	limitOthers bool
	selfRlimits *ptraceRlimits
	// cg is the sub-tree in which each task gets a cgroup of its own (nil:
	// no group kills, see SandboxState.GroupKill).
	cg *cgroupTree
	// dirs keeps task directories for later tasks (see Run).
	dirs dirPool
}

// New returns a Runner with cfg (nil: all defaults), or every problem of
// cfg at once. It resolves Config.Sandbox, trying bwrap once when the mode
// is auto or bwrap, then Config.Limiter, trying ptrace once when it is
// auto or ptrace; an explicit mode that cannot work here is an error
// wrapping ErrSandbox that says why.
func New(cfg *Config) (*Runner, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	r := &Runner{cfg: c}
	if err := r.resolveSandbox(); err != nil {
		return nil, err
	}
	if err := r.resolveLimiter(); err != nil {
		return nil, err
	}
	r.resolveCgroup()
	return r, nil
}

// Sandbox returns the protection the Runner gives its tasks.
func (r *Runner) Sandbox() SandboxState { return r.sb }

var defaultRunner = sync.OnceValues(func() (*Runner, error) {
	r, err := New(nil)
	if err == nil {
		// Nothing would ever Close it: it keeps no task directory.
		_ = r.Close()
	}
	return r, err
})

// Run runs spec with a Runner of default Config, which keeps no task
// directory for a later task. See (*Runner).Run.
func Run(ctx context.Context, spec Spec) (Result, error) {
	r, err := defaultRunner()
	if err != nil {
		return Result{Status: StatusError, ExitCode: -1, Msg: err.Error()}, err
	}
	return r.Run(ctx, spec)
}

// Reserved environment variables a package's env_vars may not set.
var reservedEnv = []string{"TASK_ID", "TASK_DIR", "PAYLOAD_FILE", "CONFIG_FILE", trampolineEnv}

var taskIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidateEnv reports whether env (a package's env_vars) can be given to a
// task: names non-empty, without '=' or NUL, not reserved; values without NUL.
// A server should call it when a package is uploaded.
func ValidateEnv(env map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			errs = append(errs, fmt.Errorf("%w: environment variable name %q", ErrInvalidSpec, k))
		case slices.Contains(reservedEnv, k):
			errs = append(errs, fmt.Errorf("%w: environment variable %s is set by kiln", ErrInvalidSpec, k))
		case strings.ContainsRune(v, 0):
			errs = append(errs, fmt.Errorf("%w: environment variable %s holds a NUL", ErrInvalidSpec, k))
		}
	}
	return errors.Join(errs...)
}

func (s *Spec) validate() error {
	var errs []error
	if !taskIDPattern.MatchString(s.TaskID) || s.TaskID == "." || s.TaskID == ".." {
		errs = append(errs, fmt.Errorf("%w: TaskID %q: want 1 to 128 of A-Z a-z 0-9 . _ -", ErrInvalidSpec, s.TaskID))
	}
	switch {
	case s.File == "" && len(s.Command) == 0:
		errs = append(errs, fmt.Errorf("%w: neither File nor Command is set", ErrInvalidSpec))
	case s.File != "" && len(s.Command) > 0:
		errs = append(errs, fmt.Errorf("%w: both File and Command are set", ErrInvalidSpec))
	case s.File != "":
		if strings.ContainsAny(s.File, "\\\x00") || !filepath.IsLocal(s.File) {
			errs = append(errs, fmt.Errorf("%w: File %q is not a local path", ErrInvalidSpec, s.File))
		}
	default:
		if s.Command[0] == "" {
			errs = append(errs, fmt.Errorf("%w: Command[0] is empty", ErrInvalidSpec))
		}
		for _, a := range s.Command {
			if strings.ContainsRune(a, 0) {
				errs = append(errs, fmt.Errorf("%w: Command holds a NUL", ErrInvalidSpec))
				break
			}
		}
	}
	if s.PackageDir != "" && !filepath.IsAbs(s.PackageDir) {
		errs = append(errs, fmt.Errorf("%w: PackageDir %q is not absolute", ErrInvalidSpec, s.PackageDir))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: Timeout is negative", ErrInvalidSpec))
	}
	if err := ValidateEnv(s.Env); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
