//go:build !linux

package tmpfs

import (
	"os"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// Mount mounts a tmpfs of size bytes on a new temporary folder; only on
// Linux: elsewhere it skips the test (fails it with KILN_TEST_REQUIRE_ALL=1).
func Mount(t testing.TB, size int64) string {
	t.Helper()
	testenv.Missing(t, "tmpfs: only on Linux")
	return ""
}

// Fill takes every free byte of dir's file system; only on Linux.
func Fill(t testing.TB, _, _ string) int64 {
	t.Helper()
	t.Skip("tmpfs: only on Linux")
	return 0
}

// Free removes the file name from dir.
func Free(t testing.TB, dir, name string) {
	t.Helper()
	if err := os.Remove(dir + string(os.PathSeparator) + name); err != nil {
		t.Fatal(err)
	}
}
