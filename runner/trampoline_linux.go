//go:build linux

package runner

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// trampolineEnv marks a process started by Run as a trampoline; its value
// carries the limits and the credential. The trampoline removes it from the
// environment before it execs the program.
const trampolineEnv = "KILN_RUNNER_TRAMPOLINE"

// trampolineGoEnv, set beside the marker, has the C trampoline of a build
// with cgo leave the work to Main's Go one (tests of the latter); neither
// passes it on to the program.
const trampolineGoEnv = "KILN_RUNNER_TRAMPOLINE_GO"

// statusFD is the trampoline's end of the status pipe (ExtraFiles[0]).
const statusFD = 3

// Stages of the trampoline, reported with the errno when one fails.
const (
	stageParse byte = iota + 1
	stageCloexec
	stageSigmask
	stageRlimit
	stageSetgroups
	stageSetgid
	stageSetuid
	stageNoNewPrivs
	stageExec
	// The stages of SandboxNamespaces' helper (runner/internal/zygote),
	// which numbers them alike; from stageNamespaces on they are the
	// sandbox's own.
	stageNamespaces
	stageMount
	stageFork
	stageChdir
	stageNetwork
	stageStdin
)

var stageNames = map[byte]string{
	stageParse:      "read the trampoline's arguments",
	stageCloexec:    "set up the status pipe",
	stageSigmask:    "reset the signal mask",
	stageRlimit:     "set a resource limit",
	stageSetgroups:  "set the supplementary groups",
	stageSetgid:     "set the group id",
	stageSetuid:     "set the user id",
	stageNoNewPrivs: "set no_new_privs",
	stageExec:       "exec the program",
	stageNamespaces: "create the sandbox's namespaces",
	stageMount:      "mount the sandbox's files",
	stageFork:       "start the sandbox's processes",
	stageChdir:      "enter the task directory",
	stageNetwork:    "bring up the sandbox's loopback",
	stageStdin:      "set up the standard descriptors",
}

// mainCalled records that Main ran in this process, so the running binary
// can serve as the trampoline.
var mainCalled atomic.Bool

// Main must be called first thing in the main function of any binary that
// uses Run (the kiln binary; a test binary's TestMain): when the process is
// a trampoline started by Run, Main applies the task's resource limits and
// user, then replaces the process with the task's program, and never
// returns. Otherwise it returns at once, having noted that this binary can
// be a trampoline. In a build with cgo the trampoline has already done
// that in C before the Go runtime started (trampoline_cgo.go), and Main
// only takes note.
//
// Why: Go cannot run code in a child between fork and exec, so the limits
// are set by this short-lived re-exec of the binary itself, before the
// program's first instruction (docs/decisions/003-runner-limits.md).
func Main() {
	mainCalled.Store(true)
	v, ok := os.LookupEnv(trampolineEnv)
	if !ok {
		return
	}
	trampoline(v)
}

// trampolineSpec is what the marker variable carries.
type trampolineSpec struct {
	limits [len(rlimitOrder)]int64 // as in rlimitOrder; -1 leaves a limit alone
	uid    int                     // -1: keep
	gid    int
	groups []int
	// unsetPWD removes PWD from the environment: bwrap sets it, and the
	// task's environment is exactly the one Run built.
	unsetPWD bool
}

// The limits in the order they are encoded. The memory limits (the last
// lateLimits) are set last, right before execve, because the trampoline's
// own memory (a Go runtime, maybe a race detector's shadow) may be far
// larger than the program's.
var rlimitOrder = [...]int{unix.RLIMIT_CPU, unix.RLIMIT_NOFILE, unix.RLIMIT_NPROC, unix.RLIMIT_FSIZE, unix.RLIMIT_DATA, unix.RLIMIT_AS}

const lateLimits = 2

func (t trampolineSpec) encode() string {
	var b strings.Builder
	b.WriteString("1")
	for _, v := range t.limits {
		b.WriteString(" ")
		b.WriteString(strconv.FormatInt(v, 10))
	}
	fmt.Fprintf(&b, " %d %d ", t.uid, t.gid)
	if len(t.groups) == 0 {
		b.WriteString("-")
	}
	for i, g := range t.groups {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(strconv.Itoa(g))
	}
	if t.unsetPWD {
		b.WriteString(" p")
	} else {
		b.WriteString(" -")
	}
	return b.String()
}

func parseTrampolineSpec(s string) (trampolineSpec, bool) {
	f := strings.Fields(s)
	if len(f) != len(rlimitOrder)+5 || f[0] != "1" {
		return trampolineSpec{}, false
	}
	var t trampolineSpec
	for i := range t.limits {
		v, err := strconv.ParseInt(f[1+i], 10, 64)
		if err != nil || v < -1 {
			return trampolineSpec{}, false
		}
		t.limits[i] = v
	}
	n := len(rlimitOrder)
	// An id is at most 2^32-2: 2^32-1 is the kernel's "leave it as it is".
	uid, err1 := strconv.Atoi(f[n+1])
	gid, err2 := strconv.Atoi(f[n+2])
	if err1 != nil || err2 != nil || uid < -1 || gid < -1 || uid >= math.MaxUint32 || gid >= math.MaxUint32 {
		return trampolineSpec{}, false
	}
	t.uid, t.gid = uid, gid
	if f[n+3] != "-" {
		for g := range strings.SplitSeq(f[n+3], ",") {
			v, err := strconv.Atoi(g)
			if err != nil || v < 0 || v >= math.MaxUint32 {
				return trampolineSpec{}, false
			}
			t.groups = append(t.groups, v)
		}
	}
	switch f[n+4] {
	case "p":
		t.unsetPWD = true
	case "-":
	default:
		return trampolineSpec{}, false
	}
	return t, true
}

// trampolineFail is preallocated: after the memory limits are set the trampoline
// must not allocate.
var trampolineFail [5]byte

// fail reports the stage and errno on the status pipe and ends the process
// with unix.Exit (exit_group), not os.Exit: the runtime's exit path may need
// memory that the limits no longer grant, and there is nothing to flush.
func fail(stage byte, errno syscall.Errno) {
	trampolineFail[0] = stage
	binary.LittleEndian.PutUint32(trampolineFail[1:], uint32(errno)) //nolint:gosec // G115: errno values are small
	_, _ = unix.Write(statusFD, trampolineFail[:])
	unix.Exit(127)
}

var trampolineHello = []byte{'T'}

// trampoline runs in the re-executed binary. os.Args[1] is the program's
// path, os.Args[2:] its argv.
func trampoline(v string) {
	// Credentials are per thread at the system call level: every step up to
	// execve runs on this one thread, and changes only it (execve then
	// replaces the whole process).
	runtime.LockOSThread()
	// The handshake byte: "a trampoline is running" (a binary that does not
	// call Main never writes it).
	_, _ = unix.Write(statusFD, trampolineHello)

	spec, ok := parseTrampolineSpec(v)
	if !ok || len(os.Args) < 3 {
		fail(stageParse, unix.EINVAL)
	}
	path, err := syscall.BytePtrFromString(os.Args[1])
	if err != nil {
		fail(stageParse, unix.EINVAL)
	}
	argv, err := syscall.SlicePtrFromStrings(os.Args[2:])
	if err != nil {
		fail(stageParse, unix.EINVAL)
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, trampolineEnv+"=") && !strings.HasPrefix(kv, trampolineGoEnv+"=") && (!spec.unsetPWD || !strings.HasPrefix(kv, "PWD=")) {
			env = append(env, kv)
		}
	}
	envv, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		fail(stageParse, unix.EINVAL)
	}

	// Every descriptor but 0, 1 and 2 closes at execve: the status pipe
	// (its EOF is the handshake), and any the runner inherited without
	// close-on-exec from whoever started it (os/exec passes those on).
	if err := cloexecFrom(statusFD); err != nil {
		fail(stageCloexec, errnoOf(err))
	}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &unix.Sigset_t{}, nil); err != nil {
		fail(stageSigmask, errnoOf(err))
	}
	// Limits, lowered to the hard limit unless root (who may raise it).
	// The memory limits come last, just before execve.
	root := unix.Geteuid() == 0
	var rl [len(rlimitOrder)]unix.Rlimit
	for i, res := range rlimitOrder {
		want := spec.limits[i]
		if want < 0 {
			continue
		}
		var cur unix.Rlimit
		if err := unix.Getrlimit(res, &cur); err != nil {
			fail(stageRlimit, errnoOf(err))
		}
		w := uint64(want)
		if !root && w > cur.Max {
			w = cur.Max
		}
		rl[i] = unix.Rlimit{Cur: w, Max: w}
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		fail(stageRlimit, errnoOf(err))
	}
	for i, res := range rlimitOrder[:len(rlimitOrder)-lateLimits] {
		if spec.limits[i] < 0 {
			continue
		}
		if err := unix.Prlimit(0, res, &rl[i], nil); err != nil {
			fail(stageRlimit, errnoOf(err))
		}
	}
	if spec.uid >= 0 {
		if err := unix.Setgroups(spec.groups); err != nil {
			fail(stageSetgroups, errnoOf(err))
		}
		// Raw: this thread only (syscall.Setresgid would change every thread
		// of the trampoline, which is not needed before execve).
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(spec.gid), uintptr(spec.gid), uintptr(spec.gid)); e != 0 {
			fail(stageSetgid, e)
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(spec.uid), uintptr(spec.uid), uintptr(spec.uid)); e != 0 {
			fail(stageSetuid, e)
		}
	}
	// No set-user-id program can give the task more privileges.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail(stageNoNewPrivs, errnoOf(err))
	}
	// From here on nothing may allocate.
	for i := len(rlimitOrder) - lateLimits; i < len(rlimitOrder); i++ {
		if spec.limits[i] < 0 {
			continue
		}
		if err := unix.Prlimit(0, rlimitOrder[i], &rl[i], nil); err != nil {
			fail(stageRlimit, errnoOf(err))
		}
	}
	// Raw execve: syscall.Exec would convert (allocate) its arguments.
	_, _, e := unix.RawSyscall(unix.SYS_EXECVE,
		uintptr(unsafe.Pointer(path)),     //nolint:gosec // G103: execve takes C pointers; prepared above, kept alive below
		uintptr(unsafe.Pointer(&argv[0])), //nolint:gosec // G103: as above
		uintptr(unsafe.Pointer(&envv[0]))) //nolint:gosec // G103: as above
	runtime.KeepAlive(path)
	runtime.KeepAlive(argv)
	runtime.KeepAlive(envv)
	fail(stageExec, e)
}

// cloexecFrom sets close-on-exec on every open descriptor from first up:
// close_range (Linux 5.11), else one by one from /proc/self/fd.
func cloexecFrom(first int) error {
	if unix.CloseRange(uint(first), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(first), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return err
	}
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil // no /proc: the status pipe at least is set
	}
	defer func() { _ = d.Close() }()
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd < first || fd == int(d.Fd()) {
			continue
		}
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	return nil
}

func errnoOf(err error) syscall.Errno {
	if e, ok := err.(syscall.Errno); ok { //nolint:errorlint // unix.Getrlimit returns a bare Errno
		return e
	}
	return unix.EINVAL
}
