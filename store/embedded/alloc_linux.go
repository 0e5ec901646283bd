package embedded

import (
	"os"
	"syscall"
)

// allocate gives f n bytes of allocated blocks (fallocate).
func allocate(f *os.File, n int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, n)
}
