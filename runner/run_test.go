//go:build linux

package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kilnhq/kiln/internal/testenv"
	"golang.org/x/sys/unix"
)

func newRunner(t testing.TB, cfg Config) *Runner {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 200 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = testenv.WaitLimit
	}
	r, err := New(&cfg)
	if err == nil {
		t.Cleanup(func() {
			if err := r.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	if err != nil && cfg.Limiter == LimiterPtrace && cfg.Credential != nil && !limitsOthers() && !injectSupported {
		t.Skipf("LimiterPtrace with another user needs CAP_SYS_RESOURCE: %v", err)
	}
	if err != nil && (cfg.Sandbox == SandboxBwrap || cfg.Sandbox == SandboxNamespaces) && errors.Is(err, ErrSandbox) {
		testenv.Missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pkgDir unpacks a package built from entries and returns its directory.
// forEachLimiter runs f as parallel subtests, once per way of applying the
// limits: "default" (Config's defaults), without a sandbox once with the
// trampoline and once with LimiterPtrace, and under bwrap likewise (bwrap
// started through the trampoline, or stopped at its own exec: skipped
// where bwrap does not work, see testenv.Missing). base holds the choice:
// pass a test's Config through base.with. Under bwrap the work folder is
// one other users can traverse (bwrap runs as the task's user under
// LimiterPtrace).
func forEachLimiter(t *testing.T, f func(t *testing.T, base Config)) {
	t.Helper()
	for _, c := range []struct {
		name string
		base Config
	}{
		{"default", Config{}},
		{"trampoline", Config{Sandbox: SandboxOff, Limiter: LimiterTrampoline}},
		// The trampoline of builds without cgo (Main's Go code), where the
		// C one serves the case above.
		{"trampoline-go", Config{Sandbox: SandboxOff, Limiter: LimiterTrampoline, goTrampoline: true}},
		{"ptrace", Config{Sandbox: SandboxOff, Limiter: LimiterPtrace}},
		{"bwrap-trampoline", Config{Sandbox: SandboxBwrap, Limiter: LimiterTrampoline}},
		{"bwrap-ptrace", Config{Sandbox: SandboxBwrap, Limiter: LimiterPtrace}},
		{"ns", Config{Sandbox: SandboxNamespaces}},
	} {
		if c.base.goTrampoline && !cTrampoline {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			base := c.base
			if base.Sandbox == SandboxBwrap || base.Sandbox == SandboxNamespaces {
				base.WorkDir = testenv.SharedDir(t)
			}
			f(t, base)
		})
	}
}

// with returns cfg with the sandbox and limiter of b, when cfg sets none.
func (b Config) with(cfg Config) Config {
	if cfg.Sandbox == "" {
		cfg.Sandbox = b.Sandbox
	}
	if cfg.Limiter == "" {
		cfg.Limiter = b.Limiter
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = b.WorkDir
	}
	cfg.goTrampoline = cfg.goTrampoline || b.goTrampoline
	return cfg
}

func pkgDir(t testing.TB, entries ...entry) string {
	t.Helper()
	z := buildZip(t, entries...)
	dst := filepath.Join(t.TempDir(), "pkg")
	if _, err := Unpack(bytes.NewReader(z), int64(len(z)), dst, Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return dst
}

// syncBuffer is a Log sink safe to read while Run writes to it.
type syncBuffer = testenv.Buffer

// lineWatcher is a Log sink that calls fn once for the first line holding want.
type lineWatcher struct {
	syncBuffer
	want string
	once sync.Once
	fn   func(line string)
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	n, err := w.syncBuffer.Write(p)
	if s := w.String(); strings.Contains(s, w.want) {
		for line := range strings.Lines(s) {
			if strings.Contains(line, w.want) {
				w.once.Do(func() { w.fn(strings.TrimSpace(line)) })
				break
			}
		}
	}
	return n, err
}

// The Go worker: a port of the seed's IronWorker Go worker (find -payload,
// read it, print it) with a few extra modes for the tests.
const workerSource = `package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	start := time.Now().UnixNano()
	payloadPath := ""
	for i, a := range os.Args {
		if a == "-payload" && i+1 < len(os.Args) {
			payloadPath = os.Args[i+1]
		}
	}
	raw, err := os.ReadFile(payloadPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read payload:", err)
		os.Exit(2)
	}
	var p struct {
		Mode string ` + "`json:\"mode\"`" + `
	}
	_ = json.Unmarshal(raw, &p)
	switch p.Mode {
	case "start":
		fmt.Println(start)
	case "env":
		wd, _ := os.Getwd()
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"args": os.Args[1:], "env": os.Environ(), "cwd": wd, "uid": os.Getuid()})
	case "limits":
		out := map[string]uint64{}
		for name, res := range map[string]int{"as": 9, "data": 2, "cpu": 0, "nofile": 7, "nproc": 6, "fsize": 1, "core": 4} {
			var rl syscall.Rlimit
			_ = syscall.Getrlimit(res, &rl)
			out[name] = rl.Max
			out[name+"_cur"] = rl.Cur
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		for {
			time.Sleep(time.Hour)
		}
	case "true":
	default:
		var data any
		if err := json.Unmarshal(raw, &data); err != nil {
			panic(err)
		}
		fmt.Printf("%v\n", data)
	}
}
`

// A runner script in the style of the seed's __runner__.sh (written for
// these tests): its loop over the arguments never shifts, so it only ends if
// -d comes first.
const runnerScript = `#!/bin/sh
dir() {
  while [ $# -gt 0 ]; do
    if [ "$1" = "-d" ]; then
      printf "%s\n" "$2"
      break
    fi
  done
}
cd "$(dir "$@")"
chmod +x "worker"
./"worker" "$@"
`

// workerPkg returns a package dir holding the Go worker and __runner__.sh.
func workerPkg(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(testenv.BuildGo(t, workerSource))
	if err != nil {
		t.Fatal(err)
	}
	// The worker is zipped without execute bits, like a zip made on Windows:
	// the runner script's chmod (or the binary runtime) fixes it.
	return pkgDir(t, entry{name: "worker", data: data, mode: 0o644, method: 8},
		entry{name: "__runner__.sh", data: []byte(runnerScript), mode: 0o755})
}

func shPkg(t testing.TB, script string) string {
	t.Helper()
	return pkgDir(t, entry{name: "run.sh", data: []byte(script), mode: 0o644})
}

// seenDir is the task directory as the program saw it.
func seenDir(r *Runner, res Result) string {
	if m := r.Sandbox().Mode; m == SandboxBwrap || m == SandboxNamespaces {
		return SandboxTaskDir
	}
	return res.TaskDir
}

func run(ctx context.Context, t testing.TB, r *Runner, spec Spec) Result {
	t.Helper()
	if spec.TaskID == "" {
		spec.TaskID = "t1"
	}
	res, err := r.Run(ctx, spec)
	if err != nil {
		t.Fatalf("Run: %v (result %+v)", err, res)
	}
	return res
}

func TestRunShellPackage(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{}))
		var log syncBuffer
		dir := shPkg(t, `echo "args: $*"; echo "payload: $(cat "$PAYLOAD_FILE")"; echo "config: $(cat "$CONFIG_FILE")"; echo oops >&2; pwd`)
		res := run(context.Background(), t, r, Spec{TaskID: "sh-1", PackageDir: dir, Runtime: "sh", File: "run.sh",
			Payload: []byte(`{"a":1}`), Config: []byte("cfg"), Log: &log})
		if res.Status != StatusComplete || res.ExitCode != 0 || res.Msg != "" {
			t.Fatalf("result %+v; log:\n%s", res, log.String())
		}
		want := fmt.Sprintf("args: -d %[1]s -payload %[1]s/__payload__ -config %[1]s/__config__ -id sh-1\npayload: {\"a\":1}\nconfig: cfg\noops\n%[1]s\n", seenDir(r, res))
		if diff := cmp.Diff(want, log.String()); diff != "" {
			t.Errorf("log (-want +got):\n%s", diff)
		}
		if res.LogBytes != int64(len(want)) || res.LogTruncated || res.PID == 0 || res.StartedAt.IsZero() || res.Duration <= 0 {
			t.Errorf("result %+v", res)
		}
		checkDirDone(t, r, dir, res)
	})
}

// The seed's packaging: a Go binary and a __runner__.sh that loops forever
// unless -d is the first argument.
func TestRunGoWorkerPackage(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	var log syncBuffer
	res := run(context.Background(), t, r, Spec{PackageDir: workerPkg(t), Runtime: "sh", File: "__runner__.sh",
		Payload: []byte(`{"arg1":"Test","another_arg":["apples","oranges"]}`), Log: &log, Timeout: testenv.WaitLimit})
	if res.Status != StatusComplete {
		t.Fatalf("result %+v; log:\n%s", res, log.String())
	}
	if got, want := log.String(), "map[another_arg:[apples oranges] arg1:Test]\n"; got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

func TestRunBinaryRuntime(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	var log syncBuffer
	res := run(context.Background(), t, r, Spec{PackageDir: workerPkg(t), Runtime: "binary", File: "worker",
		Payload: []byte(`{"x":"y"}`), Log: &log})
	if res.Status != StatusComplete || log.String() != "map[x:y]\n" {
		t.Fatalf("result %+v; log %q", res, log.String())
	}
}

func TestRunPython(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	var log syncBuffer
	dir := pkgDir(t, entry{name: "hello.py", data: []byte(`import json, os, sys
print("argv", sys.argv[1:])
with open(os.environ["PAYLOAD_FILE"]) as f:
    print("payload", json.load(f)["name"])
`)})
	res := run(context.Background(), t, r, Spec{TaskID: "py", PackageDir: dir, Runtime: "python", File: "hello.py",
		Payload: []byte(`{"name":"kiln"}`), Log: &log})
	if res.Status != StatusComplete {
		t.Fatalf("result %+v; log:\n%s", res, log.String())
	}
	want := fmt.Sprintf("argv ['-d', '%[1]s', '-payload', '%[1]s/__payload__', '-config', '%[1]s/__config__', '-id', 'py']\npayload kiln\n", seenDir(r, res))
	if got := log.String(); got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

// Arguments exactly, in order; environment exactly, nothing of the runner's.
func TestRunArgsAndEnv(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		if os.Getenv(testSecretEnv) == "" {
			t.Fatal("the test secret is not set in the test process")
		}
		r := newRunner(t, base.with(Config{}))
		var log syncBuffer
		res := run(context.Background(), t, r, Spec{TaskID: "env.1", PackageDir: workerPkg(t), File: "worker",
			Payload: []byte(`{"mode":"env"}`), Env: map[string]string{"GREETING": "hi there", "PATH": "/bin"}, Log: &log})
		if res.Status != StatusComplete {
			t.Fatalf("result %+v; log:\n%s", res, log.String())
		}
		var got struct {
			Args []string `json:"args"`
			Env  []string `json:"env"`
			Cwd  string   `json:"cwd"`
		}
		if err := json.Unmarshal([]byte(log.String()), &got); err != nil {
			t.Fatalf("%v: %q", err, log.String())
		}
		d := seenDir(r, res)
		wantArgs := []string{"-d", d, "-payload", d + "/__payload__", "-config", d + "/__config__", "-id", "env.1"}
		if diff := cmp.Diff(wantArgs, got.Args); diff != "" {
			t.Errorf("args (-want +got):\n%s", diff)
		}
		wantEnv := []string{"CONFIG_FILE=" + d + "/__config__", "GREETING=hi there", "HOME=" + d, "PATH=/bin",
			"PAYLOAD_FILE=" + d + "/__payload__", "TASK_DIR=" + d, "TASK_ID=env.1"}
		if r.bw != nil && r.bw.direct {
			// bwrap execs the program itself and sets PWD (documented on Run).
			wantEnv = slices.Insert(wantEnv, 5, "PWD="+d)
		}
		slices.Sort(got.Env)
		if diff := cmp.Diff(wantEnv, got.Env); diff != "" {
			t.Errorf("env (-want +got):\n%s", diff)
		}
		if got.Cwd != d {
			t.Errorf("cwd %q, want %q", got.Cwd, d)
		}
		if strings.Contains(log.String(), "hunter2") {
			t.Error("the task saw the runner's secret")
		}
	})
}

// Metacharacters in Command are literal: there is no shell.
func TestRunCommandNoShell(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	var log syncBuffer
	res := run(context.Background(), t, r, Spec{TaskID: "cmd", Command: []string{"echo", "; rm -rf /", "$(id)", "`id`", "a|b"}, Log: &log})
	if res.Status != StatusComplete {
		t.Fatalf("result %+v", res)
	}
	want := fmt.Sprintf("; rm -rf / $(id) `id` a|b -d %[1]s -payload %[1]s/__payload__ -config %[1]s/__config__ -id cmd\n", seenDir(r, res))
	if got := log.String(); got != want {
		t.Errorf("log %q, want %q", got, want)
	}
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{}))
		tests := []struct {
			script   string
			code     int
			signal   syscall.Signal
			msg      string
			wantStat Status
		}{
			{"exit 0", 0, 0, "", StatusComplete},
			{"exit 7", 7, 0, "exit status 7", StatusError},
			{"exit 255", 255, 0, "exit status 255", StatusError},
			{"kill -SEGV $$", -1, syscall.SIGSEGV, "killed by signal: segmentation fault", StatusError},
		}
		for _, tc := range tests {
			res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, tc.script), Runtime: "sh", File: "run.sh"})
			if res.Status != tc.wantStat || res.ExitCode != tc.code || res.Signal != tc.signal || res.Msg != tc.msg {
				t.Errorf("%q: got status %s, code %d, signal %v, msg %q; want %s, %d, %v, %q",
					tc.script, res.Status, res.ExitCode, res.Signal, res.Msg, tc.wantStat, tc.code, tc.signal, tc.msg)
			}
		}
	})
}

// groupGone reports whether no live process is left in process group pgid.
// groupGone reports whether every process of group pgid is gone (or a
// zombie). A SIGKILLed process needs a moment to die, so it polls, bounded
// by 10 s: a guard against hanging, not a measure of speed.
func groupGone(t testing.TB, pgid int) bool {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if groupGoneNow(t, pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func groupGoneNow(t testing.TB, pgid int) bool {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 2 && fields[2] == strconv.Itoa(pgid) && fields[0] != "Z" {
			return false
		}
	}
	return true
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		// SIGTERM must end the group: a long grace, so that a busy
		// machine's slow exit is not taken for an escalation to SIGKILL
		// (the test's 200 ms default was exceeded once in CI).
		r := newRunner(t, base.with(Config{KillGrace: 10 * time.Second}))
		// A background child too: the whole group must go.
		res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "sleep 1000 & sleep 1000"), Runtime: "sh", File: "run.sh",
			Timeout: 100 * time.Millisecond})
		if res.Status != StatusTimeout || res.Signal != syscall.SIGTERM || !strings.HasPrefix(res.Msg, "timed out after 100ms") {
			t.Fatalf("result %+v", res)
		}
		if !groupGone(t, res.PID) {
			t.Error("processes of the task's group survived")
		}
	})
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	cause := errors.New("cancelled by user")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	log := &lineWatcher{want: "ready", fn: func(string) { cancel(cause) }}
	res := run(ctx, t, r, Spec{PackageDir: shPkg(t, "echo ready; sleep 1000 & sleep 1000"), Runtime: "sh", File: "run.sh", Log: log})
	if res.Status != StatusCancelled || !errors.Is(res.Cause, cause) || res.Msg != "cancelled: cancelled by user" {
		t.Fatalf("result %+v", res)
	}
	if !groupGone(t, res.PID) {
		t.Error("processes of the task's group survived")
	}
}

// A program that ignores SIGTERM is killed with SIGKILL after the grace
// period; a ctx whose cause is DeadlineExceeded means status timeout.
func TestRunIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{KillGrace: 300 * time.Millisecond}))
		for _, spec := range []Spec{
			{PackageDir: shPkg(t, "trap '' TERM; echo ready; sleep 1000 & sleep 1000"), Runtime: "sh", File: "run.sh"},
			{PackageDir: workerPkg(t), File: "worker", Payload: []byte(`{"mode":"ignore-term"}`)},
		} {
			ctx, cancel := context.WithCancelCause(context.Background())
			log := &lineWatcher{want: "ready", fn: func(string) { cancel(context.DeadlineExceeded) }}
			spec.Log = log
			start := time.Now()
			res := run(ctx, t, r, spec)
			cancel(nil)
			if res.Status != StatusTimeout || res.Signal != syscall.SIGKILL || !strings.Contains(res.Msg, "grace period") {
				t.Fatalf("result %+v; log %q", res, log.String())
			}
			// Correctness, not speed: SIGKILL must not come before the grace period.
			if el := time.Since(start); el < 300*time.Millisecond {
				t.Errorf("killed after %v, before the grace period", el)
			}
			if !groupGone(t, res.PID) {
				t.Error("processes of the task's group survived")
			}
		}
	})
}

// Leftover background processes are killed when the program exits.
func TestRunKillsLeftovers(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{}))
		res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "sleep 1000 >/dev/null 2>&1 & echo started"), Runtime: "sh", File: "run.sh"})
		if res.Status != StatusComplete {
			t.Fatalf("result %+v", res)
		}
		if !groupGone(t, res.PID) {
			t.Error("a background process outlived its task")
		}
	})
}

func TestRunKeepTaskDir(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "echo out > result.txt; mkdir -p locked/inner; chmod 000 locked"),
		Runtime: "sh", File: "run.sh", Payload: []byte("p"), Keep: true})
	if res.Status != StatusComplete {
		t.Fatalf("result %+v", res)
	}
	for _, name := range []string{"run.sh", "result.txt", PayloadFileName, ConfigFileName} {
		if _, err := os.Stat(filepath.Join(res.TaskDir, name)); err != nil {
			t.Errorf("kept task dir: %v", err)
		}
	}
	if err := removeAll(res.TaskDir); err != nil {
		t.Fatalf("removeAll: %v", err)
	}
	// And without Keep, even a directory the task locked is removed.
	pkg := shPkg(t, "mkdir -p locked/inner; touch locked/inner/f; chmod 000 locked/inner locked")
	res = run(context.Background(), t, r, Spec{PackageDir: pkg, Runtime: "sh", File: "run.sh"})
	checkDirDone(t, r, pkg, res)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(res.TaskDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("task dir %s still there after Close: %v", res.TaskDir, err)
	}
}

func TestRunLimitsApplied(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		cfg := Config{Limits: ProcLimits{Memory: 300 << 20, AddressSpace: 4 << 30, CPUTime: 90 * time.Second, OpenFiles: 100, Processes: 500, FileSize: 1 << 20}}
		users := []*syscall.Credential{nil}
		if os.Geteuid() == 0 {
			// And as another user (LimiterPtrace without CAP_SYS_RESOURCE:
			// the task sets its limits itself).
			users = append(users, &syscall.Credential{Uid: 65534, Gid: 65534})
			cfg.WorkDir = testenv.SharedDir(t)
		}
		r := newRunner(t, base.with(cfg))
		pkg := workerPkg(t)
		for _, cred := range users {
			var log syncBuffer
			res := run(context.Background(), t, r, Spec{PackageDir: pkg, File: "worker", Payload: []byte(`{"mode":"limits"}`), Log: &log, Credential: cred})
			if res.Status != StatusComplete {
				t.Fatalf("credential %v: result %+v; log %q", cred, res, log.String())
			}
			var got map[string]uint64
			if err := json.Unmarshal([]byte(log.String()), &got); err != nil {
				t.Fatalf("%v: %q", err, log.String())
			}
			want := map[string]uint64{"data": 300 << 20, "as": 4 << 30, "cpu": 90, "nofile": 100, "nproc": 500, "fsize": 1 << 20, "core": 0}
			for k, v := range want {
				if got[k] != v || got[k+"_cur"] != v {
					t.Errorf("credential %v: %s: hard %d soft %d, want %d", cred, k, got[k], got[k+"_cur"], v)
				}
			}
		}
	})
}

func TestRunMemoryLimit(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{Limits: ProcLimits{Memory: 256 << 20}}))
		var log syncBuffer
		dir := pkgDir(t, entry{name: "hog.py", data: []byte("x = bytearray(1 << 30)\nprint('allocated')\n")})
		res := run(context.Background(), t, r, Spec{PackageDir: dir, Runtime: "python", File: "hog.py", Log: &log})
		if res.Status != StatusError || !strings.Contains(log.String(), "MemoryError") {
			t.Fatalf("result %+v; log %q", res, log.String())
		}
	})
}

func TestRunFileSizeLimit(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{Limits: ProcLimits{FileSize: 1 << 20}}))
		res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "exec head -c 2000000 /dev/zero > big"), Runtime: "sh", File: "run.sh"})
		if res.Status != StatusError || res.Signal != syscall.SIGXFSZ {
			t.Fatalf("result %+v", res)
		}
	})
}

// 100 MB of output: the log is capped with a marker, the rest is drained
// (the program finishes normally) and the runner's memory stays bounded.
// Not parallel: it measures the process's allocations, so it runs alone.
func TestRunLogFlood(t *testing.T) { //nolint:paralleltest // it measures the process's allocations, so it runs alone
	r := newRunner(t, Config{})
	var n countingWriter
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, "head -c 100000000 /dev/zero; echo done >&2"), Runtime: "sh", File: "run.sh", Log: &n})
	runtime.ReadMemStats(&ms1)
	if res.Status != StatusComplete {
		t.Fatalf("result %+v", res)
	}
	if !res.LogTruncated || res.LogBytes != LogLimitDefault || res.LogDropped != 100_000_000+5-LogLimitDefault {
		t.Errorf("log: truncated %v, bytes %d, dropped %d", res.LogTruncated, res.LogBytes, res.LogDropped)
	}
	if !strings.HasPrefix(string(n.tail), "\n[kiln: log truncated at 8388608 bytes") {
		t.Errorf("no marker at the end of the log: %q", n.tail)
	}
	if n.n != LogLimitDefault+int64(len(n.tail)) {
		t.Errorf("sink got %d bytes", n.n)
	}
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 16<<20 {
		t.Errorf("the runner allocated %d bytes for a 100 MB log", alloc)
	}
}

// countingWriter counts bytes and keeps the last Write.
type countingWriter struct {
	n    int64
	tail []byte
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.tail = append(w.tail[:0], p...)
	return len(p), nil
}

const forkBomb = `import os, signal, sys
n = 0
failed = False
while True:
    try:
        pid = os.fork()
    except OSError as e:
        if not failed:
            print("fork failed after", n, "children:", e.strerror, flush=True)
            failed = True
        continue
    if pid == 0:
        signal.pause()
        os._exit(0)
    n += 1
`

// A fork bomb: the process limit holds, the whole group is killed, the
// runner still works afterwards.
func TestRunForkBomb(t *testing.T) { //nolint:paralleltest,tparallel // not parallel when not root: see below
	if os.Geteuid() == 0 {
		t.Parallel()
	}
	// Not root, every process of the test (and of every other test) is
	// the runner's user's, which the bomb's limit counts: it runs alone,
	// before the parallel tests.
	var next atomic.Uint32
	var sameUser sync.Mutex
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		cfg := Config{Limits: ProcLimits{Processes: 64}}
		if os.Geteuid() != 0 {
			// Every bomb is the runner's user's: one at a time, or one
			// would stop another's sandbox from starting (under bwrap
			// without the trampoline bwrap's own forks count).
			sameUser.Lock()
			defer sameUser.Unlock()
			// And the runner's own threads count too: room for them (under
			// bwrap without the trampoline, bwrap's forks need it).
			cfg.Limits.Processes += int64(ownThreads(t)) + 16
		}
		if os.Geteuid() == 0 {
			// RLIMIT_NPROC does not apply to root: run the bomb as another
			// user, one per subtest (the limit counts per user: the bombs
			// running in parallel would stop each other's starts).
			uid := 1900000300 + next.Add(1)
			cfg.Credential = &syscall.Credential{Uid: uid, Gid: uid}
			cfg.WorkDir = testenv.SharedDir(t)
		}
		r := newRunner(t, base.with(cfg))
		if os.Geteuid() != 0 && r.bw != nil && r.bw.direct {
			// Known limit (docs/decisions/003, update 3): bwrap's own forks
			// count against the runner's user, whom this test process and
			// the bombs share; the start is not reliable at this limit.
			t.Skip("not root: bwrap without the trampoline shares the runner's user's RLIMIT_NPROC")
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		var count int
		log := &lineWatcher{want: "fork failed", fn: func(line string) {
			_, _ = fmt.Sscanf(line, "fork failed after %d", &count)
			cancel(errors.New("enough"))
		}}
		dir := pkgDir(t, entry{name: "bomb.py", data: []byte(forkBomb)})
		// The previous bomb's processes (when not root, the same user's)
		// may still be going away: under bwrap without the trampoline a
		// start fails on them until they are gone.
		runNPROC := func(ctx context.Context, spec Spec) (Result, error) {
			deadline := time.Now().Add(testenv.WaitLimit)
			for {
				res, err := r.Run(ctx, spec)
				if err != nil && errors.Is(err, ErrSandbox) && strings.Contains(err.Error(), "RLIMIT_NPROC") && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				return res, err
			}
		}
		res, err := runNPROC(ctx, Spec{TaskID: "bomb", PackageDir: dir, Runtime: "python", File: "bomb.py", Log: log, Timeout: testenv.WaitLimit})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if res.Status != StatusCancelled {
			t.Fatalf("result %+v; log %q", res, log.String())
		}
		if !strings.Contains(log.String(), "fork failed") || count >= int(cfg.Limits.Processes) {
			t.Errorf("the process limit did not hold: %q", log.String())
		}
		if !groupGone(t, res.PID) {
			t.Error("processes of the bomb survived")
		}
		// A task after the bomb works, once the bomb's processes are gone.
		if after, err := runNPROC(context.Background(), Spec{TaskID: "after", Command: []string{"true"}}); err != nil || after.Status != StatusComplete {
			t.Errorf("a task after the bomb: %v, %+v", err, after)
		}
	})
}

// ownThreads returns the number of threads of this process.
func ownThreads(t *testing.T) int {
	t.Helper()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(st)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil {
				return n
			}
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// The program gets no_new_privs, an empty signal mask, and none of the
// runner's descriptors that lack close-on-exec, whatever the limiter.
func TestRunProcessState(t *testing.T) {
	t.Parallel()
	// A descriptor as a process inherits it: without close-on-exec. It is
	// moved to a number no shell uses for itself (dash keeps the script it
	// reads at 10 and up), so that an open descriptor of that number in
	// the task can only be this one.
	low, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.FcntlInt(uintptr(low), unix.F_DUPFD, 900)
	_ = syscall.Close(low)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{}))
		var log syncBuffer
		script := fmt.Sprintf(`grep -E '^(NoNewPrivs|SigBlk):' /proc/self/status; test -e /proc/self/fd/%d && echo leaked; echo done`, fd)
		res := run(context.Background(), t, r, Spec{PackageDir: shPkg(t, script), Runtime: "sh", File: "run.sh", Log: &log})
		if res.Status != StatusComplete {
			t.Fatalf("result %+v; log %q", res, log.String())
		}
		if want := []string{"SigBlk:", "0000000000000000", "NoNewPrivs:", "1", "done"}; !slices.Equal(strings.Fields(log.String()), want) {
			t.Errorf("log %q, want %q", strings.Fields(log.String()), want)
		}
	})
}

func TestRunCredential(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		if os.Geteuid() != 0 {
			t.Skip("changing user needs root")
		}
		r := newRunner(t, base.with(Config{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, WorkDir: testenv.SharedDir(t)}))
		var log syncBuffer
		// Everything in the task directory is the task's user's: the
		// directory, the package's folders and files, payload and config.
		script := `id -u; id -g; echo x > "$TASK_DIR/w" && echo wrote; cat /proc/self/status | grep NoNewPrivs
stat -c %u:%g "$TASK_DIR" sub sub/f run.sh "$PAYLOAD_FILE" "$CONFIG_FILE"`
		pkg := pkgDir(t, entry{name: "run.sh", data: []byte(script), mode: 0o644}, entry{name: "sub/f", data: []byte("f"), mode: 0o644})
		res := run(context.Background(), t, r, Spec{PackageDir: pkg, Runtime: "sh", File: "run.sh", Log: &log, Payload: []byte("p")})
		if res.Status != StatusComplete {
			t.Fatalf("result %+v; log %q", res, log.String())
		}
		fields := strings.Fields(log.String())
		own := "65534:65534"
		if want := []string{"65534", "65534", "wrote", "NoNewPrivs:", "1", own, own, own, own, own, own}; !slices.Equal(fields, want) {
			t.Errorf("log %q, want %q", fields, want)
		}
	})
}

func TestRunStartErrors(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		r := newRunner(t, base.with(Config{}))
		ctx := context.Background()
		tests := []struct {
			name string
			spec Spec
			want error
		}{
			{"missing file", Spec{TaskID: "a", PackageDir: shPkg(t, "true"), Runtime: "sh", File: "nope.sh"}, ErrNoProgram},
			{"missing interpreter", Spec{TaskID: "a", PackageDir: shPkg(t, "true"), Runtime: "cobol", File: "run.sh"}, ErrInvalidSpec},
			{"missing command", Spec{TaskID: "a", Command: []string{"no-such-program-kiln"}}, ErrNoProgram},
			{"not executable format", Spec{TaskID: "a", PackageDir: shPkg(t, "no shebang here"), Runtime: "binary", File: "run.sh"}, ErrStart},
			{"bad task id", Spec{TaskID: "../x", Command: []string{"true"}}, ErrInvalidSpec},
			{"file outside", Spec{TaskID: "a", PackageDir: shPkg(t, "true"), File: "../run.sh"}, ErrInvalidSpec},
			{"command outside", Spec{TaskID: "a", Command: []string{"../../bin/true"}}, ErrInvalidSpec},
			{"reserved env", Spec{TaskID: "a", Command: []string{"true"}, Env: map[string]string{"TASK_ID": "x"}}, ErrInvalidSpec},
			{"env name with =", Spec{TaskID: "a", Command: []string{"true"}, Env: map[string]string{"A=B": "x"}}, ErrInvalidSpec},
		}
		for _, tc := range tests {
			res, err := r.Run(ctx, tc.spec)
			if !errors.Is(err, tc.want) || res.Status != StatusError || res.Msg == "" {
				t.Errorf("%s: got %v (result %+v), want %v", tc.name, err, res, tc.want)
			}
			if res.TaskDir != "" {
				checkDirDone(t, r, tc.spec.PackageDir, res)
			}
		}
		// A trampoline binary that does not call Main (ns has none).
		if base.Sandbox != SandboxNamespaces {
			bad := newRunner(t, Config{Sandbox: base.Sandbox, TrampolinePath: "/bin/true"})
			if _, err := bad.Run(ctx, Spec{TaskID: "a", Command: []string{"true"}}); !errors.Is(err, ErrNoTrampoline) {
				t.Errorf("no trampoline: got %v", err)
			}
		}
		// A done ctx: not started.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if res, err := r.Run(cctx, Spec{TaskID: "a", Command: []string{"true"}}); err != nil || res.Status != StatusCancelled {
			t.Errorf("done ctx: got %+v, %v", res, err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := New(&Config{Timeout: -1, LogLimit: -1, Path: "bin:/usr/bin", Limits: ProcLimits{OpenFiles: -5}})
	for _, want := range []string{"Timeout", "LogLimit", `"bin"`, "OpenFiles"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

// The sink receives output live, before the program ends.
func TestRunLogIsLive(t *testing.T) {
	t.Parallel()
	// The program reads a FIFO of the test's: no sandbox hides it.
	r := newRunner(t, Config{Sandbox: SandboxOff})
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// The program waits for a line on a FIFO that the test writes only
	// after the sink has seen "first".
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	log := &lineWatcher{want: "first", fn: func(string) {
		go func() {
			defer close(released)
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				cancel(err)
				return
			}
			_, _ = io.WriteString(f, "go\n")
			_ = f.Close()
		}()
	}}
	res := run(ctx, t, r, Spec{Command: []string{"sh", "-c", `echo first; read x < "$0"; echo second`, fifo}, Log: log, Timeout: testenv.WaitLimit})
	<-released
	if res.Status != StatusComplete {
		t.Fatalf("result %+v; log %q", res, log.String())
	}
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 2 || lines[0] != "first" || lines[1] != "second" {
		t.Errorf("log %q", lines)
	}
}

// Concurrent runs of a package whose binary is copied and exec'd: a copy's
// open descriptor must never leak into another run's child (ETXTBSY).
func TestRunConcurrentExec(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	dir := workerPkg(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 5 {
				res, err := r.Run(context.Background(), Spec{TaskID: fmt.Sprintf("c%d-%d", w, i), PackageDir: dir, File: "worker", Payload: []byte(`{"mode":"true"}`)})
				if err != nil || res.Status != StatusComplete {
					errs <- fmt.Errorf("run %d-%d: %w, %+v", w, i, err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
