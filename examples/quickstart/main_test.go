package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuickstart builds the example and runs it as a newcomer would, twice
// on one data folder: it must print the greeting and exit cleanly each time.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(t.TempDir(), "kiln-data")
	for run := 1; run <= 2; run++ {
		cmd := exec.Command(bin, "-data", data)
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "Hello kiln!" {
			t.Errorf("run %d: output %q, want %q", run, got, "Hello kiln!")
		}
	}
}
