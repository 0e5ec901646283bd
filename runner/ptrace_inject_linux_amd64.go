//go:build linux && amd64

package runner

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// injectSupported says whether limitAsTracee works on this architecture.
const injectSupported = true

// limitAsTracee makes the tracee pid, stopped at its exec, set its own
// limits: prlimit64(0, resource, limit) run in it, one call per limit,
// through a syscall instruction written over its entry point and stepped
// once, with the limits on its stack below the red zone. Its code and
// registers are put back before it runs. A process may lower its own
// limits whatever its user, so this needs no CAP_SYS_RESOURCE: it is how a
// runner without it limits a task that already runs as another user.
func limitAsTracee(pid int, lim *ptraceRlimits) (err error) {
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &saved); err != nil {
		return fmt.Errorf("read the registers: %w", err)
	}
	pc := uintptr(saved.Rip)
	orig := make([]byte, 8)
	if _, err := unix.PtracePeekText(pid, pc, orig); err != nil {
		return fmt.Errorf("read the entry point: %w", err)
	}
	code := append([]byte{0x0f, 0x05}, orig[2:]...) // syscall
	if _, err := unix.PtracePokeText(pid, pc, code); err != nil {
		return fmt.Errorf("write the entry point: %w", err)
	}
	defer func() {
		_, perr := unix.PtracePokeText(pid, pc, orig)
		serr := unix.PtraceSetRegs(pid, &saved)
		if err == nil && (perr != nil || serr != nil) {
			err = fmt.Errorf("restore the program: %w, %w", perr, serr)
		}
	}()
	// The rlimit structs, 16 bytes each, 16-aligned below the red zone.
	buf := make([]byte, 16*len(ptraceResources))
	for i := range ptraceResources {
		binary.LittleEndian.PutUint64(buf[16*i:], lim.rl[i].Cur)
		binary.LittleEndian.PutUint64(buf[16*i+8:], lim.rl[i].Max)
	}
	addr := (uintptr(saved.Rsp) - 128 - uintptr(len(buf))) &^ 15
	if _, err := unix.PtracePokeData(pid, addr, buf); err != nil {
		return fmt.Errorf("write the limits: %w", err)
	}
	for i, res := range ptraceResources {
		if !lim.set[i] {
			continue
		}
		regs := saved
		regs.Rip = uint64(pc)
		regs.Rax = unix.SYS_PRLIMIT64
		regs.Orig_rax = ^uint64(0) // no system call to restart
		regs.Rdi = 0
		regs.Rsi = uint64(res) //nolint:gosec // G115: resource numbers are small
		regs.Rdx = uint64(addr) + uint64(16*i)
		regs.R10 = 0
		if err := unix.PtraceSetRegs(pid, &regs); err != nil {
			return fmt.Errorf("set the registers: %w", err)
		}
		if err := unix.PtraceSingleStep(pid); err != nil {
			return fmt.Errorf("step: %w", err)
		}
		if err := waitTrap(pid); err != nil {
			return err
		}
		if err := unix.PtraceGetRegs(pid, &regs); err != nil {
			return fmt.Errorf("read the registers: %w", err)
		}
		if ret := int64(regs.Rax); ret < 0 { //nolint:gosec // G115: the kernel returns -errno
			return fmt.Errorf("set a resource limit: %w", syscall.Errno(-ret))
		}
	}
	return nil
}
