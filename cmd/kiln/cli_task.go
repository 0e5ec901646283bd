package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store"
)

// stdin is where `kiln enqueue <type> -` reads the payload; tests replace it.
var stdin io.Reader = os.Stdin

// maxResultWait is the longest wait_ms the result route takes.
const maxResultWait = 60 * time.Second

func runEnqueue(ctx context.Context, std stdio, args []string) error {
	c := lookupClient("enqueue")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var (
		queue, uniqueKey, id      string
		priority, maxRetries      int
		delay, timeout, uniqueTTL durationFlag
		retention                 durationFlag
		wait                      bool
		waitFor                   durationFlag
	)
	fs.StringVar(&queue, "queue", "", "queue (default \"default\", or the type itself for a code package's type code:<name>)")
	fs.IntVar(&priority, "priority", 0, "priority 0-9, higher runs first")
	fs.Var(&delay, "delay", "run no sooner than this from now (90s, 1h, 2d)")
	fs.IntVar(&maxRetries, "max-retries", -1, "retries after a failed attempt (default: the server's, 25)")
	fs.Var(&timeout, "timeout", "bound on one attempt (default: the server's, 30m; 0 for none)")
	fs.StringVar(&uniqueKey, "unique-key", "", "refuse the task while another with this key is within --unique-ttl")
	fs.Var(&uniqueTTL, "unique-ttl", "deduplication window of --unique-key (1s to 30d)")
	untilSuccess := fs.Bool("unique-until-success", false, "release --unique-key as soon as the task succeeds, instead of holding it for the whole --unique-ttl")
	fs.Var(&retention, "retention", "how long to keep the finished task (default 24h)")
	fs.StringVar(&id, "id", "", "the task's id (default: a new one); an existing id is refused")
	var pf payloadFlags
	pf.register(fs)
	fs.BoolVar(&wait, "wait", false, "wait for the task to finish and print its result (exit 5 if it fails)")
	fs.Var(&waitFor, "wait-timeout", "with --wait, give up after this long (exit 7; default: wait forever)")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 2); err != nil {
		return err
	}
	if maxRetries < -1 {
		return usagef("enqueue: --max-retries %d is negative", maxRetries)
	}
	if uniqueKey == "" && uniqueTTL.set {
		return usagef("enqueue: --unique-ttl needs --unique-key")
	}
	if uniqueKey != "" && !uniqueTTL.set {
		return usagef("enqueue: --unique-key needs --unique-ttl (how long the key is held)")
	}
	if uniqueKey == "" && *untilSuccess {
		return usagef("enqueue: --unique-until-success needs --unique-key")
	}
	var payload []byte
	if len(pos) == 2 {
		var in io.Reader
		if pos[1] == "-" {
			in = stdin // read the global only when asked: tests replace it
		}
		payload, err = pf.read(pos[1], in, std.stderr)
		if err != nil {
			return usagef("enqueue: %v", err)
		}
	} else if _, err := pf.check(); err != nil {
		return usagef("enqueue: %v", err)
	}
	if queue == "" && strings.HasPrefix(pos[0], hosted.TypePrefix) {
		// A code package's tasks live in the queue named like their type,
		// where the server's runner takes them.
		queue = pos[0]
	}
	opts := &wire.TaskOptions{
		ID: id, Queue: queue, Priority: priority, UniqueKey: uniqueKey,
		ProcessInMS: delay.d.Milliseconds(), UniqueTTLMS: uniqueTTL.d.Milliseconds(), RetentionMS: retention.d.Milliseconds(),
		UniqueUntilSuccess: *untilSuccess,
	}
	if maxRetries >= 0 {
		opts.MaxRetries = &maxRetries
	}
	if timeout.set {
		ms := timeout.d.Milliseconds()
		opts.TimeoutMS = &ms
	}
	req := wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: pos[0], Payload: payload, Options: opts}}}
	var resp wire.EnqueueResponse
	if err := cn.do(ctx, "enqueue", apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "tasks"), Body: req}, &resp); err != nil {
		return err
	}
	if len(resp.Tasks) != 1 {
		return fmt.Errorf("enqueue: the server answered %d items for one task", len(resp.Tasks))
	}
	it := resp.Tasks[0]
	if it.Error != nil {
		e := &cliError{code: exitFailure, msg: "enqueue " + pos[0], err: itemError(it.Error)}
		if it.Error.Code == wire.CodeDuplicate {
			e.hint = "task " + it.ID + " holds the unique key; see it with `kiln task get " + it.ID + "`"
		}
		return e
	}
	if wait {
		return waitResult(ctx, std, cn, it.ID, waitFor)
	}
	if cn.json {
		return printJSON(std.stdout, it)
	}
	_, err = fmt.Fprintf(std.stdout, "%s\t%s\n", it.ID, it.State)
	return err
}

// helpOK turns the flag.ErrHelp of a -h into success.
func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func runTask(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "task", args, map[string]func(context.Context, stdio, []string) error{
		"get": runTaskGet,
		"ls":  runTaskList,
		"cancel": func(ctx context.Context, std stdio, args []string) error {
			return runTaskAdmin(ctx, std, "cancel", args)
		},
		"retry": func(ctx context.Context, std stdio, args []string) error {
			return runTaskAdmin(ctx, std, "retry", args)
		},
		"result": runTaskResult,
		"watch":  runTaskWatch,
		"log":    runTaskLog, // cli_code.go
	})
}

func runTaskGet(ctx context.Context, std stdio, args []string) error {
	c := subcommand("task", "get", "<id>", "Get shows one task: its state, attempts, times, progress, payload and result.")
	return show(ctx, std, c, args, 1, func(cn *conn, pos []string) (string, string) {
		return "task " + pos[0], projectRoute(cn.project, "tasks", pos[0])
	}, func(cn *conn, t *wire.Task) error {
		if cn.json {
			return printJSON(std.stdout, t)
		}
		return printTask(std.stdout, t)
	})
}

// printTask writes a task as aligned "field value" lines.
func printTask(w io.Writer, t *wire.Task) error {
	tb := newTable(w, "id", t.ID)
	tb.row("type", t.Type)
	tb.row("queue", t.Queue)
	tb.row("state", t.State)
	tb.row("attempt", fmt.Sprintf("%d of %d", t.Attempt, t.MaxRetries+1))
	tb.row("priority", strconv.Itoa(t.Priority))
	if t.TimeoutMS > 0 {
		tb.row("timeout", wire.Dur(t.TimeoutMS).String())
	}
	if t.Deadline != nil {
		tb.row("deadline", fmtTime(t.Deadline))
	}
	if t.UniqueKey != "" {
		tb.row("unique key", t.UniqueKey+" (for "+wire.Dur(t.UniqueTTLMS).String()+")")
	}
	tb.row("created", fmtTime(t.CreatedAt))
	tb.row("run at", fmtTime(t.RunAt))
	tb.row("started", fmtTime(t.StartedAt))
	tb.row("finished", fmtTime(t.FinishedAt))
	if t.ExpiresAt != nil {
		tb.row("kept until", fmtTime(t.ExpiresAt))
	}
	if t.WorkerID != "" {
		tb.row("worker", t.WorkerID)
	}
	if t.State == store.StateActive.String() {
		tb.row("lease expires", fmtTime(t.LeaseExpiresAt))
	}
	if t.CancelRequested {
		tb.row("cancel requested", "yes")
	}
	if t.Progress != nil {
		tb.row("progress", fmtProgress(t.Progress))
	}
	if t.LastError != "" {
		label, text := errorRow(t)
		tb.row(label, text)
	}
	errorHistory(tb, t)
	tb.row("payload", showBytes(t.Payload))
	if t.Result != nil {
		tb.row("result", showBytes(t.Result))
	}
	return tb.flush()
}

// errorHistory adds the task's failed attempts to a task view, oldest
// first: a "failed attempts" row with their count, then one row per
// attempt with its time, worker and error.
func errorHistory(tb *table, t *wire.Task) {
	if len(t.Errors) == 0 && t.ErrorsDropped == 0 {
		return
	}
	n := fmt.Sprint(len(t.Errors) + t.ErrorsDropped)
	if t.ErrorsDropped > 0 {
		n += fmt.Sprintf(" (the %d earliest not kept)", t.ErrorsDropped)
	}
	tb.row("failed attempts", n)
	for _, e := range t.Errors {
		line := fmtTime(&e.At) + "  " + orDash(e.WorkerID) + "  " + oneLine(e.Error)
		tb.row(fmt.Sprintf("  attempt %d", e.Attempt), line)
	}
}

// errorRow is how a task view shows the task's last error. The error is
// the task's current one only when the task is waiting for a retry, dead or
// cancelled because of it; a task that is pending, active or succeeded
// again (after an automatic or a `task retry`) keeps the error of an
// earlier attempt, shown as such.
func errorRow(t *wire.Task) (label, text string) {
	if errorIsCurrent(t.State) {
		return "last error", oneLine(t.LastError)
	}
	return "previous error", oneLine(t.LastError) + " (" + previousAttempt(t) + ")"
}

func errorIsCurrent(state string) bool {
	switch state {
	case store.StateRetry.String(), store.StateDead.String(), store.StateCancelled.String():
		return true
	}
	return false
}

// previousAttempt says which run the last error of a task that is not in
// an error state belongs to.
func previousAttempt(t *wire.Task) string {
	switch {
	case t.State == store.StateActive.String() && t.Attempt > 1:
		return fmt.Sprintf("of attempt %d; attempt %d is running", t.Attempt-1, t.Attempt)
	case t.State == store.StateActive.String() || t.Attempt == 0:
		return "of the run before `task retry`"
	case t.State == store.StateSucceeded.String():
		return "of an earlier attempt; the task succeeded since"
	}
	return fmt.Sprintf("of attempt %d", t.Attempt)
}

func fmtProgress(p *wire.Progress) string {
	s := strconv.Itoa(p.Percent) + "%"
	if p.Message != "" {
		s += " " + oneLine(p.Message)
	}
	return s
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ⏎ ") }

// showBytes shows a payload or result: short text as it is, else its size.
func showBytes(b []byte) string {
	switch {
	case len(b) == 0:
		return "-"
	case len(b) <= 200 && utf8.Valid(b) && !strings.ContainsAny(string(b), "\x00\r\n\t"):
		return string(b)
	case utf8.Valid(b):
		return fmt.Sprintf("%d bytes of text (see --json or `kiln task result`)", len(b))
	default:
		return fmt.Sprintf("%d bytes (binary; see --json)", len(b))
	}
}

func runTaskList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("task", "ls", "[flags]", "Ls lists the project's tasks, oldest first (--newest for newest first), a page at a time.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var queue, typ, states, cursor string
	var limit int
	var newest, all bool
	fs.StringVar(&queue, "queue", "", "only this queue")
	fs.StringVar(&typ, "type", "", "only this type")
	fs.StringVar(&states, "state", "", "only these states, comma separated (pending,active,...)")
	fs.IntVar(&limit, "limit", 50, "tasks per page, 1-1000")
	fs.StringVar(&cursor, "cursor", "", "continue from the cursor a previous page printed")
	fs.BoolVar(&newest, "newest", false, "newest first")
	fs.BoolVar(&all, "all", false, "follow the cursor to the end")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 0, 0); err != nil {
		return err
	}
	if limit < 1 || limit > store.MaxListLimit {
		return usagef("task ls: --limit %d is outside 1..%d", limit, store.MaxListLimit)
	}
	if states != "" {
		for _, s := range strings.Split(states, ",") {
			if _, err := store.ParseState(strings.TrimSpace(s)); err != nil {
				return usagef("task ls: --state: %q is not a state (one of %s)", s, strings.Join(stateColumns, ", "))
			}
		}
	}
	q := url.Values{}
	for k, v := range map[string]string{"queue": queue, "type": typ, "state": strings.ReplaceAll(states, " ", "")} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", strconv.Itoa(limit))
	if newest {
		q.Set("order", "newest")
	}
	var tasks []*wire.Task
	next := cursor
	for {
		if next != "" {
			q.Set("cursor", next)
		}
		var page wire.TaskList
		if err := cn.do(ctx, "task ls", apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "tasks"), Query: q}, &page); err != nil {
			return err
		}
		tasks = append(tasks, page.Tasks...)
		next = page.NextCursor
		if !all || next == "" {
			break
		}
	}
	if cn.json {
		return printJSON(std.stdout, wire.TaskList{Tasks: nonNil(tasks), NextCursor: next})
	}
	tb := newTable(std.stdout, "ID", "TYPE", "QUEUE", "STATE", "ATTEMPT", "CREATED", "LAST ERROR")
	for _, t := range tasks {
		lastErr := oneLine(t.LastError)
		if lastErr != "" && !errorIsCurrent(t.State) {
			lastErr = "(previous) " + lastErr
		}
		tb.row(t.ID, t.Type, t.Queue, t.State, strconv.Itoa(t.Attempt), fmtTime(t.CreatedAt), orDash(truncateText(lastErr, 60)))
	}
	if err := tb.flush(); err != nil {
		return err
	}
	if next != "" {
		// The next page's command repeats what chose this page: the
		// filters, the order and the page size (a cursor continues one
		// listing; without --newest it would go on oldest first).
		more := []string{"kiln", "task", "ls"}
		for _, f := range []struct{ name, val string }{{"--queue", queue}, {"--type", typ}, {"--state", states}} {
			if f.val != "" {
				more = append(more, f.name, shellQuote(f.val))
			}
		}
		if limit != 50 {
			more = append(more, "--limit", strconv.Itoa(limit))
		}
		if newest {
			more = append(more, "--newest")
		}
		more = append(more, "--cursor", shellQuote(next))
		_, err := fmt.Fprintf(std.stderr, "more: %s (or --all)\n", strings.Join(more, " "))
		return err
	}
	return nil
}

// shellQuote quotes s for a POSIX shell when it holds anything but letters,
// digits and -_.,:/=@+ (a hint the user may paste).
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,:/=@+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func truncateText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func runTaskAdmin(ctx context.Context, std stdio, verb string, args []string) error {
	help := "Cancel cancels tasks: waiting ones at once, an active one by asking its worker to stop."
	if verb == "retry" {
		help = "Retry makes dead or cancelled tasks pending again, with a fresh count of attempts."
	}
	c := subcommand("task", verb, "<id>...", help)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, store.MaxBatch); err != nil {
		return err
	}
	var resp wire.AdminResponse
	if err := cn.do(ctx, "task "+verb, apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "tasks:"+verb), Body: wire.IDsRequest{IDs: pos}}, &resp); err != nil {
		return err
	}
	if len(resp.Items) != len(pos) {
		return fmt.Errorf("task %s: the server answered %d items for %d ids", verb, len(resp.Items), len(pos))
	}
	if cn.json {
		if err := printJSON(std.stdout, resp); err != nil {
			return err
		}
	} else {
		tb := newTable(std.stdout, "ID", "STATE", "ERROR")
		for i, it := range resp.Items {
			msg := "-"
			if it.Error != nil {
				msg = itemError(it.Error).Error()
			}
			tb.row(pos[i], orDash(it.State), msg)
		}
		if err := tb.flush(); err != nil {
			return err
		}
	}
	// The exit code tells whether every task was changed.
	var failed []error
	code := exitOK
	for i, it := range resp.Items {
		if it.Error != nil {
			failed = append(failed, fmt.Errorf("%s: %w", pos[i], itemError(it.Error)))
			if code == exitOK || code == exitNotFound && it.Error.Code != wire.CodeNotFound {
				code = exitFailure
				if it.Error.Code == wire.CodeNotFound {
					code = exitNotFound
				}
			}
		}
	}
	if len(failed) > 0 {
		return &cliError{code: code, msg: fmt.Sprintf("task %s: %d of %d failed", verb, len(failed), len(pos)), err: errors.Join(failed...)}
	}
	return nil
}

func runTaskResult(ctx context.Context, std stdio, args []string) error {
	c := subcommand("task", "result", "<id> [--wait]",
		"Result prints the result of a succeeded task to standard output, as the handler stored it.\n"+
			"A dead or cancelled task exits 5 with its last error; an unfinished one exits 7,\n"+
			"unless --wait waits for it to finish.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var wait bool
	var waitFor durationFlag
	fs.BoolVar(&wait, "wait", false, "wait until the task has finished")
	fs.Var(&waitFor, "timeout", "with --wait, give up after this long (exit 7; default: wait forever)")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	if !wait {
		var t wire.Task
		if err := cn.do(ctx, "task "+pos[0], apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "tasks", pos[0])}, &t); err != nil {
			return err
		}
		return printResult(std, cn, &t)
	}
	return waitResult(ctx, std, cn, pos[0], waitFor)
}

// waitResult long-polls the result route until the task is terminal (or
// limit passes, when set) and prints it like `task result`.
func waitResult(ctx context.Context, std stdio, cn *conn, id string, limit durationFlag) error {
	var end time.Time
	if limit.set {
		end = time.Now().Add(limit.d)
	}
	for {
		wait := maxResultWait
		if limit.set {
			wait = min(wait, max(time.Until(end), 0))
		}
		var t wire.Task
		q := url.Values{"wait_ms": {strconv.FormatInt(wait.Milliseconds(), 10)}}
		err := cn.do(ctx, "task "+id, apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "tasks", id, "result"), Query: q, Wait: wait}, &t)
		if err != nil {
			return err
		}
		if terminal(t.State) || limit.set && !time.Now().Before(end) {
			return printResult(std, cn, &t)
		}
	}
}

func terminal(state string) bool {
	st, err := store.ParseState(state)
	return err == nil && st.Terminal()
}

// printResult prints a finished task's result, or fails with the exit code
// of its state.
func printResult(std stdio, cn *conn, t *wire.Task) error {
	if cn.json {
		if err := printJSON(std.stdout, t); err != nil {
			return err
		}
	}
	switch t.State {
	case store.StateSucceeded.String():
		if cn.json {
			return nil
		}
		_, err := std.stdout.Write(t.Result)
		return err
	case store.StateDead.String(), store.StateCancelled.String():
		msg := fmt.Sprintf("task %s is %s after %d attempt(s)", t.ID, t.State, t.Attempt)
		if t.LastError != "" {
			msg += ": " + oneLine(t.LastError)
		}
		return &cliError{code: exitTaskFailed, msg: msg}
	default:
		return &cliError{code: exitNotFinished, msg: fmt.Sprintf("task %s is %s: not finished", t.ID, t.State), hint: "wait for it with `kiln task result --wait " + t.ID + "`"}
	}
}

func runTaskWatch(ctx context.Context, std stdio, args []string) error {
	c := subcommand("task", "watch", "<id>",
		"Watch follows a task until it finishes, printing each change of state and each progress\n"+
			"report as it happens (from the server's event stream; by polling when the stream is\n"+
			"not available). It exits like `task result`: 0 succeeded, 5 dead or cancelled.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	w := &watcher{std: std, cn: cn, id: pos[0]}
	return w.run(ctx)
}

// watchRecheck is how often `task watch` reads the task while it follows
// the event stream, in case the server dropped an event (a variable for
// the tests).
var watchRecheck = 5 * time.Second

// watcher follows one task for `task watch`.
type watcher struct {
	std  stdio
	cn   *conn
	id   string
	last string // the last line printed about the task's state
}

func (w *watcher) get(ctx context.Context) (*wire.Task, error) {
	var t wire.Task
	if err := w.cn.do(ctx, "task "+w.id, apiclient.Request{Method: http.MethodGet, Path: projectRoute(w.cn.project, "tasks", w.id)}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// show prints the task's state line when it changed.
func (w *watcher) show(t *wire.Task) error {
	line := t.State
	switch t.State {
	case store.StateActive.String():
		line += fmt.Sprintf("  attempt %d of %d", t.Attempt, t.MaxRetries+1)
		if t.WorkerID != "" {
			line += "  worker " + t.WorkerID
		}
		if t.Progress != nil {
			line += "  " + fmtProgress(t.Progress)
		}
	case store.StateRetry.String(), store.StateDead.String():
		if t.LastError != "" {
			line += "  " + truncateText(oneLine(t.LastError), 120)
		}
	}
	return w.print(line)
}

func (w *watcher) print(line string) error {
	if line == w.last {
		return nil
	}
	w.last = line
	if w.cn.json {
		return json.NewEncoder(w.std.stdout).Encode(map[string]string{"time": time.Now().UTC().Format(time.RFC3339Nano), "task": w.id, "status": line})
	}
	_, err := fmt.Fprintf(w.std.stdout, "%s  %s  %s\n", time.Now().Format("15:04:05.000"), w.id, line)
	return err
}

func (w *watcher) finish(t *wire.Task) error {
	if err := w.show(t); err != nil {
		return err
	}
	if t.State == store.StateSucceeded.String() {
		return nil
	}
	msg := fmt.Sprintf("task %s is %s after %d attempt(s)", t.ID, t.State, t.Attempt)
	if t.LastError != "" {
		msg += ": " + oneLine(t.LastError)
	}
	return &cliError{code: exitTaskFailed, msg: msg}
}

func (w *watcher) run(ctx context.Context) error {
	t, err := w.get(ctx)
	if err != nil {
		return err
	}
	if err := w.show(t); err != nil {
		return err
	}
	if terminal(t.State) {
		return w.finish(t)
	}
	resp, err := w.cn.api.Stream(ctx, apiclient.Request{Method: http.MethodGet, Path: projectRoute(w.cn.project, "events")})
	if err != nil {
		if ctx.Err() != nil {
			return w.cn.explain("watch "+w.id, err)
		}
		return w.poll(ctx)
	}
	defer func() { _ = resp.Body.Close() }() // a read-only stream
	// The task may have changed between the first read and the stream.
	if t, err = w.get(ctx); err != nil {
		return err
	}
	if terminal(t.State) {
		return w.finish(t)
	}
	if err := w.show(t); err != nil {
		return err
	}
	events := make(chan wire.Event)
	streamErr := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { streamErr <- readEvents(sctx, resp.Body, events) }()
	closeStream := func() error {
		stop()
		_ = resp.Body.Close() // unblocks the reader; a read-only stream
		return <-streamErr
	}
	// A slow check of the task guards against events the server dropped.
	tick := time.NewTicker(watchRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = closeStream() // stopped on purpose: its end is no news
			return w.cn.explain("watch "+w.id, ctx.Err())
		case err := <-streamErr:
			if ctx.Err() == nil && err != nil {
				_ = w.print("(event stream ended: " + err.Error() + "; polling)")
			}
			return w.poll(ctx)
		case <-tick.C:
		case ev := <-events:
			if ev.TaskID != w.id {
				continue
			}
			if ev.Kind == wire.EventTaskProgress {
				if err := w.print(fmt.Sprintf("active  progress %d%% %s", ev.Percent, oneLine(ev.Message))); err != nil {
					return err
				}
				continue
			}
		}
		t, err := w.get(ctx)
		if err != nil {
			return err
		}
		if terminal(t.State) {
			_ = closeStream() // stopped on purpose: its end is no news
			return w.finish(t)
		}
		if err := w.show(t); err != nil {
			return err
		}
	}
}

// poll follows the task without the event stream: the result route's long
// poll for the end, and a read every second for the states in between.
func (w *watcher) poll(ctx context.Context) error {
	for {
		var t wire.Task
		q := url.Values{"wait_ms": {"1000"}}
		err := w.cn.do(ctx, "task "+w.id, apiclient.Request{Method: http.MethodGet, Path: projectRoute(w.cn.project, "tasks", w.id, "result"), Query: q, Wait: time.Second}, &t)
		if err != nil {
			return err
		}
		if terminal(t.State) {
			return w.finish(&t)
		}
		if err := w.show(&t); err != nil {
			return err
		}
	}
}

// readEvents reads a Server-Sent Events stream and sends each event's data
// to out until the stream ends or ctx is done.
func readEvents(ctx context.Context, r io.Reader, out chan<- wire.Event) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var kind string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() > 0 {
				var ev wire.Event
				if err := json.Unmarshal([]byte(data.String()), &ev); err == nil {
					if ev.Kind == "" {
						ev.Kind = kind
					}
					select {
					case out <- ev:
					case <-ctx.Done():
						return nil
					}
				}
			}
			kind = ""
			data.Reset()
		case strings.HasPrefix(line, ":"):
			// a keep-alive comment
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	return io.ErrUnexpectedEOF
}
