//go:build linux

package runner

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxPooledDirs bounds the task directories a Runner keeps for later tasks,
// and keptIdle how long one waits for its next task: a package no longer
// run leaves no copy of itself on disk for long.
const (
	maxPooledDirs = 64
	keptIdle      = time.Minute
)

// A task directory is kept, once its task has ended and every process of
// the task is known to have exited, for the next task of the same package
// and user: its files are written over in place instead of being made
// anew. Every new file is a new inode, and freeing thousands a second
// makes each new one slow on some file systems (ext4 without a journal
// passes over every inode freed in the last minute); a kept directory
// makes and frees none in the common case.
//
// What the next task finds is what a new directory would give it: reset
// removes every entry prepare did not make (and every one the task
// replaced by another kind, linked elsewhere or gave extended attributes),
// empties the payload and config files, and makes the directories the
// runner's, 0700, before listing them, so that nothing can be added while
// the directory waits. prepare then writes the package's files, the payload
// and the config over the kept ones, with the modes and owner of new ones.
// A directory is only reused for the same package directory and the same
// user: the package directories of a server are per project and checksum,
// so a task can at most leave something for a later task of its own
// project, which runs the project's own code anyway.

// dirKey is what a kept task directory may be reused for.
type dirKey struct {
	pkg      string // Spec.PackageDir
	uid, gid int    // the owner of its files, -1 for the runner's
}

// taskDir is a task directory, new or kept.
type taskDir struct {
	path string
	key  dirKey
	// kept are the entries a kept directory still holds (slash paths,
	// true for a directory); nil for a new directory.
	kept map[string]bool
	// made are the entries prepare made or wrote over (true for a
	// directory): reset keeps only these. Links to the package's files
	// are not among them.
	made map[string]bool
	// since is when it was last kept.
	since time.Time
}

// dirPool keeps the task directories of a Runner.
type dirPool struct {
	mu     sync.Mutex
	closed bool
	n      int
	free   map[dirKey][]*taskDir
	// idle is how long a directory is kept unused (keptIdle when 0);
	// swept is when put last looked for such directories.
	idle  time.Duration
	swept time.Time
}

// get returns a kept directory for key, or nil.
func (p *dirPool) get(key dirKey) *taskDir {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		l := p.free[key]
		if len(l) == 0 {
			return nil
		}
		td := l[len(l)-1]
		p.free[key] = l[:len(l)-1]
		p.n--
		var st unix.Stat_t
		if err := unix.Lstat(td.path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return td
		}
		// Removed by someone else (a cleaner of old files): a new one.
	}
}

// put resets td, whose task has ended with every process of it, and keeps
// it; or removes it if it cannot be reset or the pool is full or closed.
func (p *dirPool) put(td *taskDir) {
	if !td.reset() {
		_ = removeAll(td.path)
		return
	}
	now := time.Now()
	td.since = now
	p.mu.Lock()
	old := p.expired(now)
	kept := !p.closed && p.n < maxPooledDirs
	if kept {
		if p.free == nil {
			p.free = make(map[dirKey][]*taskDir)
		}
		p.free[td.key] = append(p.free[td.key], td)
		p.n++
	}
	p.mu.Unlock()
	if !kept {
		old = append(old, td)
	}
	for _, td := range old {
		_ = removeAll(td.path)
	}
}

// expired takes out of the pool, at most once a second, the directories
// kept unused for longer than the idle time, and returns them; p.mu is
// held.
func (p *dirPool) expired(now time.Time) []*taskDir {
	idle := p.idle
	if idle == 0 {
		idle = keptIdle
	}
	if now.Sub(p.swept) < min(time.Second, idle) {
		return nil
	}
	p.swept = now
	var old []*taskDir
	for key, l := range p.free {
		// Each list is oldest first: get takes from its end.
		n := 0
		for n < len(l) && now.Sub(l[n].since) >= idle {
			n++
		}
		if n == 0 {
			continue
		}
		old = append(old, l[:n]...)
		p.n -= n
		if n == len(l) {
			delete(p.free, key)
		} else {
			p.free[key] = slices.Clone(l[n:])
		}
	}
	return old
}

// close removes the kept directories and keeps no more.
func (p *dirPool) close() error {
	p.mu.Lock()
	free := p.free
	p.free, p.n, p.closed = nil, 0, true
	p.mu.Unlock()
	var errs []error
	for _, l := range free {
		for _, td := range l {
			errs = append(errs, removeAll(td.path))
		}
	}
	return errors.Join(errs...)
}

// Close removes the task directories the Runner keeps for later tasks
// (see Run); a Run after Close makes a new directory for each task and
// removes it at the end. Close does not stop tasks that are running.
func (r *Runner) Close() error { return r.dirs.close() }

// reset readies td, whose task has ended with all its processes, for the
// next task of its key, and reports whether it can be kept (see dirPool).
func (td *taskDir) reset() bool {
	fd, err := unix.Open(td.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	kept := make(map[string]bool, len(td.made))
	ok := td.lock(fd, ".") && td.walk(fd, "", kept)
	_ = unix.Close(fd)
	if ok {
		td.kept, td.made = kept, nil
	}
	return ok
}

// lock makes the directory open as fd (rel, for its extended attributes)
// the runner's and 0700 and reports whether it has no extended attributes
// a task could have set.
func (td *taskDir) lock(fd int, rel string) bool {
	if td.key.uid >= 0 && unix.Fchown(fd, os.Geteuid(), os.Getegid()) != nil {
		return false
	}
	return unix.Fchmod(fd, 0o700) == nil && !taskXattrs(filepath.Join(td.path, rel))
}

// walk goes through the directory open as fd (prefix: its slash path and
// "/", or "" for the task directory), keeps in kept what prepare made and
// the task left as it was, and removes the rest.
func (td *taskDir) walk(fd int, prefix string, kept map[string]bool) bool {
	dup, err := unix.Dup(fd)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(dup), td.path)
	names, err := f.Readdirnames(-1)
	_ = f.Close()
	if err != nil {
		return false
	}
	for _, name := range names {
		rel := prefix + name
		isDir, made := td.made[rel]
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return false
		}
		switch kind := st.Mode & unix.S_IFMT; {
		case made && isDir && kind == unix.S_IFDIR:
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return false
			}
			if td.lock(sub, rel) {
				kept[rel] = true
				ok := td.walk(sub, rel+"/", kept)
				_ = unix.Close(sub)
				if !ok {
					return false
				}
				continue
			}
			_ = unix.Close(sub)
		case made && !isDir && kind == unix.S_IFREG && st.Nlink == 1 && !taskXattrs(filepath.Join(td.path, rel)):
			if prefix == "" && (name == PayloadFileName || name == ConfigFileName) {
				// The task's own data does not wait in the directory.
				if unix.Truncate(filepath.Join(td.path, rel), 0) != nil {
					return false
				}
			}
			kept[rel] = false
			continue
		}
		if removeAll(filepath.Join(td.path, rel)) != nil {
			return false
		}
	}
	return true
}

// taskXattrs reports whether the file at path has extended attributes a
// task may set on its own files (user.*, an access or default ACL), or
// they cannot be read: such a file is not kept.
func taskXattrs(path string) bool {
	var buf [1024]byte
	n, err := unix.Llistxattr(path, buf[:])
	switch {
	case errors.Is(err, unix.ENOTSUP):
		return false
	case err != nil:
		return true
	}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "system.posix_acl") {
			return true
		}
	}
	return false
}

// removeLeft removes what a kept directory held that prepare did not make
// again (the package directory changed since).
func (td *taskDir) removeLeft() error {
	for p := range td.kept {
		if _, ok := td.made[p]; ok {
			continue
		}
		if err := os.RemoveAll(filepath.Join(td.path, filepath.FromSlash(p))); err != nil {
			return err
		}
	}
	return nil
}
