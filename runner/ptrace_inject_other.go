//go:build linux && !amd64

package runner

import (
	"errors"
	"fmt"
)

// injectSupported says whether limitAsTracee works on this architecture.
const injectSupported = false

// limitAsTracee is amd64-only (see ptrace_inject_linux_amd64.go): elsewhere
// a task of another user goes through the trampoline unless the runner has
// CAP_SYS_RESOURCE.
func limitAsTracee(int, *ptraceRlimits) error {
	return fmt.Errorf("limits set by the task itself: %w", errors.ErrUnsupported)
}
