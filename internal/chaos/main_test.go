package chaos_test

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"
)

// The suite's knobs. `make chaos` sets them for the long run; `go test`
// (and so `make test`) runs the CI size.
var (
	flagDuration = flag.Duration("chaos.duration", 0, "how long each scenario keeps its load and faults going (default $KILN_CHAOS_DURATION, else the CI size, "+ciDuration.String()+")")
	flagJSON     = flag.String("chaos.json", "", "append each scenario's report to this file, one JSON object per line")
)

// ciDuration is the load time of each scenario in the CI-sized run: every
// scenario together stays within about a minute on a busy 2-core machine.
const ciDuration = 5 * time.Second

// loadTime returns how long each scenario keeps its load going.
func loadTime(t *testing.T) time.Duration {
	t.Helper()
	if *flagDuration > 0 {
		return *flagDuration
	}
	if v := os.Getenv("KILN_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("KILN_CHAOS_DURATION=%q: want a positive duration such as 10m", v)
		}
		return d
	}
	return ciDuration
}

// long reports whether this is a long run (more than the CI size).
func long(t *testing.T) bool {
	t.Helper()
	return loadTime(t) > ciDuration
}

func TestMain(m *testing.M) {
	if role := os.Getenv(envRole); role == lateRole {
		runLateRole()
	} else if role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintf(os.Stderr, "chaos %s (pid %d): %v\n", role, os.Getpid(), err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
