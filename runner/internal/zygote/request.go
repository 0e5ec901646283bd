package zygote

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Request is one task for the helper.
type Request struct {
	// Network: a network namespace of its own, with only loopback.
	Network bool
	// CgroupNS: a cgroup namespace, where the kernel has them.
	CgroupNS bool
	// UID and GID are the task's user and group; UID -1 keeps the
	// helper's (root's). Groups are the supplementary groups.
	UID, GID int64
	Groups   []uint32
	// Limits are RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE,
	// RLIMIT_DATA and RLIMIT_AS, in that order; -1 leaves one alone.
	Limits [6]int64
	// TaskDir is the task directory on the host, bound at /tmp/task.
	TaskDir string
	// Path is the program as the task sees it; Argv and Env are its
	// arguments (Argv[0] included) and environment.
	Path string
	Argv []string
	Env  []string
	// HideDirs are covered by an empty folder, HideFiles by /dev/null.
	HideDirs, HideFiles []string
	// Private folders get a fresh tmpfs each (/tmp first: the task
	// directory is mounted below it).
	Private []string
}

// errBadRequest: a string with a NUL byte, or a path that is not absolute.
var errBadRequest = errors.New("the sandbox request has a NUL byte or a relative path")

// Encode returns the request as the helper reads it.
func (r *Request) Encode() ([]byte, error) {
	var b bytes.Buffer
	bad := false
	put := func(s string) {
		if strings.IndexByte(s, 0) >= 0 {
			bad = true
		}
		b.WriteString(s)
		b.WriteByte(0)
	}
	num := func(v int64) { put(strconv.FormatInt(v, 10)) }
	flag := func(v bool) {
		if v {
			put("1")
		} else {
			put("0")
		}
	}
	abs := func(p string) string {
		if !strings.HasPrefix(p, "/") {
			bad = true
		}
		return p
	}
	list := func(items []string) {
		num(int64(len(items)))
		for _, s := range items {
			put(s)
		}
	}
	put("kiln-sandbox-1")
	flag(r.Network)
	flag(r.CgroupNS)
	uid, gid := r.UID, r.GID
	if uid < 0 {
		uid, gid = -1, -1
	}
	num(uid)
	num(gid)
	num(int64(len(r.Groups)))
	for _, g := range r.Groups {
		num(int64(g))
	}
	for _, l := range r.Limits {
		if l < 0 {
			l = -1
		}
		num(l)
	}
	put(abs(r.TaskDir))
	put(abs(r.Path))
	if len(r.Argv) == 0 {
		bad = true
	}
	list(r.Argv)
	list(r.Env)
	num(int64(len(r.HideDirs) + len(r.HideFiles)))
	for _, d := range r.HideDirs {
		put("d/" + abs(d))
	}
	for _, f := range r.HideFiles {
		put("f/" + abs(f))
	}
	num(int64(len(r.Private)))
	for _, p := range r.Private {
		put(abs(p))
	}
	if bad {
		return nil, errBadRequest
	}
	return b.Bytes(), nil
}
