package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
)

// clientCommands are the commands that talk to a kiln server (docs/cli.md).
func clientCommands() []*command {
	return []*command{
		{
			name:    "enqueue",
			args:    "<type> [payload|-] [flags]",
			summary: "add a task (payload as an argument, or - for standard input)",
			help: "Enqueue adds one task of the given type to the server. The payload is the second\n" +
				"argument, or - to read it from standard input. Valid JSON is sent as it is; what\n" +
				"starts like JSON ({, [ or \") must be valid JSON unless --raw; other text is sent as\n" +
				"raw bytes, with a note. --format json also compacts it, --format base64 decodes\n" +
				"it. Options left out get the server's defaults (25 retries, 30 min timeout).\n" +
				"It prints the new task's id and state;\n" +
				"with --wait it waits for the task to finish and prints its result instead.",
			run: runEnqueue,
		},
		{
			name:    "task",
			args:    "get|ls|cancel|retry|result|watch|log [flags] [id...]",
			summary: "read, list, cancel, retry, wait for and watch tasks",
			help: "Subcommands:\n\n" +
				"  task get <id>              show one task\n" +
				"  task ls                    list tasks (filters: --queue --type --state; --all pages on)\n" +
				"  task cancel <id>...        cancel tasks (an active one is asked to stop)\n" +
				"  task retry <id>...         run dead or cancelled tasks again\n" +
				"  task result <id> [--wait]  print a finished task's result (exit 5 if it failed)\n" +
				"  task watch <id>            follow a task until it finishes: states and progress\n" +
				"  task log <id> [--follow]   a code package task's output (--follow: as it runs)\n\n" +
				"Run 'kiln task <subcommand> -h' for its flags.",
			run: runTask,
		},
		{
			name:    "workflow",
			args:    "get|ls|cancel [id]",
			summary: "list workflows, show one with each member's state, or cancel one",
			help: "Subcommands:\n\n" +
				"  workflow ls            the project's workflows with their states (--after, --limit)\n" +
				"  workflow get <id>      the workflow's state and each member's (waiting: not enqueued yet)\n" +
				"  workflow cancel <id>   cancel every member not finished\n\n" +
				"Workflows are made with the Go library (kiln.Chain, kiln.Group, kiln.Chord).",
			run: runWorkflow,
		},
		{
			name:    "queue",
			args:    "ls|pause|resume [queue]",
			summary: "list queues with their counts, pause or resume one",
			help: "Subcommands:\n\n" +
				"  queue ls               every queue of the project with its task counts by state\n" +
				"  queue pause <queue>    stop leasing from a queue (it still accepts tasks)\n" +
				"  queue resume <queue>   lease from it again",
			run: runQueue,
		},
		{
			name:    "worker",
			args:    "ls|revoke [id]",
			summary: "list remote workers, revoke one",
			help: "Subcommands:\n\n" +
				"  worker ls            the project's remote workers and their sessions\n" +
				"  worker revoke <id>   end a worker's session keys at once",
			run: runWorker,
		},
		{
			name:    "project",
			args:    "create|token|ls [id] [flags]",
			summary: "create a project (prints its worker secret once), make a project token",
			help: "Subcommands:\n\n" +
				"  project create <id> [--name N]   create a project; its worker secret is shown only now\n" +
				"  project token [id] [--name N]    create a token for a project (default: --project)\n" +
				"  project ls                       list projects",
			run: runProject,
		},
		{
			name:    "stats",
			summary: "task counts of every project and queue (admin token)",
			help:    "Stats prints the task counts by state of every queue of every project.",
			run:     runStats,
		},
	}
}

// subcommand makes the command value that help and flag errors name, as
// "task get".
func subcommand(parent, name, args, help string) *command {
	return &command{name: parent + " " + name, args: args, help: help}
}

// parseArgs parses flags anywhere among the arguments (kiln task get ID
// --json works as well as kiln task get --json ID); "--" ends the flags.
// It returns the positional arguments. -h prints help and returns
// flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, std stdio, c *command, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		err := fs.Parse(args)
		switch {
		case errors.Is(err, flag.ErrHelp):
			if err := printCommandHelp(std.stdout, c, fs); err != nil {
				return nil, err
			}
			return nil, flag.ErrHelp
		case err != nil:
			return nil, usagef("%s: %v", c.name, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// nargs checks the number of positional arguments.
func nargs(c *command, pos []string, lo, hi int) error {
	switch {
	case len(pos) < lo && lo == hi:
		return usagef("%s: want %d argument(s) (%s), got %d", c.name, lo, c.args, len(pos))
	case len(pos) < lo:
		return usagef("%s: want at least %d argument(s) (%s), got %d", c.name, lo, c.args, len(pos))
	case hi >= 0 && len(pos) > hi:
		return usagef("%s: too many arguments: %q (usage: kiln %s %s)", c.name, pos[hi:], c.name, c.args)
	}
	return nil
}

// dispatchSub runs the subcommand named by args[0].
func dispatchSub(ctx context.Context, std stdio, parent string, args []string, subs map[string]func(context.Context, stdio, []string) error) error {
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	if len(args) == 0 {
		return usagef("%s: missing subcommand (one of %s)", parent, sortedJoin(names))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return printCommandHelp(std.stdout, lookupClient(parent), nil)
	}
	f := subs[args[0]]
	if f == nil {
		return usagef("%s: unknown subcommand %q (one of %s)", parent, args[0], sortedJoin(names))
	}
	return f(ctx, std, args[1:])
}

// lookupClient is lookup for a command that must exist: every command of
// kiln (not only the client commands of this file), so that `kiln code -h`
// and `kiln schedule -h` print their own help.
func lookupClient(name string) *command {
	if c := lookup(name); c != nil {
		return c
	}
	panic("kiln: no command " + name)
}

func sortedJoin(s []string) string { return strings.Join(slices.Sorted(slices.Values(s)), ", ") }

// start parses a client command's flags, resolves the connection and checks
// that a token is known.
func start(ctx context.Context, std stdio, c *command, fs *flag.FlagSet, cf *connFlags, args []string) (*conn, []string, error) {
	cf.register(fs)
	pos, err := parseArgs(fs, std, c, args)
	if err != nil {
		return nil, nil, err
	}
	cn, err := cf.resolve(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	if err := cn.needToken(); err != nil {
		return nil, nil, err
	}
	if err := cn.tokenProject(ctx, c.name); err != nil {
		return nil, nil, err
	}
	return cn, pos, nil
}

// show runs the shape shared by the read-only subcommands: no flags but the
// connection's, exactly nargs positional arguments, one GET of the path that
// route builds (what names the call in errors), and render to show the
// answer (cn tells show whether --json was asked for).
func show[T any](ctx context.Context, std stdio, c *command, args []string, nargsWant int,
	route func(cn *conn, pos []string) (what, path string), render func(cn *conn, v *T) error) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, nargsWant, nargsWant); err != nil {
		return err
	}
	what, path := route(cn, pos)
	var v T
	if err := cn.do(ctx, what, apiclient.Request{Method: http.MethodGet, Path: path}, &v); err != nil {
		return err
	}
	return render(cn, &v)
}

// do calls the API and turns a failure into a cliError with an exit code and
// a hint.
func (c *conn) do(ctx context.Context, what string, r apiclient.Request, out any) error {
	if err := c.api.Do(ctx, r, out); err != nil {
		return c.explain(what, err)
	}
	return nil
}

// explain classifies err (see the exit codes in cli_conn.go).
func (c *conn) explain(what string, err error) error {
	var ae *apiclient.Error
	var te *apiclient.TransportError
	var ce *apiclient.CertError
	switch {
	case errors.As(err, &ce):
		e := &cliError{code: exitUnreachable, msg: what + ": cannot trust the server at " + c.url, err: ce}
		switch {
		case ce.Reason == apiclient.CertUnknownAuthority && c.caCert == "":
			e.hint = "give the CA certificate that signed the server's certificate with --ca-cert or " + envCACert + " (or \"ca_cert\" in cli.json)"
		case ce.Reason == apiclient.CertUnknownAuthority:
			e.hint = c.caCert + " does not hold the CA that signed the server's certificate"
		case ce.Reason == apiclient.CertNameMismatch:
			e.hint = "the host of the URL (--url, " + envURL + ") must be one that the server's certificate names"
		}
		return e
	case errors.As(err, &ae):
		e := &cliError{code: exitFailure, msg: what, err: err}
		switch ae.Code() {
		case wire.CodeNotFound:
			e.code = exitNotFound
			if strings.Contains(ae.Path, "/projects/") {
				e.hint = "a task of another project, or a project that does not exist, is not found either; the project is " + c.project + " (--project, " + envProject + ")"
			}
		case wire.CodeUnauthorized, wire.CodeSessionExpired, wire.CodeVerifyFailed:
			e.code = exitUnauthorized
			from := c.tokenFrom
			if from == "" {
				from = "nowhere"
			}
			e.hint = "the server refused the token (taken from " + from + "): set --token or " + envToken
		case wire.CodeForbidden:
			e.code = exitUnauthorized
			e.hint = "this needs an admin token (the one `kiln server` printed on first start)"
		case wire.CodeBadRequest:
			if strings.Contains(ae.Obj.Message, "HTTP request to an HTTPS server") {
				e.hint = "the server speaks TLS: use an https:// URL (--url, " + envURL + ")"
			}
		}
		return e
	case errors.As(err, &te):
		if errors.Is(err, context.Canceled) {
			return &cliError{code: exitFailure, msg: what, err: errors.New("interrupted")}
		}
		e := &cliError{code: exitFailure, msg: what, err: err}
		if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			e.hint = "the server speaks plain HTTP: use an http:// URL (--url, " + envURL + ")"
		}
		var ne net.Error
		var oe *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &oe) || errors.As(err, &ne) && ne.Timeout() {
			e.code = exitUnreachable
			e.msg = what + ": cannot reach the server at " + c.url
			e.err = errors.New(causeText(err))
			e.hint = "is `kiln server` running? Set the URL with --url or " + envURL
		}
		return e
	}
	return &cliError{code: exitFailure, msg: what, err: err}
}

// causeText is the innermost useful text of a transport error: the
// operation and the system's message ("dial tcp 127.0.0.1:7878: connect:
// connection refused"), without the repeated URL.
func causeText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

// itemError is the error object of one item of a batch answer as the CLI
// shows an error of the server, "<message> (<code>)": the object's own
// Error method starts with "kiln: ", which run adds already.
func itemError(e *wire.Error) error { return &apiclient.Error{Obj: e} }

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// table writes aligned columns; the first row is the header.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	_, _ = fmt.Fprintln(t.tw, strings.Join(cols, "\t")) // the error surfaces at Flush
}

func (t *table) flush() error { return t.tw.Flush() }

// fmtTime shows a time in the local zone to the second; nil shows "-".
func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// states in lifecycle order, for columns.
var stateColumns = []string{"scheduled", "pending", "active", "retry", "succeeded", "dead", "cancelled"}

func projectRoute(project string, rest ...string) string {
	return apiclient.Path(append([]string{"v1", "projects", project}, rest...)...)
}
