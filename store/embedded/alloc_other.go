//go:build !linux

package embedded

import (
	"errors"
	"os"
)

// allocate is fallocate where the system has it; here the caller writes
// zeros instead.
func allocate(*os.File, int64) error { return errors.ErrUnsupported }
