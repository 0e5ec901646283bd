//go:build linux

package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CPUMeter measures the CPU time of the test process and of every process
// it starts, including those nobody reaps (bwrap's init): through a cgroup
// v2 of its own when the machine lets the test make one (the process moves
// into it until the test ends), else through getrusage of the process and
// its reaped children.
//
// The runner starts each task in a cgroup of its own under
// <the process's cgroup>/kiln-runner-<pid> (runner.Config.Cgroup), which
// may lie outside the meter's cgroup when the runner was made before the
// meter: its CPU time is added.
type CPUMeter struct {
	stat string // the cgroup's cpu.stat, "" for getrusage
	// runner is the cpu.stat of the runner's cgroups of this process
	// outside the meter's cgroup.
	runner string
}

// Source says how the meter measures: "cgroup" or "getrusage".
func (m *CPUMeter) Source() string {
	if m.stat != "" {
		return "cgroup"
	}
	return "getrusage"
}

// Used returns the CPU time used so far.
func (m *CPUMeter) Used() time.Duration {
	if m.stat != "" {
		if used, ok := cgroupUsage(m.stat); ok {
			more, _ := cgroupUsage(m.runner)
			return used + more
		}
	}
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	sum := func(r *syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return sum(&self) + sum(&children)
}

// children returns the pids of the running children of process pid.
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, k)
		}
	}
	return out
}

// cgroupUsage reads usage_usec from a cgroup's cpu.stat.
func cgroupUsage(stat string) (time.Duration, bool) {
	b, err := os.ReadFile(stat) //nolint:gosec // G304: a cgroup's cpu.stat
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, true
		}
	}
	return 0, false
}

// NewCPUMeter returns a meter for the rest of the test.
func NewCPUMeter(tb testing.TB) *CPUMeter {
	tb.Helper()
	mount, rel := cgroup2()
	if mount == "" {
		return &CPUMeter{}
	}
	parent := filepath.Join(mount, rel)
	dir := filepath.Join(parent, fmt.Sprintf("kiln-bench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil { //nolint:gosec // G301: a cgroup folder
		return &CPUMeter{}
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0o644); err != nil { //nolint:gosec // G306: a cgroup file
		_ = os.Remove(dir)
		return &CPUMeter{}
	}
	// Resident children started before the meter (the runner's sandbox
	// helper, whose forks run the tasks) join it too: a process's cgroup
	// is inherited from the process that forks it.
	kids := children(os.Getpid())
	for _, k := range kids {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(k)), 0o644) //nolint:gosec // G306: a cgroup file
	}
	tb.Cleanup(func() {
		for _, k := range append(kids, os.Getpid()) {
			_ = os.WriteFile(filepath.Join(parent, "cgroup.procs"), []byte(strconv.Itoa(k)), 0o644) //nolint:gosec // G306: a cgroup file
		}
		_ = os.Remove(dir)
	})
	return &CPUMeter{stat: filepath.Join(dir, "cpu.stat"),
		runner: filepath.Join(parent, fmt.Sprintf("kiln-runner-%d", os.Getpid()), "cpu.stat")}
}

// cgroup2 returns the cgroup v2 mount point and the process's cgroup in
// it, or "" when there is none.
func cgroup2() (mount, rel string) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", ""
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - cgroup2 ...
		l := sc.Text()
		i := strings.Index(l, " - ")
		if i < 0 || !strings.HasPrefix(l[i+3:], "cgroup2 ") {
			continue
		}
		f := strings.Fields(l[:i])
		if len(f) >= 5 {
			return f[4], rel
		}
	}
	return "", ""
}
