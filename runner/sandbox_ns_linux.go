//go:build linux

package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kilnhq/kiln/runner/internal/zygote"
)

// nsSetup is what a Runner under SandboxNamespaces passes to every task.
type nsSetup struct {
	hide    []string // Config.Hide and WorkDir
	private []string // the private folders, /tmp first
	network bool     // Config.IsolateNetwork
}

// The resident helpers, shared by every Runner of the process (requests
// carry everything that differs between runners) and started again if one
// dies. A helper starts one sandbox at a time: one per CPU, at most
// maxHelpers.
const maxHelpers = 8

var (
	nsHelperMu sync.Mutex
	nsHelpers  = make([]*zygote.Helper, min(runtime.GOMAXPROCS(0), maxHelpers))
	nsNext     atomic.Uint32
)

// sandboxHelper returns a running helper, starting one if there is none.
func sandboxHelper() (*zygote.Helper, error) {
	i := int(nsNext.Add(1)) % len(nsHelpers)
	nsHelperMu.Lock()
	defer nsHelperMu.Unlock()
	if h := nsHelpers[i]; h != nil && h.Alive() {
		return h, nil
	}
	h, err := zygote.Start()
	if err != nil {
		return nil, err
	}
	nsHelpers[i] = h
	return h, nil
}

// setupNS checks that SandboxNamespaces can work here and runs a trial
// task through it.
func (r *Runner) setupNS(root bool) (*nsSetup, error) {
	c := &r.cfg
	switch {
	case !zygote.Supported:
		return nil, zygote.ErrUnsupported
	case !root:
		return nil, fmt.Errorf("the sandbox helper needs a root runner (this one is uid %d)", os.Geteuid())
	}
	ns := &nsSetup{private: []string{"/tmp", "/dev/shm"}, network: c.IsolateNetwork}
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		ns.private = append(ns.private, "/var/tmp")
	}
	ns.hide = append(slices.Clone(c.Hide), r.workDir())
	key := fmt.Sprintf("ns\x00%v\x00%s", ns.network, strings.Join(ns.hide, "\x00"))
	if v, ok := probes.Load(key); ok {
		err, _ := v.(error)
		return ns, err
	}
	err := r.probeNS(ns)
	probes.Store(key, err)
	return ns, err
}

// probeNS runs "true" in the sandbox once: the kernel may refuse the
// namespaces or the mounts (a container without CAP_SYS_ADMIN, a kernel
// before 5.12 without mount_setattr).
func (r *Runner) probeNS(ns *nsSetup) error {
	truePath, err := lookPath("true", r.cfg.Path)
	if err != nil {
		return err
	}
	// Any folder will do (the work folder may not exist yet).
	dir, err := os.MkdirTemp("", "kiln-ns-probe-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.Chown(dir, NobodyID, NobodyID); err != nil {
		return err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		rd, wr, err := os.Pipe()
		if err == nil {
			files = append(files, rd, wr)
		}
		return rd, wr, err
	}
	logR, logW, err := pipe()
	if err != nil {
		return err
	}
	l := launch{path: truePath, argv: []string{"true"}, cred: &syscall.Credential{Uid: NobodyID, Gid: NobodyID}}
	c, err := r.spawnNS(ns, dir, l, logR, logW, pipe)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	go func() {
		<-ctx.Done()
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}()
	herr := handshake(c.statR, time.Now().Add(probeTimeout))
	out, _ := io.ReadAll(io.LimitReader(logR, 4096))
	werr := c.cmd.Wait()
	switch {
	case herr != nil:
		return fmt.Errorf("a trial task: %w", herr)
	case werr != nil:
		return fmt.Errorf("a trial task: %w: %s", werr, firstLine(out))
	}
	return nil
}

// spawnNS is spawn under SandboxNamespaces: the helper forks the stage (a
// child of this process) that starts the sandbox and the program in it.
// It speaks the trampoline's handshake on statR and bubblewrap's info on
// infoR.
func (r *Runner) spawnNS(ns *nsSetup, dir string, l launch, logR, logW *os.File, pipe func() (*os.File, *os.File, error)) (*child, error) {
	defer func() { _ = logW.Close() }()
	statR, statW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	infoR, infoW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	hides, err := hidePaths(ns.hide, ns.private)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	req := zygote.Request{Network: ns.network, CgroupNS: true, UID: -1, GID: -1, TaskDir: dir, Path: l.path,
		Argv: l.argv, Env: l.env, Private: ns.private}
	if c := l.cred; c != nil {
		req.UID, req.GID = int64(c.Uid), int64(c.Gid)
		req.Groups = slices.Clone(c.Groups)
	}
	req.Limits = r.rlimitValues()
	for _, h := range hides {
		if h.dir {
			req.HideDirs = append(req.HideDirs, h.path)
		} else {
			req.HideFiles = append(req.HideFiles, h.path)
		}
	}
	blob, err := req.Encode()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	var pid int
	// A helper found dead (killed from outside) has started nothing: the
	// task goes to another, or to the one started in its place.
	for range 2*len(nsHelpers) + 1 {
		h, herr := sandboxHelper()
		if herr != nil {
			return nil, fmt.Errorf("%w: %w", ErrSandbox, herr)
		}
		if pid, err = h.Spawn(blob, logW, statW, infoW); err == nil || h.Alive() {
			break
		}
	}
	_ = statW.Close()
	_ = infoW.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("%w: the sandbox's stage %d: %w", ErrStart, pid, err)
	}
	return &child{cmd: &exec.Cmd{Process: p}, logR: logR, statR: statR, infoR: infoR}, nil
}
