//go:build !linux

package embedded

import "time"

// cpuTime returns 0: the benchmarks report CPU time on Linux only.
func cpuTime() time.Duration { return 0 }
