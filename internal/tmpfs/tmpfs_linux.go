package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// Mount mounts a tmpfs of size bytes on a new temporary folder, unmounted
// when the test ends, and returns the folder.
func Mount(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		unavailable(t, "mount tmpfs: "+err.Error())
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill creates the file name in dir and gives it every free byte of the
// file system, at once (fallocate), and returns its size. Removing the file
// frees the space again.
func Fill(t testing.TB, dir, name string) int64 {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name)) //nolint:gosec // G304: a file in the test's own tmpfs
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var total int64
	// The free space shrinks while others write: take what is there, in
	// smaller pieces until none fits.
	for chunk := int64(1 << 30); chunk >= 4096; {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize //nolint:gosec // G115: a tmpfs is far smaller than 2^63 bytes
		n := min(chunk, free)
		if n < 4096 {
			n = 4096
		}
		err := syscall.Fallocate(int(f.Fd()), 0, total, n)
		switch {
		case err == nil:
			total += n
		case errors.Is(err, syscall.ENOSPC):
			chunk /= 2
		default:
			t.Fatal(err)
		}
	}
	return total
}

// Free removes the file name from dir.
func Free(t testing.TB, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func unavailable(t testing.TB, why string) {
	t.Helper()
	testenv.Missing(t, "tmpfs: "+why+"; run the tests as root on Linux to run this one")
}
