package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// built are the programs BuildGo compiled, by the hash of their source, and
// the folders they live in (removed by RemoveBuilt).
var built struct {
	sync.Mutex
	progs map[string]*program
	dirs  []string
}

type program struct {
	once sync.Once
	path string
	err  error
}

// BuildGo compiles source, the main.go of a program that imports nothing
// outside the standard library, and returns the executable's path. Each
// source is compiled once per test binary (the build cache makes later runs
// cheap); the executables stay until RemoveBuilt, which the package's
// TestMain calls.
func BuildGo(tb testing.TB, source string) string {
	tb.Helper()
	sum := sha256.Sum256([]byte(source))
	key := hex.EncodeToString(sum[:8])
	built.Lock()
	if built.progs == nil {
		built.progs = map[string]*program{}
	}
	p := built.progs[key]
	if p == nil {
		p = &program{}
		built.progs[key] = p
	}
	built.Unlock()
	p.once.Do(func() { p.path, p.err = buildGo(key, source) })
	if p.err != nil {
		tb.Fatal(p.err)
	}
	return p.path
}

func buildGo(key, source string) (string, error) {
	dir, err := os.MkdirTemp("", "kiln-test-program-"+key+"-")
	if err != nil {
		return "", err
	}
	built.Lock()
	built.dirs = append(built.dirs, dir)
	built.Unlock()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o750); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(source), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module program\n\ngo 1.26\n"), 0o600); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "program")
	cmd := exec.Command("go", "build", "-o", out, ".") //nolint:gosec // G204: the go command, on the test's own temporary folder
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, b)
	}
	return out, nil
}

// RemoveBuilt removes what BuildGo compiled; TestMain calls it after m.Run.
func RemoveBuilt() {
	built.Lock()
	defer built.Unlock()
	for _, dir := range built.dirs {
		_ = os.RemoveAll(dir)
	}
	built.dirs, built.progs = nil, nil
}
