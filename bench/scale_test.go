package main

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
)

// TestMain lets the test binary serve as the scale run's phase processes:
// runScale re-runs its own executable with -scale-phase.
func TestMain(m *testing.M) {
	if slices.Contains(os.Args, "-scale-phase") {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestScaleEmbedded runs the scale benchmark end to end on a small backlog
// in a fresh data folder. runScale ends the process (log.Fatal) unless the
// restarted process saw every task pending and the worker left every task
// succeeded.
func TestScaleEmbedded(t *testing.T) { //nolint:paralleltest // it sets the flags of the run (benchFlags, shared): one at a time
	scaleRun(t, "-scale", "embedded", "-scale-tasks", "3000", "-batch", "500", "-dir", t.TempDir(), "-redis-port", "0")
}

// TestScaleRedis is the same on a redis-server of the run's own.
func TestScaleRedis(t *testing.T) { //nolint:paralleltest // it sets the flags of the run (benchFlags, shared): one at a time
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	scaleRun(t, "-scale", "redis", "-scale-tasks", "3000", "-batch", "500", "-dir", "", "-redis-port", strconv.Itoa(port))
}

func scaleRun(t *testing.T, args ...string) {
	t.Helper()
	if err := benchFlags.Parse(args); err != nil {
		t.Fatal(err)
	}
	runScale()
}
