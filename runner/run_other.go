//go:build !linux

package runner

import (
	"context"
	"errors"
	"fmt"
)

// trampolineEnv marks a process started by Run as a trampoline.
const trampolineEnv = "KILN_RUNNER_TRAMPOLINE"

// Main does nothing off Linux: Run is Linux-only.
func Main() {}

// Run is not supported off Linux: it returns an error wrapping
// errors.ErrUnsupported.
func (r *Runner) Run(_ context.Context, _ Spec) (Result, error) {
	err := fmt.Errorf("%w: runner.Run needs Linux: %w", ErrStart, errors.ErrUnsupported)
	return Result{Status: StatusError, ExitCode: -1, Msg: err.Error()}, err
}
