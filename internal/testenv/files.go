package testenv

import (
	"archive/zip"
	"bytes"
	"os"
	"strings"
	"testing"
)

// Zip returns a zip archive of files (name -> content), deflated; a name
// ending in ".sh" or named "worker" gets mode 0755, the others 0644: a code
// package as the tests upload it.
func Zip[T string | []byte](tb testing.TB, files map[string]T) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o644)
		if strings.HasSuffix(name, ".sh") || name == "worker" {
			h.SetMode(0o755)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := w.Write([]byte(data)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// SharedDir returns a fresh folder that other users can traverse (mode
// 0711), removed when the test ends: t.TempDir's parents are private to
// root, and a runner that runs tasks as other users needs its folders open
// to them.
func SharedDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "kiln-test-shared-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { //nolint:gosec // G302: other users must traverse it, which is what it is for
		tb.Fatal(err)
	}
	return dir
}
