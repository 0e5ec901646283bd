package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
)

// lateRole is a child that handles SIGTERM only after a while, as a real
// worker does once its runtime, store and handlers are set up.
const lateRole = "late"

// lateSetup is how long the late child takes before it handles SIGTERM.
const lateSetup = 300 * time.Millisecond

// lateGateEnv, when set, names a file the late child waits for (instead
// of lateSetup) before it handles SIGTERM.
const lateGateEnv = "KILN_CHAOS_LATE_GATE"

// runLateRole waits lateSetup (or for the file lateGateEnv names), then
// handles SIGTERM, says it is ready and exits 0 on SIGTERM.
func runLateRole() {
	if gate := os.Getenv(lateGateEnv); gate != "" {
		for {
			if _, err := os.Stat(gate); err == nil { //nolint:gosec // G703: a file in the test's own folder
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	} else {
		time.Sleep(lateSetup)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := chaos.SignalReady(); err != nil {
		fmt.Fprintln(os.Stderr, "late:", err)
		os.Exit(1)
	}
	<-ctx.Done()
	os.Exit(0)
}

// TestStopWaitsForReady stops a child with SIGTERM right after starting
// it: with Cmd.Ready, Stop waits until the child handles the signal, so
// the child ends by its graceful stop (exit 0), not by SIGTERM's default
// action, which is what a stop sent too early did to a worker in CI.
func TestStopWaitsForReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := chaos.Start(t, chaos.Cmd{Name: "late", Ready: filepath.Join(dir, "ready"), Env: []string{envRole + "=" + lateRole}})
	if err := p.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("Stop(SIGTERM) right after Start: %v, want a graceful exit (status 0)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ready")); err != nil {
		t.Errorf("the child did not write its ready file: %v", err)
	}
}

// TestStopWithoutReady shows what Cmd.Ready prevents: without it, a
// SIGTERM sent before the child handles it ends the child by the signal.
// The child waits for a gate file that never appears, so its handler is
// never installed.
func TestStopWithoutReady(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "never")
	p := chaos.Start(t, chaos.Cmd{Name: "late", Env: []string{envRole + "=" + lateRole, lateGateEnv + "=" + gate}})
	err := p.Stop(syscall.SIGTERM)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("Stop(SIGTERM) without Ready: %v, want the child ended by the signal", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("Stop(SIGTERM) without Ready: %v, want the child ended by SIGTERM", err)
	}
}
