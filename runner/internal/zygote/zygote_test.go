//go:build linux && cgo

package zygote

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
)

// started is one task through the helper: the sandbox's pid 1 (a child of
// the test process), and what its pipes said.
type started struct {
	pid       int
	handshake []byte
	initPID   int
	log       string
	status    syscall.WaitStatus
}

func spawn(t *testing.T, h *Helper, req *Request) started {
	t.Helper()
	return startSpawn(t, h, req)()
}

// startSpawn asks h for req's sandbox and returns, once the helper has
// answered, a function that reads its pipes and waits for its pid 1.
func startSpawn(t *testing.T, h *Helper, req *Request) func() started {
	t.Helper()
	return startSpawnThen(t, h, req, nil)
}

// startSpawnThen is startSpawn calling then, if not nil, with the pid of
// the sandbox's pid 1 as soon as the helper has answered.
func startSpawnThen(t *testing.T, h *Helper, req *Request, then func(pid int)) func() started {
	t.Helper()
	blob, err := req.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var pipes [3][2]*os.File
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pipes[i] = [2]*os.File{r, w}
		t.Cleanup(func() { _ = r.Close(); _ = w.Close() })
	}
	pid, err := h.Spawn(blob, pipes[0][1], pipes[1][1], pipes[2][1])
	if err != nil {
		t.Fatal(err)
	}
	if then != nil {
		then(pid)
	}
	for _, p := range pipes {
		_ = p[1].Close()
	}
	return func() started {
		t.Helper()
		var s started
		s.pid = pid
		s.handshake, _ = io.ReadAll(pipes[1][0])
		var info struct {
			ChildPID int `json:"child-pid"`
		}
		if err := json.NewDecoder(pipes[2][0]).Decode(&info); err == nil {
			s.initPID = info.ChildPID
		}
		logb, _ := io.ReadAll(pipes[0][0])
		s.log = string(logb)
		p, err := os.FindProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := p.Wait()
		if err != nil {
			t.Fatalf("wait for the sandbox's pid 1, %d: %v", pid, err)
		}
		s.status, _ = ps.Sys().(syscall.WaitStatus)
		return s
	}
}

func helper(t *testing.T) *Helper {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "the sandbox helper needs root")
	}
	h, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func taskDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "kiln-zygote-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(dir+"/in", []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	return dir
}

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

// A task runs in its own namespaces as the user asked, sees its directory
// at /tmp/task, writes there and nowhere else, and its exit status comes
// back through the sandbox's pid 1, a child of this process.
func TestSpawnRunsSandboxed(t *testing.T) {
	t.Parallel()
	h := helper(t)
	dir := taskDir(t)
	hidden := taskDir(t) // outside /tmp, which is private anyway
	script := `echo "uid=$(id -u) gid=$(id -g) pid=$$ cwd=$(pwd) nnp=$(grep NoNewPrivs /proc/self/status | cut -f2) sockets=$(ls -l /proc/$$/fd | grep -c socket)"
cat /tmp/task/in
echo out > /tmp/task/out
touch /etc/kiln-zygote-probe 2>/dev/null && echo WROTE-ETC
ls -A ` + hidden + `
exit 7`
	if err := os.WriteFile(hidden+"/secret", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := spawn(t, h, &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, 256, -1, -1, -1, -1},
		TaskDir: dir, Path: shell(t), Argv: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"},
		HideDirs: []string{hidden}, Private: []string{"/tmp", "/dev/shm"}})
	if string(s.handshake) != "T" {
		t.Fatalf("handshake %q, want T (log %q)", s.handshake, s.log)
	}
	if !s.status.Exited() || s.status.ExitStatus() != 7 {
		t.Errorf("status %v, want exit 7; log %q", s.status, s.log)
	}
	// No descriptor of the helper's (its socket above all) reaches a task.
	want := "uid=65534 gid=65534 pid=2 cwd=/tmp/task nnp=1 sockets=0\nfrom the host\n"
	if s.log != want {
		t.Errorf("log %q, want %q", s.log, want)
	}
	if s.initPID != s.pid {
		t.Errorf("info: init pid %d, want the spawned %d", s.initPID, s.pid)
	}
	if b, err := os.ReadFile(dir + "/out"); err != nil || string(b) != "out\n" {
		t.Errorf("the task's file: %q, %v", b, err)
	}
	if _, err := os.Stat("/etc/kiln-zygote-probe"); err == nil {
		_ = os.Remove("/etc/kiln-zygote-probe")
		t.Error("the task wrote /etc")
	}
}

// A program that cannot be executed is reported on the status pipe after
// the 'T', as the trampoline reports it: stage 9 (exec), the errno.
func TestSpawnExecFails(t *testing.T) {
	t.Parallel()
	h := helper(t)
	s := spawn(t, h, &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
		TaskDir: taskDir(t), Path: "/nonexistent/program", Argv: []string{"program"}, Private: []string{"/tmp"}})
	if len(s.handshake) != 6 || s.handshake[0] != 'T' || s.handshake[1] != 9 || syscall.Errno(s.handshake[2]) != syscall.ENOENT {
		t.Fatalf("handshake %q, want T, 9, ENOENT", s.handshake)
	}
	if s.status.ExitStatus() == 0 {
		t.Errorf("status %v", s.status)
	}
}

// Requests the helper must refuse, and a helper that keeps serving after
// them.
func TestSpawnRefusesBadRequests(t *testing.T) {
	t.Parallel()
	h := helper(t)
	for _, req := range []*Request{
		{TaskDir: "relative", Path: "/bin/true", Argv: []string{"true"}},
		{TaskDir: "/tmp", Path: "/bin/true"},
		{TaskDir: "/tmp", Path: "/bin/true", Argv: []string{"a\x00b"}},
	} {
		if _, err := req.Encode(); !errors.Is(err, errBadRequest) {
			t.Errorf("%+v: %v, want errBadRequest", req, err)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(); _ = w.Close() }()
	for _, blob := range [][]byte{[]byte("kiln-sandbox-1\x00"), []byte("other\x00"), []byte("kiln-sandbox-1\x000\x000\x00-1\x00-1\x000\x00")} {
		if _, err := h.Spawn(blob, w, w, w); err == nil || !strings.Contains(err.Error(), "protocol error") {
			t.Errorf("%q: %v, want a protocol error", blob, err)
		}
	}
	s := spawn(t, h, &Request{UID: -1, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
		TaskDir: taskDir(t), Path: shell(t), Argv: []string{"sh", "-c", "echo still"}, Private: []string{"/tmp"}})
	if s.log != "still\n" || s.status.ExitStatus() != 0 {
		t.Errorf("after the bad requests: log %q, status %v", s.log, s.status)
	}
}

// Sandboxes alive at once each keep their own slot (their pid 1 runs on
// its stack, in the helper's memory), and a slot whose pid 1 has exited is
// used again: the helper's mappings do not grow with the tasks it starts.
// Were a busy slot handed out again, a waiting pid 1's stack would be
// overwritten under it, and its task's status or log would come back wrong.
func TestSpawnSlots(t *testing.T) {
	t.Parallel()
	h := helper(t)
	const live = 6
	var waits []func() started
	for i := range live {
		waits = append(waits, startSpawn(t, h, &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
			TaskDir: taskDir(t), Path: shell(t), Argv: []string{"sh", "-c", "sleep 0.3; echo $0; exit $(($0 + 10))", strconv.Itoa(i)},
			Private: []string{"/tmp"}}))
	}
	for i, wait := range waits {
		s := wait()
		if s.log != strconv.Itoa(i)+"\n" || s.status.ExitStatus() != i+10 {
			t.Errorf("task %d: log %q, status %v", i, s.log, s.status)
		}
	}
	before := mappings(t, h)
	dir := taskDir(t)
	for i := range 3 * live {
		s := spawn(t, h, &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
			TaskDir: dir, Path: shell(t), Argv: []string{"sh", "-c", "echo again"}, Private: []string{"/tmp"}})
		if s.log != "again\n" || s.status.ExitStatus() != 0 {
			t.Fatalf("task %d after: log %q, status %v", i, s.log, s.status)
		}
	}
	if after := mappings(t, h); after != before {
		t.Errorf("the helper has %d mappings after %d more tasks, %d before", after, 3*live, before)
	}
}

// mappings counts the helper's memory mappings (its slots are four each).
func mappings(t *testing.T, h *Helper) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(h.Pid()) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// A sandbox's pid 1 killed at once, while it builds the mounts or while
// its program is between its vfork and its exec, gives its slot back only
// once its whole namespace is gone; the helper goes on serving, every
// later task runs as asked, and the slots are reused.
func TestSpawnKilledEarly(t *testing.T) {
	t.Parallel()
	h := helper(t)
	dir := taskDir(t)
	req := &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
		TaskDir: dir, Path: shell(t), Argv: []string{"sh", "-c", "echo ran"}, Private: []string{"/tmp"}}
	for i := range 100 {
		wait := startSpawnThen(t, h, req, func(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) })
		if s := wait(); s.status.Exited() && s.status.ExitStatus() == 0 && s.log != "ran\n" {
			t.Fatalf("kill %d: exit 0 with log %q", i, s.log)
		}
	}
	for i := range 20 {
		s := spawn(t, h, &Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1},
			TaskDir: dir, Path: shell(t), Argv: []string{"sh", "-c", "echo $0 $(id -u)", strconv.Itoa(i)}, Private: []string{"/tmp"}})
		if want := strconv.Itoa(i) + " 65534\n"; s.log != want || s.status.ExitStatus() != 0 {
			t.Fatalf("task %d after the kills: log %q (want %q), status %v", i, s.log, want, s.status)
		}
	}
	// Each slot is four mappings; a handful of slots at most were ever busy.
	if n := mappings(t, h); n > 100 {
		t.Errorf("the helper has %d mappings after 120 tasks one after another", n)
	}
}

// BenchmarkSpawn: the helper's answer to one request (its clone of the
// sandbox's pid 1), and the whole start to the program's end, one task at
// a time (/bin/true).
//
//	go test -run '^$' -bench BenchmarkSpawn -benchtime 2000x ./runner/internal/zygote/
func BenchmarkSpawn(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox helper needs root")
	}
	h, err := Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	dir, err := os.MkdirTemp("/var/tmp", "kiln-zygote-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		b.Fatal(err)
	}
	blob, err := (&Request{UID: 65534, GID: 65534, Limits: [6]int64{-1, -1, -1, -1, -1, -1}, TaskDir: dir,
		Path: "/bin/true", Argv: []string{"true"}, Private: []string{"/tmp", "/dev/shm", "/var/tmp"}}).Encode()
	if err != nil {
		b.Fatal(err)
	}
	var spawn time.Duration
	cpu0 := treeCPU(b, h)
	for b.Loop() {
		r, w, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		pid, err := h.Spawn(blob, w, w, w)
		spawn += time.Since(t0)
		_ = w.Close()
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, r)
		_ = r.Close()
		p, _ := os.FindProcess(pid)
		if ps, err := p.Wait(); err != nil || !ps.Success() {
			b.Fatalf("%v %v", ps, err)
		}
	}
	b.ReportMetric(float64(spawn.Microseconds())/float64(b.N), "spawn-µs/op")
	b.ReportMetric(float64((treeCPU(b, h)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// treeCPU is the CPU time of this process, its reaped children (the
// sandboxes' pid 1s, and through them the tasks) and the helper.
func treeCPU(b *testing.B, h *Helper) time.Duration {
	b.Helper()
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	total := time.Duration(self.Utime.Nano() + self.Stime.Nano() + kids.Utime.Nano() + kids.Stime.Nano())
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(h.cmd.Process.Pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return total + time.Duration(ut+st)*10*time.Millisecond // clock ticks of 10 ms
}
