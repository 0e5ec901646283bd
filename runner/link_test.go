//go:build linux

package runner

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// The package of TestPackageLinks: it tries to change its files, then
// prints what it could do.
const linkProbeScript = `try() { n=$1; shift; if "$@" 2>/dev/null; then echo "$n: yes"; else echo "$n: no"; fi; }
try write-in-place sh -c 'echo task >> data.txt'
try truncate sh -c ': > lib/a.txt'
try chmod chmod 0777 data.txt
try touch-time touch -d 2000-01-01 data.txt
try new-file sh -c 'echo new > made.txt'
try replace sh -c 'echo mine > lib/b.txt.new && mv lib/b.txt.new lib/b.txt'
try delete rm lib/c.txt
echo "data: $(cat data.txt)"
`

// TestPackageLinks runs a package with Config.LinkPackage where the task
// may not change the package's files (a sandbox that switches users): its
// files are links to the package's, which the task can read, delete and
// replace in its own folder but not write, truncate, chmod or touch; the
// package is left as it was. Without LinkPackage, and where the task runs
// as the runner's own user, every file is a copy the task may change.
func TestPackageLinks(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "tasks of another user need a root runner")
	}
	pkg := pkgDir(t,
		entry{name: "run.sh", data: []byte(linkProbeScript), mode: 0o644},
		entry{name: "data.txt", data: []byte("package\n"), mode: 0o644},
		entry{name: "lib/a.txt", data: []byte("a\n"), mode: 0o644},
		entry{name: "lib/b.txt", data: []byte("b\n"), mode: 0o644},
		entry{name: "lib/c.txt", data: []byte("c\n"), mode: 0o644},
		entry{name: "prog", data: []byte("#!/bin/sh\necho prog ran\n"), mode: 0o644})
	root, err := os.OpenRoot(pkg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = root.Close() })
	snapshot := func() map[string]string {
		out := map[string]string{}
		_ = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := fs.ReadFile(root.FS(), p)
				fi, _ := d.Info()
				out[p] = fi.Mode().String() + " " + string(b)
			}
			return nil
		})
		return out
	}
	before := snapshot()
	for _, tc := range []struct {
		name  string
		sb    Sandbox
		link  bool // Config.LinkPackage
		links bool // links wanted
	}{
		{"user", SandboxUser, true, true},
		{"user/copies", SandboxUser, false, false},
		{"off-as-root", SandboxOff, true, false},
		{"ns", SandboxNamespaces, true, true},
		{"ns/copies", SandboxNamespaces, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := sandboxRunner(t, Config{Sandbox: tc.sb, WorkDir: testenv.SharedDir(t), LinkPackage: tc.link})
			var log syncBuffer
			res := run(context.Background(), t, r, Spec{PackageDir: pkg, Runtime: "sh", File: "run.sh", Log: &log, Keep: true})
			t.Cleanup(func() { _ = removeAll(res.TaskDir) })
			if res.Status != StatusComplete {
				t.Fatalf("result %+v, log:\n%s", res, log.String())
			}
			want := map[bool]string{true: "no", false: "yes"}[tc.links]
			for _, step := range []string{"write-in-place", "truncate", "chmod", "touch-time"} {
				if !strings.Contains(log.String(), step+": "+want+"\n") {
					t.Errorf("%s: want %q, log:\n%s", step, want, log.String())
				}
			}
			for _, step := range []string{"new-file", "replace", "delete"} {
				if !strings.Contains(log.String(), step+": yes\n") {
					t.Errorf("%s: the task could not, log:\n%s", step, log.String())
				}
			}
			for _, name := range []string{"data.txt", "lib/a.txt", "run.sh"} {
				pi, err1 := os.Stat(filepath.Join(pkg, name))
				ti, err2 := os.Stat(filepath.Join(res.TaskDir, name))
				if err1 != nil || err2 != nil || os.SameFile(pi, ti) != tc.links {
					t.Errorf("%s: the task's file is the package's: %v, want %v (%v, %v)", name, !tc.links, tc.links, err1, err2)
				}
			}
			// The folders are the task's own, whatever its files are.
			li, err := os.Stat(filepath.Join(res.TaskDir, "lib"))
			if err != nil || (tc.sb != SandboxOff && li.Sys().(*syscall.Stat_t).Uid != NobodyID) {
				t.Errorf("lib: %v, %v", li, err)
			}
			if got := snapshot(); !mapsEqual(got, before) {
				t.Errorf("the package changed:\n%v\nwas\n%v", got, before)
			}
		})
	}

	// A program without execute bits (a zip made on Windows) runs from an
	// executable copy of its own; the package's file keeps its mode.
	r := sandboxRunner(t, Config{Sandbox: SandboxUser, WorkDir: testenv.SharedDir(t), LinkPackage: true})
	var log syncBuffer
	res := run(context.Background(), t, r, Spec{PackageDir: pkg, File: "prog", Log: &log, Keep: true})
	t.Cleanup(func() { _ = removeAll(res.TaskDir) })
	pi, _ := os.Stat(filepath.Join(pkg, "prog"))
	ti, err := os.Stat(filepath.Join(res.TaskDir, "prog"))
	if res.Status != StatusComplete || !strings.Contains(log.String(), "prog ran") || err != nil ||
		os.SameFile(pi, ti) || ti.Mode().Perm() != 0o755 || pi.Mode().Perm() != 0o644 {
		t.Errorf("prog: result %+v, log %q, task's %v, package's %v (%v)", res, log.String(), ti.Mode(), pi.Mode(), err)
	}
	if got := snapshot(); !mapsEqual(got, before) {
		t.Errorf("the package changed:\n%v\nwas\n%v", got, before)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// fakeInfo is an fs.FileInfo with the Stat_t that linkable reads.
type fakeInfo struct {
	fs.FileInfo
	st syscall.Stat_t
}

func (f fakeInfo) Mode() fs.FileMode { return fs.FileMode(f.st.Mode & 0o777) }
func (f fakeInfo) Sys() any          { return &f.st }

// TestLinkable: a file is linked only where the task can neither write it
// nor change its mode: a task user that is not root and not the file's
// owner, a file writable by its owner alone, without set-id bits.
func TestLinkable(t *testing.T) {
	t.Parallel()
	const task = 1000
	for _, tc := range []struct {
		name string
		uid  uint32
		mode uint32
		own  int
		want bool
	}{
		{"root's 0644 file, task 1000", 0, 0o644, task, true},
		{"root's 0755 file", 0, 0o755, task, true},
		{"the task's own file", task, 0o644, task, false},
		{"a task running as root", 5, 0o644, 0, false},
		{"a task of the runner's user", 5, 0o644, -1, false},
		{"group-writable", 0, 0o664, task, false},
		{"writable by others", 0, 0o646, task, false},
		{"setuid", 0, 0o4755, task, false},
		{"setgid", 0, 0o2755, task, false},
		{"sticky", 0, 0o1644, task, false},
	} {
		fi := fakeInfo{st: syscall.Stat_t{Uid: tc.uid, Mode: syscall.S_IFREG | tc.mode}}
		if got := linkable(fi, owner{uid: tc.own, gid: tc.own}); got != tc.want {
			t.Errorf("%s: linkable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
