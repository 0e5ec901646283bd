//go:build !unix

package kiln_test

import "time"

// processCPU returns 0: the process's CPU time is read on Unix only.
func processCPU() time.Duration { return 0 }

// processWritten returns 0: the bytes written are read on Unix only.
func processWritten() int64 { return 0 }
