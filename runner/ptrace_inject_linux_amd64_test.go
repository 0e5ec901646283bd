//go:build linux && amd64

package runner

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kilnhq/kiln/internal/testenv"
)

// runSelfLimited starts the Go worker in mode "limits" stopped at its
// exec (as cred when not nil), has it set lim on itself with set, lets it
// go and returns the limits the worker then reports and set's error.
func runSelfLimited(t *testing.T, set func(int, *ptraceRlimits) error, lim *ptraceRlimits, cred *syscall.Credential) (map[string]uint64, error) {
	t.Helper()
	dir := testenv.SharedDir(t)
	// A copy the task's user may run.
	data, err := os.ReadFile(testenv.BuildGo(t, workerSource))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "worker")
	// Under ForkLock, as copyFile: a child forked by a parallel test while
	// the file is open for writing would make its exec fail with ETXTBSY.
	syscall.ForkLock.RLock()
	err = os.WriteFile(bin, data, 0o755) //nolint:gosec // G306: run by the task's user
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(dir, "payload")
	if err := os.WriteFile(payload, []byte(`{"mode":"limits"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, "-payload", payload)
	cmd.Stdout = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Credential: cred}
	// The tracer is the thread that started the tracee: stay on it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := waitTrap(pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal(err)
	}
	setErr := set(pid, lim)
	var mask uint64
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(pid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask)), 0, 0); e != 0 { //nolint:gosec // G103: ptrace takes a pointer to the mask
		t.Fatal(e)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the worker after %v: %v (output %q)", setErr, err, out.String())
	}
	var got map[string]uint64
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	return got, setErr
}

// Both ways for a task to set its own limits (the loop at the entry point,
// and one step per limit, the loop's fallback) set every limit, soft and
// hard, and leave the program able to run from its entry point.
func TestLimitAsTracee(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{Sandbox: SandboxOff, Limits: ProcLimits{Memory: 300 << 20, AddressSpace: 4 << 30, CPUTime: 90e9, OpenFiles: 100, Processes: 500, FileSize: 1 << 20}})
	lim := r.ptraceLimits(true)
	want := map[string]uint64{"data": 300 << 20, "as": 4 << 30, "cpu": 90, "nofile": 100, "nproc": 500, "fsize": 1 << 20, "core": 0}
	for name, set := range map[string]func(int, *ptraceRlimits) error{"loop": limitsLoop, "stepping": limitByStepping} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := runSelfLimited(t, set, lim, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range want {
				if got[k] != v || got[k+"_cur"] != v {
					t.Errorf("%s: hard %d soft %d, want %d", k, got[k], got[k+"_cur"], v)
				}
			}
		})
	}
}

// A limit the task may not set (above its hard limit, as another user than
// root) is an error of either way, not a task running without it.
func TestLimitAsTraceeFails(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the task as another user")
	}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Max == unix.RLIM_INFINITY || cur.Max+1 > 1<<20 {
		t.Skipf("RLIMIT_NOFILE hard limit %d leaves no room above it", cur.Max)
	}
	lim := &ptraceRlimits{}
	lim.rl[0] = unix.Rlimit{Cur: 60, Max: 60} // RLIMIT_CPU, allowed
	lim.set[0] = true
	lim.rl[1] = unix.Rlimit{Cur: cur.Max + 1, Max: cur.Max + 1} // RLIMIT_NOFILE above the hard limit
	lim.set[1] = true
	for name, set := range map[string]func(int, *ptraceRlimits) error{"loop": limitsLoop, "stepping": limitByStepping} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := runSelfLimited(t, set, lim, &syscall.Credential{Uid: NobodyID, Gid: NobodyID})
			if !errors.Is(err, syscall.EPERM) {
				t.Fatalf("error %v, want EPERM", err)
			}
		})
	}
}
