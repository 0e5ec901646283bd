//go:build linux

package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
)

// groupKillRunner returns a Runner of cfg (Sandbox set) that kills its
// tasks' cgroups, or skips when this machine cannot (no writable cgroup
// v2 hierarchy, a kernel before 5.14).
func groupKillRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	r := sandboxRunner(t, cfg)
	st := r.Sandbox()
	if cfg.Limiter != "" && cfg.Limiter != LimiterAuto && st.Limiter != cfg.Limiter {
		testenv.Missing(t, fmt.Sprintf("limiter %s: got %s (%s)", cfg.Limiter, st.Limiter, st.LimiterNote))
	}
	if !st.GroupKill {
		testenv.Missing(t, "no group kills here: "+st.GroupKillNote)
	}
	return r
}

// escapeScript starts a process that leaves the task's process group and
// session (setsid), with marker as its argument, waits until it has, and
// prints the task's cgroup; then runs tail.
func escapeScript(marker, tail string) string {
	return `setsid sh -c 'echo x > escaped; exec sleep ` + marker + `' </dev/null >/dev/null 2>&1 &
while [ ! -s escaped ]; do sleep 0.01; done
echo "cgroup $(grep "^0::" /proc/self/cgroup)"
` + tail
}

// procsWithMarker lists the live processes whose command line holds
// marker, and kills them when the test ends (a failing test leaves none).
func procsWithMarker(t *testing.T, marker string) []int {
	t.Helper()
	pids := procsWithArg(t, marker)
	t.Cleanup(func() {
		for _, p := range procsWithArg(t, marker) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	return pids
}

// taskCgroupDir returns the cgroup folder that escapeScript printed.
func taskCgroupDir(t *testing.T, log string) string {
	t.Helper()
	for line := range strings.Lines(log) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cgroup "); ok {
			for f := range strings.FieldsSeq(rest) {
				if p, ok := strings.CutPrefix(f, "0::"); ok {
					mount, err := cgroup2Mount()
					if err != nil {
						t.Fatal(err)
					}
					return filepath.Join(mount, p)
				}
			}
		}
	}
	t.Fatalf("no cgroup in the log %q", log)
	return ""
}

func newMarker() string {
	return fmt.Sprintf("2000.%d", time.Now().UnixNano()%1e9+1)
}

// Without bwrap, a process of the task that starts its own session
// (setsid) is killed when the task ends, and the task's cgroup is removed:
// under each limiter, as the runner's user and as another.
func TestGroupKillSetsid(t *testing.T) {
	t.Parallel()
	for _, sb := range []Sandbox{SandboxOff, SandboxUser} {
		for _, lim := range []Limiter{LimiterPtrace, LimiterTrampoline} {
			t.Run(string(sb)+"/"+string(lim), func(t *testing.T) {
				t.Parallel()
				r := groupKillRunner(t, Config{Sandbox: sb, Limiter: lim})
				marker := newMarker()
				var log strings.Builder
				res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, escapeScript(marker, "exit 0")),
					Runtime: "sh", File: "run.sh", Log: &log})
				if res.Status != StatusComplete {
					t.Fatalf("result %+v; log %q", res, log.String())
				}
				// Run has waited until the cgroup was empty: no wait here.
				if pids := procsWithMarker(t, marker); len(pids) > 0 {
					t.Fatalf("the process that called setsid outlived its task: %v", pids)
				}
				dir := taskCgroupDir(t, log.String())
				if !strings.HasPrefix(dir, r.Sandbox().Cgroup+"/") {
					t.Fatalf("the task ran in cgroup %s, not under %s", dir, r.Sandbox().Cgroup)
				}
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("the task's cgroup %s is still there: %v", dir, err)
				}
			})
		}
	}
}

// A timeout kills the process that left the task's process group too.
func TestGroupKillTimeout(t *testing.T) {
	t.Parallel()
	for _, sb := range []Sandbox{SandboxOff, SandboxUser} {
		t.Run(string(sb), func(t *testing.T) {
			t.Parallel()
			r := groupKillRunner(t, Config{Sandbox: sb})
			marker := newMarker()
			var log strings.Builder
			res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, escapeScript(marker, "sleep 1000 & wait")),
				Runtime: "sh", File: "run.sh", Log: &log, Timeout: 300 * time.Millisecond})
			if res.Status != StatusTimeout {
				t.Fatalf("result %+v; log %q", res, log.String())
			}
			if pids := procsWithMarker(t, marker); len(pids) > 0 {
				t.Fatalf("the process that called setsid outlived its task: %v", pids)
			}
			if dir := taskCgroupDir(t, log.String()); dirExists(dir) {
				t.Fatalf("the task's cgroup %s is still there", dir)
			}
		})
	}
}

// A cancel (a runner shutting down cancels its tasks) kills the process
// that left the task's process group too.
func TestGroupKillCancel(t *testing.T) {
	t.Parallel()
	r := groupKillRunner(t, Config{Sandbox: SandboxUser})
	marker := newMarker()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	log := &lineWatcher{want: "cgroup 0::", fn: func(string) { cancel(errors.New("shutdown")) }}
	res := run(ctx, t, r, Spec{PackageDir: shPkg(t, escapeScript(marker, "sleep 1000 & wait")),
		Runtime: "sh", File: "run.sh", Log: log})
	if res.Status != StatusCancelled {
		t.Fatalf("result %+v; log %q", res, log.String())
	}
	if pids := procsWithMarker(t, marker); len(pids) > 0 {
		t.Fatalf("the process that called setsid outlived its task: %v", pids)
	}
	if dir := taskCgroupDir(t, log.String()); dirExists(dir) {
		t.Fatalf("the task's cgroup %s is still there", dir)
	}
}

// A task of another user cannot move itself out of its cgroup: not to the
// root of the hierarchy, nor to the runner's cgroup.
func TestGroupKillUserStaysInCgroup(t *testing.T) {
	t.Parallel()
	r := groupKillRunner(t, Config{Sandbox: SandboxUser})
	mount, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	tree := r.Sandbox().Cgroup
	var log strings.Builder
	res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, `for d in "$ROOT_CG" "$PARENT_CG" "$TREE_CG"; do
  sh -c 'echo $$ > "$1/cgroup.procs" && echo "moved to $1"; echo "cgroup $(grep "^0::" /proc/self/cgroup)"' x "$d" 2>/dev/null
done
`), Runtime: "sh", File: "run.sh", Log: &log,
		Env: map[string]string{"ROOT_CG": mount, "PARENT_CG": filepath.Dir(tree), "TREE_CG": tree}})
	if res.Status != StatusComplete || strings.Contains(log.String(), "moved") || strings.Count(log.String(), "cgroup 0::") != 3 {
		t.Fatalf("result %+v; log %q", res, log.String())
	}
	for line := range strings.Lines(log.String()) {
		if !strings.HasPrefix(line, "cgroup 0::"+strings.TrimPrefix(tree, mount)+"/t") {
			t.Errorf("a process of the task left its cgroup: %q", line)
		}
	}
}

func dirExists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil
}

// Where no cgroup can be made, tasks run as before, and the Runner says
// why there are no group kills.
func TestGroupKillFallback(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		cgroup, note string
	}{
		"off":           {CgroupOff, "off (Config.Cgroup)"},
		"not a cgroup":  {t.TempDir(), "is not in a cgroup v2 hierarchy"},
		"missing":       {"/nonexistent/kiln-cgroup", "no such file"},
		"no new groups": {testCgroup(t, "kiln-test-none", "0"), "cannot make a cgroup in"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if c.cgroup == "" {
				testenv.Missing(t, "no cgroup v2 hierarchy that this test may write")
			}
			r := sandboxRunner(t, Config{Sandbox: SandboxOff, Cgroup: c.cgroup})
			st := r.Sandbox()
			if st.GroupKill || !strings.Contains(st.GroupKillNote, c.note) || !strings.Contains(st.String(), "group kills off") {
				t.Fatalf("sandbox state %+v, want no group kills because %q", st, c.note)
			}
			res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "echo hi"), Runtime: "sh", File: "run.sh"})
			if res.Status != StatusComplete {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// testCgroup returns a new cgroup v2 folder for the test, name-<pid> at the
// root of the hierarchy, that allows maxDescendants cgroups under it,
// removed when the test ends; "" when this machine has none the test may
// make.
func testCgroup(t *testing.T, name, maxDescendants string) string {
	t.Helper()
	mount, err := cgroup2Mount()
	if err != nil {
		return ""
	}
	dir := filepath.Join(mount, name+"-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return ""
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.max.descendants"), []byte(maxDescendants), 0o644); err != nil {
		return ""
	}
	return dir
}

// Under bwrap the PID namespace does the group kill: no cgroup is made.
func TestGroupKillNotUnderBwrap(t *testing.T) {
	t.Parallel()
	r := sandboxRunner(t, Config{Sandbox: SandboxBwrap})
	if st := r.Sandbox(); st.GroupKill || !strings.Contains(st.GroupKillNote, "bwrap") {
		t.Fatalf("sandbox state %+v", st)
	}
}

// A runner removes the empty cgroups that a runner which is gone left, and
// never one in which a process still runs.
func TestGroupKillRemovesStaleTrees(t *testing.T) {
	t.Parallel()
	parent := testCgroup(t, "kiln-test-stale", "max")
	if parent == "" {
		testenv.Missing(t, "no cgroup v2 hierarchy that this test may write")
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(parent, fmt.Sprintf("kiln-runner-%d", gone.Process.Pid))
	busy := filepath.Join(parent, fmt.Sprintf("kiln-runner-%d", gone.Process.Pid+1_000_000_000))
	for _, d := range []string{dead, dead + "/t1", busy, busy + "/t1"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sleeper := exec.Command("sleep", "1000")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
		_ = os.Remove(busy + "/t1")
		_ = os.Remove(busy)
	})
	if err := os.WriteFile(busy+"/t1/cgroup.procs", []byte(strconv.Itoa(sleeper.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	removeStaleTrees(parent)
	if dirExists(dead) {
		t.Errorf("%s, empty, of a pid that is gone, is still there", dead)
	}
	if !dirExists(busy + "/t1") {
		t.Errorf("%s, with a process in it, was removed", busy)
	}
}
