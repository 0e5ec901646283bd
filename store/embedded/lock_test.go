package embedded

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// lockChildEnv names the data folder a child process of the test binary
// opens, printing the error of Open.
const lockChildEnv = "KILN_EMBEDDED_LOCK_CHILD"

// lockChild runs the child's part of TestOpenInUse and reports whether this
// process is that child.
func lockChild() bool {
	dir := os.Getenv(lockChildEnv)
	if dir == "" {
		return false
	}
	s, err := Open(dir, nil)
	if err == nil {
		_ = s.Close()
		fmt.Println("opened")
		return true
	}
	fmt.Println(err)
	return true
}

// A second process opening a data folder in use is told which process has
// it, not "resource temporarily unavailable".
func TestOpenInUse(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("the store takes its own folder lock on unix systems only")
	}
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	want := "the data folder " + dir + " is in use by another process (pid "
	if !strings.Contains(got, want) || strings.Contains(got, "temporarily unavailable") {
		t.Fatalf("second process's Open: %q, want it to contain %q", got, want)
	}
	if !strings.Contains(got, "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("second process's Open: %q, want this process's pid %d", got, os.Getpid())
	}

	// A second Open in the same process is refused as well, and says so.
	if s2, err := Open(dir, nil); err == nil {
		_ = s2.Close()
		t.Fatal("a second Open in the same process succeeded")
	} else if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by this process") {
		t.Fatalf("second Open in the same process: %v, want ErrInUse naming this process", err)
	}

	// Once closed, the folder opens again, in another process too.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cmd = exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+dir)
	if out, err = cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "opened" {
		t.Fatalf("child after Close: %v %q, want it to open the folder", err, out)
	}
}

// Closing and opening a data folder again while the process starts other
// programs: a fork copies the lock's descriptor into the child until the
// child's exec, so the lock Close released can stay held for a moment;
// Open must not take that for a second Store of this process.
func TestReopenWhileForking(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("the store takes its own folder lock on unix systems only")
	}
	dir := t.TempDir()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = exec.Command("true").Run() //nolint:noctx // a fork and exec, nothing more
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 200 {
		s, err := Open(dir, &Config{ReserveBytes: -1})
		if err != nil {
			t.Fatalf("Open #%d after Close: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i, err)
		}
	}
}

// A child process that holds a copy of the lock file's descriptor (as any
// child forked by this process does until its exec) must not keep the
// folder locked once the Store is closed: another process opens it at
// once (TestOpenInUse and the crash tests failed now and then with "in use
// by another process" while parallel tests started programs).
func TestCloseUnlocksForkedCopies(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("the store takes its own folder lock on unix systems only")
	}
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	holder := exec.CommandContext(t.Context(), "sleep", "60")
	holder.ExtraFiles = []*os.File{s.lock.f}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), lockChildEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "opened" {
		t.Fatalf("another process's Open after Close, while a child holds a copy of the lock's descriptor: %v %q, want it opened", err, out)
	}
}
