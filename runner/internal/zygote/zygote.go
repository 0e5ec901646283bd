//go:build linux

package zygote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// replyTimeout bounds the helper's answer to one request; it clones once.
const replyTimeout = 10 * time.Second

// Helper is a running helper process. Its methods are safe for concurrent
// use; requests are served one at a time.
type Helper struct {
	mu   sync.Mutex
	conn *net.UnixConn
	cmd  *exec.Cmd
	dead atomic.Bool // set with mu held: a request failed, Close, or it exited
}

// keeper runs the helper's starts on one goroutine locked to its thread
// for the life of the process: the helper's parent-death signal, and that
// of every stage (whose parent is the same thread), fire when that thread
// exits, which then only happens with the process.
var keeper = sync.OnceValue(func() chan func() {
	ch := make(chan func())
	go keeperLoop(ch)
	return ch
})

func keeperLoop(ch chan func()) {
	runtime.LockOSThread()
	for f := range ch {
		f()
	}
}

// Start starts a helper from the running binary.
func Start() (*Helper, error) {
	if !Supported {
		return nil, ErrUnsupported
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("the helper's socket: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "kiln-sandbox-helper")
	theirs := os.NewFile(uintptr(fds[1]), "kiln-sandbox-helper")
	defer func() { _ = theirs.Close() }()
	fc, err := net.FileConn(mine)
	_ = mine.Close()
	if err != nil {
		return nil, fmt.Errorf("the helper's socket: %w", err)
	}
	conn, ok := fc.(*net.UnixConn)
	if !ok {
		_ = fc.Close()
		return nil, errors.New("the helper's socket: not a unix socket")
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{arg0, strconv.Itoa(os.Getpid())},
		// LD_BIND_NOW: the dynamic loader resolves every C function once,
		// in the helper; a sandbox's pid 1, which shares its memory, never
		// writes the loader's tables beside it.
		Env:        []string{"KILN_SANDBOX_HELPER=1", "LD_BIND_NOW=1"},
		ExtraFiles: []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:    true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	done := make(chan error, 1)
	keeper() <- func() { done <- cmd.Start() }
	if err := <-done; err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start the sandbox helper: %w", err)
	}
	return &Helper{conn: conn, cmd: cmd}, nil
}

// Spawn asks the helper to start the task that request describes (see
// Request.Encode), with log as its stdout and stderr and stat and info as
// the start status and info pipes. It returns the pid of the stage, a
// child of this process. The caller keeps its files and closes them.
func (h *Helper) Spawn(request []byte, log, stat, info *os.File) (int, error) {
	fd, err := unix.MemfdCreate("kiln-task-request", unix.MFD_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("the request: %w", err)
	}
	req := os.NewFile(uintptr(fd), "kiln-task-request")
	defer func() { _ = req.Close() }()
	if _, err := req.Write(request); err != nil {
		return 0, fmt.Errorf("the request: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dead.Load() {
		return 0, errors.New("the sandbox helper has stopped")
	}
	rights := unix.UnixRights(int(req.Fd()), int(log.Fd()), int(stat.Fd()), int(info.Fd()))
	_ = h.conn.SetDeadline(time.Now().Add(replyTimeout))
	if _, _, err := h.conn.WriteMsgUnix([]byte("kzspawn1"), rights, nil); err != nil {
		h.stop()
		return 0, fmt.Errorf("the sandbox helper: %w", err)
	}
	var out [4]byte
	n, err := h.conn.Read(out[:])
	if err != nil || n != 4 {
		h.stop()
		if err == nil {
			err = fmt.Errorf("a %d-byte answer", n)
		}
		return 0, fmt.Errorf("the sandbox helper: %w", err)
	}
	v := int32(binary.LittleEndian.Uint32(out[:])) //nolint:gosec // G115: the helper's int32
	if v < 0 {
		return 0, fmt.Errorf("the sandbox helper: %w", syscall.Errno(-v))
	}
	return int(v), nil
}

// Pid returns the helper's process id.
func (h *Helper) Pid() int { return h.cmd.Process.Pid }

// Alive reports whether the helper can still take requests.
func (h *Helper) Alive() bool {
	if h.dead.Load() {
		return false
	}
	// Killed from outside (the OOM killer, an operator)? Asked without
	// reaping it, and without waiting for a request in flight.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, h.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if err != nil && !errors.Is(err, unix.ECHILD) || err == nil && info.Signo == 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dead.Load() {
		h.stop()
	}
	return false
}

// stop ends a helper that failed a request; h.mu is held.
func (h *Helper) stop() {
	h.dead.Store(true)
	_ = h.conn.Close()
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// Close stops the helper: it exits once its socket is closed, and is
// waited for. Tasks it started go on: they are the caller's children.
func (h *Helper) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dead.Load() {
		return nil
	}
	h.dead.Store(true)
	err := h.conn.Close()
	_ = h.cmd.Wait()
	return err
}
