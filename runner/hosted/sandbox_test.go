//go:build linux

package hosted_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store/embedded"
)

// The tasks of the holder package: a secret in the task directory, its
// user id, then it waits until cancelled.
const holderScript = `echo task-secret > secret
echo "uid $(id -u) gid $(id -g)"
echo ready
exec sleep 1000
`

// The probe package: the payload holds the paths to try as shell
// assignments. "held" means the attempt failed, "BREACH" that it worked.
const hostedProbeScript = `set -a; . "$PAYLOAD_FILE"; set +a
deny() { n=$1; shift; if "$@" >/dev/null 2>&1; then echo "$n: BREACH"; else echo "$n: held"; fi; }
echo "uid $(id -u) gid $(id -g)"
deny see-server test -e /proc/$SERVER_PID
deny server-environ cat /proc/$SERVER_PID/environ
deny signal-server kill -0 $SERVER_PID
deny read-cli-json cat $DATA_DIR/cli.json
deny list-data sh -c 'ls -A "$DATA_DIR" | grep -q .'
deny read-other-task cat $OTHER_TASK/secret
deny list-other-tasks sh -c 'ls -A "$TASKS_DIR" | grep -q .'
deny read-other-package cat $OTHER_PKG/run.sh
deny read-packages sh -c 'ls -A "$PACKAGES_DIR" | grep -q .'
deny write-outside touch /etc/kiln-probe
deny write-own-package sh -c 'echo x >> run.sh'
echo "config: $(cat "$CONFIG_FILE")"
echo done
`

// A Hosted runner as a server runs it (root, the default sandbox, the
// runner's folder inside the data folder, the data folder hidden): tasks
// of each project run as that project's own user, the same for every task
// of the project, never root; a task of one project cannot see the
// server, its data folder, the package cache, or a running task of
// another project, nor change a file of its own package (linked,
// runner.Config.LinkPackage); each project's packages are unpacked in a
// folder of its own; the task's log is captured.
func TestHostedSandbox(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "separate users per project need a root runner")
	}
	root := "/var/lib" // outside /tmp, which the sandbox makes private anyway
	dir, err := os.MkdirTemp(root, "kiln-hosted-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	st, err := embedded.Open(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	// Readable by everyone, so that only the sandbox keeps it from tasks.
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "cli.json"), []byte(`{"token":"kiln_secret"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	const base = 1_900_500_000
	h, err := hosted.New(&hosted.Config{
		Store: st, WorkDir: filepath.Join(data, "runner"), Concurrency: 4,
		PollInterval: 50 * time.Millisecond, LeaseDuration: 3 * time.Second, LeaseWait: 200 * time.Millisecond,
		Runner:  &runner.Config{Hide: []string{data}, KillGrace: 200 * time.Millisecond, LinkPackage: true},
		UIDBase: base, UIDCount: 1000,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := h.Sandbox(); (st.Mode != runner.SandboxNamespaces && st.Mode != runner.SandboxBwrap) || !st.SwitchUser {
		testenv.Missing(t, "the default sandbox here is "+st.String()+", not ns or bwrap")
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- h.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	reg := h.Registry()
	upload := func(project, name, script string) *hosted.Revision {
		z := testenv.Zip(t, map[string]string{"run.sh": script})
		_, rev, err := reg.Upload(ctx, project, hosted.Revision{Name: name, Runtime: "sh", FileName: "run.sh", Config: "cfg-" + project}, bytes.NewReader(z), 0)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	holderRev := upload("alpha", "holder", holderScript)
	probeRev := upload("beta", "probe", hostedProbeScript)
	h.Kick()

	enqueue := func(project, name string, payload string) *kiln.Result {
		c, err := kiln.NewClient(st, &kiln.ClientConfig{Namespace: project})
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Enqueue(ctx, hosted.TaskType(name), []byte(payload), &kiln.TaskOptions{Queue: hosted.TaskType(name)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	waitLog := func(project, id, want string) string {
		t.Helper()
		var log []byte
		testenv.Eventually(t, fmt.Sprintf("%q in the log of task %s/%s", want, project, id), func() bool {
			var err error
			if log, _, err = reg.ReadLog(ctx, project, id); err != nil {
				t.Fatal(err)
			}
			return strings.Contains(string(log), want)
		})
		return string(log)
	}

	// Two tasks of alpha run at once, holding their secrets.
	holders := []*kiln.Result{enqueue("alpha", "holder", ""), enqueue("alpha", "holder", "")}
	var alphaUID string
	for _, hr := range holders {
		log := waitLog("alpha", hr.ID(), "ready")
		uid := strings.Fields(log)[1]
		if alphaUID == "" {
			alphaUID = uid
		}
		if uid != alphaUID {
			t.Errorf("two tasks of one project ran as users %s and %s", alphaUID, uid)
		}
	}
	n, err := strconv.Atoi(alphaUID)
	if err != nil || n < base || n >= base+1000 {
		t.Fatalf("alpha's task ran as user %q, want one of %d..%d", alphaUID, base, base+999)
	}
	tasks, _ := filepath.Glob(filepath.Join(data, "runner", "tasks", "kiln-task-"+holders[0].ID()+"-*"))
	if len(tasks) != 1 {
		t.Fatalf("task directories %q", tasks)
	}
	if fi, err := os.Stat(tasks[0]); err != nil || fi.Mode().Perm() != 0o700 || fmt.Sprint(fileUID(fi)) != alphaUID {
		t.Errorf("alpha's task directory: %v, %v (owner %d)", fi.Mode(), err, fileUID(fi))
	}

	pkgs, _ := filepath.Glob(filepath.Join(data, "runner", "packages", "*-"+holderRev.SHA256))
	if len(pkgs) != 1 {
		t.Fatalf("alpha's unpacked package: %q", pkgs)
	}
	// With runner.Config.LinkPackage the task's file is the package's.
	pi, err1 := os.Stat(filepath.Join(pkgs[0], "run.sh"))
	ti, err2 := os.Stat(filepath.Join(tasks[0], "run.sh"))
	if err1 != nil || err2 != nil || !os.SameFile(pi, ti) {
		t.Errorf("alpha's task's run.sh is not a link to the package's: %v, %v", err1, err2)
	}

	// A task of beta tries them.
	payload := fmt.Sprintf("SERVER_PID=%d\nDATA_DIR=%s\nOTHER_TASK=%s\nTASKS_DIR=%s\nOTHER_PKG=%s\nPACKAGES_DIR=%s\n",
		os.Getpid(), data, tasks[0], filepath.Join(data, "runner", "tasks"),
		pkgs[0], filepath.Join(data, "runner", "packages"))
	probe := enqueue("beta", "probe", payload)
	wctx, wcancel := context.WithTimeout(ctx, testenv.WaitLimit)
	defer wcancel()
	info, err := probe.Wait(wctx)
	if err != nil || info.State != kiln.StateSucceeded {
		t.Fatalf("probe: %+v, %v", info, err)
	}
	log := waitLog("beta", probe.ID(), "done")
	fields := strings.Fields(log)
	if fields[0] != "uid" || fields[1] == alphaUID || fields[1] == "0" || fields[3] != fields[1] {
		t.Errorf("beta's task ran as %q, alpha's as %s", fields[:4], alphaUID)
	}
	for line := range strings.Lines(log) {
		if strings.Contains(line, "BREACH") {
			t.Errorf("probe: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(log, "config: cfg-beta\n") || strings.Count(log, ": held") != 11 {
		t.Errorf("probe log:\n%s", log)
	}
	// Each project's packages in folders of its own, so that no two
	// projects' tasks are given links to one file.
	betaPkgs, _ := filepath.Glob(filepath.Join(data, "runner", "packages", "*-"+probeRev.SHA256))
	prefix := func(dir string) string { p, _, _ := strings.Cut(filepath.Base(dir), "-"); return p }
	if len(betaPkgs) != 1 || prefix(betaPkgs[0]) == prefix(pkgs[0]) {
		t.Errorf("unpacked packages of alpha %q and beta %q", pkgs, betaPkgs)
	}
	for _, hr := range holders {
		if err := hr.Cancel(ctx); err != nil {
			t.Error(err)
		}
	}
}

// fileUID returns the owner of a file.
func fileUID(fi os.FileInfo) int {
	if fi == nil {
		return -1
	}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(s.Uid)
	}
	return -1
}

// A project keeps its user id: allocated once in the store, the same for
// another runner of the same store, distinct between projects; a full
// range is an error that says so.
func TestProjectUIDs(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "separate users per project need a root runner")
	}
	st := kilntest.Embedded(t, nil)
	newHosted := func(base, count int) *hosted.Hosted {
		h, err := hosted.New(&hosted.Config{Store: st, WorkDir: testenv.SharedDir(t), UIDBase: base, UIDCount: count,
			Runner: &runner.Config{Sandbox: runner.SandboxUser}})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b := newHosted(2_000_000, 40), newHosted(2_000_000, 40)
	ctx := context.Background()
	seen := map[uint32]string{}
	for i := range 40 {
		project := fmt.Sprintf("p%d", i)
		ca, err := hosted.ProjectCredential(ctx, a, project)
		if err != nil {
			t.Fatal(err)
		}
		cb, err := hosted.ProjectCredential(ctx, b, project)
		if err != nil {
			t.Fatal(err)
		}
		if ca.Uid != cb.Uid || ca.Gid != ca.Uid || ca.Uid < 2_000_000 || ca.Uid >= 2_000_040 {
			t.Errorf("%s: runner a gives %+v, runner b %+v", project, ca, cb)
		}
		if other, dup := seen[ca.Uid]; dup {
			t.Errorf("%s and %s share user %d", other, project, ca.Uid)
		}
		seen[ca.Uid] = project
	}
	if _, err := hosted.ProjectCredential(ctx, a, "one-too-many"); err == nil || !strings.Contains(err.Error(), "no free user id") {
		t.Errorf("a full range: %v", err)
	}
	if _, err := hosted.New(&hosted.Config{Store: st, WorkDir: testenv.SharedDir(t), UIDBase: 2147483000, UIDCount: 1000}); err == nil {
		t.Error("a range past 2^31 was accepted")
	}
}

// Sandbox user with the runner's folder inside a folder closed to other
// users (a data folder is 0700) cannot work: New says so.
func TestHostedSandboxUserClosedFolder(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "sandbox user needs root")
	}
	st := kilntest.Embedded(t, nil)
	data := t.TempDir() // 0700, like a data folder
	_, err := hosted.New(&hosted.Config{Store: st, WorkDir: filepath.Join(data, "runner"), Runner: &runner.Config{Sandbox: runner.SandboxUser}})
	if !errors.Is(err, runner.ErrSandbox) || !strings.Contains(err.Error(), "closed to other users") {
		t.Errorf("New: %v", err)
	}
}

// The server says at start whether a task's processes all end with it
// (group kills), and why not when they do not.
func TestHostedLogsGroupKill(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	for _, c := range []struct {
		cgroup string
		want   []string
	}{
		{runner.CgroupOff, []string{"group_kill=false", `group_kill_note="off (Config.Cgroup)`}},
		{runner.CgroupAuto, []string{"group_kill="}},
	} {
		var logs bytes.Buffer
		h, err := hosted.New(&hosted.Config{Store: st, WorkDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Runner: &runner.Config{Sandbox: runner.SandboxOff, Cgroup: c.cgroup}})
		if err != nil {
			t.Fatal(err)
		}
		if sb := h.Sandbox(); sb.GroupKill {
			c.want = append(c.want, "group_kill=true", "cgroup="+sb.Cgroup)
		} else if c.cgroup == runner.CgroupAuto {
			c.want = append(c.want, "group_kill=false", "group_kill_note=")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := h.Run(ctx); err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(logs.String(), w) {
				t.Errorf("cgroup %s: no %q in the log:\n%s", c.cgroup, w, logs.String())
			}
		}
	}
}
