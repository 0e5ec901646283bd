//go:build linux

package runner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Group kills (docs/sandbox.md, "Group kills"): without bwrap, a process of
// a task that starts a session of its own (setsid) leaves the task's
// process group, and the group kill at the task's end misses it. Where the
// runner can make cgroups in a cgroup v2 hierarchy, each task starts
// directly in a cgroup of its own (clone3 with CLONE_INTO_CGROUP:
// SysProcAttr.UseCgroupFD, no extra process or exec), which no process of
// the task can leave unless it may write to cgroups outside it (a task
// running as root). At the task's end the runner writes "1" to the
// cgroup's cgroup.kill (Linux 5.14), which SIGKILLs every process in it,
// waits (bounded) until cgroup.events says "populated 0", and removes the
// cgroup.
//
// The cgroups of a process's Runners lie in one sub-tree per parent,
// <parent>/kiln-runner-<pid>, made at the first New that uses it. The
// parent is, with CgroupAuto, the runner's own cgroup in the cgroup2 mount
// (the root of the hierarchy on a hybrid host or in a container with its
// own cgroup namespace; the service's cgroup under systemd, which must let
// the runner write there: root, or Delegate=yes); else Config.Cgroup.

// cgroupKillWait bounds the wait for a task's cgroup to be empty after its
// cgroup.kill: processes die of SIGKILL at once, unless stuck in the
// kernel (uninterruptible sleep).
const cgroupKillWait = 5 * time.Second

// cgroupTree is a process's sub-tree under one parent cgroup.
type cgroupTree struct {
	dir string // <parent>/kiln-runner-<pid>
	seq atomic.Uint64
	mu  sync.Mutex // serialises the re-creation of dir
}

// cgroupTrees caches the sub-trees by parent: *cgroupTreeResult.
var cgroupTrees sync.Map

type cgroupTreeResult struct {
	once sync.Once
	tree *cgroupTree
	err  error
}

// resolveCgroup decides, after resolveLimiter, whether tasks start in a
// cgroup of their own (r.cg), and says so in r.sb.
func (r *Runner) resolveCgroup() {
	c := r.cfg.Cgroup
	switch {
	case c == CgroupOff:
		r.sb.GroupKillNote = "off (Config.Cgroup): a process that calls setsid outlives its task"
		return
	case r.bw != nil:
		r.sb.GroupKillNote = "not needed under bwrap: the sandbox's PID namespace ends every process of the task"
		return
	case r.ns != nil:
		r.sb.GroupKillNote = "not needed under ns: the sandbox's PID namespace ends every process of the task"
		return
	}
	parent := c
	if c == CgroupAuto {
		mount, rel, err := ownCgroup2()
		if err != nil {
			r.sb.GroupKillNote = "off: " + err.Error() + ": a process that calls setsid outlives its task"
			return
		}
		parent = filepath.Join(mount, rel)
	}
	parent = filepath.Clean(parent)
	v, _ := cgroupTrees.LoadOrStore(parent, &cgroupTreeResult{})
	res, _ := v.(*cgroupTreeResult)
	res.once.Do(func() { res.tree, res.err = r.openCgroupTree(parent) })
	if res.err != nil {
		r.sb.GroupKillNote = "off: " + res.err.Error() + ": a process that calls setsid outlives its task"
		return
	}
	r.cg = res.tree
	r.sb.GroupKill = true
	r.sb.Cgroup = res.tree.dir
}

// ownCgroup2 returns the cgroup2 mount point and the process's cgroup in
// it (from /proc/self/mountinfo and /proc/self/cgroup).
func ownCgroup2() (mount, rel string, err error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	found := false
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			rel, found = p, true
		}
	}
	if !found {
		return "", "", errors.New("the process is in no cgroup v2 hierarchy")
	}
	mount, err = cgroup2Mount()
	if err != nil {
		return "", "", err
	}
	return mount, rel, nil
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mount-point options ... - type source ...
		l := sc.Text()
		i := strings.Index(l, " - ")
		if i < 0 || !strings.HasPrefix(l[i+3:], "cgroup2 ") {
			continue
		}
		if fs := strings.Fields(l[:i]); len(fs) >= 5 && fs[3] == "/" {
			return unescapeMount(fs[4]), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 file system is mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// openCgroupTree makes the process's sub-tree under parent and tries it:
// a task cgroup, "true" started into it, its cgroup.kill and removal.
func (r *Runner) openCgroupTree(parent string) (*cgroupTree, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", parent, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%s is not in a cgroup v2 hierarchy", parent)
	}
	if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); err != nil {
		return nil, fmt.Errorf("%s is not a cgroup: %w", parent, err)
	}
	t := &cgroupTree{dir: filepath.Join(parent, "kiln-runner-"+strconv.Itoa(os.Getpid()))}
	removeStaleTrees(parent)
	if err := os.Mkdir(t.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) { //nolint:gosec // G301: a cgroup folder, root's
		return nil, fmt.Errorf("cannot make a cgroup in %s: %w", parent, err)
	}
	if _, err := os.Stat(filepath.Join(t.dir, "cgroup.kill")); err != nil {
		_ = os.Remove(t.dir)
		return nil, errors.New("the kernel has no cgroup.kill (Linux 5.14 or later)")
	}
	if err := r.probeCgroup(t); err != nil {
		_ = os.Remove(t.dir)
		return nil, err
	}
	return t, nil
}

// RemoveCgroups removes the cgroup sub-trees of this process's Runners
// (Config.Cgroup) that no task uses any more: a server calls it once its
// tasks have ended, before it exits. A sub-tree still in use is left alone
// (a Run made later makes it again); the next runner removes what is left
// empty.
func RemoveCgroups() {
	cgroupTrees.Range(func(_, v any) bool {
		if res, ok := v.(*cgroupTreeResult); ok && res.tree != nil {
			res.tree.mu.Lock()
			_ = unix.Rmdir(res.tree.dir)
			res.tree.mu.Unlock()
		}
		return true
	})
}

// removeStaleTrees removes the empty sub-trees that runners which are
// gone left under parent (a runner that was killed): only empty cgroups
// can be removed, so the processes of a live runner, or those a dead one
// left behind, are never touched.
func removeStaleTrees(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, ok := strings.CutPrefix(e.Name(), "kiln-runner-")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || !e.IsDir() || n == os.Getpid() || syscall.Kill(n, 0) != syscall.ESRCH {
			continue
		}
		dir := filepath.Join(parent, e.Name())
		if sub, err := os.ReadDir(dir); err == nil {
			for _, s := range sub {
				if s.IsDir() {
					_ = os.Remove(filepath.Join(dir, s.Name()))
				}
			}
		}
		_ = os.Remove(dir)
	}
}

// probeCgroup starts "true" into a task cgroup of t as Run would (clone3
// with CLONE_INTO_CGROUP), then kills and removes the cgroup.
func (r *Runner) probeCgroup(t *cgroupTree) error {
	path, err := lookPath("true", r.cfg.Path)
	if err != nil {
		return fmt.Errorf("no program to try cgroups with: %w", err)
	}
	cg, err := t.newTask()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{Path: path, Args: []string{path}, Env: []string{},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: cg.fd}}
	err = cmd.Run()
	if kerr := cg.kill(); err == nil && kerr != nil {
		err = kerr
	}
	if err != nil {
		return fmt.Errorf("starting a process in a cgroup: %w", err)
	}
	return nil
}

// taskCgroup is the cgroup of one task.
type taskCgroup struct {
	dir  string
	fd   int // the folder, open: SysProcAttr.CgroupFD
	done bool
}

// newTask makes a cgroup for a task; the caller ends it with kill.
func (t *cgroupTree) newTask() (*taskCgroup, error) {
	var dir string
	var err error
	// A name can be taken: by a runner that had this pid and was killed
	// with tasks left.
	for range 100 {
		dir = filepath.Join(t.dir, "t"+strconv.FormatUint(t.seq.Add(1), 10))
		err = unix.Mkdir(dir, 0o755)
		if errors.Is(err, unix.ENOENT) {
			// Someone removed the sub-tree: make it again.
			t.mu.Lock()
			if err = unix.Mkdir(t.dir, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				err = unix.Mkdir(dir, 0o755)
			}
			t.mu.Unlock()
		}
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: make the task's cgroup %s: %w", ErrStart, dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Rmdir(dir)
		return nil, fmt.Errorf("%w: open the task's cgroup %s: %w", ErrStart, dir, err)
	}
	return &taskCgroup{dir: dir, fd: fd}, nil
}

// into makes a process started with attr start in the cgroup (clone3 with
// CLONE_INTO_CGROUP); a nil c leaves attr alone.
func (c *taskCgroup) into(attr *syscall.SysProcAttr) {
	if c != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, c.fd
	}
}

// kill ends every process of the cgroup (cgroup.kill) unless none is
// left, waits until none is (cgroup.events: "populated 0"), at most
// cgroupKillWait, and removes the cgroup. A second call does nothing.
func (c *taskCgroup) kill() error {
	if c == nil || c.done {
		return nil
	}
	c.done = true
	defer func() { _ = unix.Close(c.fd) }()
	efd, err := unix.Openat(c.fd, "cgroup.events", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cgroup.events: %w", err)
	}
	defer func() { _ = unix.Close(efd) }()
	// Most tasks leave nothing behind: then no kill is needed (no process
	// can enter an empty cgroup but by a migration, which only a writer of
	// cgroups outside it may do).
	empty, err := populated0(efd)
	if err != nil {
		return err
	}
	if !empty {
		kfd, err := unix.Openat(c.fd, "cgroup.kill", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("cgroup.kill: %w", err)
		}
		_, err = unix.Write(kfd, []byte("1"))
		_ = unix.Close(kfd)
		if err != nil {
			return fmt.Errorf("cgroup.kill: %w", err)
		}
		if err := c.waitEmpty(efd, cgroupKillWait); err != nil {
			return err
		}
	}
	if err := unix.Rmdir(c.dir); err != nil {
		return fmt.Errorf("remove the task's cgroup %s: %w", c.dir, err)
	}
	return nil
}

// populated0 reads cgroup.events (open as efd): whether it says
// "populated 0".
func populated0(efd int) (bool, error) {
	var buf [256]byte
	n, err := unix.Pread(efd, buf[:], 0)
	if err != nil {
		return false, fmt.Errorf("cgroup.events: %w", err)
	}
	return bytes.Contains(buf[:max(n, 0)], []byte("populated 0")), nil
}

// waitEmpty waits until cgroup.events (open as efd) says "populated 0",
// at most d. The kernel wakes a poll for POLLPRI on the file when it
// changes.
func (c *taskCgroup) waitEmpty(efd int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		empty, err := populated0(efd)
		if err != nil || empty {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("the task's cgroup %s still has processes %v after its cgroup.kill", c.dir, d)
		}
		fds := []unix.PollFd{{Fd: int32(efd), Events: unix.POLLPRI}} //nolint:gosec // G115: a descriptor fits
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("cgroup.events: %w", err)
		}
	}
}
