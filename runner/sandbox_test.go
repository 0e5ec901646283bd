//go:build linux

package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/runner/internal/zygote"
)

// The sandbox's claims, each tried from inside a task by this script. A
// "deny" check runs an attempt the sandbox must stop and prints "<name>:
// held" when it failed, "<name>: BREACH" when it worked; an "allow" check
// prints "<name>: works" or "<name>: BROKEN". The variables come from the
// test (Spec.Env).
const probeScript = `#!/bin/sh
deny() { n=$1; shift; if "$@" >/dev/null 2>&1; then echo "$n: BREACH"; else echo "$n: held"; fi; }
allow() { n=$1; shift; if "$@" >/dev/null 2>&1; then echo "$n: works"; else echo "$n: BROKEN"; fi; }

# The server: its process, environment, signals.
deny see-server test -e /proc/$SERVER_PID
deny server-environ cat /proc/$SERVER_PID/environ
# (a byte at the start of the process' first mapping: reading needs its maps too)
mem() { a=$(head -c 16 /proc/$1/maps | cut -d- -f1) && test -n "$a" && dd if=/proc/$1/mem bs=1 count=1 skip=$((0x$a)) iflag=skip_bytes 2>/dev/null | od -An | grep -q .; }
deny server-memory mem $SERVER_PID
# The sandbox's own pid 1 (under ns it shares the helper's memory, which
# holds other tasks' requests).
deny init-memory mem 1
deny secret-anywhere sh -c 'cat /proc/[0-9]*/environ | tr "\0" "\n" | grep -q "^KILN_RUNNER_TEST_SECRET="'
deny signal-server kill -0 $SERVER_PID
deny term-server kill -TERM $SERVER_PID
deny term-root-process kill -TERM $DECOY_PID
# The server's data folder and hidden files.
deny read-cli-json cat $DATA_DIR/cli.json
deny read-store cat $DATA_DIR/store/000002.log
deny list-data sh -c 'ls -A "$DATA_DIR" | grep -q .'
deny read-hidden-file grep -q kiln_secret $HIDDEN_FILE
# Another project's running task and its package.
deny read-other-task cat $OTHER_TASK/secret
deny list-other-task ls $OTHER_TASK
deny read-other-cwd cat /proc/$OTHER_PID/cwd/secret
deny signal-other-task kill -0 $OTHER_PID
deny read-other-package cat $OTHER_PKG/secret
# Privileges.
deny uid-0 test "$(id -u)" = 0
deny gid-0 sh -c 'id -G | tr " " "\n" | grep -qx 0'
deny capabilities sh -c 'grep "^CapEff:" /proc/self/status | cut -f2 | grep -q "[1-9a-f]"'
deny new-privs sh -c 'grep "^NoNewPrivs:" /proc/self/status | cut -f2 | grep -qx 0'
# Writing outside the task directory and /tmp.
deny write-root touch /kiln-probe
deny write-etc touch /etc/kiln-probe
deny write-public touch $PUBLIC_DIR/from-task
# What a task needs.
allow write-task-dir sh -c 'echo x > "$TASK_DIR/out" && test -s out'
tmp=$(mktemp /tmp/kiln-probe-XXXXXX) && echo "tmpfile: $tmp"
allow write-tmp sh -c "echo x > $tmp && test -s $tmp"
allow read-payload grep -q probe-payload "$PAYLOAD_FILE"
allow read-config grep -q probe-config "$CONFIG_FILE"
allow run-python python3 -c 'print(1)'
echo "done"
`

// probeNames lists the checks of probeScript in order.
var probeNames = func() []string {
	var out []string
	for line := range strings.Lines(probeScript) {
		f := strings.Fields(line)
		if len(f) > 1 && (f[0] == "deny" || f[0] == "allow") {
			out = append(out, f[1])
		}
	}
	return out
}()

// isolating are the modes that give a task namespaces of its own.
var isolating = []Sandbox{SandboxBwrap, SandboxNamespaces}

// sandboxRunner returns a Runner of cfg whose Sandbox must be in force, or
// skips (see testenv.Missing) when this machine cannot give it.
func sandboxRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	if cfg.Sandbox == SandboxUser && os.Geteuid() != 0 {
		testenv.Missing(t, "sandbox user needs root")
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 200 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = testenv.WaitLimit
	}
	r, err := New(&cfg)
	if errors.Is(err, ErrSandbox) {
		testenv.Missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Sandbox().Mode; got != cfg.Sandbox {
		t.Fatalf("sandbox %s, want %s", got, cfg.Sandbox)
	}
	return r
}

// probeRoot is a folder outside /tmp (which the bwrap sandbox makes
// private anyway, and which would prove nothing) that other users can
// traverse.
func probeRoot(t testing.TB) string {
	t.Helper()
	parent := "."
	if os.Geteuid() == 0 {
		parent = "/var/lib"
	}
	dir, err := os.MkdirTemp(parent, "kiln-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// probeHost is the host side of a probe: a server's data folder, another
// project's task running, a world-writable folder, a root process.
type probeHost struct {
	root, data, work, packages, public, hidden string
	decoy                                      *exec.Cmd
	other                                      Result // filled when the other task ends
	otherDir                                   string // its task directory
	otherPID                                   int
	otherPkg                                   string
}

// newProbeHost lays out the host. open makes the data folder and the
// hidden file readable by everyone, so that only Config.Hide keeps them
// from a task (bwrap); otherwise they have kiln's modes (0700 folder, 0600
// cli.json).
func newProbeHost(t *testing.T, open bool) *probeHost {
	t.Helper()
	h := &probeHost{root: probeRoot(t)}
	h.data = filepath.Join(h.root, "data")
	h.work = filepath.Join(h.root, "work")
	h.packages = filepath.Join(h.root, "packages")
	h.public = filepath.Join(h.root, "public")
	h.hidden = filepath.Join(h.root, "hidden.json")
	dirMode, fileMode := os.FileMode(0o700), os.FileMode(0o600)
	if open {
		dirMode, fileMode = 0o755, 0o644
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{h.data, dirMode}, {filepath.Join(h.data, "store"), 0o755}, {h.work, 0o711}, {h.packages, 0o700}, {h.public, 0o777}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(h.data, "cli.json"), filepath.Join(h.data, "store", "000002.log"), h.hidden} {
		if err := os.WriteFile(f, []byte(`{"token":"kiln_secret"}`), fileMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, fileMode); err != nil {
			t.Fatal(err)
		}
	}
	// A process of the server's user that is not the server: what kill
	// -TERM would do to the server, without risking the test process.
	h.decoy = exec.Command("sleep", "1000")
	if err := h.decoy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.decoy.Process.Kill()
		_ = h.decoy.Wait()
	})
	return h
}

// unpackInto unpacks a package built from entries into dir.
func unpackInto(t *testing.T, dir string, entries ...entry) string {
	t.Helper()
	z := buildZip(t, entries...)
	if _, err := Unpack(strings.NewReader(string(z)), int64(len(z)), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startOther starts the other project's task (a secret in its task
// directory and its package, then waits) and returns when it runs; stop
// ends it.
func (h *probeHost) startOther(t *testing.T, r *Runner, cred *syscall.Credential) (stop func()) {
	t.Helper()
	marker := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1e6)
	h.otherPkg = unpackInto(t, filepath.Join(h.packages, "other"),
		entry{name: "run.sh", data: []byte("echo task-secret > secret; echo ready; exec sleep " + marker)},
		entry{name: "secret", data: []byte("package-secret")})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	log := &lineWatcher{want: "ready", fn: func(string) { close(ready) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.other, _ = r.Run(ctx, Spec{TaskID: "other", PackageDir: h.otherPkg, Runtime: "sh", File: "run.sh", Log: log, Credential: cred})
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("the other task ended: %+v; log %q", h.other, log.String())
	case <-time.After(testenv.WaitLimit):
		t.Fatal("the other task did not start")
	}
	dirs, _ := filepath.Glob(filepath.Join(h.work, "kiln-task-other-*"))
	if len(dirs) != 1 {
		t.Fatalf("task directories of the other task: %q", dirs)
	}
	h.otherDir = dirs[0]
	// "ready" comes just before the exec of sleep.
	testenv.Eventually(t, "a process of the other task", func() bool {
		h.otherPID = pidWithArg(t, marker)
		return h.otherPID != 0
	})
	return func() {
		cancel()
		<-done
	}
}

// pidWithArg returns the host pid of the live process whose command line
// holds arg (0 if none).
func pidWithArg(t testing.TB, arg string) int {
	t.Helper()
	for _, p := range procsWithArg(t, arg) {
		return p
	}
	return 0
}

// procsWithArg lists the live (not zombie) processes whose command line
// holds arg.
func procsWithArg(t testing.TB, arg string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !slices.Contains(strings.Split(string(cmdline), "\x00"), arg) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			s := string(stat)
			if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// probe runs probeScript as project "probe" (cred) and returns each
// check's verdict.
func (h *probeHost) probe(t *testing.T, r *Runner, cred *syscall.Credential) map[string]string {
	t.Helper()
	pkg := unpackInto(t, filepath.Join(h.packages, fmt.Sprintf("probe-%d", time.Now().UnixNano())), entry{name: "probe.sh", data: []byte(probeScript)})
	var log syncBuffer
	res := run(context.Background(), t, r, Spec{TaskID: "probe", PackageDir: pkg, Runtime: "sh", File: "probe.sh",
		Payload: []byte("probe-payload"), Config: []byte("probe-config"), Log: &log, Credential: cred,
		Env: map[string]string{
			"SERVER_PID": strconv.Itoa(os.Getpid()), "DECOY_PID": strconv.Itoa(h.decoy.Process.Pid),
			"DATA_DIR": h.data, "HIDDEN_FILE": h.hidden, "PUBLIC_DIR": h.public,
			"OTHER_TASK": h.otherDir, "OTHER_PID": strconv.Itoa(h.otherPID), "OTHER_PKG": h.otherPkg,
		}})
	if res.Status != StatusComplete || !strings.HasSuffix(log.String(), "done\n") {
		t.Fatalf("the probe did not complete: %+v; log:\n%s", res, log.String())
	}
	got := map[string]string{}
	for line := range strings.Lines(log.String()) {
		if name, verdict, ok := strings.Cut(strings.TrimSpace(line), ": "); ok {
			got[name] = verdict
		}
	}
	for _, name := range probeNames {
		if got[name] == "" {
			t.Errorf("check %s did not report; log:\n%s", name, log.String())
		}
	}
	// Under bwrap the task's /tmp is its own.
	if tmp := got["tmpfile"]; tmp != "" {
		if _, err := os.Stat(tmp); err == nil {
			_ = os.Remove(tmp)
			if m := r.Sandbox().Mode; m == SandboxBwrap || m == SandboxNamespaces {
				t.Errorf("the task's %s appeared in the host's /tmp", tmp)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(h.public, "from-task")); err == nil {
		_ = os.Remove(filepath.Join(h.public, "from-task"))
		got["write-public"] = "BREACH (file found on the host)"
	}
	return got
}

// catchTERM catches SIGTERM to the test process (instead of dying of it)
// while the probe tries to signal the "server", until the test ends; the
// returned func reports whether one came.
func catchTERM(t *testing.T) func() bool {
	t.Helper()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	t.Cleanup(func() { signal.Stop(ch) })
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

func wantVerdicts(t *testing.T, got map[string]string, skip ...string) {
	t.Helper()
	for _, name := range probeNames {
		if slices.Contains(skip, name) {
			continue
		}
		if v := got[name]; v != "held" && v != "works" {
			t.Errorf("%s: %s", name, v)
		}
	}
}

// Every claim of the bwrap sandbox, from inside a task: the server's
// process, environment and memory are out of sight, its data folder and
// hidden files absent, another project's running task and package out of
// reach, no root, no capabilities, nothing writable but the task
// directory and the private /tmp; a normal task still works.
//
// The other task runs as another user (another project), then as the same
// user (the same project): the mount view (WorkDir hidden but for the
// task's own directory) and the PID namespace keep even those apart.
//
// Both limiters: bwrap through the trampoline, and bwrap stopped at its own
// exec (LimiterPtrace, as the task's user).
func TestSandboxBwrapProbe(t *testing.T) { //nolint:paralleltest // the probes watch the process for SIGTERM (catchTERM), which the breach probe sends: alone, so that one's signal is not counted as another's breach
	for _, tc := range []struct {
		mode Sandbox
		same bool
		lim  Limiter
	}{
		{SandboxBwrap, false, LimiterTrampoline}, {SandboxBwrap, true, LimiterTrampoline},
		{SandboxBwrap, false, LimiterPtrace}, {SandboxBwrap, true, LimiterPtrace},
		{SandboxNamespaces, false, ""}, {SandboxNamespaces, true, ""},
	} {
		same := tc.same
		t.Run(fmt.Sprintf("%s/%s/same-user=%v", tc.mode, tc.lim, same), func(t *testing.T) {
			h := newProbeHost(t, true)
			r := sandboxRunner(t, Config{Sandbox: tc.mode, Limiter: tc.lim, WorkDir: h.work, Hide: []string{h.data, h.packages, h.hidden}})
			if r.Sandbox().Limiter != tc.lim {
				t.Fatalf("limiter %s, want %s", r.Sandbox().Limiter, tc.lim)
			}
			termed := catchTERM(t)
			other := &syscall.Credential{Uid: 1900000101, Gid: 1900000101}
			probe := &syscall.Credential{Uid: 1900000102, Gid: 1900000102}
			if same {
				other = probe
			}
			if !r.Sandbox().SwitchUser {
				other, probe = nil, nil // a user namespace of the runner's user
			}
			stop := h.startOther(t, r, other)
			defer stop()
			got := h.probe(t, r, probe)
			var skip []string
			if tc.mode == SandboxBwrap && tc.lim == LimiterPtrace {
				// pid 1 is bwrap's own init, the task's user in the task's
				// user namespace: it holds bwrap's arguments and nothing of
				// the server's (secret-anywhere finds no secret in any
				// process' environment).
				skip = append(skip, "init-memory")
			}
			wantVerdicts(t, got, skip...)
			if termed() {
				t.Error("the task's SIGTERM reached the server")
			}
		})
	}
}

// The same probe without the sandbox finds the breaches: the checks work.
func TestSandboxProbeDetectsBreaches(t *testing.T) { //nolint:paralleltest // it sends the process SIGTERM from an unsandboxed task, which the other probes would count as their breach
	h := newProbeHost(t, true)
	r := newRunner(t, Config{Sandbox: SandboxOff, WorkDir: h.work})
	termed := catchTERM(t)
	stop := h.startOther(t, r, nil)
	defer stop()
	got := h.probe(t, r, nil)
	for _, name := range []string{"see-server", "server-environ", "server-memory", "secret-anywhere", "signal-server", "term-root-process",
		"read-cli-json", "read-store", "list-data", "read-hidden-file", "read-other-task", "list-other-task",
		"read-other-cwd", "signal-other-task", "read-other-package", "write-public"} {
		if !strings.HasPrefix(got[name], "BREACH") {
			t.Errorf("%s: %s, want BREACH without a sandbox", name, got[name])
		}
	}
	if os.Geteuid() == 0 {
		for _, name := range []string{"uid-0", "gid-0", "capabilities", "write-root", "write-etc"} {
			if !strings.HasPrefix(got[name], "BREACH") {
				t.Errorf("%s: %s, want BREACH for a root task", name, got[name])
			}
		}
	}
	if !h.decoyKilled(t) {
		t.Error("the probe's kill -TERM did not reach the decoy")
	}
	if !termed() {
		t.Error("the probe's kill -TERM did not reach the server")
	}
}

// decoyKilled reports whether the decoy died of a signal.
func (h *probeHost) decoyKilled(t *testing.T) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.decoy.Wait()
	}()
	select {
	case <-done:
		return true
	case <-time.After(200 * time.Millisecond):
		_ = h.decoy.Process.Kill()
		<-done
		return false
	}
}

// Without namespaces (sandbox user, root): the task runs as its own user;
// file modes and the different user stop the same attempts, except what
// is world-readable or world-writable on the host (see the package doc).
func TestSandboxUserProbe(t *testing.T) { //nolint:paralleltest // the probes watch the process for SIGTERM (catchTERM), which the breach probe sends: alone, so that one's signal is not counted as another's breach
	h := newProbeHost(t, false)
	r := sandboxRunner(t, Config{Sandbox: SandboxUser, WorkDir: h.work})
	termed := catchTERM(t)
	stop := h.startOther(t, r, &syscall.Credential{Uid: 1900000201, Gid: 1900000201})
	defer stop()
	got := h.probe(t, r, &syscall.Credential{Uid: 1900000202, Gid: 1900000202})
	// Seen but not readable: the server's process (a different user's);
	// writable: world-writable folders (no private mount view).
	wantVerdicts(t, got, "see-server", "write-public")
	if got["see-server"] != "BREACH" || !strings.HasPrefix(got["write-public"], "BREACH") {
		t.Errorf("see-server %s, write-public %s: the package doc says sandbox user does not stop these", got["see-server"], got["write-public"])
	}
	if termed() {
		t.Error("the task's SIGTERM reached the server")
	}
}

// A task that forks, even a process that starts its own session, is gone
// entirely after a timeout: the sandbox's PID namespace ends with it.
func TestSandboxBwrapTimeoutKillsEverything(t *testing.T) {
	t.Parallel()
	for _, mode := range isolating {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := sandboxRunner(t, Config{Sandbox: mode})
			marker := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1e6+1)
			res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "setsid sleep "+marker+" & sleep "+marker+" & echo ready; wait"),
				Runtime: "sh", File: "run.sh", Timeout: 300 * time.Millisecond})
			if res.Status != StatusTimeout {
				t.Fatalf("result %+v", res)
			}
			testenv.Eventually(t, "the task's processes to end", func() bool { return len(procsWithArg(t, marker)) == 0 })
		})
	}
}

// The program gets SIGTERM at a timeout and its handler runs (bwrap, which
// would die of it at once, is not signalled).
func TestSandboxBwrapGracefulTerm(t *testing.T) {
	t.Parallel()
	for _, mode := range isolating {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := sandboxRunner(t, Config{Sandbox: mode, KillGrace: testenv.WaitLimit})
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			log := &lineWatcher{want: "ready", fn: func(string) { cancel(errors.New("stop")) }}
			res := run(ctx, t, r, Spec{PackageDir: shPkg(t, `trap 'echo cleaned up; exit 3' TERM; echo ready; sleep 1000 & wait`),
				Runtime: "sh", File: "run.sh", Log: log})
			if res.Status != StatusCancelled || res.ExitCode != 3 || !strings.Contains(log.String(), "cleaned up") {
				t.Fatalf("result %+v; log %q", res, log.String())
			}
		})
	}
}

// A program killed by a signal is reported as such through bwrap (which
// exits 128+N).
func TestSandboxBwrapSignalStatus(t *testing.T) {
	t.Parallel()
	for _, mode := range isolating {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r := sandboxRunner(t, Config{Sandbox: mode})
			res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "kill -KILL $$"), Runtime: "sh", File: "run.sh"})
			if res.Status != StatusError || res.Signal != syscall.SIGKILL || res.ExitCode != -1 || res.Msg != "killed by signal: killed" {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// Network: shared with the host by default (documented), none at all with
// IsolateNetwork.
func TestSandboxBwrapNetwork(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), 5)\n    print('connected')\nexcept OSError as e:\n    print('refused', e)\n", port)
	for _, isolate := range []bool{false, true} {
		for _, mode := range isolating {
			r := sandboxRunner(t, Config{Sandbox: mode, IsolateNetwork: isolate})
			var log syncBuffer
			res := run(context.Background(), t, r, Spec{PackageDir: pkgDir(t, entry{name: "net.py", data: []byte(script)}), Runtime: "python", File: "net.py", Log: &log})
			if res.Status != StatusComplete {
				t.Fatalf("result %+v; log %q", res, log.String())
			}
			if connected := strings.HasPrefix(log.String(), "connected"); connected == isolate {
				t.Errorf("%s, IsolateNetwork %v: %q", mode, isolate, log.String())
			}
		}
	}
}

// An explicit sandbox that cannot work here is an error of New that says
// why; auto falls back and says why.
func TestSandboxUnavailable(t *testing.T) {
	t.Parallel()
	_, err := New(&Config{Sandbox: SandboxBwrap, BwrapPath: "/nonexistent/bwrap"})
	if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "/nonexistent/bwrap") {
		t.Errorf("missing bwrap: %v", err)
	}
	_, err = New(&Config{Sandbox: SandboxBwrap, BwrapPath: "/bin/false"})
	if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "cannot set up a sandbox") {
		t.Errorf("failing bwrap: %v", err)
	}
	_, err = New(&Config{Sandbox: SandboxBwrap, Path: "/nonexistent"})
	if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "bwrap is not installed") {
		t.Errorf("no bwrap in Path: %v", err)
	}
	// An explicit limiter keeps auto away from ns, whose helper sets the
	// limits itself.
	r, err := New(&Config{Sandbox: SandboxAuto, Limiter: LimiterTrampoline, BwrapPath: "/bin/false", WorkDir: testenv.SharedDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	st := r.Sandbox()
	want := SandboxOff
	if os.Geteuid() == 0 {
		want = SandboxUser
	}
	if st.Mode != want || st.SwitchUser != (want == SandboxUser) || !strings.Contains(st.Note, "bwrap unusable") {
		t.Errorf("auto without a working bwrap: %+v", st)
	}
	// A root runner whose ns sandbox cannot work (no "true" in Path for
	// its trial task, nor bwrap) says why it is not used.
	if os.Geteuid() == 0 && zygote.Supported {
		r, err := New(&Config{Sandbox: SandboxAuto, Path: "/nonexistent", WorkDir: testenv.SharedDir(t)})
		if err != nil {
			t.Fatal(err)
		}
		if st := r.Sandbox(); st.Mode != SandboxUser || !strings.Contains(st.Note, "ns unusable: ") || !strings.Contains(st.Note, "; bwrap unusable: ") {
			t.Errorf("auto without ns or bwrap: %+v", st)
		}
	}
	if _, err := New(&Config{Sandbox: "docker"}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("unknown sandbox: %v", err)
	}
	if _, err := New(&Config{Hide: []string{"/", "rel"}}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("bad Hide: %v", err)
	}
}

// Sandbox user refuses a work folder that the task's user cannot reach,
// and never runs a task as root.
func TestSandboxUserRules(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		_, err := New(&Config{Sandbox: SandboxUser})
		if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "root") {
			t.Errorf("sandbox user, not root: %v", err)
		}
		testenv.Missing(t, "the rest needs root")
	}
	closed := t.TempDir() // its parent is private to root
	_, err := New(&Config{Sandbox: SandboxUser, WorkDir: closed})
	if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "closed to other users") {
		t.Errorf("closed work folder: %v", err)
	}
	for _, mode := range []Sandbox{SandboxUser, SandboxBwrap} {
		r := sandboxRunner(t, Config{Sandbox: mode, WorkDir: testenv.SharedDir(t)})
		for _, cred := range []*syscall.Credential{{Uid: 0, Gid: 1000}, {Uid: 1000, Gid: 0}, {Uid: 1000, Gid: 1000, Groups: []uint32{0}}} {
			if _, err := r.Run(context.Background(), Spec{TaskID: "root", Command: []string{"true"}, Credential: cred}); !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("%s, credential %+v: %v", mode, cred, err)
			}
		}
		// Without a credential: nobody.
		var log syncBuffer
		res := run(context.Background(), t, r, Spec{Command: []string{"sh", "-c", "id -u"}, Log: &log})
		if res.Status != StatusComplete || strings.TrimSpace(log.String()) != strconv.Itoa(NobodyID) {
			t.Errorf("%s: default user %q (%+v)", mode, log.String(), res)
		}
	}
}

// The limits a task sees inside the bwrap sandbox, in /proc/self/limits of
// a process the program started, are exactly Config.Limits, soft and hard,
// whichever limiter: under LimiterPtrace they were set on bwrap, and
// reached the program through bwrap's forks, its namespaces and its exec.
// Also the task's user, no_new_privs and an empty signal mask.
func TestSandboxBwrapLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode Sandbox
		lim  Limiter
	}{{SandboxBwrap, LimiterTrampoline}, {SandboxBwrap, LimiterPtrace}, {SandboxNamespaces, ""}} {
		lim := tc.lim
		t.Run(string(tc.mode)+"/"+string(lim), func(t *testing.T) {
			t.Parallel()
			r := sandboxRunner(t, Config{Sandbox: tc.mode, Limiter: lim, WorkDir: testenv.SharedDir(t),
				Limits: ProcLimits{Memory: 300 << 20, AddressSpace: 3 << 30, CPUTime: 77 * time.Second, OpenFiles: 123, Processes: 456, FileSize: 5 << 20}})
			if r.Sandbox().Limiter != lim {
				t.Fatalf("limiter %s, want %s", r.Sandbox().Limiter, lim)
			}
			var log syncBuffer
			res := run(context.Background(), t, r, Spec{Command: []string{"sh", "-c", `id -u; grep -E '^(NoNewPrivs|SigBlk):' /proc/self/status; cat /proc/self/limits`, "sh"}, Log: &log})
			if res.Status != StatusComplete {
				t.Fatalf("result %+v; log %q", res, log.String())
			}
			uid := strconv.Itoa(os.Geteuid())
			if r.Sandbox().SwitchUser {
				uid = strconv.Itoa(NobodyID)
			}
			want := map[string]string{
				"uid": uid, "NoNewPrivs:": "1", "SigBlk:": "0000000000000000",
				"Max cpu time": "77 77", "Max file size": "5242880 5242880", "Max data size": "314572800 314572800",
				"Max core file size": "0 0", "Max processes": "456 456", "Max open files": "123 123",
				"Max address space": "3221225472 3221225472",
			}
			got := map[string]string{}
			lines := strings.Split(strings.TrimSpace(log.String()), "\n")
			got["uid"] = lines[0]
			for _, line := range lines[1:] {
				for k := range want {
					if rest, ok := strings.CutPrefix(line, k); ok {
						f := strings.Fields(rest)
						if strings.HasSuffix(k, ":") {
							got[k] = strings.Join(f, " ")
						} else if len(f) >= 2 {
							got[k] = f[0] + " " + f[1]
						}
					}
				}
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// Under LimiterPtrace bwrap runs as the task's user, and the sandbox's
// init, which bwrap leaves behind when it exits, counts as one of that
// user's processes until reaped: the runner reaps it (a subreaper), or a
// system init that reaps slowly (this VM's) lets them pile up past
// RLIMIT_NPROC and bwrap's forks fail. Many short tasks, 8 at a time, with
// the default limits; then every init is gone.
func TestSandboxBwrapReapsInit(t *testing.T) {
	t.Parallel()
	r := sandboxRunner(t, Config{Sandbox: SandboxBwrap, Limiter: LimiterPtrace, WorkDir: testenv.SharedDir(t)})
	var mu sync.Mutex
	var inits []int
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				var log syncBuffer
				res, err := r.Run(context.Background(), Spec{TaskID: fmt.Sprint("r", g, "-", i), Command: []string{"/bin/true"}, Log: &log})
				if err != nil || res.Status != StatusComplete {
					t.Errorf("Run: %v, %s; log %q", err, res.Msg, log.String())
					return
				}
				mu.Lock()
				inits = append(inits, res.PID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(testenv.WaitLimit)
	for _, pid := range inits {
		for {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			// Gone, or the pid reused by a process that is not a zombie.
			if err != nil || !strings.Contains(string(st), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the sandbox's init %d is still a zombie", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A set-user-id bwrap (some distributions install it so) would lose its
// privilege under the exec stop (and no_new_privs): auto keeps the
// trampoline for it and says why, an explicit LimiterPtrace is refused.
func TestSandboxBwrapSetuidKeepsTrampoline(t *testing.T) {
	t.Parallel()
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		testenv.Missing(t, "bwrap is not installed")
	}
	data, err := os.ReadFile(bwrap)
	if err != nil {
		t.Fatal(err)
	}
	// Outside /tmp, which the sandbox makes private (the probe runs it inside).
	suid := filepath.Join(probeRoot(t), "bwrap")
	if err := os.WriteFile(suid, data, 0o755); err != nil { //nolint:gosec // G306: a program
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o4755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	r := sandboxRunner(t, Config{Sandbox: SandboxBwrap, BwrapPath: suid, WorkDir: testenv.SharedDir(t)})
	if sb := r.Sandbox(); sb.Limiter != LimiterTrampoline || !strings.Contains(sb.LimiterNote, "set-user-id") {
		t.Errorf("limiter %s (%s), want the trampoline for a set-user-id bwrap", sb.Limiter, sb.LimiterNote)
	}
	_, err = New(&Config{Sandbox: SandboxBwrap, BwrapPath: suid, Limiter: LimiterPtrace, WorkDir: testenv.SharedDir(t)})
	if !errors.Is(err, ErrSandbox) || !strings.Contains(err.Error(), "set-user-id") {
		t.Errorf("explicit ptrace with a set-user-id bwrap: %v", err)
	}
}

// The ns sandbox's helpers, killed between tasks (the OOM killer, an
// operator), are started again by the next tasks, which run.
func TestSandboxNSHelperRestarts(t *testing.T) { //nolint:paralleltest // it kills the process-wide helpers that the other ns tests share
	r := sandboxRunner(t, Config{Sandbox: SandboxNamespaces, WorkDir: testenv.SharedDir(t)})
	runEcho := func() {
		t.Helper()
		var log syncBuffer
		res := run(context.Background(), t, r, Spec{TaskID: "restart", Command: []string{"echo", "ran"}, Log: &log})
		if res.Status != StatusComplete || !strings.HasPrefix(log.String(), "ran ") {
			t.Fatalf("result %+v; log %q", res, log.String())
		}
	}
	// The helpers, each asked for once (they are taken in turn).
	helpers := func() []*zygote.Helper {
		t.Helper()
		var hs []*zygote.Helper
		for range nsHelpers {
			h, err := sandboxHelper()
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		return hs
	}
	for range nsHelpers {
		runEcho()
	}
	old := map[int]bool{}
	for _, h := range helpers() {
		old[h.Pid()] = true
		if err := syscall.Kill(h.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	// Every task runs, the first one right after the kills.
	for range 2 * len(nsHelpers) {
		runEcho()
	}
	for _, h := range helpers() {
		if old[h.Pid()] {
			t.Errorf("the helper %d was not replaced", h.Pid())
		}
	}
}
