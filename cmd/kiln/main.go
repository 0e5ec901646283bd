// Command kiln is the command line of kiln, the distributed task processing
// system: for now it tells its version and its usage; the server, enqueue,
// task, queue, schedule, code, worker and bench commands join it as they land.
//
// Usage:
//
//	kiln <command> [arguments]
//	kiln help [command]
//
// Exit codes: 0 on success, 1 when a command fails, 2 on a usage mistake
// (an unknown command, a bad flag or argument).
//
// kiln owns the process's signals, the library never does: SIGINT, SIGTERM
// and SIGQUIT cancel the context every command runs under, so a long-running
// command (the server, a worker) shuts down gracefully. A second signal ends
// the process at once.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/kilnhq/kiln/runner"
)

// version is kiln's version; `make build` sets it with
// -ldflags "-X main.version=...". When empty, the module's build info is used.
var version = ""

func main() {
	// First: when this process is the trampoline of a code package task,
	// Main applies the task's limits and execs its program (it does not
	// return); otherwise it returns at once.
	runner.Main()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGQUIT)
	// After the first signal, give the signals back to the runtime: a second
	// one ends the process at once instead of waiting for a graceful stop.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand of kiln.
type command struct {
	name    string
	args    string // the synopsis after the name, as in "kiln help [command]"
	summary string // one line for the command list
	help    string // what `kiln help <name>` adds below the synopsis
	run     func(ctx context.Context, std stdio, args []string) error
}

// stdio is where a command writes; tests pass buffers.
type stdio struct {
	stdout, stderr io.Writer
}

// usageError is a mistake on the command line: kiln exits 2 and points to help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// commands lists kiln's commands in the order `kiln help` shows them.
// It is a function, not a variable, because help refers back to the list.
func commands() []*command {
	return append([]*command{
		{
			name:    "version",
			summary: "print kiln's version",
			help:    "Version prints kiln's version, the Go version it was built with, and the platform.",
			run:     runVersion,
		},
		{
			name:    "help",
			args:    "[command]",
			summary: "show help for kiln or for one command",
			help:    "Help lists kiln's commands, or tells more about one of them.",
			run:     runHelp,
		},
		serverCommand(), // server.go
	}, append(clientCommands(), codeCommand(), scheduleCommand(), storeCommand(), resqueCommand())...) // cli.go, cli_code.go, cli_schedule.go, cli_store.go, resque.go
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// run runs the command named by args[0] and returns the process's exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	std := stdio{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		_ = printUsage(stderr) // a failed write to stderr has nowhere to go
		return 2
	}
	err := dispatch(ctx, std, args)
	var ue *usageError
	var ce interface{ ExitCode() int } // client commands' errors (cli_conn.go)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		_, _ = fmt.Fprintf(stderr, "kiln: %s\nRun 'kiln help' for usage.\n", ue.msg) // nowhere to report a failed write
		return 2
	case errors.As(err, &ce):
		printError(stderr, err)
		return ce.ExitCode()
	default:
		printError(stderr, err)
		return 1
	}
}

// printError writes err in the one format of docs/cli.md: "kiln: <what>:
// <message> (<code>)", and a "hint:" line when there is one. An error of a
// library that starts with its own "kiln: " does not get a second one.
func printError(w io.Writer, err error) {
	msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "kiln: "), ": kiln: ", ": ")
	_, _ = fmt.Fprintf(w, "kiln: %s\n", msg) // nowhere to report a failed write
}

func dispatch(ctx context.Context, std stdio, args []string) error {
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		return runHelp(ctx, std, rest)
	}
	c := lookup(name)
	if c == nil {
		return usagef("unknown command %q", name)
	}
	return c.run(ctx, std, rest)
}

// parseFlags parses a command's flags; -h prints the command's help.
// It returns flag.ErrHelp after printing help, which the caller returns as nil.
func parseFlags(fs *flag.FlagSet, std stdio, c *command, args []string) error {
	fs.SetOutput(io.Discard) // errors are reported once, by run
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if err := printCommandHelp(std.stdout, c, fs); err != nil {
			return err
		}
		return flag.ErrHelp
	case err != nil:
		return usagef("%s: %v", c.name, err)
	}
	return nil
}

func runVersion(_ context.Context, std stdio, args []string) error {
	c := lookup("version")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	if err := parseFlags(fs, std, c, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return usagef("version takes no arguments, got %q", fs.Args())
	}
	v := kilnVersion()
	if _, err := fmt.Fprintf(std.stdout, "kiln %s (%s %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH); err != nil {
		return err
	}
	if v == "devel" {
		_, _ = fmt.Fprintln(std.stderr, "note: built without version information (go run, go test, -buildvcs=false or a git worktree): `make build` records the commit") // a note: nowhere to report a failed write
	}
	return nil
}

func runHelp(_ context.Context, std stdio, args []string) error {
	switch len(args) {
	case 0:
		return printUsage(std.stdout)
	case 1:
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			return printCommandHelp(std.stdout, lookup("help"), nil)
		}
		c := lookup(args[0])
		if c == nil {
			return usagef("help: unknown command %q", args[0])
		}
		return printCommandHelp(std.stdout, c, nil)
	default:
		return usagef("help takes at most one command, got %q", args)
	}
}

// printUsage writes kiln's usage to w. Text is built in memory, so the one
// write to w is the only error to check.
func printUsage(w io.Writer) error {
	var b bytes.Buffer
	b.WriteString("kiln is a distributed task processing system.\n\n")
	b.WriteString("Usage:\n\n\tkiln <command> [arguments]\n\nCommands:\n\n")
	tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	for _, c := range commands() {
		_, _ = fmt.Fprintf(tw, "\t%s\t%s\n", c.name, c.summary) // writes to memory cannot fail
	}
	_ = tw.Flush() // writes to memory cannot fail
	b.WriteString("\nRun 'kiln help <command>' for more about a command.\n")
	_, err := w.Write(b.Bytes())
	return err
}

// printCommandHelp writes a command's synopsis, help and, when fs is given
// and has any, its flags to w.
func printCommandHelp(w io.Writer, c *command, fs *flag.FlagSet) error {
	var b bytes.Buffer
	b.WriteString("Usage: kiln " + c.name)
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	b.WriteString("\n\n" + c.help + "\n")
	if fs != nil {
		first := true
		fs.VisitAll(func(f *flag.Flag) {
			if first {
				b.WriteString("\nFlags:\n")
				first = false
			}
			_, _ = fmt.Fprintf(&b, "  -%s\t%s (default %q)\n", f.Name, f.Usage, f.DefValue) // memory
		})
	}
	_, err := w.Write(b.Bytes())
	return err
}

// kilnVersion is the version set at link time (`make build`), else the one
// the Go toolchain recorded in the binary (versionFromBuild).
func kilnVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return versionFromBuild(info)
}

// versionFromBuild reads kiln's version from the build info: the main
// module's version when the toolchain set one (`go install
// module@version`, or since Go 1.24 a plain `go build` or `go install` in a
// clone: a pseudo-version with the commit, "+dirty" for uncommitted
// changes), else the commit the toolchain stamped (vcs.revision, "-dirty"
// when vcs.modified), else "devel": built without version control
// information (`go run`, `go test`, -buildvcs=false, no .git).
func versionFromBuild(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return rev + dirty
}
