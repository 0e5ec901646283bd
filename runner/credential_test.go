//go:build linux

package runner

import (
	"context"
	"errors"
	"math"
	"syscall"
	"testing"
)

// 4294967295 is the kernel's "leave the id as it is" to setresuid and
// setresgid: a credential holding it would leave a task the runner's user.
func TestRunCredentialNoID(t *testing.T) {
	t.Parallel()
	r := newRunner(t, Config{Sandbox: SandboxOff})
	for _, c := range []*syscall.Credential{
		{Uid: math.MaxUint32, Gid: 1000},
		{Uid: 1000, Gid: math.MaxUint32},
		{Uid: 1000, Gid: 1000, Groups: []uint32{math.MaxUint32}},
	} {
		res, err := r.Run(context.Background(), Spec{TaskID: "c", Command: []string{"true"}, Credential: c})
		if !errors.Is(err, ErrInvalidSpec) || res.Status != StatusError {
			t.Errorf("credential %+v: %v, %+v", c, err, res)
		}
	}
}
