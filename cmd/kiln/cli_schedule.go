package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server/api"
)

// scheduleCommand is `kiln schedule`: schedules through the native API
// (docs/api.md, "Schedules"; docs/schedules.md).
func scheduleCommand() *command {
	return &command{
		name:    "schedule",
		args:    "create|ls|get|cancel|rm [flags] [type|id]",
		summary: "create, list and cancel schedules (tasks enqueued by cron or interval)",
		help: "Subcommands:\n\n" +
			"  schedule create <type> [payload|-] (--cron EXPR [--tz ZONE] | --every DUR) [flags]\n" +
			"                            enqueue a task of <type> at each run time\n" +
			"  schedule ls               list the project's schedules\n" +
			"  schedule get <id>         show one schedule\n" +
			"  schedule cancel <id>...   stop schedules (the tasks they enqueued stay)\n" +
			"  schedule rm <id>...       delete schedules\n\n" +
			"A code package's tasks are scheduled as type code:<name> (raw payload, latest revision).\n" +
			"Run 'kiln schedule <subcommand> -h' for its flags. See docs/schedules.md.",
		run: runSchedule,
	}
}

func runSchedule(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "schedule", args, map[string]func(context.Context, stdio, []string) error{
		"create": runScheduleCreate,
		"ls":     runScheduleList,
		"get":    runScheduleGet,
		"cancel": func(ctx context.Context, std stdio, args []string) error {
			return runScheduleChange(ctx, std, "cancel", args)
		},
		"rm": func(ctx context.Context, std stdio, args []string) error {
			return runScheduleChange(ctx, std, "rm", args)
		},
	})
}

// parseWhen reads --start-at/--end-at: an RFC 3339 time, or a duration
// from now ("10m", "2d").
func parseWhen(name, s string, now time.Time) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return &t, nil
	}
	d, err := parseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		return nil, usagef("schedule create: --%s %q: want an RFC 3339 time (2030-01-02T15:04:05Z) or a duration from now (10m, 2d)", name, s)
	}
	t := now.Add(d)
	return &t, nil
}

func runScheduleCreate(ctx context.Context, std stdio, args []string) error {
	c := subcommand("schedule", "create", "<type> [payload|-] (--cron EXPR | --every DUR) [flags]",
		"Create makes a schedule that enqueues a task of <type> at each run time: by a cron\n"+
			"expression (--cron, five fields or six with seconds, or @daily...) read in --tz, or\n"+
			"every --every (at least 1s). --start-at, --end-at and --max-runs bound it. The task\n"+
			"flags are those of `kiln enqueue` (--delay delays each run's task). It prints the\n"+
			"schedule's id, status and next run time.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var (
		id, cronExpr, tz, startAt, endAt string
		queue, uniqueKey                 string
		priority, maxRetries, maxRuns    int
		every, delay, timeout, uniqueTTL durationFlag
		retention                        durationFlag
	)
	fs.StringVar(&id, "id", "", "the schedule's id (default: a new one)")
	fs.StringVar(&cronExpr, "cron", "", "cron expression, e.g. \"*/10 * * * *\" or @hourly")
	fs.StringVar(&tz, "tz", "", "IANA time zone of --cron (default UTC), e.g. Europe/London")
	fs.Var(&every, "every", "run every this long instead of --cron (90s, 10m, 1h; whole seconds)")
	fs.StringVar(&startAt, "start-at", "", "first possible run time: RFC 3339, or a duration from now (default now)")
	fs.StringVar(&endAt, "end-at", "", "no runs after this: RFC 3339, or a duration from now")
	fs.IntVar(&maxRuns, "max-runs", 0, "stop after this many runs (default: no limit)")
	fs.StringVar(&queue, "queue", "", "queue (default \"default\", or the type itself for a code package's type code:<name>)")
	fs.IntVar(&priority, "priority", 0, "priority 0-9, higher runs first")
	fs.Var(&delay, "delay", "hold each run's task back this long")
	fs.IntVar(&maxRetries, "max-retries", -1, "retries after a failed attempt (default: the server's, 25)")
	fs.Var(&timeout, "timeout", "bound on one attempt (default: the server's, 30m; 0 for none)")
	fs.StringVar(&uniqueKey, "unique-key", "", "skip a run while a task with this key is within --unique-ttl")
	fs.Var(&uniqueTTL, "unique-ttl", "deduplication window of --unique-key (1s to 30d)")
	untilSuccess := fs.Bool("unique-until-success", false, "release --unique-key as soon as the task succeeds, instead of holding it for the whole --unique-ttl")
	fs.Var(&retention, "retention", "how long to keep each finished task (default 24h)")
	var pf payloadFlags
	pf.register(fs)
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 2); err != nil {
		return err
	}
	switch {
	case cronExpr == "" && !every.set:
		return usagef("schedule create: give --cron or --every")
	case cronExpr != "" && every.set:
		return usagef("schedule create: give --cron or --every, not both")
	case tz != "" && cronExpr == "":
		return usagef("schedule create: --tz goes with --cron")
	case every.set && (every.d < time.Second || every.d%time.Second != 0):
		return usagef("schedule create: --every %v: want whole seconds, at least 1s", every.d)
	case maxRuns < 0:
		return usagef("schedule create: --max-runs %d is negative", maxRuns)
	case maxRetries < -1:
		return usagef("schedule create: --max-retries %d is negative", maxRetries)
	case timeout.set && timeout.d < 0:
		return usagef("schedule create: --timeout %s is negative (0 for none; leave it out for the default)", timeout.d)
	case uniqueKey == "" && uniqueTTL.set:
		return usagef("schedule create: --unique-ttl needs --unique-key")
	case uniqueKey != "" && !uniqueTTL.set:
		return usagef("schedule create: --unique-key needs --unique-ttl (how long the key is held)")
	}
	now := time.Now()
	req := api.ScheduleRequest{ID: id, Cron: cronExpr, TimeZone: tz}
	if req.StartAt, err = parseWhen("start-at", startAt, now); err != nil {
		return err
	}
	if req.EndAt, err = parseWhen("end-at", endAt, now); err != nil {
		return err
	}
	if every.set {
		ms := every.d.Milliseconds()
		req.EveryMS = &ms
	}
	if maxRuns > 0 {
		req.MaxRuns = &maxRuns
	}
	var payload []byte
	if len(pos) == 2 {
		var in io.Reader
		if pos[1] == "-" {
			in = stdin // read only when used: tests replace it
		}
		if payload, err = pf.read(pos[1], in, std.stderr); err != nil {
			return usagef("schedule create: %v", err)
		}
	} else if _, err := pf.check(); err != nil {
		return usagef("schedule create: %v", err)
	}
	if queue == "" && strings.HasPrefix(pos[0], hosted.TypePrefix) {
		queue = pos[0] // a code package's tasks live in the queue named like their type
	}
	if uniqueKey == "" && *untilSuccess {
		return usagef("schedule create: --unique-until-success needs --unique-key")
	}
	opts := &wire.TaskOptions{Queue: queue, Priority: priority, UniqueKey: uniqueKey,
		ProcessInMS: delay.d.Milliseconds(), UniqueTTLMS: uniqueTTL.d.Milliseconds(), RetentionMS: retention.d.Milliseconds(),
		UniqueUntilSuccess: *untilSuccess}
	if maxRetries >= 0 {
		opts.MaxRetries = &maxRetries
	}
	if timeout.set {
		ms := timeout.d.Milliseconds()
		opts.TimeoutMS = &ms
	}
	req.Task = wire.TaskRequest{Type: pos[0], Payload: payload, Options: opts}
	var s api.Schedule
	if err := cn.do(ctx, "schedule create", apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "schedules"), Body: req}, &s); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, &s)
	}
	_, err = fmt.Fprintf(std.stdout, "%s\t%s\tnext %s\n", s.ID, s.Status, fmtTime(s.NextStart))
	return err
}

// rule shows a schedule's rule: "cron EXPR [ZONE]" or "every DUR".
func rule(s *api.Schedule) string {
	if s.Cron != "" {
		if s.TimeZone != "" && s.TimeZone != "UTC" {
			return "cron " + s.Cron + " (" + s.TimeZone + ")"
		}
		return "cron " + s.Cron
	}
	return "every " + wire.Dur(s.EveryMS).String()
}

func runScheduleList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("schedule", "ls", "", "Ls lists the project's schedules in id order: rule, status, runs, next and last run.")
	return show(ctx, std, c, args, 0, func(cn *conn, _ []string) (string, string) {
		return "schedule ls", projectRoute(cn.project, "schedules")
	}, func(cn *conn, list *api.ScheduleList) error {
		if cn.json {
			return printJSON(std.stdout, api.ScheduleList{Schedules: nonNil(list.Schedules)})
		}
		tb := newTable(std.stdout, "ID", "TYPE", "RULE", "STATUS", "RUNS", "NEXT", "LAST RUN", "LAST ERROR")
		for _, s := range list.Schedules {
			runs := strconv.FormatInt(s.RunCount, 10)
			if s.MaxRuns > 0 {
				runs += "/" + strconv.Itoa(s.MaxRuns)
			}
			tb.row(s.ID, s.Task.Type, rule(s), s.Status, runs, fmtTime(s.NextStart), fmtTime(s.LastRunTime), orDash(truncateText(oneLine(s.LastError), 60)))
		}
		return tb.flush()
	})
}

func runScheduleGet(ctx context.Context, std stdio, args []string) error {
	c := subcommand("schedule", "get", "<id>", "Get shows one schedule.")
	return show(ctx, std, c, args, 1, func(cn *conn, pos []string) (string, string) {
		return "schedule " + pos[0], projectRoute(cn.project, "schedules", pos[0])
	}, func(cn *conn, s *api.Schedule) error {
		if cn.json {
			return printJSON(std.stdout, s)
		}
		return printSchedule(std.stdout, s)
	})
}

// printSchedule writes a schedule as aligned "field value" lines.
func printSchedule(w io.Writer, s *api.Schedule) error {
	tb := newTable(w, "id", s.ID)
	tb.row("type", s.Task.Type)
	if s.Task.Options != nil && s.Task.Options.Queue != "" {
		tb.row("queue", s.Task.Options.Queue)
	}
	tb.row("rule", rule(s))
	tb.row("status", s.Status)
	runs := strconv.FormatInt(s.RunCount, 10)
	if s.MaxRuns > 0 {
		runs += " of " + strconv.Itoa(s.MaxRuns)
	}
	if s.MissedRuns > 0 {
		runs += fmt.Sprintf(" (%d missed)", s.MissedRuns)
	}
	tb.row("runs", runs)
	tb.row("start at", fmtTime(s.StartAt))
	tb.row("end at", fmtTime(s.EndAt))
	tb.row("next", fmtTime(s.NextStart))
	tb.row("last run", fmtTime(s.LastRunTime))
	tb.row("last task", orDash(s.LastTaskID))
	if s.LastError != "" {
		tb.row("last error", oneLine(s.LastError))
	}
	tb.row("payload", showBytes(s.Task.Payload))
	tb.row("created", fmtTime(s.CreatedAt))
	return tb.flush()
}

// runScheduleChange cancels ("cancel") or deletes ("rm") schedules, one
// call each; the exit code says whether all succeeded.
func runScheduleChange(ctx context.Context, std stdio, verb string, args []string) error {
	help := "Cancel stops schedules: no more runs; the tasks they enqueued stay."
	if verb == "rm" {
		help = "Rm deletes schedules; the tasks they enqueued stay, and each id stays taken for an hour."
	}
	c := subcommand("schedule", verb, "<id>...", help)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, -1); err != nil {
		return err
	}
	var out []*api.Schedule
	var firstErr error
	for _, id := range pos {
		var err error
		if verb == "rm" {
			err = cn.do(ctx, "schedule rm "+id, apiclient.Request{Method: http.MethodDelete, Path: projectRoute(cn.project, "schedules", id)}, nil)
			if err == nil {
				_, err = fmt.Fprintf(std.stdout, "%s\tdeleted\n", id)
			}
		} else {
			var s api.Schedule
			err = cn.do(ctx, "schedule cancel "+id, apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "schedules", id, "cancel")}, &s)
			if err == nil && cn.json {
				out = append(out, &s)
			} else if err == nil {
				_, err = fmt.Fprintf(std.stdout, "%s\t%s\n", s.ID, s.Status)
			}
		}
		switch {
		case err == nil:
		case firstErr == nil:
			firstErr = err // returned: its exit code is the command's
		default:
			printError(std.stderr, err) // the other ids still run
		}
	}
	if cn.json && verb == "cancel" {
		if err := printJSON(std.stdout, api.ScheduleList{Schedules: nonNil(out)}); err != nil {
			return err
		}
	}
	return firstErr
}
