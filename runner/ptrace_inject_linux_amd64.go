//go:build linux && amd64

package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// injectSupported says whether limitAsTracee works on this architecture.
const injectSupported = true

// limitAsTracee makes the tracee pid, stopped at its exec, set its own
// limits with prlimit64(0, resource, limit). A process may lower its own
// limits whatever its user, so this needs no CAP_SYS_RESOURCE: it is how a
// runner without it limits a task that already runs as another user. The
// calls run in one go (limitsLoop: one stop for all the limits), or one
// step per limit where the loop's code cannot be written (limitByStepping).
func limitAsTracee(pid int, lim *ptraceRlimits) error {
	err := limitsLoop(pid, lim)
	if errors.Is(err, errNoLoop) {
		return limitByStepping(pid, lim)
	}
	return err
}

// errNoLoop: limitsLoop could not put its code in place and changed
// nothing.
var errNoLoop = errors.New("no room for the limits loop at the entry point")

// limitsCode calls prlimit64(0, *r13, rbx) r12 times, r13 stepping over
// resource numbers (bytes) and rbx over struct rlimit (16 bytes), and
// stops at an int3 when done or at the first failure (rax < 0).
var limitsCode = []byte{
	0xb8, 0x2e, 0x01, 0x00, 0x00, //  0 loop: mov eax, SYS_prlimit64 (302)
	0x31, 0xff, //                     5      xor edi, edi            (pid 0: itself)
	0x41, 0x0f, 0xb6, 0x75, 0x00, //   7      movzx esi, byte [r13]   (resource)
	0x48, 0x89, 0xda, //              12      mov rdx, rbx            (new limit)
	0x45, 0x31, 0xd2, //              15      xor r10d, r10d          (no old limit)
	0x0f, 0x05, //                    18      syscall
	0x48, 0x85, 0xc0, //              20      test rax, rax
	0x75, 0x0c, //                    23      jnz done
	0x48, 0x83, 0xc3, 0x10, //        25      add rbx, 16
	0x49, 0xff, 0xc5, //              29      inc r13
	0x41, 0xff, 0xcc, //              32      dec r12d
	0x75, 0xdb, //                    35      jnz loop
	0xcc, //                          37 done: int3
}

// limitsLoop makes the tracee set every limit of lim in one run of
// limitsCode, written over its entry point, with the resource numbers and
// the limits on its stack below the red zone; its code and registers are
// put back before it runs. It returns errNoLoop, having changed nothing,
// when the code cannot be written there.
func limitsLoop(pid int, lim *ptraceRlimits) (err error) {
	var saved unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &saved); err != nil {
		return fmt.Errorf("read the registers: %w", err)
	}
	pc := uintptr(saved.Rip)
	size := (len(limitsCode) + 7) &^ 7
	orig := make([]byte, size)
	if n, err := unix.PtracePeekText(pid, pc, orig); err != nil || n != size {
		return errNoLoop
	}
	code := append(slices.Clone(limitsCode), orig[len(limitsCode):]...)
	if n, err := unix.PtracePokeText(pid, pc, code); err != nil || n != size {
		if n > 0 {
			_, _ = unix.PtracePokeText(pid, pc, orig)
		}
		return errNoLoop
	}
	defer func() {
		_, perr := unix.PtracePokeText(pid, pc, orig)
		serr := unix.PtraceSetRegs(pid, &saved)
		if err == nil && (perr != nil || serr != nil) {
			err = fmt.Errorf("restore the program: %w, %w", perr, serr)
		}
	}()
	// Below the red zone: the resource numbers (8 bytes), then the
	// rlimit structs, 16-aligned.
	var res []byte
	var rl []byte
	for i, r := range ptraceResources {
		if !lim.set[i] {
			continue
		}
		res = append(res, byte(r)) //nolint:gosec // G115: resource numbers are below 16
		rl = binary.LittleEndian.AppendUint64(rl, lim.rl[i].Cur)
		rl = binary.LittleEndian.AppendUint64(rl, lim.rl[i].Max)
	}
	if len(res) == 0 || len(res) > 8 {
		return fmt.Errorf("limits loop: %d limits", len(res))
	}
	buf := append(append(make([]byte, 0, 8+len(rl)), res...), make([]byte, 8-len(res))...)
	buf = append(buf, make([]byte, 8)...) // keeps the structs 16-aligned
	buf = append(buf, rl...)
	addr := (uintptr(saved.Rsp) - 128 - uintptr(len(buf))) &^ 15
	if _, err := unix.PtracePokeData(pid, addr, buf); err != nil {
		return fmt.Errorf("write the limits: %w", err)
	}
	regs := saved
	regs.Rip = uint64(pc)
	regs.Orig_rax = ^uint64(0) // no system call to restart
	regs.R13 = uint64(addr)
	regs.Rbx = uint64(addr) + 16
	regs.R12 = uint64(len(res))
	if err := unix.PtraceSetRegs(pid, &regs); err != nil {
		return fmt.Errorf("set the registers: %w", err)
	}
	if err := unix.PtraceCont(pid, 0); err != nil {
		return fmt.Errorf("run the limits loop: %w", err)
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
	if want := uint64(pc) + uint64(len(limitsCode)); regs.Rip != want || regs.R12 != 0 {
		return fmt.Errorf("the limits loop stopped at %#x with %d limits left, not at its end", regs.Rip, regs.R12)
	}
	return nil
}

// limitByStepping is limitAsTracee one limit at a time:
// prlimit64(0, resource, limit) run in the tracee through a syscall
// instruction written over its entry point and stepped once per limit,
// with the limits on its stack below the red zone: a stop per limit. It is
// used when limitsLoop cannot write its code. Its code and
// registers are put back before it runs. A process may lower its own
// limits whatever its user, so this needs no CAP_SYS_RESOURCE: it is how a
// runner without it limits a task that already runs as another user.
func limitByStepping(pid int, lim *ptraceRlimits) (err error) {
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
