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

// nsSetup is SandboxNamespaces' state, Linux only.
type nsSetup struct{}

// ptraceRlimits is Linux-only.
type ptraceRlimits struct{}

// resolveSandbox: off Linux there is no sandbox (and Run is unsupported).
func (r *Runner) resolveSandbox() error {
	switch r.cfg.Sandbox {
	case SandboxBwrap, SandboxUser:
		return fmt.Errorf("%w: sandbox %s needs Linux: %w", ErrSandbox, r.cfg.Sandbox, errors.ErrUnsupported)
	}
	r.sb = SandboxState{Mode: SandboxOff}
	return nil
}

// resolveLimiter: off Linux there are no limits (and Run is unsupported).
func (r *Runner) resolveLimiter() error {
	if r.cfg.Limiter == LimiterPtrace {
		return fmt.Errorf("%w: limiter ptrace needs Linux: %w", ErrSandbox, errors.ErrUnsupported)
	}
	r.sb.Limiter = LimiterTrampoline
	return nil
}

// cgroupTree is Linux-only.
type cgroupTree struct{}

// resolveCgroup: off Linux there are no cgroups (and Run is unsupported).
func (r *Runner) resolveCgroup() {
	r.sb.GroupKillNote = "off: cgroups need Linux"
}

// RemoveCgroups does nothing off Linux.
func RemoveCgroups() {}

// dirPool keeps nothing off Linux.
type dirPool struct{}

// Close does nothing off Linux.
func (r *Runner) Close() error { return nil }
