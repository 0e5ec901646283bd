//go:build linux

package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bwrapSetup is what a Runner under SandboxBwrap passes to every task.
type bwrapSetup struct {
	path    string   // the bwrap binary
	static  []string // its arguments before the hidden and private paths
	hide    []string // Config.Hide and WorkDir
	private []string // the private folders
	exeSrc  string   // the trampoline on the host
	exe     string   // the trampoline's path inside the sandbox
	// direct (LimiterPtrace under bwrap, resolveLimiter): bwrap itself is
	// started as the task's user and stopped at its exec to take the
	// limits, which everything in the sandbox inherits, and execs the
	// program; no trampoline. A root runner then needs a user namespace
	// too (userns): bwrap runs as the task's user.
	direct bool
	userns bool // --unshare-user added for direct (a root runner)
}

// Descriptors of the started bwrap: ExtraFiles[1:] under the trampoline
// (ExtraFiles[0] is its status pipe), ExtraFiles under direct.
const (
	bwrapInfoFD = 4 // --info-fd
	bwrapArgsFD = 5 // --args
	bwrapExeFD  = 6 // --ro-bind-fd: the trampoline

	directInfoFD = 3 // --info-fd, direct
	directArgsFD = 4 // --args, direct
)

// openExe opens the trampoline, bound into the sandbox from this
// descriptor: bwrap in a user namespace may not read another process's
// /proc/<pid>/exe, but may bind what it was handed.
func (bw *bwrapSetup) openExe() (*os.File, error) {
	return os.Open(bw.exeSrc)
}

// probeTimeout bounds the trial run of bwrap in New.
const probeTimeout = 30 * time.Second

// resolveSandbox turns Config.Sandbox into the mode in force.
func (r *Runner) resolveSandbox() error {
	c := &r.cfg
	root := os.Geteuid() == 0
	// Why auto did not pick ns, for a root runner (which it would suit).
	var notNS string
	if c.Sandbox == SandboxNamespaces || (c.Sandbox == SandboxAuto && root && c.Limiter == LimiterAuto && c.TrampolinePath == "") {
		ns, err := r.setupNS(root)
		if err == nil {
			r.ns = ns
			r.sb = SandboxState{Mode: SandboxNamespaces, SwitchUser: true}
			return nil
		}
		if c.Sandbox == SandboxNamespaces {
			return fmt.Errorf("%w: sandbox ns: %w", ErrSandbox, err)
		}
		notNS = "ns unusable: " + err.Error()
	}
	var notBwrap string
	if c.Sandbox == SandboxAuto || c.Sandbox == SandboxBwrap {
		bw, err := r.setupBwrap(root)
		if err == nil {
			r.bw = bw
			r.sb = SandboxState{Mode: SandboxBwrap, SwitchUser: root, Note: notNS}
			if !root {
				r.sb.Note = "the runner is not root: tasks run as its user, in a user namespace"
			}
			return nil
		}
		if c.Sandbox == SandboxBwrap {
			return fmt.Errorf("%w: sandbox bwrap: %w", ErrSandbox, err)
		}
		notBwrap = strings.TrimPrefix(notNS+"; bwrap unusable: "+err.Error(), "; ")
	}
	if c.Sandbox == SandboxUser || (c.Sandbox == SandboxAuto && root) {
		if !root {
			return fmt.Errorf("%w: sandbox user: running tasks as other users needs a root runner (this one is uid %d)", ErrSandbox, os.Geteuid())
		}
		if err := checkSearchable(r.workDir()); err != nil {
			if notBwrap != "" {
				return fmt.Errorf("%w: sandbox auto: %s; and without bwrap tasks run as other users, who must reach their task folders: %w (or set Sandbox to off to run tasks as root)", ErrSandbox, notBwrap, err)
			}
			return fmt.Errorf("%w: sandbox user: tasks run as other users, who must reach their task folders: %w", ErrSandbox, err)
		}
		r.sb = SandboxState{Mode: SandboxUser, SwitchUser: true, Note: notBwrap}
		return nil
	}
	r.sb = SandboxState{Mode: SandboxOff, Note: notBwrap}
	if root && c.Credential == nil {
		r.sb.Note = strings.TrimPrefix(r.sb.Note+"; tasks run as root", "; ")
	}
	return nil
}

func (r *Runner) workDir() string {
	if r.cfg.WorkDir != "" {
		return r.cfg.WorkDir
	}
	return os.TempDir()
}

// checkSearchable reports the first existing folder of dir and its parents
// that users other than its owner cannot search (x): a task running as
// another user could not reach its task directory below it.
func checkSearchable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err == nil && st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %#o) is closed to other users: make it searchable (chmod o+x; its files keep their own modes) or move the work folder", d, st.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// probes caches the trial runs of bwrap by their arguments: New is called
// often in tests, and the answer does not change while a process runs.
var probes sync.Map // string -> error (or nil)

// setupBwrap finds bwrap, builds its arguments and runs it once.
func (r *Runner) setupBwrap(root bool) (*bwrapSetup, error) {
	c := &r.cfg
	bw := &bwrapSetup{path: c.BwrapPath}
	if bw.path == "" {
		p, err := lookPath("bwrap", c.Path)
		if err != nil {
			return nil, fmt.Errorf("bwrap is not installed (not in %s; Debian's package is bubblewrap)", c.Path)
		}
		bw.path = p
	}
	// The trampoline inside the sandbox: the running binary, opened as
	// /proc/self/exe and bound onto its own path, so that it is there even
	// when that path is hidden, and is the binary that runs even if the
	// file was replaced since (as /proc/self/exe without a sandbox).
	bw.exeSrc = "/proc/self/exe"
	bw.exe = c.TrampolinePath
	if bw.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("the running binary: %w", err)
		}
		bw.exe = exe
	} else {
		bw.exeSrc = bw.exe
	}

	a := []string{"--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try"}
	if !root {
		// bwrap needs a user namespace; nested ones are refused.
		a = append(a, "--unshare-user", "--disable-userns")
	}
	if c.IsolateNetwork {
		a = append(a, "--unshare-net")
	}
	a = append(a, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc")
	private := []string{"/tmp", "/dev/shm"}
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		private = append(private, "/var/tmp")
	}
	bw.static, bw.private = a, private
	// The work folder holds every task's directory: hidden too (the
	// task's own is bound over it).
	bw.hide = append(slices.Clone(c.Hide), r.workDir())
	if err := probeBwrap(bw); err != nil {
		return nil, err
	}
	return bw, nil
}

// sandboxOptions returns the options common to every task: the static
// ones, the hidden paths as they are now (a file such as cli.json may
// appear after New), the private folders (after the hidden ones, so that
// hiding /var keeps a private /var/tmp), the trampoline.
func (bw *bwrapSetup) sandboxOptions() ([]string, error) {
	hides, err := hidePaths(bw.hide, bw.private)
	if err != nil {
		return nil, err
	}
	a := slices.Clip(bw.static)
	if bw.userns {
		a = append(a, "--unshare-user", "--disable-userns")
	}
	for _, h := range hides {
		if h.dir {
			a = append(a, "--perms", "0755", "--tmpfs", h.path)
		} else {
			// /dev/null: reads find nothing, writes go nowhere (a read-only
			// bind would be nodev, and /dev/null unreadable).
			a = append(a, "--dev-bind", "/dev/null", h.path)
		}
	}
	for _, p := range bw.private {
		a = append(a, "--perms", "1777", "--tmpfs", p)
	}
	if bw.direct {
		return a, nil
	}
	return append(a, "--ro-bind-fd", strconv.Itoa(bwrapExeFD), bw.exe), nil
}

type hidden struct {
	path string
	dir  bool
}

// hidePaths resolves Config.Hide: the paths that exist, symbolic links
// resolved (a mount follows them), without those already hidden by a
// parent or private, parents first.
func hidePaths(hide, private []string) ([]hidden, error) {
	var out []hidden
	paths := make([]string, 0, len(hide))
	for _, h := range hide {
		p, err := filepath.EvalSymlinks(h)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("hide %s: %w", h, err)
		}
		paths = append(paths, p)
	}
	slices.Sort(paths)
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	for _, p := range slices.Compact(paths) {
		if p == "/" {
			return nil, fmt.Errorf("hide %s: it is the root folder", p)
		}
		if slices.ContainsFunc(private, func(d string) bool { return under(p, d) }) ||
			slices.ContainsFunc(out, func(h hidden) bool { return under(p, h.path) }) {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("hide %s: %w", p, err)
		}
		out = append(out, hidden{path: p, dir: st.IsDir()})
	}
	return out, nil
}

// probeBwrap runs bwrap once with the runner's arguments ("bwrap
// --version" inside): the namespaces may be refused (a container without
// CAP_SYS_ADMIN, user namespaces turned off, an old bwrap).
func probeBwrap(bw *bwrapSetup) error {
	opts, err := bw.sandboxOptions()
	if err != nil {
		return err
	}
	args := append(opts, "--", bw.path, "--version")
	key := bw.path + "\x00" + strings.Join(args, "\x00")
	if v, ok := probes.Load(key); ok {
		err, _ := v.(error)
		return err
	}
	exe, err := bw.openExe()
	if err != nil {
		return fmt.Errorf("the trampoline: %w", err)
	}
	defer func() { _ = exe.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bw.path, args...) //nolint:gosec // G204: bwrap and its arguments are the runner's own
	cmd.Env = []string{}
	cmd.ExtraFiles = make([]*os.File, bwrapExeFD-2)
	cmd.ExtraFiles[bwrapExeFD-3] = exe
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err == nil && !bytes.HasPrefix(out, []byte("bubblewrap")) {
		err = errors.New("unexpected output")
	}
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		err = fmt.Errorf("%s cannot set up a sandbox here: %w: %s", bw.path, err, msg)
	}
	probes.Store(key, err)
	return err
}

// options returns bwrap's options for one task, the task directory at
// SandboxTaskDir.
func (bw *bwrapSetup) options(taskDir string) ([]string, error) {
	a, err := bw.sandboxOptions()
	if err != nil {
		return nil, err
	}
	info := bwrapInfoFD
	if bw.direct {
		info = directInfoFD
	}
	return append(a, "--bind", taskDir, SandboxTaskDir, "--chdir", SandboxTaskDir,
		"--info-fd", strconv.Itoa(info)), nil
}

// command returns bwrap's command line: the options from argsFD, then the
// trampoline that starts the program (path, argv), or under direct the
// program itself, whose argv[0] is then its path (bwrap has no way to set
// another).
func (bw *bwrapSetup) command(path string, argv []string) []string {
	if bw.direct {
		return append([]string{"bwrap", "--args", strconv.Itoa(directArgsFD), "--", path}, argv[1:]...)
	}
	return append([]string{"bwrap", "--args", strconv.Itoa(bwrapArgsFD), "--", bw.exe, path}, argv...)
}

// argsFile returns a memory file holding args NUL-separated, for bwrap's
// --args: bwrap's command line (which every process of the sandbox can
// read in /proc/1/cmdline) then shows no host path.
func argsFile(args []string) (*os.File, error) {
	fd, err := unix.MemfdCreate("kiln-bwrap-args", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "kiln-bwrap-args")
	var b bytes.Buffer
	for _, a := range args {
		b.WriteString(a)
		b.WriteByte(0)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		_ = f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// readBwrapInfo reads the pid of the sandbox's init process from bwrap's
// info pipe (one JSON object, written once the sandbox is set up).
func readBwrapInfo(r *os.File, deadline time.Time) (int, error) {
	_ = r.SetReadDeadline(deadline)
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(io.LimitReader(r, 4096)).Decode(&info); err != nil {
		return 0, err
	}
	if info.ChildPID <= 0 {
		return 0, errors.New("no child-pid")
	}
	return info.ChildPID, nil
}

// initProc is the sandbox's init process, the leader of the group of the
// task's processes (bwrap --new-session). Its pid is bwrap's child's, which
// bwrap may reap any time after it exits: a pidfd tells whether the pid
// still names it before the group is signalled.
type initProc struct {
	pid   int
	pidfd int // -1 if none
}

func openInit(pid int) *initProc {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil // gone already (or no pidfd: then the group is not signalled)
	}
	return &initProc{pid: pid, pidfd: fd}
}

// alive reports whether the init process has not exited yet.
func (p *initProc) alive() bool {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}} //nolint:gosec // G115: a file descriptor fits
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n == 0 // readable: it has exited
	}
}

// signalGroup signals the task's processes inside the sandbox, if the
// sandbox's init is still running.
func (p *initProc) signalGroup(sig syscall.Signal) {
	if p != nil && p.alive() {
		_ = syscall.Kill(-p.pid, sig)
	}
}

// reap waits for the sandbox's init, which bwrap leaves behind: bwrap
// exits as soon as init has passed it the program's exit status, before
// init has ended, so init is handed to the nearest subreaper, this process
// under direct (setSubreaper), else the system's init. Until reaped it
// counts as a process of the task's user (RLIMIT_NPROC), which under direct
// is bwrap's own. Called once bwrap has been waited for; it closes the
// pidfd. A pid that is not this process's child (ECHILD) is left alone.
func (p *initProc) reap() {
	defer p.close()
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, p.pidfd, &info, unix.WEXITED, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// subreaper makes this process a child subreaper once (resolveDirect).
var subreaper = sync.OnceValue(func() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
})

func (p *initProc) close() {
	if p != nil {
		_ = unix.Close(p.pidfd)
	}
}

// firstLine returns the first line of b, at most 300 bytes.
func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	if len(line) > 300 {
		line = line[:300]
	}
	return strings.TrimSpace(string(line))
}
