package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/runner"
)

// runMainEnv makes the test binary act as the kiln binary: TestMain calls main
// instead of running the tests, so TestBinary exercises the real main (signal
// setup, exit codes) without a separate `go build`.
const runMainEnv = "KILN_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	// The test binary is the trampoline of the code package tasks that
	// cli_code_test.go runs.
	runner.Main()
	if os.Getenv(runMainEnv) == "1" {
		main() // exits
	}
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(runner.SandboxHelperFunc))
}

func TestRun(t *testing.T) {
	t.Parallel()
	// A test binary has no version: `kiln version` says why on stderr.
	versionNote := ""
	if kilnVersion() == "devel" {
		versionNote = "note: built without version information"
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring; "" means stdout must be empty
		wantStderr string // substring; "" means stderr must be empty
	}{
		{name: "no args", args: nil, wantCode: 2, wantStderr: "Usage:"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: "kiln <command> [arguments]"},
		{name: "help lists version", args: []string{"help"}, wantCode: 0, wantStdout: "version"},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: "Commands:"},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: "Commands:"},
		{name: "help version", args: []string{"help", "version"}, wantCode: 0, wantStdout: "Usage: kiln version"},
		{name: "help -h", args: []string{"help", "-h"}, wantCode: 0, wantStdout: "Usage: kiln help [command]"},
		{name: "help unknown", args: []string{"help", "nope"}, wantCode: 2, wantStderr: `unknown command "nope"`},
		{name: "help too many", args: []string{"help", "a", "b"}, wantCode: 2, wantStderr: "at most one command"},
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "kiln ", wantStderr: versionNote},
		{name: "version -h", args: []string{"version", "-h"}, wantCode: 0, wantStdout: "Usage: kiln version"},
		{name: "version extra arg", args: []string{"version", "x"}, wantCode: 2, wantStderr: "takes no arguments"},
		{name: "version bad flag", args: []string{"version", "-x"}, wantCode: 2, wantStderr: "flag provided but not defined: -x"},
		{name: "unknown command", args: []string{"bogus"}, wantCode: 2, wantStderr: `kiln: unknown command "bogus"` + "\nRun 'kiln help' for usage."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("run(%q) = %d, want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, &stdout, &stderr)
			}
			checkOutput(t, "stdout", stdout.String(), tt.wantStdout)
			checkOutput(t, "stderr", stderr.String(), tt.wantStderr)
		})
	}
}

func checkOutput(t *testing.T, name, got, want string) {
	t.Helper()
	switch {
	case want == "" && got != "":
		t.Errorf("%s = %q, want it empty", name, got)
	case !strings.Contains(got, want):
		t.Errorf("%s = %q, want it to contain %q", name, got, want)
	}
}

func TestKilnVersion(t *testing.T) {
	t.Parallel()
	got := kilnVersion()
	if got == "" || strings.ContainsAny(got, " \n") {
		t.Errorf("kilnVersion() = %q, want one non-empty word", got)
	}
}

func TestCommandsAreComplete(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, c := range commands() {
		if c.name == "" || c.summary == "" || c.help == "" || c.run == nil {
			t.Errorf("command %+v: want name, summary, help and run set", *c)
		}
		if seen[c.name] {
			t.Errorf("command %q listed twice", c.name)
		}
		seen[c.name] = true
	}
}

// TestBinary runs the real main in a child process, for the exit codes that
// only os.Exit produces.
func TestBinary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		wantCode int
		want     string // in stdout+stderr
	}{
		{args: []string{"version"}, wantCode: 0, want: "kiln "},
		{args: []string{"help"}, wantCode: 0, want: "Commands:"},
		{args: nil, wantCode: 2, want: "Usage:"},
		{args: []string{"bogus"}, wantCode: 2, want: `unknown command "bogus"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"kiln"}, tt.args...), " "), func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], tt.args...)
			// GORACE: without it a -race child sleeps 1s at exit to gather reports.
			cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
			out, err := cmd.CombinedOutput()
			code := 0
			var exitErr *exec.ExitError
			switch {
			case errors.As(err, &exitErr):
				code = exitErr.ExitCode()
			case err != nil:
				t.Fatalf("running %v: %v", cmd.Args, err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; output:\n%s", code, tt.wantCode, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("output = %q, want it to contain %q", out, tt.want)
			}
		})
	}
}
