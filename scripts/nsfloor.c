// nsfloor: what a sandbox like the runner's bwrap one costs at the least,
// in CPU time per task, when a resident process forks each task into fresh
// namespaces instead of starting bwrap (docs/decisions/004-runner-sandbox.md,
// "Update 3"). A measurement, not part of kiln.
//
//	gcc -O2 -static -o /tmp/nsfloor scripts/nsfloor.c
//	/tmp/nsfloor raw 1000 /bin/true     # fork and exec, nothing else
//	/tmp/nsfloor ns 1000 /bin/true      # the sandbox's set-up, then exec
//	/tmp/nsfloor exec 1000 /bin/true    # ns, but through an exec of this helper per task
//
// "ns" does for each task what bwrap does with kiln's options, in one
// resident process: a user, PID, mount and IPC namespace (unshare), the
// user and group maps, a fork into the PID namespace (pid 1, as bwrap's
// init), its own session, the mounts (every mount private, tmpfs on /tmp,
// /dev/shm and /var/tmp, a fresh /proc, a tmpfs /dev with null, zero,
// full, random, urandom and tty bound in, a task directory bound at
// /tmp/task, the root read-only), no_new_privs, a parent-death signal and
// the resource limits, then the exec. It prints the CPU time per task of
// the helper and the children it reaps (getrusage); bwrap does not reap
// its sandbox's init, so compare every variant, bwrap included, by the CPU
// time of the whole process tree:
//
//	perf stat -e task-clock /tmp/nsfloor ns 1000 /bin/true
//	perf stat -e task-clock /tmp/nsfloor raw 1000 /usr/bin/bwrap --unshare-user --unshare-pid ... /bin/true
//
// Run it as root (or where unprivileged user namespaces are allowed). The
// mounts differ from bwrap's in one way: the root stays the host's, made
// read-only, where bwrap binds it into a new root and pivots into that.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
	perror(what);
	_exit(120);
}

static void writeFile(const char *path, const char *s) {
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, s, strlen(s)) < 0)
		die(path);
	close(fd);
}

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags) {
	if (mount(src, dst, type, flags, NULL) != 0)
		die(dst);
}

static void touch(const char *path) {
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
	if (fd < 0)
		die(path);
	close(fd);
}

// sandboxed runs in the forked task process: namespaces, mounts, limits,
// exec. taskDir is a host directory.
static void sandboxed(char **argv, const char *taskDir) {
	uid_t uid = getuid();
	gid_t gid = getgid();
	char m[64];
	if (unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC) != 0)
		die("unshare");
	snprintf(m, sizeof m, "%u %u 1", uid, uid);
	writeFile("/proc/self/uid_map", m);
	writeFile("/proc/self/setgroups", "deny");
	snprintf(m, sizeof m, "%u %u 1", gid, gid);
	writeFile("/proc/self/gid_map", m);
	pid_t init = fork(); // pid 1 of the new PID namespace
	if (init < 0)
		die("fork");
	if (init > 0) {
		int st;
		waitpid(init, &st, 0);
		_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	}
	setsid();
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE);
	int task = open(taskDir, O_PATH | O_DIRECTORY | O_CLOEXEC); // before /tmp is covered
	if (task < 0)
		die(taskDir);
	mnt("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV);
	mnt("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV);
	mnt("tmpfs", "/var/tmp", "tmpfs", MS_NOSUID | MS_NODEV);
	mnt("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
	// A minimal /dev: a tmpfs with the host's nodes bound in, moved over
	// /dev once filled.
	const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
	char src[64], dst[64];
	if (mkdir("/tmp/.dev", 0755) != 0)
		die("/tmp/.dev");
	mnt("tmpfs", "/tmp/.dev", "tmpfs", MS_NOSUID);
	for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
		snprintf(src, sizeof src, "/dev/%s", devs[i]);
		snprintf(dst, sizeof dst, "/tmp/.dev/%s", devs[i]);
		touch(dst);
		mnt(src, dst, NULL, MS_BIND);
	}
	mnt("/tmp/.dev", "/dev", NULL, MS_MOVE);
	if (mkdir("/tmp/task", 0700) != 0)
		die("/tmp/task");
	snprintf(src, sizeof src, "/proc/self/fd/%d", task);
	mnt(src, "/tmp/task", NULL, MS_BIND);
	close(task);
	mnt("/", "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	struct rlimit rl = {1 << 29, 1 << 29};
	setrlimit(RLIMIT_DATA, &rl);
	rl.rlim_cur = rl.rlim_max = 1024;
	setrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	if (chdir("/tmp/task") != 0)
		die("chdir");
	execv(argv[0], argv);
	die("exec");
}

int main(int argc, char **argv) {
	if (argc < 4) {
		fprintf(stderr, "usage: nsfloor raw|ns|exec N program [args]\n");
		return 2;
	}
	const char *mode = argv[1];
	int n = atoi(argv[2]);
	char **prog = argv + 3;
	if (strcmp(mode, "one") == 0) { // exec mode's per-task helper
		sandboxed(prog + 1, prog[0]); // argv: one 1 taskdir program
	}
	char taskDir[] = "/tmp/nsfloor-XXXXXX";
	if (mkdtemp(taskDir) == NULL)
		die("mkdtemp");
	char self[4096];
	ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
	if (k < 0)
		die("readlink");
	self[k] = 0;
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0)
			die("fork");
		if (p == 0) {
			if (strcmp(mode, "raw") == 0) {
				execv(prog[0], prog);
				die("exec");
			}
			if (strcmp(mode, "ns") == 0)
				sandboxed(prog, taskDir);
			char *args[] = {self, "one", "1", taskDir, prog[0], NULL};
			execv(self, args);
			die("exec self");
		}
		int st;
		if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "task %d: wait status %#x\n", i, st);
			return 1;
		}
	}
	rmdir(taskDir);
	struct rusage self_ru, kids;
	getrusage(RUSAGE_SELF, &self_ru);
	getrusage(RUSAGE_CHILDREN, &kids);
	double us = (self_ru.ru_utime.tv_sec + kids.ru_utime.tv_sec) * 1e6 + self_ru.ru_utime.tv_usec + kids.ru_utime.tv_usec +
		    (self_ru.ru_stime.tv_sec + kids.ru_stime.tv_sec) * 1e6 + self_ru.ru_stime.tv_usec + kids.ru_stime.tv_usec;
	double load[3];
	getloadavg(load, 3);
	printf("%s: %d tasks, %.3f ms CPU per task (load average %.2f)\n", mode, n, us / 1000 / n, load[0]);
	return 0;
}
