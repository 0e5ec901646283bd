//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/runner"
)

// The probe of TestServerSandbox: each attempt prints "<name>: held" when
// it failed, "<name>: BREACH" when it worked.
const serverProbeScript = `SERVER_PID=$(sed -n 's/^SERVER_PID=//p' "$PAYLOAD_FILE")
DATA_DIR=$(sed -n 's/^DATA_DIR=//p' "$PAYLOAD_FILE")
CONFIG=$(sed -n 's/^CONFIG=//p' "$PAYLOAD_FILE")
export SERVER_PID DATA_DIR CONFIG
deny() { n=$1; shift; if "$@" >/dev/null 2>&1; then echo "$n: BREACH"; else echo "$n: held"; fi; }
echo "uid $(id -u)"
deny server-environ sh -c "tr '\0' '\n' < /proc/$SERVER_PID/environ | grep -q KILN_BOOTSTRAP_TOKEN"
deny token-anywhere sh -c "cat /proc/[0-9]*/environ | tr '\0' '\n' | grep -q KILN_BOOTSTRAP_TOKEN"
deny see-server test -e /proc/$SERVER_PID
deny signal-server kill -0 $SERVER_PID
deny read-cli-json grep -q token "$DATA_DIR/cli.json"
deny list-data sh -c 'ls -A "$DATA_DIR" | grep -q .'
deny read-store sh -c 'cat "$DATA_DIR"/pebble/* | grep -q .'
deny read-config grep -q addr "$CONFIG"
echo done
`

// The real kiln server, as root with its defaults (sandbox auto, the
// runner's folder in the data folder, the admin token in its environment):
// a code package's task cannot read the bootstrap token from the server's
// environment or cli.json, see or signal the server, read its store or
// config file, and is not root; its log is captured.
func TestServerSandbox(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "the server's sandbox test needs root")
	}
	// auto picks ns where the helper works (root, cgo), else bwrap.
	if _, nsErr := runner.New(&runner.Config{Sandbox: runner.SandboxNamespaces, WorkDir: t.TempDir()}); nsErr != nil {
		if _, err := exec.LookPath("bwrap"); err != nil {
			testenv.Missing(t, "neither the ns sandbox ("+nsErr.Error()+") nor bwrap (scripts/services.sh installs bubblewrap) works here")
		}
	}
	// Outside /tmp, which the sandbox makes private anyway.
	dir, err := os.MkdirTemp("/var/lib", "kiln-server-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	config := filepath.Join(dir, "kiln.json")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if err := os.WriteFile(config, fmt.Appendf(nil, `{"addr": %q, "runner-concurrency": 2}`, addr), 0o644); err != nil {
		t.Fatal(err)
	}

	var logs testenv.Buffer
	cmd := exec.CommandContext(t.Context(), os.Args[0], "server", "--data", data, "--config", config)
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0", "KILN_BOOTSTRAP_TOKEN="+testAdminToken)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log:\n%s", logs.String())
		}
	})
	s := &cliServer{url: "http://" + addr}
	testenv.Eventually(t, "the server to answer", func() bool {
		code, _, _ := s.kiln(t, "project", "ls")
		return code == 0
	})
	// Readable by everyone, so that only the sandbox keeps it from tasks.
	if err := os.Chmod(filepath.Join(data, "cli.json"), 0o644); err != nil {
		t.Fatalf("cli.json: %v", err)
	}

	pkg := t.TempDir()
	if err := os.WriteFile(filepath.Join(pkg, "run.sh"), []byte(serverProbeScript), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKiln(t, s, "code", "upload", pkg, "--name", "probe", "--file", "run.sh", "--runtime", "sh")
	payload := fmt.Sprintf("SERVER_PID=%d\nDATA_DIR=%s\nCONFIG=%s\n", cmd.Process.Pid, data, config)
	id, _, _ := strings.Cut(mustKiln(t, s, "enqueue", "code:probe", payload), "\t")
	if out := mustKiln(t, s, "task", "result", id, "--wait"); !strings.Contains(out, `"status":"complete"`) {
		t.Fatalf("the probe: %q", out)
	}
	log := mustKiln(t, s, "task", "log", id)
	if !strings.HasPrefix(log, "uid ") || strings.HasPrefix(log, "uid 0\n") || !strings.HasSuffix(log, "done\n") || strings.Count(log, ": held") != 8 {
		t.Errorf("the probe's log:\n%s", log)
	}
	for line := range strings.Lines(log) {
		if strings.Contains(line, "BREACH") {
			t.Errorf("probe: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(logs.String(), "code package sandbox") || (!strings.Contains(logs.String(), "mode=ns") && !strings.Contains(logs.String(), "mode=bwrap")) || !strings.Contains(logs.String(), "group_kill=false") {
		t.Errorf("the server did not log its sandbox; its log:\n%s", logs.String())
	}

	// A server that dies takes its running tasks with it.
	marker := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1e6)
	if err := os.WriteFile(filepath.Join(pkg, "run.sh"), []byte("echo ready; exec sleep "+marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKiln(t, s, "code", "upload", pkg, "--name", "sleeper", "--file", "run.sh", "--runtime", "sh")
	mustKiln(t, s, "enqueue", "code:sleeper", "")
	running := func() bool {
		out, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output()
		return len(bytes.TrimSpace(out)) > 0
	}
	testenv.Eventually(t, "the sleeper to start", running)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	stopped = true
	testenv.Eventually(t, "the task to end with the server", func() bool { return !running() })
}
