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

// bwrapSetup is Linux-only.
type bwrapSetup struct{}

// resolveSandbox: off Linux there is no sandbox (and Run is unsupported).
func (r *Runner) resolveSandbox() error {
	switch r.cfg.Sandbox {
	case SandboxBwrap, SandboxUser:
		return fmt.Errorf("%w: sandbox %s needs Linux: %w", ErrSandbox, r.cfg.Sandbox, errors.ErrUnsupported)
	}
	r.sb = SandboxState{Mode: SandboxOff}
	return nil
}
