//go:build linux

package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Names of the files kiln writes into the task directory. A package file
// of the same name is overwritten.
const (
	PayloadFileName = "__payload__"
	ConfigFileName  = "__config__"
)

// startTimeout bounds the wait for the trampoline's handshake.
const startTimeout = 30 * time.Second

// Run runs one task: it creates a task directory (or takes one kept from an
// earlier task of the same package, reset: see "Task directories" in the
// package doc), copies the package into it (or links its files,
// Config.LinkPackage), writes the payload and config files, and starts the
// program as a separate process in its own session and process group, in
// the sandbox the Runner resolved (see the package doc), as the task's
// user, with the configured limits, arguments exactly
//
//	-d <task dir> -payload <payload file> -config <config file> -id <task id>
//
// (after the interpreter and script, or after Command), working directory
// the task directory, and environment exactly TASK_ID, TASK_DIR,
// PAYLOAD_FILE, CONFIG_FILE, PATH (Config.Path), HOME (the task directory)
// and Spec.Env: nothing of the runner's own environment. Under bwrap the
// task directory is SandboxTaskDir in all of these; under bwrap with
// LimiterPtrace (bwrap stopped at its own exec, no trampoline) bwrap also
// sets PWD to it and the program's argv[0] is its path.
//
// When Spec.Timeout passes or ctx is done, the program's process group gets
// SIGTERM, then SIGKILL after Config.KillGrace. When the program exits,
// whatever is left of its process group (under bwrap: of its sandbox) is
// killed. Stdout and stderr go through one pipe to Spec.Log, live, capped
// at Config.LogLimit.
//
// Run returns a non-nil error only when the program could not be started
// (wrapping ErrInvalidSpec, ErrNoProgram, ErrStart, ErrNoTrampoline or
// ErrSandbox; the Result then has StatusError and Msg). Otherwise the
// Result says how it ended. Before Run returns, the task directory is
// removed, or reset and kept for the next task of its package (removed by
// Close); with Spec.Keep it stays as the task left it.
func (r *Runner) Run(ctx context.Context, spec Spec) (Result, error) {
	res := Result{Status: StatusError, ExitCode: -1}
	failed := func(err error) (Result, error) {
		res.Msg = err.Error()
		return res, err
	}
	if err := spec.validate(); err != nil {
		return failed(err)
	}
	if err := ctx.Err(); err != nil {
		res.Status, res.Cause = statusOf(ctx), context.Cause(ctx)
		res.Msg = "not started: " + res.Cause.Error()
		return res, nil
	}
	cfg := &r.cfg
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = cfg.Timeout
	}

	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = os.TempDir()
	}
	cred, err := r.credential(&spec)
	if err != nil {
		return failed(err)
	}
	// A directory kept from an earlier task of the same package and user
	// (see dirPool), else a new one.
	key := dirKey{pkg: spec.PackageDir, uid: -1, gid: -1}
	if cred != nil {
		key.uid, key.gid = int(cred.Uid), int(cred.Gid)
	}
	var td *taskDir
	if !spec.Keep {
		td = r.dirs.get(key)
	}
	newDir := func() error {
		dir, err := os.MkdirTemp(workDir, "kiln-task-"+spec.TaskID+"-")
		if err != nil {
			return fmt.Errorf("%w: task directory: %w", ErrStart, err)
		}
		td = &taskDir{path: dir, key: key}
		return nil
	}
	if td == nil {
		if err := newDir(); err != nil {
			return failed(err)
		}
	}
	// gone: every process of the task is known to have exited, so that
	// its directory can be kept for the next task.
	var gone bool
	if !spec.Keep {
		defer func() {
			if gone {
				r.dirs.put(td)
			} else {
				_ = removeAll(td.path)
			}
		}()
	}
	// LimiterPtrace: the runner sets the limits on a task of its own user,
	// or of another one with CAP_SYS_RESOURCE; without it the task sets
	// them itself (limitAsTracee) where the architecture allows, else
	// the trampoline does.
	var tr *tracing
	if r.rlimits != nil {
		switch {
		case cred == nil || r.limitOthers:
			tr = &tracing{lim: r.rlimits}
		case r.selfRlimits != nil:
			tr = &tracing{lim: r.selfRlimits, self: true}
		}
	}
	tramp := ""
	if tr == nil && r.ns == nil {
		if tramp, err = r.trampolinePath(); err != nil {
			return failed(err)
		}
	}
	path, argv, env, err := r.prepare(spec, td, cred)
	if err != nil && td.kept != nil && errors.Is(err, ErrStart) {
		// A kept directory that could not be filled (changed by someone
		// else meanwhile): a new one is tried.
		_ = removeAll(td.path)
		if err := newDir(); err != nil {
			return failed(err)
		}
		path, argv, env, err = r.prepare(spec, td, cred)
	}
	res.TaskDir = td.path
	if err != nil {
		return failed(err)
	}
	// A cgroup of its own (Config.Cgroup), killed at the task's end with
	// every process in it; start does it first, once the program has
	// ended, this if the program never started.
	var cg *taskCgroup
	if r.cg != nil {
		if cg, err = r.cg.newTask(); err != nil {
			return failed(err)
		}
		defer func() { _ = cg.kill() }()
	}
	return r.start(ctx, spec, res, launch{tramp: tramp, tr: tr, path: path, argv: argv, env: env, cred: cred, cg: cg, gone: &gone}, timeout)
}

// launch is how start starts a task's program: through the trampoline
// tramp, or (tr not nil) under LimiterPtrace; path, argv and env are the
// program's, cred its user (nil: the runner's), cg the cgroup it starts in
// (nil: the runner's).
type launch struct {
	tramp string
	tr    *tracing
	path  string
	argv  []string
	env   []string
	cred  *syscall.Credential
	cg    *taskCgroup
	// gone, if not nil, is set once every process of the task has
	// exited: under SandboxNamespaces when the sandbox's pid 1 has been
	// waited for (the kernel ends the others first), else when the task's
	// cgroup has been seen empty.
	gone *bool
}

// tracing is how LimiterPtrace limits a task: lim set by the runner, or
// with self by the task itself (limitAsTracee).
type tracing struct {
	lim  *ptraceRlimits
	self bool
}

// credential returns the user a task runs as: Spec.Credential, else
// Config.Credential, else (when the sandbox switches users) nobody; nil
// means the runner's own user.
func (r *Runner) credential(spec *Spec) (*syscall.Credential, error) {
	c := spec.Credential
	if c == nil {
		c = r.cfg.Credential
	}
	if c != nil && (c.Uid == math.MaxUint32 || c.Gid == math.MaxUint32 || slices.Contains(c.Groups, math.MaxUint32)) {
		// The kernel reads 2^32-1 as "leave the id as it is".
		return nil, fmt.Errorf("%w: the credential's uid %d, gid %d or groups %v hold 4294967295, which is no id", ErrInvalidSpec, c.Uid, c.Gid, c.Groups)
	}
	if !r.sb.SwitchUser {
		return c, nil
	}
	if c == nil {
		return &syscall.Credential{Uid: NobodyID, Gid: NobodyID}, nil
	}
	if c.Uid == 0 || c.Gid == 0 || slices.Contains(c.Groups, 0) {
		return nil, fmt.Errorf("%w: the sandbox (%s) never runs a task as root, but its credential is uid %d, gid %d, groups %v", ErrInvalidSpec, r.sb.Mode, c.Uid, c.Gid, c.Groups)
	}
	return c, nil
}

// trampolinePath returns the binary that applies the limits.
func (r *Runner) trampolinePath() (string, error) {
	if r.cfg.TrampolinePath != "" {
		return r.cfg.TrampolinePath, nil
	}
	if !mainCalled.Load() {
		return "", ErrNoTrampoline
	}
	// The running binary, even if its file has been replaced since.
	return "/proc/self/exe", nil
}

// prepare fills the task directory dir and returns the program's path,
// argv and environment, as the program sees them (under bwrap the task
// directory is SandboxTaskDir).
func (r *Runner) prepare(spec Spec, td *taskDir, cred *syscall.Credential) (string, []string, []string, error) {
	cfg := &r.cfg
	dir := td.path
	td.made = make(map[string]bool, len(td.kept))
	tdir := dir // the task directory as the program sees it
	if r.bw != nil || r.ns != nil {
		tdir = SandboxTaskDir
	}
	// Everything in the task directory is the task's user's from its
	// creation (fchown on the new file), and the directory itself last.
	own := owner{uid: -1, gid: -1}
	if c := cred; c != nil {
		own = owner{uid: int(c.Uid), gid: int(c.Gid)}
	}
	if spec.PackageDir != "" {
		link := cfg.LinkPackage && r.sb.SwitchUser && own.uid > 0
		if err := copyPackage(td, spec.PackageDir, own, link); err != nil {
			return "", nil, nil, fmt.Errorf("%w: copy the package: %w", ErrStart, err)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{PayloadFileName, spec.Payload}, {ConfigFileName, spec.Config}} {
		// copyPackage leaves these names out: in a new directory they are
		// new, in a kept one the files the task before had (reset).
		isDir, kept := td.kept[f.name]
		if err := writeFile(filepath.Join(dir, f.name), f.data, own, kept && !isDir); err != nil {
			return "", nil, nil, fmt.Errorf("%w: %w", ErrStart, err)
		}
		td.made[f.name] = false
	}
	if err := td.removeLeft(); err != nil {
		return "", nil, nil, fmt.Errorf("%w: %w", ErrStart, err)
	}

	var path string
	var argv []string
	if len(spec.Command) > 0 {
		c0 := spec.Command[0]
		switch {
		case filepath.IsAbs(c0):
			path = c0
		case strings.Contains(c0, "/"):
			if !filepath.IsLocal(c0) {
				return "", nil, nil, fmt.Errorf("%w: Command[0] %q leaves the task directory", ErrInvalidSpec, c0)
			}
			if err := r.checkExecFormat(filepath.Join(dir, c0)); err != nil {
				return "", nil, nil, err
			}
			path = filepath.Join(tdir, c0)
		default:
			p, err := lookPath(c0, cfg.Path)
			if err != nil {
				return "", nil, nil, err
			}
			path = p
		}
		argv = slices.Clone(spec.Command)
	} else {
		interp, ok := cfg.Runtimes[spec.Runtime]
		if !ok {
			interp, ok = runtimeTable[spec.Runtime]
		}
		if !ok {
			return "", nil, nil, fmt.Errorf("%w: unknown runtime %q", ErrInvalidSpec, spec.Runtime)
		}
		file := filepath.Join(dir, filepath.FromSlash(spec.File))
		st, err := os.Stat(file)
		if err != nil || !st.Mode().IsRegular() {
			return "", nil, nil, fmt.Errorf("%w: %q is not a file of the package", ErrNoProgram, spec.File)
		}
		if len(interp) == 0 {
			// Zips made on Windows have no execute bits. The task's own
			// copy is made executable, never the package's file (which a
			// link would be): making it executable changes nothing shared.
			if st.Mode().Perm() != 0o755 {
				if err := ownProgram(td, spec.PackageDir, filepath.FromSlash(spec.File), st, own); err != nil {
					return "", nil, nil, fmt.Errorf("%w: %w", ErrStart, err)
				}
			}
			if err := r.checkExecFormat(file); err != nil {
				return "", nil, nil, err
			}
			path = filepath.Join(tdir, filepath.FromSlash(spec.File))
			argv = []string{path}
		} else {
			p, err := lookPath(interp[0], cfg.Path)
			if err != nil {
				return "", nil, nil, err
			}
			path = p
			// "./" keeps a script named like an option ("-c") a file name.
			argv = append(slices.Clone(interp), "./"+spec.File)
		}
	}
	payload := filepath.Join(tdir, PayloadFileName)
	config := filepath.Join(tdir, ConfigFileName)
	argv = append(argv, "-d", tdir, "-payload", payload, "-config", config, "-id", spec.TaskID)

	vars := map[string]string{
		"TASK_ID":      spec.TaskID,
		"TASK_DIR":     tdir,
		"PAYLOAD_FILE": payload,
		"CONFIG_FILE":  config,
		"PATH":         cfg.Path,
		"HOME":         tdir,
	}
	maps.Copy(vars, spec.Env)
	env := make([]string, 0, len(vars)+1)
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}

	if own.uid >= 0 {
		if err := os.Lchown(dir, own.uid, own.gid); err != nil {
			return "", nil, nil, fmt.Errorf("%w: %w", ErrStart, err)
		}
	}
	return path, argv, env, nil
}

// checkExecFormat refuses, under bwrap without the trampoline
// (bwrapSetup.direct), a file of the task directory that the kernel would
// not execute: bwrap's execvp would run it with /bin/sh instead of
// failing, as the trampoline's execve (or LimiterPtrace's) does. Only the
// two formats a package carries are allowed: ELF and "#!".
func (r *Runner) checkExecFormat(file string) error {
	if r.bw == nil || !r.bw.direct {
		return nil
	}
	f, err := os.Open(file) //nolint:gosec // G304: a file of the task directory, which the runner made
	if err != nil {
		return nil // the exec reports it
	}
	defer func() { _ = f.Close() }()
	var head [4]byte
	n, _ := io.ReadFull(f, head[:])
	if (n == 4 && string(head[:]) == "\x7fELF") || (n >= 2 && string(head[:2]) == "#!") {
		return nil
	}
	return fmt.Errorf("%w: exec the program: %w", ErrStart, syscall.ENOEXEC)
}

// lookPath finds an executable in the given PATH (never the runner's own).
func lookPath(name, pathList string) (string, error) {
	for _, d := range filepath.SplitList(pathList) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q is not in %s", ErrNoProgram, name, pathList)
}

// rlimitValues returns Config.Limits in rlimitOrder, CPU time in whole
// seconds (rounded up); Unlimited leaves a limit alone.
func (r *Runner) rlimitValues() [len(rlimitOrder)]int64 {
	l := r.cfg.Limits
	cpu := int64(Unlimited)
	if l.CPUTime > 0 {
		cpu = int64((l.CPUTime + time.Second - 1) / time.Second)
	}
	return [len(rlimitOrder)]int64{cpu, l.OpenFiles, l.Processes, l.FileSize, l.Memory, l.AddressSpace}
}

func (r *Runner) trampolineSpec(cred *syscall.Credential, env []string) trampolineSpec {
	t := trampolineSpec{limits: r.rlimitValues(), uid: -1, gid: -1}
	// bwrap sets PWD: the trampoline removes it unless the task's own
	// environment has one (a package's env_vars), which bwrap has then
	// replaced with the working directory.
	t.unsetPWD = r.bw != nil && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PWD=") })
	if c := cred; c != nil {
		t.uid, t.gid = int(c.Uid), int(c.Gid)
		for _, g := range c.Groups {
			t.groups = append(t.groups, int(g))
		}
	}
	return t
}

// trampolineVars returns what the trampoline's environment holds beside the
// task's own env: the marker with the limits and the user.
func (r *Runner) trampolineVars(cred *syscall.Credential, env []string) []string {
	marker := trampolineEnv + "=" + r.trampolineSpec(cred, env).encode()
	if r.cfg.goTrampoline {
		return []string{trampolineGoEnv + "=1", marker}
	}
	return []string{marker}
}

// start runs the task's program through the trampoline and returns how it
// ended: it starts the process (spawn), waits for the trampoline's
// handshake, waits for the end or stops the process (await) and reads its
// exit status (exitStatus).
func (r *Runner) start(ctx context.Context, spec Spec, res Result, l launch, timeout time.Duration) (Result, error) {
	cfg := &r.cfg
	failed := func(err error) (Result, error) {
		res.Msg = err.Error()
		return res, err
	}
	var files []*os.File // closed when start returns
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	c, err := r.spawn(res.TaskDir, l, &files)
	if err != nil {
		return failed(err)
	}
	pid := c.cmd.Process.Pid
	res.PID = pid

	pump := &logPump{sink: spec.Log, limit: cfg.LogLimit}
	pumpDone := make(chan struct{})
	go func() {
		defer close(pumpDone)
		pump.run(c.logR)
	}()
	finish := func() {
		// The leader has exited (it is a zombie until cmd.Wait, so its pid,
		// the group's id, cannot be reused): kill what is left of the group.
		// Under bwrap the leader is bwrap, which exits after the sandbox's
		// init, whose end kills every process of the sandbox.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		// Without bwrap, a process that left the group (setsid) is still
		// in the task's cgroup.
		kerr := l.cg.kill()
		_ = c.cmd.Wait()
		if l.gone != nil {
			*l.gone = r.ns != nil && c.cmd.ProcessState != nil || r.ns == nil && l.cg != nil && kerr == nil
		}
		_ = c.logR.SetReadDeadline(time.Now().Add(cfg.DrainTimeout))
		<-pumpDone
		res.LogBytes, res.LogDropped, res.LogTruncated, res.LogErr = pump.bytes, pump.dropped, pump.truncated, pump.err
	}

	deadline := time.Now().Add(startTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if c.startErr != nil {
		// LimiterPtrace: the program started but its limits could not be
		// set; it has been killed.
		finish()
		return failed(c.startErr)
	}
	// Under LimiterPtrace (no status pipe) the exec had succeeded when
	// spawn returned.
	if c.statR != nil {
		if err := handshake(c.statR, deadline); err != nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			finish()
			if r.bw != nil && errors.Is(err, ErrNoTrampoline) && bytes.HasPrefix(pump.head, []byte("bwrap:")) {
				err = fmt.Errorf("%w: %s", ErrSandbox, firstLine(pump.head))
			}
			return failed(err)
		}
	}
	res.StartedAt = time.Now()

	// Under bwrap the program runs in a session and process group of its
	// own, led by the sandbox's init: SIGTERM goes there (bwrap itself
	// would die of it and take the sandbox down at once), SIGKILL to both.
	var sandbox *initProc
	if c.infoR != nil {
		ipid, err := readBwrapInfo(c.infoR, deadline)
		if err == nil {
			sandbox = openInit(ipid)
		} else if c.statR == nil {
			// Direct (no trampoline): bwrap ended, or is stuck, before the
			// sandbox was set up.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			finish()
			if line := firstLine(pump.head); strings.HasPrefix(line, "bwrap:") {
				if strings.HasSuffix(line, "Resource temporarily unavailable") {
					// bwrap's forks count against the task's user's
					// RLIMIT_NPROC, as the program's do.
					line += " (the task's user is at its process limit, RLIMIT_NPROC)"
				}
				return failed(fmt.Errorf("%w: %s", ErrSandbox, line))
			}
			return failed(fmt.Errorf("%w: bwrap's info: %w", ErrSandbox, err))
		}
		if sandbox != nil {
			// Reaped (and closed) once bwrap has been: see reap. Under the
			// trampoline too: once a Runner under direct has made this
			// process a subreaper, every sandbox's init comes here.
			defer func() { go sandbox.reap() }()
			res.PID = sandbox.pid
		}
	}
	signal := func(sig syscall.Signal) {
		if sandbox == nil {
			_ = syscall.Kill(-pid, sig)
			return
		}
		sandbox.signalGroup(sig)
		if sig == syscall.SIGKILL {
			_ = syscall.Kill(-pid, sig)
		}
	}

	stop, msg, cause := r.await(ctx, pid, timeout, signal)
	res.Msg, res.Cause = msg, cause
	res.EndedAt = time.Now()
	res.Duration = res.EndedAt.Sub(res.StartedAt)
	finish()

	ps := c.cmd.ProcessState
	if ps == nil {
		return failed(fmt.Errorf("%w: no exit status", ErrStart))
	}
	r.exitStatus(&res, ps, stop)
	if c.statR == nil && r.bw != nil && stop == "" && res.ExitCode == 1 {
		// Direct: bwrap's own exec of the program failed, as the
		// trampoline's handshake would have said.
		if line := firstLine(pump.head); strings.HasPrefix(line, "bwrap: execvp ") {
			err := ErrStart
			if strings.HasSuffix(line, "No such file or directory") || strings.HasSuffix(line, "Not a directory") {
				err = ErrNoProgram
			}
			return failed(fmt.Errorf("%w: exec the program: %s", err, strings.TrimPrefix(line, "bwrap: ")))
		}
	}
	return res, nil
}

// child is a started task process and the runner's ends of its pipes.
type child struct {
	cmd *exec.Cmd
	// logR reads the program's stdout and stderr, statR the trampoline's
	// start handshake (nil under LimiterPtrace), and infoR (nil without
	// bwrap) bwrap's JSON info.
	logR, statR, infoR *os.File
	// startErr (LimiterPtrace) is why the started program was killed
	// before it ran: its limits could not be set.
	startErr error
}

// spawn starts the trampoline, under bwrap when the runner sandboxes, in
// dir with the program path, its argv and env; without a trampoline
// (LimiterPtrace) the program itself (spawnTraced). The files it opens are
// added to *files, which the caller closes once the process has ended; the
// child's ends of the pipes are closed here once it has them. Its errors
// wrap ErrStart or ErrSandbox.
func (r *Runner) spawn(dir string, l launch, files *[]*os.File) (*child, error) {
	tramp, path, argv, env, cred := l.tramp, l.path, l.argv, l.env, l.cred
	pipe := func() (*os.File, *os.File, error) {
		rd, wr, err := os.Pipe()
		if err == nil {
			*files = append(*files, rd, wr)
		}
		return rd, wr, err
	}
	logR, logW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	if r.ns != nil {
		return r.spawnNS(r.ns, dir, l, logR, logW, pipe)
	}
	if l.tr != nil && r.bw != nil {
		return r.spawnDirect(dir, l, logR, logW, pipe, files)
	}
	if l.tr != nil {
		return spawnTraced(dir, l, logR, logW)
	}
	statR, statW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	cmd := &exec.Cmd{
		Path:       tramp,
		Args:       append([]string{"kiln-runner", path}, argv...),
		Env:        append(env, r.trampolineVars(cred, env)...),
		Dir:        dir,
		Stdout:     logW,
		Stderr:     logW,
		ExtraFiles: []*os.File{statW},
		// A session of its own: a process group to kill, and no controlling
		// terminal (no TIOCSTI into the server's terminal).
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	l.cg.into(cmd.SysProcAttr)
	var infoR *os.File
	if bw := r.bw; bw != nil {
		var infoW *os.File
		if infoR, infoW, err = pipe(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStart, err)
		}
		opts, err := bw.options(dir)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSandbox, err)
		}
		argsF, err := argsFile(opts)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStart, err)
		}
		*files = append(*files, argsF)
		exe, err := bw.openExe()
		if err != nil {
			return nil, fmt.Errorf("%w: the trampoline: %w", ErrStart, err)
		}
		*files = append(*files, exe)
		cmd.Path = bw.path
		cmd.Args = bw.command(path, argv)
		cmd.ExtraFiles = append(cmd.ExtraFiles, infoW, argsF, exe)
	}
	err = cmd.Start()
	// The child has its copies; the ends kept here must not hold the pipes
	// open.
	for _, f := range cmd.ExtraFiles {
		_ = f.Close()
	}
	_ = logW.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	return &child{cmd: cmd, logR: logR, statR: statR, infoR: infoR}, nil
}

// spawnDirect is spawn under bwrap with LimiterPtrace (bwrapSetup.direct):
// bwrap itself, as the task's user, stopped at its exec to take the limits
// that every process of the sandbox inherits; it execs the program.
func (r *Runner) spawnDirect(dir string, l launch, logR, logW *os.File, pipe func() (*os.File, *os.File, error), files *[]*os.File) (*child, error) {
	bw := r.bw
	infoR, infoW, err := pipe()
	if err != nil {
		_ = logW.Close()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	opts, err := bw.options(dir)
	if err != nil {
		_ = logW.Close()
		return nil, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	argsF, err := argsFile(opts)
	if err != nil {
		_ = logW.Close()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	*files = append(*files, argsF)
	c, err := spawnTraced(dir, launch{tr: l.tr, path: bw.path, argv: bw.command(l.path, l.argv), env: l.env, cred: l.cred},
		logR, logW, infoW, argsF)
	_ = infoW.Close()
	if err != nil {
		if errors.Is(err, ErrNoProgram) {
			err = fmt.Errorf("%w: %s: %w", ErrSandbox, bw.path, err)
		}
		return nil, err
	}
	c.infoR = infoR
	return c, nil
}

// spawnTraced is spawn under LimiterPtrace: the program itself, stopped at
// its exec to take its limits (startTraced).
func spawnTraced(dir string, l launch, logR, logW *os.File, extra ...*os.File) (*child, error) {
	cmd := &exec.Cmd{
		Path:       l.path,
		Args:       l.argv,
		Env:        l.env,
		Dir:        dir,
		Stdout:     logW,
		Stderr:     logW,
		ExtraFiles: extra,
		// A session of its own, as under the trampoline; the user is set
		// before the exec.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: l.cred},
	}
	l.cg.into(cmd.SysProcAttr)
	err := startTraced(cmd, l.tr)
	_ = logW.Close()
	switch {
	case cmd.Process == nil && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR)):
		return nil, fmt.Errorf("%w: exec the program: %w", ErrNoProgram, unwrapPath(err))
	case cmd.Process == nil:
		return nil, fmt.Errorf("%w: exec the program: %w", ErrStart, unwrapPath(err))
	case err != nil:
		return &child{cmd: cmd, logR: logR, startErr: fmt.Errorf("%w: %w", ErrStart, err)}, nil
	}
	return &child{cmd: cmd, logR: logR}, nil
}

// unwrapPath drops os.StartProcess's "fork/exec <path>:" from err: the
// path is the runner's, and the messages match the trampoline's.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// await waits until the process pid exits, its timeout passes or ctx is
// done. In the last two cases it stops the process with signal: SIGTERM,
// then SIGKILL after the runner's KillGrace. It returns why it stopped the
// process ("" when the process ended on its own, even just after the
// timeout or ctx), the message to report and ctx's cause.
func (r *Runner) await(ctx context.Context, pid int, timeout time.Duration, signal func(syscall.Signal)) (stop Status, msg string, cause error) {
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitExited(pid)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-exited:
		return "", "", nil
	case <-timer.C:
		stop, msg = StatusTimeout, fmt.Sprintf("timed out after %v", timeout)
	case <-ctx.Done():
		stop, cause = statusOf(ctx), context.Cause(ctx)
		if stop == StatusTimeout {
			msg = "timed out: " + cause.Error()
		} else {
			msg = "cancelled: " + cause.Error()
		}
	}
	select {
	case <-exited: // it ended on its own meanwhile: report that
		return "", "", nil
	default:
	}
	signal(syscall.SIGTERM)
	grace := time.NewTimer(r.cfg.KillGrace)
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C:
		signal(syscall.SIGKILL)
		<-exited
		msg += fmt.Sprintf(" (killed after a %v grace period)", r.cfg.KillGrace)
	}
	return stop, msg, cause
}

// exitStatus fills in res from the ended process's state: its resource use,
// exit code or signal, and the status (stop when the runner stopped it).
func (r *Runner) exitStatus(res *Result, ps *os.ProcessState, stop Status) {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		res.UserTime = time.Duration(ru.Utime.Nano())
		res.SystemTime = time.Duration(ru.Stime.Nano())
		res.MaxRSS = ru.Maxrss * 1024
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Exited():
		res.ExitCode = ws.ExitStatus()
		if (r.bw != nil || r.ns != nil) && res.ExitCode > 128 && res.ExitCode <= 128+maxSignal {
			// bwrap, and the ns sandbox's stage, report a death by signal N
			// as exit status 128+N, as a shell does: report the signal.
			res.ExitCode, res.Signal = -1, syscall.Signal(res.ExitCode-128)
		}
	case ws.Signaled():
		res.Signal = ws.Signal()
	}
	switch {
	case stop != "":
		res.Status = stop
	case res.ExitCode == 0:
		res.Status = StatusComplete
	case res.Signal != 0:
		res.Status = StatusError
		res.Msg = "killed by signal: " + res.Signal.String()
	default:
		res.Status = StatusError
		res.Msg = fmt.Sprintf("exit status %d", res.ExitCode)
	}
}

// maxSignal is the highest signal number on Linux (SIGRTMAX).
const maxSignal = 64

func statusOf(ctx context.Context) Status {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return StatusTimeout
	}
	return StatusCancelled
}

// handshake reads the status pipe: 'T' from the trampoline, then EOF when
// the program's exec succeeded (the pipe is close-on-exec), or a failed
// stage and errno.
func handshake(statR *os.File, deadline time.Time) error {
	_ = statR.SetReadDeadline(deadline)
	var buf [6]byte
	n, err := io.ReadFull(statR, buf[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return fmt.Errorf("%w (the trampoline exited without a word)", ErrNoTrampoline)
	case buf[0] != 'T':
		return fmt.Errorf("%w (unexpected handshake)", ErrNoTrampoline)
	case n == 1 && errors.Is(err, io.ErrUnexpectedEOF):
		return nil // exec succeeded
	case n == 6:
		errno := syscall.Errno(uint32(buf[2]) | uint32(buf[3])<<8 | uint32(buf[4])<<16 | uint32(buf[5])<<24)
		if buf[1] == stageExec && (errno == syscall.ENOENT || errno == syscall.ENOTDIR) {
			return fmt.Errorf("%w: %s: %w", ErrNoProgram, stageNames[buf[1]], errno)
		}
		if buf[1] >= stageNamespaces {
			return fmt.Errorf("%w: %s: %w", ErrSandbox, stageNames[buf[1]], errno)
		}
		return fmt.Errorf("%w: %s: %w", ErrStart, stageNames[buf[1]], errno)
	default:
		return fmt.Errorf("%w: handshake: %d bytes: %w", ErrStart, n, err)
	}
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// logPump copies the log pipe to the sink up to the cap, then discards.
type logPump struct {
	head      []byte // the first headSize bytes, for a sandbox's error
	sink      io.Writer
	limit     int64
	bytes     int64
	dropped   int64
	truncated bool
	err       error
}

func (p *logPump) run(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.deliver(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// headSize is how much of the start of the log a logPump keeps.
const headSize = 512

func (p *logPump) deliver(b []byte) {
	if room := headSize - len(p.head); room > 0 {
		p.head = append(p.head, b[:min(room, len(b))]...)
	}
	if room := p.limit - p.bytes; room > 0 {
		k := min(int64(len(b)), room)
		p.write(b[:k])
		p.bytes += k
		b = b[k:]
	}
	if len(b) == 0 {
		return
	}
	if !p.truncated {
		p.truncated = true
		p.write(fmt.Appendf(nil, "\n[kiln: log truncated at %d bytes; the rest of the output is discarded]\n", p.limit))
	}
	p.dropped += int64(len(b))
}

func (p *logPump) write(b []byte) {
	if p.sink == nil || p.err != nil {
		return
	}
	if _, err := p.sink.Write(b); err != nil {
		p.err = err
	}
}

// owner is the user and group a task directory's files are given as they
// are made; -1 leaves them the runner's.
type owner struct{ uid, gid int }

// writeFile writes data into the file path, mode 0600, owned by own: a
// new file (which must not exist), or with kept the file of a kept task
// directory, written over. Plain system calls: a file the runner only
// writes needs none of the poller set-up of an os.File.
func writeFile(path string, data []byte, own owner, kept bool) error {
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC
	if kept {
		flags = unix.O_WRONLY | unix.O_TRUNC | unix.O_NOFOLLOW | unix.O_CLOEXEC
	}
	fd, err := unix.Open(path, flags, 0o600)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if kept {
		err = unix.Fchmod(fd, 0o600)
	}
	for len(data) > 0 && err == nil {
		var n int
		n, err = unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			err = nil
		}
		data = data[max(n, 0):]
	}
	if err == nil && own.uid >= 0 {
		err = unix.Fchown(fd, own.uid, own.gid)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// ownProgram makes the program file (rel, st its Stat) of task directory
// td a copy of its own, if it is a link to the package's file (in src),
// and executable (0755).
func ownProgram(td *taskDir, src, rel string, st fs.FileInfo, own owner) error {
	file := filepath.Join(td.path, rel)
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && src != "" && (sys.Nlink > 1 || own.uid >= 0 && int(sys.Uid) != own.uid) {
		if err := os.Remove(file); err != nil {
			return err
		}
		in, out, err := openRoots(src, td.path)
		if err != nil {
			return err
		}
		defer closeRoots(in, out)
		td.made[filepath.ToSlash(rel)] = false
		return copyFile(in, out, rel, 0o755, own, false)
	}
	return os.Chmod(file, 0o755) //nolint:gosec // G302: the program must be executable
}

// linkable reports whether a task running as own may be given a hard link
// to the package's file (info, as Lstat gives it) instead of a copy: it
// can neither write the file nor change its mode, owner or times, because
// it is not the file's owner, it runs as a user that is not root, and
// neither the group nor others may write the file. A set-id bit is never
// shared (Unpack makes none).
func linkable(info fs.FileInfo, own owner) bool {
	sys, ok := info.Sys().(*syscall.Stat_t)
	return ok && own.uid > 0 && int(sys.Uid) != own.uid && sys.Mode&0o7022 == 0 && info.Mode().IsRegular()
}

// copyPackage fills the task directory td with the package src: its
// directories made anew, owned by own; each regular file a hard link to
// the package's when link is set and the file is linkable, else a copy
// owned by own, modes kept (Unpack made them 0644 or 0755). A link the
// file system refuses (another file system, too many links) becomes a
// copy. In a kept directory, the directories and copies it holds are
// reused: their modes and owner set again, the copies written over.
func copyPackage(td *taskDir, src string, own owner, link bool) error {
	root, out, err := openRoots(src, td.path)
	if err != nil {
		return err
	}
	defer closeRoots(root, out)
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		if p == PayloadFileName || p == ConfigFileName {
			return nil // kiln writes these
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		isDir, kept := td.kept[p]
		if kept && isDir != info.IsDir() {
			// The package changed under its directory: a new entry.
			if err := out.RemoveAll(p); err != nil {
				return err
			}
			kept = false
		}
		switch {
		case info.IsDir():
			td.made[p] = true
			if kept {
				err = out.Chmod(p, 0o750)
			} else {
				err = out.Mkdir(p, 0o750)
			}
			if err != nil || own.uid < 0 {
				return err
			}
			return out.Lchown(p, own.uid, own.gid)
		case info.Mode().IsRegular():
			if link && linkable(info, own) {
				if kept {
					// A copy of the task before (ownProgram's).
					if err := out.Remove(p); err != nil {
						return err
					}
					kept = false
				}
				// The task directory is root's until prepare ends, and the
				// package is the runner's: neither path can change meanwhile.
				// A link is not kept for the next task (reset removes it).
				err := os.Link(filepath.Join(src, p), filepath.Join(td.path, p))
				if err == nil || !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EMLINK) && !errors.Is(err, syscall.EPERM) {
					return err
				}
			}
			td.made[p] = false
			return copyFile(root, out, p, info.Mode().Perm(), own, kept)
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
	})
}

// openRoots opens the folders src and dst as roots.
func openRoots(src, dst string) (*os.Root, *os.Root, error) {
	in, err := os.OpenRoot(src)
	if err != nil {
		return nil, nil, err
	}
	out, err := os.OpenRoot(dst)
	if err != nil {
		_ = in.Close()
		return nil, nil, err
	}
	return in, out, nil
}

// closeRoots closes the roots openRoots opened.
func closeRoots(roots ...*os.Root) {
	for _, r := range roots {
		_ = r.Close()
	}
}

// copyFile copies one file. The new file is open for writing while no
// process can be forked (syscall.ForkLock, read side): a child forked
// meanwhile by another Run, or any os/exec in the process, would inherit
// the descriptor until its own exec, and executing this file during that
// window would fail with ETXTBSY (golang/go#22315). Copies run in parallel;
// a fork waits for the copies in progress.
func copyFile(src, dst *os.Root, name string, perm fs.FileMode, own owner, kept bool) error {
	in, err := src.Open(name)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if kept {
		// The copy of the task before, which reset found a regular file:
		// left as it is if it still holds the package's bytes (reading it
		// costs less than writing it again), else written over.
		if same, err := keepCopy(in, dst, name, perm, own); same || err != nil {
			return err
		}
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return err
		}
		flags = os.O_WRONLY | os.O_TRUNC | syscall.O_NOFOLLOW
	}
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	out, err := dst.OpenFile(name, flags, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Chmod(perm); err != nil {
		_ = out.Close()
		return err
	}
	if own.uid >= 0 {
		if err := out.Chown(own.uid, own.gid); err != nil {
			_ = out.Close()
			return err
		}
	}
	return out.Close()
}

// compareBufs are the buffers of keepCopy.
var compareBufs = sync.Pool{New: func() any { return new([2][32 << 10]byte) }}

// keepCopy reports whether the file name of dst holds the bytes of in,
// and then gives it perm and own. A file it cannot read is not the same.
func keepCopy(in *os.File, dst *os.Root, name string, perm fs.FileMode, own owner) (bool, error) {
	out, err := dst.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false, nil //nolint:nilerr // written over instead, which reports what is wrong
	}
	defer func() { _ = out.Close() }()
	si, err := in.Stat()
	if err != nil {
		return false, err
	}
	if so, err := out.Stat(); err != nil || !so.Mode().IsRegular() || so.Size() != si.Size() {
		return false, nil //nolint:nilerr // as above
	}
	bufs := compareBufs.Get().(*[2][32 << 10]byte)
	defer compareBufs.Put(bufs)
	for {
		n, err := io.ReadFull(in, bufs[0][:])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return false, err
		}
		m, _ := io.ReadFull(out, bufs[1][:n])
		if m != n || !bytes.Equal(bufs[0][:n], bufs[1][:n]) {
			return false, nil
		}
		if n < len(bufs[0]) {
			break
		}
	}
	if err := out.Chmod(perm); err != nil {
		return false, err
	}
	if own.uid >= 0 {
		if err := out.Chown(own.uid, own.gid); err != nil {
			return false, err
		}
	}
	return true, nil
}

// removeAll removes a task directory, even one whose modes the task has
// changed so that its owner cannot list or delete inside it. The task (or a
// process it left behind) may still be changing the tree: every step goes
// through an os.Root, so a symbolic link swapped in cannot redirect a chmod
// outside the directory.
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	if root, err := os.OpenRoot(dir); err == nil {
		chmodDir(root, ".")
		_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				// Before WalkDir reads it: a directory must be listable.
				chmodDir(root, p)
			}
			return nil
		})
		_ = root.Close()
	}
	return os.RemoveAll(dir)
}

// chmodDir makes directory name of root 0700, and nothing else: a file
// swapped in for it meanwhile (a link to a package's file among them)
// keeps its mode. A directory is opened first (O_DIRECTORY), which a root
// runner always can; a runner of another user, whose tasks are never given
// links, changes it by name when its mode keeps it from opening it.
func chmodDir(root *os.Root, name string) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err == nil {
		_ = f.Chmod(0o700)
		_ = f.Close()
		return
	}
	if errors.Is(err, fs.ErrPermission) {
		_ = root.Chmod(name, 0o700)
	}
}
