package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes on dir (which must exist) and
// unmounts it when the test ends: a small disk of the test's own that it
// can fill. It calls Need when the machine does not allow it (not root, no
// mount command, mount refused).
func MountTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		Need(t, "mounting a tmpfs needs root")
	}
	mount, err := exec.LookPath("mount")
	if err != nil {
		Need(t, "no mount command")
	}
	umount, err := exec.LookPath("umount")
	if err != nil {
		Need(t, "no umount command")
	}
	if err := run(mount, "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir); err != nil {
		Need(t, "cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		// Lazy: a child that still holds a file open must not make the
		// unmount fail; the memory is freed when the last one closes.
		if err := run(umount, "-l", dir); err != nil {
			t.Errorf("unmount the test's tmpfs: %v", err)
		}
	})
}

// Fill writes a file named name into dir until the file system is full
// (ENOSPC) and returns how many bytes it wrote. Remove the file to free the
// space again.
func Fill(dir, name string) (int64, error) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: a file in the test's own folder
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		k, err := f.Write(chunk)
		n += int64(k)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			return n, err
		}
	}
	// Then the last few bytes a smaller write still finds.
	for _, size := range []int{4096, 512, 1} {
		for {
			k, err := f.Write(chunk[:size])
			n += int64(k)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
