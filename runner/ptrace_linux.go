//go:build linux

package runner

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ptrace limiter (LimiterPtrace, docs/decisions/003-runner-limits.md):
// the child calls PTRACE_TRACEME right before its exec (os/exec's
// SysProcAttr.Ptrace), so the kernel stops it with SIGTRAP once the exec has
// succeeded, before the program's first instruction. The runner then sets
// the limits on the stopped process with prlimit and detaches: the program
// runs under them from its start, and no second process is started. The
// user is set by os/exec in the child before the exec (as the trampoline
// did before its own), and no_new_privs, which a process can only set on
// itself, is inherited from the thread that forks: the spawner's, which
// does nothing else (spawnLoop).

// resolveLimiter picks how the limits are applied, after resolveSandbox.
func (r *Runner) resolveLimiter() error {
	c := &r.cfg
	why := ""
	switch {
	case r.ns != nil:
		r.sb.LimiterNote = "set by the task's own process before its exec (the ns sandbox)"
		return nil
	case c.Limiter == LimiterTrampoline:
		r.sb.Limiter = LimiterTrampoline
		return nil
	case c.TrampolinePath != "":
		why = "Config.TrampolinePath is set"
	case r.bw != nil:
		why = r.resolveDirect()
		if why == "" {
			return nil
		}
	case (r.sb.SwitchUser || c.Credential != nil) && !limitsOthers() && !injectSupported:
		why = "tasks run as another user, whose process only a runner with CAP_SYS_RESOURCE may limit"
	default:
		err := r.probePtrace()
		if err == nil {
			r.usePtrace()
			return nil
		}
		why = "ptrace unusable: " + err.Error()
	}
	if c.Limiter == LimiterPtrace {
		return fmt.Errorf("%w: limiter ptrace: %s", ErrSandbox, why)
	}
	r.sb.Limiter = LimiterTrampoline
	r.sb.LimiterNote = why
	return nil
}

// usePtrace sets up LimiterPtrace, once its trial run has worked.
func (r *Runner) usePtrace() {
	r.sb.Limiter = LimiterPtrace
	r.rlimits = r.ptraceLimits(false)
	r.limitOthers = limitsOthers()
	if !r.limitOthers && injectSupported {
		r.selfRlimits = r.ptraceLimits(true)
		r.sb.LimiterNote = "no CAP_SYS_RESOURCE: a task of another user sets its own limits, stopped at its exec"
	}
}

// resolveDirect tries LimiterPtrace under bwrap (bwrapSetup.direct): bwrap
// is started as the task's user, stopped at its exec, given the limits
// (which every process of the sandbox inherits: limits pass through fork,
// exec and the creation of namespaces) and the empty signal mask, and
// execs the program itself. no_new_privs comes from the spawner thread,
// and bwrap sets it too. It returns why not ("" when in use).
func (r *Runner) resolveDirect() string {
	bw := r.bw
	st, err := os.Stat(bw.path)
	if err != nil {
		return "bwrap: " + err.Error()
	}
	if st.Mode()&fs.ModeSetuid != 0 {
		// Under ptrace (and no_new_privs) its exec would not take the
		// set-user-id privilege it relies on.
		return bw.path + " is set-user-id, which the exec stop would drop: the trampoline sets the limits inside the sandbox"
	}
	others := r.sb.SwitchUser || r.cfg.Credential != nil
	if others && !limitsOthers() && !injectSupported {
		return "tasks run as another user, whose process only a runner with CAP_SYS_RESOURCE may limit"
	}
	if r.sb.SwitchUser {
		// bwrap runs as the task's user: it must reach the task folder and
		// every hidden path to mount over them.
		for _, p := range bw.hide { // Config.Hide and the work folder
			if err := checkSearchable(filepath.Dir(filepath.Clean(p))); err != nil {
				return "bwrap runs as the task's user without the trampoline, and cannot reach " + p + ": " + err.Error()
			}
		}
		if err := checkSearchable(r.workDir()); err != nil {
			return "bwrap runs as the task's user without the trampoline: " + err.Error()
		}
	}
	if err := r.probePtrace(); err != nil {
		return "ptrace unusable: " + err.Error()
	}
	if err := subreaper(); err != nil {
		return "cannot become a child subreaper, to reap the sandboxes' init: " + err.Error()
	}
	bw.direct, bw.userns = true, r.sb.SwitchUser
	r.usePtrace()
	if err := r.probeDirect(); err != nil {
		bw.direct, bw.userns = false, false
		r.rlimits, r.selfRlimits, r.limitOthers = nil, nil, false
		r.sb.Limiter, r.sb.LimiterNote = "", ""
		return "bwrap under the exec stop: " + err.Error()
	}
	return ""
}

// probeDirect runs bwrap once as Run does under direct ("bwrap --version"
// inside), as nobody when tasks run as other users.
func (r *Runner) probeDirect() error {
	bw := r.bw
	opts, err := bw.sandboxOptions()
	if err != nil {
		return err
	}
	args := append(append([]string{bw.path}, opts...), "--info-fd", strconv.Itoa(directInfoFD), "--", bw.path, "--version")
	key := "direct\x00" + strings.Join(args, "\x00")
	if v, ok := probes.Load(key); ok {
		err, _ := v.(error)
		return err
	}
	tr := &tracing{lim: r.rlimits}
	var cred *syscall.Credential
	if r.sb.SwitchUser {
		cred = &syscall.Credential{Uid: NobodyID, Gid: NobodyID}
		if !r.limitOthers {
			tr = &tracing{lim: r.selfRlimits, self: true}
		}
	}
	infoR, infoW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer func() { _ = infoR.Close() }()
	var out bytes.Buffer
	cmd := &exec.Cmd{Path: bw.path, Args: args, Env: []string{}, Stdout: &out, Stderr: &out, ExtraFiles: []*os.File{infoW},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: cred}}
	err = startTraced(cmd, tr)
	_ = infoW.Close()
	if cmd.Process != nil {
		var init *initProc
		if pid, err := readBwrapInfo(infoR, time.Now().Add(probeTimeout)); err == nil {
			init = openInit(pid)
		}
		werr := cmd.Wait()
		if init != nil {
			init.reap()
		}
		if err == nil {
			err = werr
		}
	}
	if err == nil && !bytes.HasPrefix(out.Bytes(), []byte("bubblewrap")) {
		err = errors.New("unexpected output")
	}
	if err != nil {
		err = fmt.Errorf("%w: %s", err, firstLine(out.Bytes()))
	}
	probes.Store(key, err)
	return err
}

// limitsOthers reports whether this process may set the limits of a
// process of another user (prlimit needs CAP_SYS_RESOURCE for that; a
// container often lacks it, root or not).
func limitsOthers() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}

// ptraceProbes caches the trial runs of the ptrace limiter by the program
// they ran: the answer does not change while a process runs.
var ptraceProbes sync.Map // string -> error (or nil)

// probePtrace starts "true" (from Config.Path) the way Run starts a
// program under LimiterPtrace and checks that it stopped at its exec, took
// its limits and exited 0: set by the runner, and by the task itself when
// the runner cannot set another user's (limitAsTracee).
func (r *Runner) probePtrace() error {
	path, err := lookPath("true", r.cfg.Path)
	if err != nil {
		return fmt.Errorf("no program to try it with: %w", err)
	}
	self := !limitsOthers() && injectSupported
	key := fmt.Sprint(path, self)
	if v, ok := ptraceProbes.Load(key); ok {
		err, _ := v.(error)
		return err
	}
	err = probePtrace(path, &tracing{lim: r.ptraceLimits(false)})
	if err == nil && self {
		err = probePtrace(path, &tracing{lim: r.ptraceLimits(true), self: true})
	}
	ptraceProbes.Store(key, err)
	return err
}

func probePtrace(path string, tr *tracing) error {
	cmd := &exec.Cmd{Path: path, Args: []string{path}, Env: []string{}, SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if err := startTraced(cmd, tr); err != nil {
		if cmd.Process != nil {
			_ = cmd.Wait()
		}
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ptraceRlimits are the limits startTraced sets, in rlimitOrder, then
// RLIMIT_CORE; set[i] false leaves one alone.
type ptraceRlimits struct {
	rl  [len(rlimitOrder) + 1]unix.Rlimit
	set [len(rlimitOrder) + 1]bool
}

var ptraceResources = append(rlimitOrder[:len(rlimitOrder):len(rlimitOrder)], unix.RLIMIT_CORE)

// ptraceLimits computes the limits of Config.Limits as the trampoline
// does: soft and hard alike, lowered to the runner's own hard limit unless
// the runner is root (who may raise it) and sets them itself (not self);
// no core dumps.
func (r *Runner) ptraceLimits(self bool) *ptraceRlimits {
	t := r.trampolineSpec(nil, nil)
	root := unix.Geteuid() == 0 && !self
	out := &ptraceRlimits{}
	for i, res := range rlimitOrder {
		want := t.limits[i]
		if want < 0 {
			continue
		}
		w := uint64(want)
		var cur unix.Rlimit
		if !root && unix.Getrlimit(res, &cur) == nil && w > cur.Max {
			w = cur.Max
		}
		out.rl[i] = unix.Rlimit{Cur: w, Max: w}
		out.set[i] = true
	}
	out.set[len(rlimitOrder)] = true // RLIMIT_CORE 0
	return out
}

// startTraced starts cmd stopped at the exec of its program, sets tr's
// limits on it and lets it run; cmd.Process is set even when a later step
// fails (the process is then killed, and the caller still waits for it).
// The start runs on one of the spawner threads (spawnLoop): an idle one,
// or a new one while there are fewer than maxSpawners.
func startTraced(cmd *exec.Cmd, tr *tracing) error {
	done := make(chan error, 1)
	req := spawnReq{cmd: cmd, tr: tr, done: done}
	select {
	case spawner.reqs <- req: // an idle spawner took it
	default:
		spawner.grow()
		spawner.reqs <- req
	}
	return <-done
}

// maxSpawners bounds the spawner threads. A spawner is busy from the fork
// until the program has stopped at its exec and been let go, most of it
// waiting for the kernel to load the program: with one thread the starts
// of concurrent tasks queue behind each other's execs (on a busy machine
// a single thread also gets a single thread's share of the CPU), with a
// few they overlap, as os/exec's own starts from several goroutines do.
// Threads are added only while every one is busy, and never end.
var maxSpawners = max(4, 2*runtime.GOMAXPROCS(0))

// spawner is the pool of threads that start LimiterPtrace's programs, for
// the life of the process.
var spawner = &spawnPool{reqs: make(chan spawnReq)}

type spawnPool struct {
	reqs chan spawnReq
	mu   sync.Mutex
	n    int // threads started
}

// grow starts another spawner thread unless there are maxSpawners.
func (s *spawnPool) grow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n < maxSpawners {
		s.n++
		go spawnLoop(s.reqs)
	}
}

type spawnReq struct {
	cmd  *exec.Cmd
	tr   *tracing
	done chan error
}

// spawnLoop serves startTraced on a thread of its own, locked for good
// (each thread of the pool runs one):
// only the thread that started a tracee may make ptrace requests on it,
// and the thread keeps no_new_privs, which its children inherit at fork
// and which must not reach anything else this process starts. Neither
// can its thread end: a thread that exits takes with it the children it
// forked that asked for a parent-death signal (bwrap's --die-with-parent
// is one), so a thread that may have forked other children before being
// locked must never be ended.
func spawnLoop(reqs <-chan spawnReq) {
	runtime.LockOSThread()
	err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	if err != nil {
		err = fmt.Errorf("set no_new_privs: %w", err)
	}
	for r := range reqs {
		if err != nil {
			r.done <- err
			continue
		}
		r.done <- startTracedLocked(r.cmd, r.tr)
	}
}

// startTracedLocked is startTraced on the spawner's thread, whose
// no_new_privs the child inherits at its fork and keeps across its exec:
// no set-user-id program can give the task more privileges.
func startTracedLocked(cmd *exec.Cmd, tr *tracing) error {
	// os/exec passes on every descriptor without close-on-exec, which only
	// those this process inherited lack (Go opens its own with it): mark
	// them as the trampoline does in the child, for every later start too.
	if err := cloexecFrom(3); err != nil {
		return fmt.Errorf("set close-on-exec: %w", err)
	}
	cmd.SysProcAttr.Ptrace = true
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	if err := limitStopped(pid, tr); err != nil {
		_ = unix.Kill(pid, unix.SIGKILL) // a stopped tracee dies of it too
		return err
	}
	return nil
}

// waitTrap waits for the tracee pid's next stop, which must be a SIGTRAP
// (its exec, or a step). A stop is consumed, an exit cannot be (waitid
// with WNOWAIT would leave it for cmd.Wait, but only an exit needs that,
// and the program cannot exit before it is let go unless it is killed).
func waitTrap(pid int) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL|unix.WUNTRACED, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for the program to stop: %w", err)
		}
		break
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return fmt.Errorf("the program did not stop at its exec (wait status %#x)", uint32(ws))
	}
	return nil
}

// prlimitAll sets lim on process pid.
func prlimitAll(pid int, lim *ptraceRlimits) error {
	for i, res := range ptraceResources {
		if !lim.set[i] {
			continue
		}
		if err := unix.Prlimit(pid, res, &lim.rl[i], nil); err != nil {
			return fmt.Errorf("set a resource limit: %w", err)
		}
	}
	return nil
}

// limitStopped waits for the tracee pid's stop at its exec, sets the
// limits, clears its signal mask (as the trampoline did) and detaches.
func limitStopped(pid int, tr *tracing) error {
	if err := waitTrap(pid); err != nil {
		return err
	}
	set := prlimitAll
	if tr.self {
		set = limitAsTracee
	}
	if err := set(pid, tr.lim); err != nil {
		return err
	}
	// The kernel's sigset_t: 64 signals.
	var mask uint64
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(pid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)), 0, 0); e != 0 { //nolint:gosec // G103: ptrace takes a pointer to the mask
		return fmt.Errorf("reset the signal mask: %w", e)
	}
	// The SIGTRAP of the exec is dropped (data 0).
	if err := unix.PtraceDetach(pid); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	return nil
}
