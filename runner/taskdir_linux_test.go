//go:build linux

package runner

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// keptDir reports whether the runner keeps dir for a later task.
func (r *Runner) keptDir(dir string) bool {
	r.dirs.mu.Lock()
	defer r.dirs.mu.Unlock()
	for _, l := range r.dirs.free {
		for _, td := range l {
			if td.path == dir {
				return true
			}
		}
	}
	return false
}

// checkDirDone checks what Run left of an ended task's directory: nothing,
// or a directory the runner keeps for the next task of the package pkg
// (see dirPool): the runner's, 0700, its payload and config files empty,
// and nothing the package (pkg, "" for none) does not have.
func checkDirDone(t testing.TB, r *Runner, pkg string, res Result) {
	t.Helper()
	st, err := os.Lstat(res.TaskDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		t.Errorf("task dir %s: %v", res.TaskDir, err)
		return
	case !r.keptDir(res.TaskDir):
		t.Errorf("task dir %s still there, and not kept for a later task", res.TaskDir)
		return
	}
	if sys, _ := st.Sys().(*syscall.Stat_t); !st.IsDir() || st.Mode().Perm() != 0o700 || sys == nil || int(sys.Uid) != os.Geteuid() {
		t.Errorf("kept task dir %s: %v, %+v", res.TaskDir, st.Mode(), st.Sys())
	}
	err = filepath.WalkDir(res.TaskDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == res.TaskDir {
			return err
		}
		rel, _ := filepath.Rel(res.TaskDir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if rel == PayloadFileName || rel == ConfigFileName {
			if !info.Mode().IsRegular() || info.Size() != 0 {
				t.Errorf("kept task dir: %s is %v, %d bytes", rel, info.Mode(), info.Size())
			}
			return nil
		}
		var want fs.FileInfo
		if pkg != "" {
			want, err = os.Lstat(filepath.Join(pkg, rel))
		}
		switch sys, _ := info.Sys().(*syscall.Stat_t); {
		case pkg == "" || err != nil:
			t.Errorf("kept task dir holds %s (%v), which the package has not", rel, info.Mode())
		case want.IsDir() != info.IsDir() || !info.IsDir() && !info.Mode().IsRegular():
			t.Errorf("kept task dir: %s is %v, in the package %v", rel, info.Mode(), want.Mode())
		case info.IsDir() && (info.Mode().Perm() != 0o700 || int(sys.Uid) != os.Geteuid()):
			t.Errorf("kept task dir: directory %s is %v, uid %d", rel, info.Mode(), sys.Uid)
		case !info.IsDir() && sys.Nlink != 1:
			t.Errorf("kept task dir: %s has %d links", rel, sys.Nlink)
		}
		return nil
	})
	if err != nil {
		t.Errorf("kept task dir %s: %v", res.TaskDir, err)
	}
}

// A task directory is kept for the next task of the same package only
// where every process of the task is known to have ended, and the next
// task finds what a new directory would give it, whatever the task before
// did to it: files changed, added, linked or replaced by links to files
// outside, modes changed, and a process left behind that writes into it
// after the task's end.
func TestTaskDirKept(t *testing.T) {
	t.Parallel()
	forEachLimiter(t, func(t *testing.T, base Config) {
		t.Helper()
		testTaskDirKept(t, newRunner(t, base.with(Config{})))
	})
	// Without group kills, what a task leaves behind may outlive it: its
	// directory is never kept.
	t.Run("cgroup-off", func(t *testing.T) {
		t.Parallel()
		testTaskDirKept(t, newRunner(t, Config{Sandbox: SandboxOff, Limiter: LimiterTrampoline, Cgroup: CgroupOff}))
	})
}

func testTaskDirKept(t *testing.T, r *Runner) {
	t.Helper()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("outside"), 0o666); err != nil {
		t.Fatal(err)
	}
	pkg := pkgDir(t, entry{name: "run.sh", data: []byte(`
case "$(cat "$PAYLOAD_FILE")" in
one)
echo changed >> lib/data.txt; echo new > extra; mkdir -p made/deep; echo x > made/deep/f
ln lib/data.txt hard; ln -s /etc/passwd link; rm bin; mkdir bin
rm "$CONFIG_FILE"; ln -s "$0" "$CONFIG_FILE"
chmod 777 lib; chmod 000 lib/data.txt run.sh
setsid sh -c 'sleep 0.3; echo late > "$PAYLOAD_FILE"; echo late > lib/late' > /dev/null 2>&1 &
sleep 0.1 # the process above has left the task's process group
;;
two)
sleep 0.8
find . | sort; cat "$PAYLOAD_FILE" "$CONFIG_FILE" lib/data.txt; ls -ld lib | cut -c1-10; stat -c %a run.sh lib/data.txt bin
;;
esac
`), mode: 0o644}, entry{name: "lib/data.txt", data: []byte("data\n"), mode: 0o644}, entry{name: "bin", data: []byte("b"), mode: 0o755})
	spec := Spec{TaskID: "k1", PackageDir: pkg, Runtime: "sh", File: "run.sh", Payload: []byte("one"), Config: []byte(victim)}
	res1 := run(context.Background(), t, r, spec)
	if res1.Status != StatusComplete {
		t.Fatalf("first task: %+v", res1)
	}
	checkDirDone(t, r, pkg, res1)
	var log syncBuffer
	spec.TaskID, spec.Payload, spec.Config, spec.Log = "k2", []byte("two\n"), []byte("c2\n"), &log
	res2 := run(context.Background(), t, r, spec)
	if res2.Status != StatusComplete {
		t.Fatalf("second task: %+v; log:\n%s", res2, log.String())
	}
	want := "." + "\n./__config__\n./__payload__\n./bin\n./lib\n./lib/data.txt\n./run.sh\ntwo\nc2\ndata\ndrwxr-x---\n644\n644\n755\n"
	if got := log.String(); got != want {
		t.Errorf("the second task saw:\n%s\nwant:\n%s", got, want)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "outside" {
		t.Errorf("the file outside: %q, %v", b, err)
	}
	reused := r.ns != nil || r.cg != nil
	if (res2.TaskDir == res1.TaskDir) != reused {
		t.Errorf("directories %s then %s; sandbox %v: kept %v", res1.TaskDir, res2.TaskDir, r.Sandbox(), reused)
	}
	// Another package gets a directory of its own.
	res3 := run(context.Background(), t, r, Spec{TaskID: "k3", PackageDir: shPkg(t, "true"), Runtime: "sh", File: "run.sh"})
	if res3.Status != StatusComplete || res3.TaskDir == res2.TaskDir {
		t.Errorf("another package: %+v (the first's directory %s)", res3, res2.TaskDir)
	}
}

// reset keeps only the entries prepare made, as it made them.
func TestTaskDirReset(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(PayloadFileName, "secret")
	write(ConfigFileName, "secret")
	write("keep", "k")
	write("d/keep", "k")
	write("attr", "a")
	write("linked", "l")
	write("extra", "e")
	write("d/extra", "e")
	write("was-file/x", "x")
	if err := os.Link(filepath.Join(dir, "linked"), filepath.Join(dir, "d", "other-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "keep"), filepath.Join(dir, "sym")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "attr"), "user.kiln", []byte("v"), 0); err != nil {
		t.Logf("no user extended attributes here: %v", err)
	}
	td := &taskDir{path: dir, key: dirKey{uid: -1, gid: -1}, made: map[string]bool{
		PayloadFileName: false, ConfigFileName: false, "keep": false, "d": true, "d/keep": false,
		"attr": false, "linked": false, "was-file": false, "sym": false, "gone": false,
	}}
	if !td.reset() {
		t.Fatal("reset: false")
	}
	want := map[string]bool{PayloadFileName: false, ConfigFileName: false, "keep": false, "d": true, "d/keep": false}
	if _, err := unix.Listxattr(filepath.Join(dir, "keep"), nil); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "attr")); err == nil {
			t.Errorf("a file with a user attribute kept")
		}
	}
	if diff := cmp.Diff(want, td.kept); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	var left []string
	_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		left = append(left, rel)
		return err
	})
	if diff := cmp.Diff([]string{".", ConfigFileName, PayloadFileName, "d", "d/keep", "keep"}, left); diff != "" {
		t.Errorf("left in the directory (-want +got):\n%s", diff)
	}
	for _, name := range []string{PayloadFileName, ConfigFileName} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() != 0 {
			t.Errorf("%s after reset: %v, %v", name, st, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "k" {
		t.Errorf("a kept copy: %q, %v", b, err)
	}
	for _, name := range []string{".", "d"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s after reset: %v, %v", name, st, err)
		}
	}
}

// A directory kept unused for longer than the idle time is removed by the
// next directory kept, and a package no longer run leaves nothing behind.
func TestTaskDirExpiry(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	if r.ns == nil && r.cg == nil {
		t.Skipf("no task directory is kept here: %v", r.Sandbox())
	}
	r.dirs.idle = 50 * time.Millisecond
	first := run(context.Background(), t, r, Spec{TaskID: "e1", PackageDir: shPkg(t, "true"), Runtime: "sh", File: "run.sh"})
	if !r.keptDir(first.TaskDir) {
		t.Fatalf("%s not kept", first.TaskDir)
	}
	time.Sleep(100 * time.Millisecond)
	second := run(context.Background(), t, r, Spec{TaskID: "e2", PackageDir: shPkg(t, "true"), Runtime: "sh", File: "run.sh"})
	if r.keptDir(first.TaskDir) || !r.keptDir(second.TaskDir) {
		t.Errorf("kept: the first %v, the second %v", r.keptDir(first.TaskDir), r.keptDir(second.TaskDir))
	}
	if _, err := os.Stat(first.TaskDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the first task's directory, unused for longer than the idle time: %v", err)
	}
}

// The package's Run, whose Runner no one closes, keeps no directory.
func TestRunDefaultKeepsNoDir(t *testing.T) {
	t.Parallel()
	res, err := Run(context.Background(), Spec{TaskID: "default", Command: []string{"true"}, Payload: []byte("p")})
	if err != nil || res.Status != StatusComplete {
		t.Fatalf("Run: %v, %+v", err, res)
	}
	if _, err := os.Stat(res.TaskDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("task dir %s: %v", res.TaskDir, err)
	}
}

// A kept directory changed by someone else while it waited (a cleaner of
// old files) gives way to a new one: the task runs.
func TestTaskDirChangedWhileKept(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{})
	if r.ns == nil && r.cg == nil {
		t.Skipf("no task directory is kept here: %v", r.Sandbox())
	}
	pkg := shPkg(t, `cat "$PAYLOAD_FILE"`)
	for i, change := range []func(dir string) error{
		func(dir string) error { return os.Remove(filepath.Join(dir, "run.sh")) },
		func(dir string) error { return os.RemoveAll(dir) },
	} {
		first := run(context.Background(), t, r, Spec{TaskID: "w1", PackageDir: pkg, Runtime: "sh", File: "run.sh"})
		if !r.keptDir(first.TaskDir) {
			t.Fatalf("%s not kept", first.TaskDir)
		}
		if err := change(first.TaskDir); err != nil {
			t.Fatal(err)
		}
		var log syncBuffer
		second := run(context.Background(), t, r, Spec{TaskID: "w2", PackageDir: pkg, Runtime: "sh", File: "run.sh", Payload: []byte("ran"), Log: &log})
		if second.Status != StatusComplete || log.String() != "ran" || second.TaskDir == first.TaskDir {
			t.Errorf("change %d: %+v; log %q (the first task's directory %s)", i, second, log.String(), first.TaskDir)
		}
		if _, err := os.Stat(first.TaskDir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("change %d: the changed directory: %v", i, err)
		}
	}
}
