package testenv

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"testing"
)

// recordTB records what missing does instead of doing it.
type recordTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordTB) Helper()                           {}
func (r *recordTB) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recordTB) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

// The rule: a missing service skips with the reason, and fails under
// KILN_TEST_REQUIRE_ALL=1.
func TestMissingSkipsOrFails(t *testing.T) {
	t.Parallel()
	r := &recordTB{TB: t}
	missing(r, "no Redis", false)
	if r.skipped != "no Redis" || r.failed != "" {
		t.Errorf("skipped %q, failed %q; want a skip saying why", r.skipped, r.failed)
	}
	r = &recordTB{TB: t}
	missing(r, "no Redis", true)
	if r.skipped != "" || r.failed != "no Redis (KILN_TEST_REQUIRE_ALL=1: every test must run; scripts/services.sh starts the services)" {
		t.Errorf("under %s=1: failed %q, skipped %q; want a failure saying why", RequireAllEnv, r.failed, r.skipped)
	}
}

// An unset variable is a missing service; a URL that does not parse fails.
func TestServiceURL(t *testing.T) {
	t.Parallel()
	if os.Getenv("KILN_TEST_UNSET_FOR_TEST") != "" {
		t.Skip("KILN_TEST_UNSET_FOR_TEST is set")
	}
	r := &recordTB{TB: t}
	if u := serviceURL(r, "KILN_TEST_UNSET_FOR_TEST", "X", "x://", nil); u != "" {
		t.Errorf("URL %q for an unset variable", u)
	}
	if RequireAll() && r.failed == "" || !RequireAll() && r.skipped != "KILN_TEST_UNSET_FOR_TEST is not set (e.g. x://)" {
		t.Errorf("skipped %q, failed %q", r.skipped, r.failed)
	}
}

// Eventually returns once the condition holds, and Zip's executables get
// mode 0755.
func TestEventuallyAndZip(t *testing.T) {
	t.Parallel()
	n := 0
	Eventually(t, "three calls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("%d calls", n)
	}
	z := Zip(t, map[string]string{"run.sh": "true\n", "worker": "x", "data.txt": "y"})
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fs.FileMode{"run.sh": 0o755, "worker": 0o755, "data.txt": 0o644}
	for _, f := range zr.File {
		if f.Mode().Perm() != want[f.Name] {
			t.Errorf("%s: mode %v, want %v", f.Name, f.Mode().Perm(), want[f.Name])
		}
		delete(want, f.Name)
	}
	if len(want) != 0 {
		t.Errorf("missing from the zip: %v", want)
	}
}
