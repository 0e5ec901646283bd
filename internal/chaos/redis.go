package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a private redis-server of one test, in its own folder and on its
// own loopback port, that keeps every write in its append-only file and
// fsyncs it before it answers (appendonly yes, appendfsync always): the
// setting under which an acknowledged write survives a SIGKILL of Redis
// (docs/redis.md). Kill and Restart crash it and bring it back on the same
// folder and port.
type Redis struct {
	bin, dir string
	port     int
	proc     *Proc
}

// StartRedis starts a private redis-server in dir, or calls Need when the
// machine has none. It is killed when the test ends.
func StartRedis(t testing.TB, dir string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Need(t, "redis-server is not installed (scripts/services.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &Redis{bin: bin, dir: dir, port: port}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.proc != nil {
			_ = r.proc.Stop(syscall.SIGKILL)
		}
	})
	return r
}

// URL returns the redis:// URL of the server.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// Pid returns the pid of the running redis-server (0 when it is down).
func (r *Redis) Pid() int {
	if r.proc == nil {
		return 0
	}
	return r.proc.Pid()
}

// Kill SIGKILLs the server and waits for it to end.
func (r *Redis) Kill() error {
	if r.proc == nil {
		return errors.New("chaos: redis-server is not running")
	}
	p := r.proc
	r.proc = nil
	return p.Kill()
}

// Restart starts the server (again) on its folder and port and waits, at
// most WaitLimit, until it has loaded its data and answers PING.
func (r *Redis) Restart() error {
	if r.proc != nil {
		return errors.New("chaos: redis-server is running")
	}
	args := []string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--protected-mode", "no", "--maxmemory-policy", "noeviction",
		"--logfile", filepath.Join(r.dir, "redis.log"),
	}
	cmd := exec.Command(r.bin, args...) //nolint:gosec // G204: redis-server with arguments of the test's own making
	p := &Proc{name: "redis-server", cmd: cmd, done: make(chan struct{}), log: filepath.Join(r.dir, "redis.log")}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	r.proc = p
	deadline := time.Now().Add(WaitLimit)
	for {
		if ok, _ := r.ping(); ok {
			return nil
		}
		if done, err := p.Exited(); done {
			r.proc = nil
			return fmt.Errorf("redis-server ended at start: %s\n%s", exitText(err), p.Tail(2048))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server did not answer PING within %s\n%s", WaitLimit, p.Tail(2048))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends PING and reports whether the answer is PONG (not LOADING).
func (r *Redis) ping() (bool, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
	if err != nil {
		return false, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(line, "+PONG"), nil
}
