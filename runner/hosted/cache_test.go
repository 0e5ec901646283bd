package hosted_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner/hosted"
)

// TestOldPackagesRemoved: New removes the packages an earlier kiln
// unpacked by checksum alone (a folder named by 64 hexadecimal digits),
// which nothing reads any more, and leaves the rest of the cache alone.
func TestOldPackagesRemoved(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	pkgs := filepath.Join(work, "packages")
	sum := strings.Repeat("ab", 32)
	for _, d := range []string{sum, "0123456789abcdef-" + sum, strings.Repeat("g", 64), "ab"} {
		if err := os.MkdirAll(filepath.Join(pkgs, d, "lib"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(pkgs, strings.Repeat("cd", 32)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := hosted.New(&hosted.Config{Store: kilntest.Embedded(t, nil), WorkDir: work}); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := []string{"0123456789abcdef-" + sum, "ab", strings.Repeat("cd", 32), strings.Repeat("g", 64)}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("left %q, want %q", got, want)
	}
}
