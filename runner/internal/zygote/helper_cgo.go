//go:build linux && cgo

package zygote

/*
#cgo CFLAGS: -O2 -Wall

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

// The helper's side of the protocol (see doc.go). It runs in a process of
// its own, started from the server's binary: the constructor below takes
// over before the Go runtime starts, so the helper is single-threaded C
// and may fork freely.

#define KZ_ARG0 "kiln-sandbox-helper"
#define KZ_SOCK 3
#define KZ_LOG 20
#define KZ_STAT 21
#define KZ_MAX_REQUEST (64 << 20)

// Stages of the start handshake, numbered as the runner's trampoline
// numbers its own (runner/trampoline_linux.go) and continued.
#define KZ_STAGE_RLIMIT 4
#define KZ_STAGE_SETGROUPS 5
#define KZ_STAGE_SETGID 6
#define KZ_STAGE_SETUID 7
#define KZ_STAGE_NONEWPRIVS 8
#define KZ_STAGE_EXEC 9
#define KZ_STAGE_NAMESPACES 10
#define KZ_STAGE_MOUNT 11
#define KZ_STAGE_FORK 12
#define KZ_STAGE_CHDIR 13
#define KZ_STAGE_NETWORK 14
#define KZ_STAGE_STDIN 15

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x1000
#endif
#define KZ_OPEN_TREE_CLONE 1
#define KZ_AT_RECURSIVE 0x8000
#define KZ_MOVE_MOUNT_F_EMPTY_PATH 0x4
#define KZ_MOUNT_ATTR_RDONLY 0x1
#define KZ_MOUNT_ATTR_NOSUID 0x2
#define KZ_MOUNT_ATTR_NODEV 0x4

struct kz_mount_attr {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static const int kz_rlimits[6] = {RLIMIT_CPU, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_AS};

// A request, parsed: pointers into the request's buffer.
struct kz_req {
	int newnet;   // a network namespace of its own, with loopback up
	int cgroupns; // a cgroup namespace, if the kernel has them
	long long uid, gid;
	int ngroups;
	gid_t *groups;
	long long limits[6]; // -1: leave alone
	char *taskdir;       // on the host
	char *path;          // the program, as the task sees it
	char **argv, **envv;
	int nhide;
	char **hide; // "d/path" or "f/path"
	int nprivate;
	char **private;
};

static int kz_server;
static int kz_server_fd = -1; // a pidfd of the server

// kz_server_gone reports whether the server has exited (its pidfd is
// readable then): a process it started must not outlive it.
static int kz_server_gone(void) {
	struct pollfd p = {.fd = kz_server_fd, .events = POLLIN};
	return kz_server_fd < 0 || poll(&p, 1, 0) != 0;
}

// kz_fail reports a failed stage on the status pipe ('T', the stage, the
// errno in little-endian) and exits. tdone: the 'T' was written already.
static void kz_fail(int stage, int err, int tdone) {
	unsigned char b[6] = {'T', (unsigned char)stage, (unsigned char)err, (unsigned char)(err >> 8),
			      (unsigned char)(err >> 16), (unsigned char)(err >> 24)};
	ssize_t n = write(KZ_STAT, tdone ? b + 1 : b, tdone ? 5 : 6);
	(void)n;
	_exit(126);
}

static int kz_status(int st) {
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

static void kz_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
	if (mount(src, dst, type, flags, data) != 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
}

// kz_dev fills a fresh /dev: the usual device nodes, links and mount
// points, as bubblewrap's --dev does.
static void kz_dev(void) {
	static const struct {
		const char *name;
		unsigned maj, min;
	} nodes[] = {{"/dev/null", 1, 3}, {"/dev/zero", 1, 5}, {"/dev/full", 1, 7},
		     {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
	static const struct {
		const char *target, *name;
	} links[] = {{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		     {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
		     {"/proc/kcore", "/dev/core"}, {"pts/ptmx", "/dev/ptmx"}};
	kz_mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=0755");
	for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
		if (mknod(nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) != 0 ||
		    chmod(nodes[i].name, 0666) != 0)
			kz_fail(KZ_STAGE_MOUNT, errno, 0);
	}
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		if (symlink(links[i].target, links[i].name) != 0)
			kz_fail(KZ_STAGE_MOUNT, errno, 0);
	}
	if (mkdir("/dev/shm", 0755) != 0 || mkdir("/dev/pts", 0755) != 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
	kz_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620");
}

// kz_mounts builds the task's view of the files, in the new mount
// namespace: the host's, every mount read-only, nosuid and nodev; a fresh
// /dev, /proc and private folders; the hidden paths covered; the task
// directory, writable, at /tmp/task.
static void kz_mounts(struct kz_req *q) {
	kz_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	// The task directory, cloned before the host's folders go read-only
	// and /tmp is covered; attached at /tmp/task last.
	int task = (int)syscall(SYS_open_tree, AT_FDCWD, q->taskdir, KZ_OPEN_TREE_CLONE | O_CLOEXEC);
	if (task < 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
	struct kz_mount_attr a = {.attr_set = KZ_MOUNT_ATTR_RDONLY | KZ_MOUNT_ATTR_NOSUID | KZ_MOUNT_ATTR_NODEV};
	if (syscall(SYS_mount_setattr, AT_FDCWD, "/", KZ_AT_RECURSIVE, &a, sizeof a) != 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
	kz_dev();
	for (int i = 0; i < q->nprivate; i++)
		kz_mount("tmpfs", q->private[i], "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	kz_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	for (int i = 0; i < q->nhide; i++) {
		const char *h = q->hide[i] + 2;
		if (q->hide[i][0] == 'd')
			kz_mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
		else // reads find nothing, writes go nowhere
			kz_mount("/dev/null", h, NULL, MS_BIND, NULL);
	}
	if (mkdir("/tmp/task", 0755) != 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
	struct kz_mount_attr t = {.attr_set = KZ_MOUNT_ATTR_NOSUID | KZ_MOUNT_ATTR_NODEV};
	if (syscall(SYS_mount_setattr, task, "", AT_EMPTY_PATH, &t, sizeof t) != 0 ||
	    syscall(SYS_move_mount, task, "", AT_FDCWD, "/tmp/task", KZ_MOVE_MOUNT_F_EMPTY_PATH) != 0)
		kz_fail(KZ_STAGE_MOUNT, errno, 0);
	close(task);
}

// kz_loopback brings up lo in a new network namespace.
static void kz_loopback(void) {
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		kz_fail(KZ_STAGE_NETWORK, errno, 0);
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
		kz_fail(KZ_STAGE_NETWORK, errno, 0);
	close(s);
}

// kz_task is the task's process (pid 2 of the sandbox), started with
// CLONE_VM | CLONE_VFORK: it shares pid 1's memory, which waits, until its
// exec. Its descriptors, signal mask, limits, user, no_new_privs, working
// directory, then the program.
static int kz_task(void *arg) {
	struct kz_req *q = arg;
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (in < 0 || dup2(in, 0) != 0 || dup2(KZ_LOG, 1) != 1 || dup2(KZ_LOG, 2) != 2)
		kz_fail(KZ_STAGE_STDIN, errno, 0);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct rlimit rl = {0, 0};
	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		kz_fail(KZ_STAGE_RLIMIT, errno, 0);
	for (int i = 0; i < 6; i++) {
		if (q->limits[i] < 0)
			continue;
		rl.rlim_cur = rl.rlim_max = (rlim_t)q->limits[i];
		if (setrlimit(kz_rlimits[i], &rl) != 0)
			kz_fail(KZ_STAGE_RLIMIT, errno, 0);
	}
	if (q->uid >= 0) {
		if (setgroups((size_t)q->ngroups, q->groups) != 0)
			kz_fail(KZ_STAGE_SETGROUPS, errno, 0);
		if (setresgid((gid_t)q->gid, (gid_t)q->gid, (gid_t)q->gid) != 0)
			kz_fail(KZ_STAGE_SETGID, errno, 0);
		if (setresuid((uid_t)q->uid, (uid_t)q->uid, (uid_t)q->uid) != 0)
			kz_fail(KZ_STAGE_SETUID, errno, 0);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		kz_fail(KZ_STAGE_NONEWPRIVS, errno, 0);
	if (chdir("/tmp/task") != 0)
		kz_fail(KZ_STAGE_CHDIR, errno, 0);
	// 'T' now, its end at the exec (the status pipe closes on exec): the
	// runner's handshake.
	if (write(KZ_STAT, "T", 1) != 1)
		_exit(126);
	execve(q->path, q->argv, q->envv);
	kz_fail(KZ_STAGE_EXEC, errno, 1);
	return 0;
}

// A sandbox's pid 1 shares the helper's memory (CLONE_VM): starting it
// copies no page tables, and its exit frees none, which were most of the
// helper's cost per task when pid 1 was a fork. Whatever pid 1 and its task
// use before the exec lives in a slot of its own, which the helper takes
// back only once pid 1 has exited (kz_reap): its stack, the stack its task
// starts on, the descriptors it was given and the request.
#define KZ_STACK (128 << 10)
#define KZ_GUARD 4096

struct kz_slot {
	struct kz_slot *next;
	char *mem;    // guard page, the task's stack, guard page, pid 1's stack
	int pidfd;    // of pid 1, while the slot is taken; -1 when free
	int fds[4];   // as received: the request, the log, the status, the info
	char *buf;    // the request's bytes, which q points into
	struct kz_req q;
};

static struct kz_slot *kz_slots;

// kz_init is pid 1 of the sandbox's PID namespace and the process the
// runner waits for: a child of the server (CLONE_PARENT), the leader of
// the task's session and process group. It builds the mounts, starts the
// task, reaps whatever the PID namespace leaves to it and exits as the
// task did (a death by signal N as 128+N); its exit ends every other
// process of the sandbox. It runs on its slot's stack, in the helper's
// memory, beside the helper, and calls no allocator: it writes nothing
// outside its slot but errno, which it shares with the helper (a call of
// the helper's failing at the same instant could change the number pid 1
// reports with a failed stage, never the stage).
static int kz_init(void *arg) {
	struct kz_slot *sl = arg;
	struct kz_req *q = &sl->q;
	const int *fds = sl->fds;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (kz_server_gone())
		_exit(125);
	if (dup3(fds[1], KZ_LOG, O_CLOEXEC) < 0 || dup3(fds[2], KZ_STAT, O_CLOEXEC) < 0)
		_exit(125);
	// Nothing else of the helper's reaches the sandbox: above all not its
	// socket, through which a request starts a process as anyone.
	if (syscall(SYS_close_range, 3, KZ_LOG - 1, 0) != 0 || syscall(SYS_close_range, KZ_STAT + 1, ~0U, 0) != 0)
		_exit(125);
	setsid();
	umask(022);
	if (q->cgroupns)
		(void)unshare(CLONE_NEWCGROUP); // where the kernel has them
	kz_mounts(q);
	if (q->newnet)
		kz_loopback();
	pid_t task = clone(kz_task, sl->mem + KZ_GUARD + KZ_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, q);
	if (task < 0)
		kz_fail(KZ_STAGE_FORK, errno, 0);
	close(KZ_LOG);
	close(KZ_STAT);
	for (;;) {
		int st;
		pid_t w = waitpid(-1, &st, 0);
		if (w == task)
			_exit(kz_status(st));
		if (w < 0 && errno != EINTR)
			_exit(1);
	}
}

// Parsing: the request is a run of NUL-terminated strings.
struct kz_cur {
	char *p, *end;
	int bad;
};

static char *kz_next(struct kz_cur *c) {
	if (c->bad || c->p >= c->end) {
		c->bad = 1;
		return "";
	}
	char *s = c->p;
	char *z = memchr(s, 0, (size_t)(c->end - s));
	if (z == NULL) {
		c->bad = 1;
		return "";
	}
	c->p = z + 1;
	return s;
}

static long long kz_num(struct kz_cur *c, long long min, long long max) {
	char *s = kz_next(c), *e;
	errno = 0;
	long long v = strtoll(s, &e, 10);
	if (*s == 0 || *e != 0 || errno != 0 || v < min || v > max)
		c->bad = 1;
	return v;
}

static char **kz_list(struct kz_cur *c, int *count, int max) {
	int n = (int)kz_num(c, 0, max);
	if (c->bad)
		return NULL;
	char **out = calloc((size_t)n + 1, sizeof *out);
	if (out == NULL) {
		c->bad = 1;
		return NULL;
	}
	for (int i = 0; i < n; i++)
		out[i] = kz_next(c);
	if (count)
		*count = n;
	return out;
}

static int kz_parse(struct kz_req *q, char *buf, size_t len) {
	struct kz_cur c = {buf, buf + len, 0};
	if (strcmp(kz_next(&c), "kiln-sandbox-1") != 0)
		return -EPROTO;
	q->newnet = (int)kz_num(&c, 0, 1);
	q->cgroupns = (int)kz_num(&c, 0, 1);
	q->uid = kz_num(&c, -1, 0xfffffffe);
	q->gid = kz_num(&c, -1, 0xfffffffe);
	q->ngroups = (int)kz_num(&c, 0, 65536);
	if (c.bad)
		return -EPROTO;
	q->groups = calloc((size_t)q->ngroups + 1, sizeof(gid_t));
	if (q->groups == NULL)
		return -ENOMEM;
	for (int i = 0; i < q->ngroups; i++)
		q->groups[i] = (gid_t)kz_num(&c, 0, 0xfffffffe);
	for (int i = 0; i < 6; i++)
		q->limits[i] = kz_num(&c, -1, 0x7fffffffffffffffLL);
	q->taskdir = kz_next(&c);
	q->path = kz_next(&c);
	q->argv = kz_list(&c, NULL, 1 << 20);
	q->envv = kz_list(&c, NULL, 1 << 20);
	q->hide = kz_list(&c, &q->nhide, 1 << 16);
	q->private = kz_list(&c, &q->nprivate, 64);
	if (c.bad || c.p != c.end || q->argv == NULL || q->argv[0] == NULL || q->taskdir[0] != '/' || q->path[0] != '/')
		return -EPROTO;
	for (int i = 0; i < q->nhide; i++) {
		const char *h = q->hide[i];
		if ((h[0] != 'd' && h[0] != 'f') || h[1] != '/' || h[2] != '/')
			return -EPROTO;
	}
	for (int i = 0; i < q->nprivate; i++) {
		if (q->private[i][0] != '/')
			return -EPROTO;
	}
	return 0;
}

static void kz_free(struct kz_req *q) {
	free(q->groups);
	free(q->argv);
	free(q->envv);
	free(q->hide);
	free(q->private);
}

// kz_reap takes back the slots whose pid 1 has exited. A pidfd reads
// ready only once its process is a zombie, and a namespace's pid 1 becomes
// one only after every other process in it has gone: nothing of that
// sandbox can touch the slot any more.
static void kz_reap(void) {
	struct pollfd p[64];
	struct kz_slot *w[64];
	struct kz_slot *s = kz_slots;
	while (s != NULL) {
		int n = 0;
		for (; s != NULL && n < 64; s = s->next) {
			if (s->pidfd >= 0) {
				p[n] = (struct pollfd){.fd = s->pidfd, .events = POLLIN};
				w[n++] = s;
			}
		}
		if (n == 0 || poll(p, (nfds_t)n, 0) <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (p[i].revents == 0)
				continue;
			kz_free(&w[i]->q);
			free(w[i]->buf);
			w[i]->buf = NULL;
			close(w[i]->pidfd);
			w[i]->pidfd = -1;
		}
	}
}

// kz_slot_get returns a free slot, making one if none is.
static struct kz_slot *kz_slot_get(void) {
	kz_reap();
	for (struct kz_slot *s = kz_slots; s != NULL; s = s->next) {
		if (s->pidfd < 0 && s->buf == NULL)
			return s;
	}
	struct kz_slot *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	size_t size = 2 * (KZ_GUARD + KZ_STACK);
	s->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (s->mem == MAP_FAILED || mprotect(s->mem, KZ_GUARD, PROT_NONE) != 0 ||
	    mprotect(s->mem + KZ_GUARD + KZ_STACK, KZ_GUARD, PROT_NONE) != 0) {
		if (s->mem != MAP_FAILED)
			munmap(s->mem, size);
		free(s);
		return NULL;
	}
	s->pidfd = -1;
	s->next = kz_slots;
	kz_slots = s;
	return s;
}

// kz_spawn reads the request from fds[0] and starts its stage; it returns
// the stage's pid or -errno.
static int kz_spawn(const int *fds) {
	struct stat st;
	if (fstat(fds[0], &st) != 0)
		return -errno;
	if (st.st_size <= 0 || st.st_size > KZ_MAX_REQUEST)
		return -EMSGSIZE;
	size_t len = (size_t)st.st_size;
	struct kz_slot *sl = kz_slot_get();
	if (sl == NULL)
		return -ENOMEM;
	char *buf = malloc(len);
	if (buf == NULL)
		return -ENOMEM;
	for (size_t off = 0; off < len;) {
		ssize_t n = pread(fds[0], buf + off, len - off, (off_t)off);
		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EPROTO;
		}
		off += (size_t)n;
	}
	memset(&sl->q, 0, sizeof sl->q);
	int err = kz_parse(&sl->q, buf, len);
	if (err != 0) {
		kz_free(&sl->q);
		free(buf);
		return err;
	}
	sl->buf = buf;
	memcpy(sl->fds, fds, sizeof sl->fds);
	// The sandbox's pid 1 is the server's child, not the helper's: the
	// runner waits for it as for any process it started.
	int flags = CLONE_VM | CLONE_PIDFD | CLONE_PARENT | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC;
	if (sl->q.newnet)
		flags |= CLONE_NEWNET;
	int pidfd = -1;
	pid_t pid = clone(kz_init, sl->mem + 2 * (KZ_GUARD + KZ_STACK), flags, sl, &pidfd);
	if (pid < 0) {
		err = -errno;
		kz_free(&sl->q);
		free(buf);
		sl->buf = NULL;
		return err;
	}
	sl->pidfd = pidfd;
	// Its pid, as bubblewrap's --info-fd tells it.
	char info[64];
	int n = snprintf(info, sizeof info, "{\"child-pid\": %d}\n", (int)pid);
	if (write(fds[3], info, (size_t)n) != n)
		kill(pid, SIGKILL);
	return (int)pid;
}

// kz_main serves requests until the runner closes its end of the socket:
// an 8-byte header ("kzspawn1") with four descriptors (the request, the
// log pipe, the status pipe, the info pipe); the answer is a 4-byte
// little-endian int32, the stage's pid or -errno.
static void kz_main(void) {
	for (;;) {
		char hdr[8];
		struct iovec iov = {hdr, sizeof hdr};
		union {
			char buf[CMSG_SPACE(4 * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr mh;
		memset(&mh, 0, sizeof mh);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		ssize_t n = recvmsg(KZ_SOCK, &mh, MSG_CMSG_CLOEXEC);
		if (n == 0)
			_exit(0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		int fds[4], nfd = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int *in = (int *)CMSG_DATA(c);
			for (int i = 0; i < k; i++) {
				if (nfd < 4)
					fds[nfd++] = in[i];
				else
					close(in[i]);
			}
		}
		int32_t reply;
		if (n != 8 || memcmp(hdr, "kzspawn1", 8) != 0 || nfd != 4 || (mh.msg_flags & MSG_CTRUNC))
			reply = -EPROTO;
		else
			reply = kz_spawn(fds);
		for (int i = 0; i < nfd; i++)
			close(fds[i]);
		unsigned char out[4] = {(unsigned char)reply, (unsigned char)(reply >> 8), (unsigned char)(reply >> 16),
					(unsigned char)(reply >> 24)};
		if (send(KZ_SOCK, out, 4, MSG_NOSIGNAL) != 4)
			_exit(1);
	}
}

// kz_ctor runs before the Go runtime in every process of this binary; in
// the helper (argv[0] KZ_ARG0 and the environment variable set by Start)
// it never returns.
__attribute__((constructor)) static void kz_ctor(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc != 2 || strcmp(argv[0], KZ_ARG0) != 0)
		return;
	const char *on = getenv("KILN_SANDBOX_HELPER");
	if (on == NULL || strcmp(on, "1") != 0)
		return;
	kz_server = atoi(argv[1]);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	kz_server_fd = (int)syscall(SYS_pidfd_open, kz_server, 0);
	if (getppid() != kz_server || kz_server_gone())
		_exit(0);
	struct stat st;
	if (fstat(KZ_SOCK, &st) != 0 || !S_ISSOCK(st.st_mode) || fcntl(KZ_SOCK, F_SETFD, FD_CLOEXEC) != 0)
		_exit(2);
	kz_main();
	_exit(0);
}
// kz_parse_only parses a request, for the fuzz test: 0 or -errno.
static int kz_parse_only(const char *in, size_t len) {
	char *buf = malloc(len ? len : 1);
	if (buf == NULL)
		return -ENOMEM;
	memcpy(buf, in, len);
	struct kz_req q;
	memset(&q, 0, sizeof q);
	int err = kz_parse(&q, buf, len);
	kz_free(&q);
	free(buf);
	return err;
}
*/
import "C"

import (
	"syscall"
	"unsafe"
)

// Supported reports whether this build has the helper: it needs cgo.
const Supported = true

// arg0 is the helper's argv[0], which its constructor looks for.
const arg0 = C.KZ_ARG0

// Stages are the numbers of the start stages the helper reports on the
// status pipe, by name: the runner's trampoline numbers its own stages the
// same way and names the helper's after them, and a test of the runner's
// holds the two to each other.
var Stages = map[string]byte{
	"rlimit":     C.KZ_STAGE_RLIMIT,
	"setgroups":  C.KZ_STAGE_SETGROUPS,
	"setgid":     C.KZ_STAGE_SETGID,
	"setuid":     C.KZ_STAGE_SETUID,
	"nonewprivs": C.KZ_STAGE_NONEWPRIVS,
	"exec":       C.KZ_STAGE_EXEC,
	"namespaces": C.KZ_STAGE_NAMESPACES,
	"mount":      C.KZ_STAGE_MOUNT,
	"fork":       C.KZ_STAGE_FORK,
	"chdir":      C.KZ_STAGE_CHDIR,
	"network":    C.KZ_STAGE_NETWORK,
	"stdin":      C.KZ_STAGE_STDIN,
}

// parse runs the helper's request parser on b (for tests): nil, or the
// errno it refuses it with.
func parse(b []byte) error {
	var p *C.char
	if len(b) > 0 {
		p = (*C.char)(unsafe.Pointer(&b[0]))
	}
	if rc := C.kz_parse_only(p, C.size_t(len(b))); rc != 0 {
		return syscall.Errno(-rc)
	}
	return nil
}
