package testenv

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes the machine for a benchmark's log: the CPU model, the
// number of CPUs and the load average.
func Machine() string {
	return fmt.Sprintf("%s, load average %s", cpuAndCount(), LoadAvg())
}

// cpuAndCount is the CPU model and the number of CPUs.
func cpuAndCount() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if v, ok := bytes.CutPrefix(line, []byte("model name")); ok {
				model = strings.TrimSpace(strings.TrimLeft(string(v), " \t:"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs", model, runtime.NumCPU())
}

// LoadAvg returns the 1, 5 and 15 minute load averages as /proc/loadavg
// gives them.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Load1 returns the 1-minute load average, or -1.
func Load1() float64 {
	f := strings.Fields(LoadAvg())
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestingM is what a TestMain runs: a *testing.M, or a wrapper of one
// (goleak.VerifyTestMain takes it too).
type TestingM interface{ Run() int }

// BenchMain wraps a test binary's m for TestMain. When the binary runs
// benchmarks (-test.bench is set) it prints the load average and the
// machine (CPU model, CPUs) before them and the load average after them, so
// that every benchmark's figures stand beside the load they were taken
// under; otherwise it only runs m. Its lines are not benchfmt configuration
// lines (their keys have spaces), so benchstat ignores them.
func BenchMain(m TestingM) TestingM { return benchMain{m} }

type benchMain struct{ m TestingM }

func (b benchMain) Run() int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		return b.m.Run()
	}
	// Printed beside go test's own benchmark output, in test binaries only.
	fmt.Printf("load average before the benchmarks: %s (%s)\n", LoadAvg(), cpuAndCount()) //nolint:forbidigo // a test binary's output, not the library's
	code := b.m.Run()
	fmt.Printf("load average after the benchmarks: %s\n", LoadAvg()) //nolint:forbidigo // a test binary's output, not the library's
	return code
}
