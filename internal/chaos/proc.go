package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// WaitLimit bounds every wait of the helpers for a process: to start
// listening, to stop after a signal.
const WaitLimit = time.Minute

// Cmd describes a child process: the test binary run again with no test
// selected, so that its TestMain plays the role its environment names.
type Cmd struct {
	// Name names the process in messages.
	Name string
	// Prefix is put before the program, e.g. {"ip", "netns", "exec", ns}.
	Prefix []string
	// Env is added to the test's environment.
	Env []string
	// Log, when set, is a file that receives the process's stdout and
	// stderr (appended); empty sends them to the test's stderr.
	Log string
	// Ready, when set, is a file the child writes with SignalReady once
	// it handles its stop signals. Stop with any signal but SIGKILL waits
	// for it first: a signal that came before the child's handler would
	// end it by the signal's default action, not by its graceful stop.
	Ready string
}

// ReadyEnv names the environment variable that carries Cmd.Ready to the
// child.
const ReadyEnv = "KILN_CHAOS_READY"

// SignalReady tells the parent that this child process now handles its
// stop signals (call it after signal.Notify); it does nothing when the
// parent did not ask (Cmd.Ready empty).
func SignalReady() error {
	path := os.Getenv(ReadyEnv)
	if path == "" {
		return nil
	}
	return WriteFileAtomic(path, nil)
}

// Proc is a running (or ended) child process.
type Proc struct {
	name  string
	log   string
	ready string
	cmd   *exec.Cmd
	done  chan struct{}
	err   error // valid once done is closed
}

// Start starts the child process c and fails the test if it cannot.
func Start(t testing.TB, c Cmd) *Proc {
	t.Helper()
	p, err := StartErr(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartErr starts the child process c.
func StartErr(c Cmd) (*Proc, error) {
	argv := append(append([]string{}, c.Prefix...), os.Args[0], "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...) //nolint:gosec // G204: the test binary itself, started by its own test
	cmd.Env = append(os.Environ(), c.Env...)
	if c.Ready != "" {
		cmd.Env = append(cmd.Env, ReadyEnv+"="+c.Ready)
	}
	var out io.Writer = os.Stderr
	var f *os.File
	if c.Log != "" {
		var err error
		f, err = os.OpenFile(c.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		out = f
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		if f != nil {
			_ = f.Close()
		}
		return nil, fmt.Errorf("start %s %v: %w", c.Name, argv, err)
	}
	p := &Proc{name: c.Name, log: c.Log, ready: c.Ready, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if f != nil {
			_ = f.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// Name returns the process's name.
func (p *Proc) Name() string { return p.name }

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends sig and waits (at most WaitLimit, then SIGKILL) for the
// process to end; it returns how it ended. A process that had ended
// already returns how it did. With Cmd.Ready set and a signal other than
// SIGKILL, Stop first waits (at most WaitLimit) for the child to be ready
// to handle it.
func (p *Proc) Stop(sig os.Signal) error {
	if p.ready != "" && sig != syscall.SIGKILL {
		p.waitReady()
	}
	_ = p.cmd.Process.Signal(sig) // it may have ended already
	select {
	case <-p.done:
		return p.err
	case <-time.After(WaitLimit):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) did not stop within %s after %v; killed: %w", p.name, p.Pid(), WaitLimit, sig, p.err)
	}
}

// Kill sends SIGKILL and waits; it fails when the process had ended
// before the kill.
func (p *Proc) Kill() error {
	if done, err := p.Exited(); done {
		return fmt.Errorf("%s (pid %d) ended before its kill: %s", p.name, p.Pid(), exitText(err))
	}
	err := p.Stop(syscall.SIGKILL)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return nil
		}
	}
	return fmt.Errorf("%s (pid %d) did not end by SIGKILL: %s", p.name, p.Pid(), exitText(err))
}

// waitReady waits until the child has written its ready file, has ended,
// or WaitLimit has passed.
func (p *Proc) waitReady() { _, _ = p.awaitFile(p.ready) }

// errEnded and errNotReady are why awaitFile gave up.
var (
	errEnded    = errors.New("ended before it was ready")
	errNotReady = fmt.Errorf("was not ready within %s", WaitLimit)
)

// awaitFile polls for a file that p writes when it is ready and returns
// its content, or errEnded when p ends first, or errNotReady after
// WaitLimit.
func (p *Proc) awaitFile(path string) ([]byte, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(WaitLimit)
	for {
		if b, err := os.ReadFile(path); err == nil { //nolint:gosec // G304: a file in the test's own folder
			return b, nil
		}
		select {
		case <-p.done:
			return nil, errEnded
		case <-deadline:
			return nil, errNotReady
		case <-tick.C:
		}
	}
}

// exitText tells how a process ended.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Tail returns the last n bytes of the process's log file ("" without one).
func (p *Proc) Tail(n int) string {
	if p.log == "" {
		return ""
	}
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// WaitFile polls for a file that p writes when it is ready (a server's
// address, say) and returns its content. It fails the test when p ends
// first or the file does not appear within WaitLimit.
func WaitFile(t testing.TB, path string, p *Proc) string {
	t.Helper()
	b, err := p.awaitFile(path)
	switch {
	case errors.Is(err, errEnded):
		t.Fatalf("%s ended before it was ready: %v\n%s", p.name, p.err, p.Tail(4096))
	case err != nil:
		t.Fatalf("%s %v", p.name, err)
	}
	return string(b)
}

// WriteFileAtomic writes b to path through a temporary file and a rename,
// so that a reader polling for path never sees half of it.
func WriteFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil { //nolint:gosec // G703: a file in the test's own folder, named by the test
		return err
	}
	return os.Rename(tmp, path) //nolint:gosec // G703: as above
}

// Need skips the test with the reason, or fails it when
// KILN_TEST_REQUIRE_ALL=1 (make test sets it: there everything must run).
func Need(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if RequireAll() {
		t.Fatalf("%s (KILN_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

// RequireAll reports whether KILN_TEST_REQUIRE_ALL=1.
func RequireAll() bool { return os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" }
