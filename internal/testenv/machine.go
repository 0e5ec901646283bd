package testenv

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes the machine for a benchmark's log: the CPU model, the
// number of CPUs and the load average.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if v, ok := bytes.CutPrefix(line, []byte("model name")); ok {
				model = strings.TrimSpace(strings.TrimLeft(string(v), " \t:"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, load average %s", model, runtime.NumCPU(), LoadAvg())
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
