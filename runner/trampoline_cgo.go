//go:build linux && cgo

package runner

/*
#cgo CFLAGS: -O2 -Wall

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// The trampoline (trampoline_linux.go) in C, run by a constructor before
// the Go runtime starts: a re-exec of the server's binary costs a few
// milliseconds of CPU less per task than when the runtime and every
// package's initialisation run first. It speaks the same status protocol,
// takes the same marker variable and does the same steps in the same
// order; Main's Go trampoline serves builds without cgo, and a process
// whose environment holds KILN_RUNNER_TRAMPOLINE_GO (tests).

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define KT_VAR "KILN_RUNNER_TRAMPOLINE="
#define KT_GO "KILN_RUNNER_TRAMPOLINE_GO="
#define KT_STATUS 3
#define KT_NLIMITS 6
// The memory limits, last in kt_rlimits, are set right before execve.
#define KT_LATE 2

// Stages, as trampoline_linux.go numbers them.
enum { KT_PARSE = 1, KT_CLOEXEC, KT_SIGMASK, KT_RLIMIT, KT_SETGROUPS, KT_SETGID, KT_SETUID, KT_NONEWPRIVS, KT_EXEC };

static const int kt_rlimits[KT_NLIMITS] = {RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_AS};

static void kt_fail(int stage, int err) {
	unsigned char b[5];
	b[0] = (unsigned char)stage;
	for (int i = 0; i < 4; i++)
		b[1 + i] = (unsigned char)((unsigned)err >> (8 * i));
	ssize_t n = write(KT_STATUS, b, sizeof b);
	(void)n;
	_exit(127);
}

// kt_num reads a decimal number at *s, in [min, max], and moves *s past it.
static int kt_num(const char **s, long long min, long long max, long long *out) {
	const char *p = *s;
	int neg = 0;
	if (*p == '-') {
		neg = 1;
		p++;
	}
	if (*p < '0' || *p > '9')
		return 0;
	long long v = 0;
	while (*p >= '0' && *p <= '9') {
		if (v > (LLONG_MAX - 9) / 10)
			return 0;
		v = v * 10 + (*p - '0');
		p++;
	}
	if (neg)
		v = -v;
	if (v < min || v > max)
		return 0;
	*s = p;
	*out = v;
	return 1;
}

struct kt_spec {
	long long limits[KT_NLIMITS]; // -1 leaves a limit alone
	long long uid, gid;           // -1: keep
	gid_t *groups;
	size_t ngroups;
	int unset_pwd;
};

// kt_parse reads the marker's value, as trampolineSpec.encode writes it:
// "1 <six limits> <uid> <gid> <groups or -> <p or ->".
static int kt_parse(const char *s, struct kt_spec *t) {
	long long v;
	t->groups = NULL;
	t->ngroups = 0;
	if (*s++ != '1' || *s++ != ' ')
		return 0;
	for (int i = 0; i < KT_NLIMITS; i++) {
		if (!kt_num(&s, -1, LLONG_MAX, &t->limits[i]) || *s++ != ' ')
			return 0;
	}
	if (!kt_num(&s, -1, UINT_MAX - 1, &t->uid) || *s++ != ' ')
		return 0;
	if (!kt_num(&s, -1, UINT_MAX - 1, &t->gid) || *s++ != ' ')
		return 0;
	if (*s == '-') {
		s++;
	} else {
		size_t n = 1;
		for (const char *p = s; *p && *p != ' '; p++)
			n += *p == ',';
		t->groups = calloc(n, sizeof(gid_t));
		if (!t->groups)
			return 0;
		for (;;) {
			if (!kt_num(&s, 0, UINT_MAX - 1, &v))
				return 0;
			t->groups[t->ngroups++] = (gid_t)v;
			if (*s != ',')
				break;
			s++;
		}
	}
	if (*s++ != ' ')
		return 0;
	if (*s == 'p')
		t->unset_pwd = 1;
	else if (*s == '-')
		t->unset_pwd = 0;
	else
		return 0;
	return s[1] == '\0';
}

// kt_cloexec sets close-on-exec on every descriptor from KT_STATUS up:
// close_range (Linux 5.11), else one by one from /proc/self/fd.
static int kt_cloexec(void) {
	if (syscall(SYS_close_range, KT_STATUS, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
		return 0;
	if (fcntl(KT_STATUS, F_SETFD, FD_CLOEXEC) != 0)
		return errno;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0; // no /proc: the status pipe at least is set
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end || end == e->d_name || fd < KT_STATUS || fd == dirfd(d))
			continue;
		fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	}
	closedir(d);
	return 0;
}

static void kt_run(int argc, char **argv, char **envp, const char *value) {
	// The handshake byte: "a trampoline is running".
	ssize_t w = write(KT_STATUS, "T", 1);
	(void)w;
	struct kt_spec t;
	if (!kt_parse(value, &t) || argc < 3)
		kt_fail(KT_PARSE, EINVAL);
	size_t n = 0;
	while (envp[n])
		n++;
	char **env = calloc(n + 1, sizeof(char *));
	if (!env)
		kt_fail(KT_PARSE, ENOMEM);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(envp[i], KT_VAR, sizeof KT_VAR - 1) == 0 || (t.unset_pwd && strncmp(envp[i], "PWD=", 4) == 0))
			continue;
		env[k++] = envp[i];
	}
	int err = kt_cloexec();
	if (err)
		kt_fail(KT_CLOEXEC, err);
	sigset_t none;
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
		kt_fail(KT_SIGMASK, errno);
	// Limits, lowered to the hard limit unless root (who may raise it).
	int root = geteuid() == 0;
	struct rlimit rl[KT_NLIMITS];
	for (int i = 0; i < KT_NLIMITS; i++) {
		if (t.limits[i] < 0)
			continue;
		struct rlimit cur;
		if (getrlimit(kt_rlimits[i], &cur) != 0)
			kt_fail(KT_RLIMIT, errno);
		rlim_t want = (rlim_t)t.limits[i];
		if (!root && want > cur.rlim_max)
			want = cur.rlim_max;
		rl[i].rlim_cur = rl[i].rlim_max = want;
	}
	struct rlimit zero = {0, 0};
	if (setrlimit(RLIMIT_CORE, &zero) != 0)
		kt_fail(KT_RLIMIT, errno);
	for (int i = 0; i < KT_NLIMITS - KT_LATE; i++) {
		if (t.limits[i] >= 0 && setrlimit(kt_rlimits[i], &rl[i]) != 0)
			kt_fail(KT_RLIMIT, errno);
	}
	if (t.uid >= 0) {
		if (setgroups(t.ngroups, t.groups) != 0)
			kt_fail(KT_SETGROUPS, errno);
		// Raw: glibc's wrappers would change every thread (there is one).
		if (syscall(SYS_setresgid, (gid_t)t.gid, (gid_t)t.gid, (gid_t)t.gid) != 0)
			kt_fail(KT_SETGID, errno);
		if (syscall(SYS_setresuid, (uid_t)t.uid, (uid_t)t.uid, (uid_t)t.uid) != 0)
			kt_fail(KT_SETUID, errno);
	}
	// No set-user-id program can give the task more privileges.
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		kt_fail(KT_NONEWPRIVS, errno);
	for (int i = KT_NLIMITS - KT_LATE; i < KT_NLIMITS; i++) {
		if (t.limits[i] >= 0 && setrlimit(kt_rlimits[i], &rl[i]) != 0)
			kt_fail(KT_RLIMIT, errno);
	}
	execve(argv[1], argv + 2, env);
	kt_fail(KT_EXEC, errno);
}

__attribute__((constructor)) static void kt_ctor(int argc, char **argv, char **envp) {
	if (!envp)
		return;
	const char *value = NULL;
	for (char **e = envp; *e; e++) {
		if (strncmp(*e, KT_GO, sizeof KT_GO - 1) == 0)
			return;
		if (!value && strncmp(*e, KT_VAR, sizeof KT_VAR - 1) == 0)
			value = *e + sizeof KT_VAR - 1; // the first, as Go's os.LookupEnv
	}
	if (value)
		kt_run(argc, argv, envp, value);
}
*/
import "C"

import "unsafe"

// cTrampoline is true where the trampoline runs in C, before the Go
// runtime starts (a build with cgo).
const cTrampoline = true

// cParseTrampolineSpec is the C trampoline's parser, for tests: it accepts
// exactly what trampolineSpec.encode writes.
func cParseTrampolineSpec(s string) (trampolineSpec, bool) {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	var c C.struct_kt_spec
	ok := C.kt_parse(cs, &c) != 0
	defer C.free(unsafe.Pointer(c.groups))
	if !ok {
		return trampolineSpec{}, false
	}
	t := trampolineSpec{uid: int(c.uid), gid: int(c.gid), unsetPWD: c.unset_pwd != 0}
	for i := range t.limits {
		t.limits[i] = int64(c.limits[i])
	}
	groups := unsafe.Slice(c.groups, int(c.ngroups))
	for _, g := range groups {
		t.groups = append(t.groups, int(g))
	}
	return t, true
}
