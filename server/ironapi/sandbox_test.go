//go:build linux

package ironapi_test

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// A server with a runner and a CLI file somewhere else than its runner's
// folder: a task in the default (bwrap) sandbox finds the CLI file empty,
// cannot see the server's process, and its log is captured.
func TestRunnerSandboxHidesCLIFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "this test needs root")
	}
	// Outside /tmp, which the sandbox makes private anyway.
	dir, err := os.MkdirTemp("/var/lib", "kiln-ironapi-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cliFile := filepath.Join(dir, "cli.json")
	b := serve(t, &kilntest.ServerOptions{Runner: true, Configure: func(c *server.Config) {
		c.CLIFile, c.Stdout = cliFile, io.Discard
	}})
	b.token = adminToken
	// Readable by everyone: only the sandbox keeps it from the task.
	if err := os.Chmod(cliFile, 0o644); err != nil {
		t.Fatalf("the CLI file: %v", err)
	}

	script := "echo \"cli: $(cat " + cliFile + ")\"\n" +
		"test -e /proc/" + strconv.Itoa(os.Getpid()) + " && echo 'server: visible' || echo 'server: hidden'\n"
	b.mustUpload(map[string]any{"name": "probe", "file_name": "run.sh", "runtime": "sh"}, testenv.Zip(t, map[string][]byte{"run.sh": []byte(script)}))
	id := b.queue(map[string]any{"code_name": "probe", "payload": ""})[0]
	if ti := b.wait(id); ti.Status != "complete" {
		t.Fatalf("task %+v", ti)
	}
	if log := b.log(id); log != "cli: \nserver: hidden\n" {
		t.Errorf("the task's log %q: it saw the CLI file or the server", log)
	}
	if data, err := os.ReadFile(cliFile); err != nil || !strings.Contains(string(data), adminToken) {
		t.Errorf("the CLI file on the host: %q, %v", data, err)
	}
}
