package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

// storeCommand is `kiln store`: checking and recovering a data folder of
// the embedded store (docs/reliability.md). It works on the folder itself,
// not through a server, and needs the server stopped.
func storeCommand() *command {
	return &command{
		name:    "store",
		args:    "check|recover <dir> [flags]",
		summary: "check a data folder of the embedded store, or copy what can be read of it into a new one",
		help: "Subcommands:\n\n" +
			"  store check <dir>                 verify the folder: checksums, records, indexes;\n" +
			"                                    print the tasks by state and every problem\n" +
			"  store recover <dir> --to <new>    copy every readable task and record into a new\n" +
			"                                    data folder; <dir> is left as it is\n\n" +
			"Both open <dir> read-only and need it free: stop the server that uses it first.\n" +
			"check exits 1 when it finds a problem. See docs/reliability.md.",
		run: runStore,
	}
}

func runStore(ctx context.Context, std stdio, args []string) error {
	subs := map[string]func(context.Context, stdio, []string) error{
		"check":   runStoreCheck,
		"recover": runStoreRecover,
	}
	if len(args) == 0 {
		return usagef("store: missing subcommand (one of check, recover)")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return printCommandHelp(std.stdout, storeCommand(), nil)
	}
	f := subs[args[0]]
	if f == nil {
		return usagef("store: unknown subcommand %q (one of check, recover)", args[0])
	}
	return f(ctx, std, args[1:])
}

func runStoreCheck(_ context.Context, std stdio, args []string) error {
	c := subcommand("store", "check", "<dir>",
		"Check verifies a data folder of the embedded store without changing it: the\n"+
			"checksums of the engine's tables, MANIFEST and WAL, then that every task record decodes\n"+
			"and that tasks, payloads and the id index agree. It prints the readable tasks by\n"+
			"namespace (project) and state, and every problem with its file or key. It exits 1\n"+
			"when it finds a problem; `kiln store recover` then copies what can be read.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	pos, err := parseArgs(fs, std, c, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	rep, err := embedded.Check(pos[0])
	if err != nil {
		return fmt.Errorf("store check: %w", err)
	}
	if err := printReport(std.stdout, "data folder "+pos[0], rep); err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("store check: %d problem(s) in %s; `kiln store recover %s --to <new folder>` copies what can be read (docs/reliability.md)",
			len(rep.Problems), pos[0], pos[0])
	}
	return nil
}

func runStoreRecover(_ context.Context, std stdio, args []string) error {
	c := subcommand("store", "recover", "<dir> --to <new dir>",
		"Recover copies every task of a damaged data folder that can be read, with its\n"+
			"payload, and every readable queue, unique key and meta record (projects, tokens,\n"+
			"schedules) into a new data folder, and rebuilds the id index. <dir> is not changed;\n"+
			"<new dir> must not exist or be empty. It prints what it copied and what it left\n"+
			"out. Start the server on the new folder once you are satisfied.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	to := fs.String("to", "", "the new data folder (required)")
	pos, err := parseArgs(fs, std, c, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	if *to == "" {
		return usagef("store recover: --to <new dir> is required")
	}
	rep, err := embedded.Recover(pos[0], *to)
	if err != nil {
		if rep != nil {
			_ = printReport(std.stdout, "read from "+pos[0], rep) // the error says what failed
		}
		return fmt.Errorf("store recover: %w", err)
	}
	return printReport(std.stdout, "copied into "+*to, rep)
}

// printReport writes a report: the tasks by namespace and state, the meta
// records, then the problems.
func printReport(w io.Writer, title string, rep *embedded.Report) error {
	var b bytes.Buffer
	status := "no problems"
	if !rep.OK() {
		status = fmt.Sprintf("%d problem(s)", len(rep.Problems))
	}
	_, _ = fmt.Fprintf(&b, "%s: %s\n", title, status) // memory
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	// Writes to memory cannot fail.
	_, _ = fmt.Fprintf(tw, "namespace\ttotal")
	for _, st := range store.AllStates {
		_, _ = fmt.Fprintf(tw, "\t%s", st)
	}
	_, _ = fmt.Fprintf(tw, "\tmeta\n")
	nss := make(map[string]bool)
	for ns := range rep.Tasks {
		nss[ns] = true
	}
	for ns := range rep.Meta {
		nss[ns] = true
	}
	for _, ns := range slices.Sorted(maps.Keys(nss)) {
		var counts [store.NumStates + 1]int64
		if c := rep.Tasks[ns]; c != nil {
			counts = *c
		}
		var total int64
		for _, n := range counts {
			total += n
		}
		_, _ = fmt.Fprintf(tw, "%s\t%d", ns, total)
		for _, st := range store.AllStates {
			_, _ = fmt.Fprintf(tw, "\t%d", counts[st])
		}
		_, _ = fmt.Fprintf(tw, "\t%d\n", rep.Meta[ns])
	}
	_ = tw.Flush() // writes to memory cannot fail
	if len(rep.Problems) > 0 {
		b.WriteString("problems:\n")
		for _, p := range rep.Problems {
			b.WriteString("  " + strings.ReplaceAll(p.String(), "\n", " ") + "\n")
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}
