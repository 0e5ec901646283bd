//go:build linux

package ironapi_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
)

// A server with a runner and a CLI file somewhere else than its runner's
// folder: a task in the default (bwrap) sandbox finds the CLI file empty,
// cannot see the server's process, and its log is captured.
func TestRunnerSandboxHidesCLIFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") != "" {
			t.Fatal("this test needs root (KILN_TEST_REQUIRE_ALL is set)")
		}
		t.Skip("this test needs root")
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
	st, err := embedded.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	logs := &syncBuffer{}
	srv, err := server.New(&server.Config{
		Store: st, BootstrapToken: adminToken, CLIFile: cliFile, Stdout: logs,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Runner: &hosted.Config{WorkDir: t.TempDir(), PollInterval: 100 * time.Millisecond, LeaseWait: 200 * time.Millisecond,
			Runner: &runner.Config{KillGrace: 500 * time.Millisecond}},
		ShutdownTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	// Readable by everyone: only the sandbox keeps it from the task.
	if err := os.Chmod(cliFile, 0o644); err != nil {
		t.Fatalf("the CLI file: %v", err)
	}
	b := &bundle{t: t, st: st, srv: srv, url: "http://" + ln.Addr().String(), host: ln.Addr().String(), token: adminToken, logs: logs}

	script := "echo \"cli: $(cat " + cliFile + ")\"\n" +
		"test -e /proc/" + strconv.Itoa(os.Getpid()) + " && echo 'server: visible' || echo 'server: hidden'\n"
	b.mustUpload(map[string]any{"name": "probe", "file_name": "run.sh", "runtime": "sh"}, zipOf(t, map[string][]byte{"run.sh": []byte(script)}))
	id := b.queue(map[string]any{"code_name": "probe", "payload": ""})[0]
	if ti := b.wait(id); ti.Status != "complete" {
		t.Fatalf("task %+v; server log:\n%s", ti, logs.String())
	}
	if log := b.log(id); log != "cli: \nserver: hidden\n" {
		t.Errorf("the task's log %q: it saw the CLI file or the server", log)
	}
	if data, err := os.ReadFile(cliFile); err != nil || !strings.Contains(string(data), adminToken) {
		t.Errorf("the CLI file on the host: %q, %v", data, err)
	}
}
