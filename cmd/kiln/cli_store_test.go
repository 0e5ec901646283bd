package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

// TestStoreCheckRecover runs `kiln store check` and `kiln store recover` on
// a sound data folder, then check on a damaged one (store/embedded tests
// every kind of damage).
func TestStoreCheckRecover(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := embedded.Open(dir, &embedded.Config{ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	var in []store.TaskInput
	for i := 0; i < 20; i++ {
		in = append(in, store.TaskInput{ID: fmt.Sprintf("t%d", i), Type: "x", Payload: []byte("p")})
	}
	if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "proj", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	runKiln := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}

	code, out, errOut := runKiln("store", "check", dir)
	if code != 0 || !strings.Contains(out, "no problems") || !strings.Contains(out, "proj") || !strings.Contains(out, "20") {
		t.Fatalf("check of a sound folder: exit %d\n%s%s", code, out, errOut)
	}
	newDir := filepath.Join(t.TempDir(), "copy")
	if code, out, errOut := runKiln("store", "recover", dir, "--to", newDir); code != 0 || !strings.Contains(out, "copied into "+newDir) {
		t.Fatalf("recover: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runKiln("store", "check", newDir); code != 0 || !strings.Contains(out, "no problems") {
		t.Fatalf("check of the copy: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runKiln("store", "recover", dir, "--to", newDir); code != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("recover into a folder in use: exit %d, %s", code, errOut)
	}
	if code, _, errOut := runKiln("store", "check", t.TempDir()); code != 1 || !strings.Contains(errOut, "not a data folder") {
		t.Fatalf("check of an empty folder: exit %d, %s", code, errOut)
	}
	// Damage the engine's MANIFEST: check exits 1 and names it.
	manifests, err := filepath.Glob(filepath.Join(dir, "pebble", "MANIFEST-*"))
	if err != nil || len(manifests) != 1 {
		t.Fatalf("MANIFEST: %v %v", manifests, err)
	}
	b, err := os.ReadFile(manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 36 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(manifests[0], b, 0o600); err != nil { //nolint:gosec // G703: a file in the test's own temporary folder
		t.Fatal(err)
	}
	code, out, errOut = runKiln("store", "check", dir)
	if code != 1 || !strings.Contains(out, filepath.Base(manifests[0])) || !strings.Contains(errOut, "kiln store recover") {
		t.Fatalf("check of a damaged folder: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"store"}, {"store", "nope"}, {"store", "check"}, {"store", "recover", dir}} {
		if code, _, _ := runKiln(args...); code != 2 {
			t.Errorf("kiln %q: exit %d, want 2", args, code)
		}
	}
}
