package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
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
		args:    "create|ls|get|update|pause|resume|cancel|rm [flags] [type|id]",
		summary: "create, list, change, pause and cancel schedules (tasks enqueued by cron or interval)",
		help: "Subcommands:\n\n" +
			"  schedule create <type> [payload|-] (--cron EXPR [--tz ZONE] | --every DUR) [flags]\n" +
			"                            enqueue a task of <type> at each run time\n" +
			"  schedule ls               list the project's schedules\n" +
			"  schedule get <id>         show one schedule and its next run times\n" +
			"  schedule update <id> [payload|-] [flags]\n" +
			"                            change a schedule's rule, bounds or task in place\n" +
			"  schedule pause <id>...    stop firing until resumed\n" +
			"  schedule resume <id>...   fire again, from now on (missed run times are not made up)\n" +
			"  schedule cancel <id>...   stop schedules for good (the tasks they enqueued stay)\n" +
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
		"update": runScheduleUpdate,
		"cancel": func(ctx context.Context, std stdio, args []string) error {
			return runScheduleChange(ctx, std, "cancel", args)
		},
		"pause": func(ctx context.Context, std stdio, args []string) error {
			return runScheduleChange(ctx, std, "pause", args)
		},
		"resume": func(ctx context.Context, std stdio, args []string) error {
			return runScheduleChange(ctx, std, "resume", args)
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
		return nil, usagef("--%s %q: want an RFC 3339 time (2030-01-02T15:04:05Z) or a duration from now (10m, 2d)", name, s)
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

// printScheduleLine writes "id  status", and "next <time>" when the
// schedule has a next run.
func printScheduleLine(w io.Writer, s *api.Schedule) error {
	if s.NextStart == nil {
		_, err := fmt.Fprintf(w, "%s\t%s\n", s.ID, s.Status)
		return err
	}
	_, err := fmt.Fprintf(w, "%s\t%s\tnext %s\n", s.ID, s.Status, fmtTime(s.NextStart))
	return err
}

func runScheduleUpdate(ctx context.Context, std stdio, args []string) error {
	c := subcommand("schedule", "update", "<id> [payload|-] [flags]",
		"Update changes a schedule in place: same id, its runs and status kept. Only the flags\n"+
			"given change. --cron or --every replaces the rule (the next run is then the new rule's\n"+
			"first from now on: nothing is made up); --tz alone changes the zone of a cron rule.\n"+
			"--end-at none removes the end, --max-runs 0 the cap. A payload or a task flag (--type,\n"+
			"--queue, --priority, --delay, --max-retries, --timeout, --retention) changes the task\n"+
			"and keeps its other options. It prints the schedule's id, status and next run time.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var (
		cronExpr, tz, startAt, endAt, typ, queue string
		priority, maxRetries, maxRuns            int
		every, delay, timeout, retention         durationFlag
	)
	fs.StringVar(&cronExpr, "cron", "", "new cron expression (replaces --every)")
	fs.StringVar(&tz, "tz", "", "new IANA time zone of the cron expression")
	fs.Var(&every, "every", "new interval (replaces --cron; whole seconds)")
	fs.StringVar(&startAt, "start-at", "", "new start: RFC 3339, or a duration from now")
	fs.StringVar(&endAt, "end-at", "", "new end: RFC 3339, a duration from now, or none")
	fs.IntVar(&maxRuns, "max-runs", 0, "new run cap, more than the runs made; 0 for no limit")
	fs.StringVar(&typ, "type", "", "new task type")
	fs.StringVar(&queue, "queue", "", "new queue of the task")
	fs.IntVar(&priority, "priority", 0, "new priority 0-9")
	fs.Var(&delay, "delay", "new delay of each run's task")
	fs.IntVar(&maxRetries, "max-retries", 0, "new retries after a failed attempt")
	fs.Var(&timeout, "timeout", "new bound on one attempt (0 for none)")
	fs.Var(&retention, "retention", "new retention of each finished task")
	var pf payloadFlags
	pf.register(fs)
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 2); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case given["cron"] && given["every"]:
		return usagef("schedule update: give --cron or --every, not both")
	case given["tz"] && given["every"]:
		return usagef("schedule update: --tz goes with --cron")
	case every.set && (every.d < time.Second || every.d%time.Second != 0):
		return usagef("schedule update: --every %v: want whole seconds, at least 1s", every.d)
	case maxRuns < 0:
		return usagef("schedule update: --max-runs %d is negative", maxRuns)
	case maxRetries < 0:
		return usagef("schedule update: --max-retries %d is negative", maxRetries)
	case timeout.set && timeout.d < 0:
		return usagef("schedule update: --timeout %s is negative (0 for none)", timeout.d)
	}
	id := pos[0]
	now := time.Now()
	var req api.ScheduleUpdate
	if given["cron"] {
		req.Cron = &cronExpr
	}
	if given["tz"] {
		req.TimeZone = &tz
	}
	if every.set {
		ms := every.d.Milliseconds()
		req.EveryMS = &ms
	}
	if given["start-at"] {
		if req.StartAt, err = parseWhen("start-at", startAt, now); err != nil || req.StartAt == nil {
			return cmp.Or(err, usagef("schedule update: --start-at is empty"))
		}
	}
	if given["end-at"] {
		if endAt == "none" {
			req.EndAt = api.Null[time.Time]()
		} else if t, err := parseWhen("end-at", endAt, now); err != nil || t == nil {
			return cmp.Or(err, usagef("schedule update: --end-at is empty (none removes the end)"))
		} else {
			req.EndAt = api.Of(*t)
		}
	}
	if given["max-runs"] {
		req.MaxRuns = api.Of(maxRuns)
		if maxRuns == 0 {
			req.MaxRuns = api.Null[int]()
		}
	}
	taskFlags := []string{"type", "queue", "priority", "delay", "max-retries", "timeout", "retention"}
	changesTask := len(pos) == 2 || slices.ContainsFunc(taskFlags, func(f string) bool { return given[f] })
	if !changesTask {
		if _, err := pf.check(); err != nil {
			return usagef("schedule update: %v", err)
		}
	}
	if !changesTask && req.Cron == nil && req.TimeZone == nil && req.EveryMS == nil && req.StartAt == nil && !req.EndAt.Set && !req.MaxRuns.Set {
		return usagef("schedule update: nothing to change: give a payload or flags (see -h)")
	}
	if changesTask {
		// The task is replaced whole: start from the current one.
		var cur api.Schedule
		if err := cn.do(ctx, "schedule "+id, apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "schedules", id)}, &cur); err != nil {
			return err
		}
		task := cur.Task
		o := wire.TaskOptions{}
		if task.Options != nil {
			o = *task.Options
		}
		if len(pos) == 2 {
			var in io.Reader
			if pos[1] == "-" {
				in = stdin // read only when used: tests replace it
			}
			if task.Payload, err = pf.read(pos[1], in, std.stderr); err != nil {
				return usagef("schedule update: %v", err)
			}
		}
		if given["type"] {
			task.Type = typ
		}
		if given["queue"] {
			o.Queue = queue
		}
		if given["priority"] {
			o.Priority = priority
		}
		if delay.set {
			o.ProcessInMS = delay.d.Milliseconds()
		}
		if given["max-retries"] {
			o.MaxRetries = &maxRetries
		}
		if timeout.set {
			ms := timeout.d.Milliseconds()
			o.TimeoutMS = &ms
		}
		if retention.set {
			o.RetentionMS = retention.d.Milliseconds()
		}
		task.Options = &o
		task.PayloadJSON = nil
		req.Task = &task
	}
	var s api.Schedule
	if err := cn.do(ctx, "schedule update "+id, apiclient.Request{Method: http.MethodPatch, Path: projectRoute(cn.project, "schedules", id), Body: req}, &s); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, &s)
	}
	return printScheduleLine(std.stdout, &s)
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
		return "schedule " + pos[0], projectRoute(cn.project, "schedules", pos[0]) + "?next_runs=5"
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
	for _, t := range s.NextRuns[min(1, len(s.NextRuns)):] {
		tb.row("then", fmtTime(&t))
	}
	tb.row("last run", fmtTime(s.LastRunTime))
	tb.row("last task", orDash(s.LastTaskID))
	if s.LastError != "" {
		tb.row("last error", oneLine(s.LastError))
	}
	tb.row("payload", showBytes(s.Task.Payload))
	tb.row("created", fmtTime(s.CreatedAt))
	return tb.flush()
}

// scheduleVerbs are the help texts of the subcommands runScheduleChange
// serves.
var scheduleVerbs = map[string]string{
	"cancel": "Cancel stops schedules for good: no more runs; the tasks they enqueued stay.",
	"rm":     "Rm deletes schedules; the tasks they enqueued stay, and each id stays taken for an hour.",
	"pause":  "Pause stops schedules from firing until they are resumed; pausing a paused schedule\nchanges nothing, a done or cancelled one fails (invalid_state).",
	"resume": "Resume makes paused schedules fire again. The next run is the first run time from\nnow on: the run times that passed while paused are not made up. It prints each\nschedule's id, status and next run time.",
}

// runScheduleChange cancels, pauses, resumes or deletes ("rm") schedules,
// one call each; the exit code says whether all succeeded.
func runScheduleChange(ctx context.Context, std stdio, verb string, args []string) error {
	help := scheduleVerbs[verb]
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
			err = cn.do(ctx, "schedule "+verb+" "+id, apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "schedules", id, verb)}, &s)
			if err == nil && cn.json {
				out = append(out, &s)
			} else if err == nil {
				err = printScheduleLine(std.stdout, &s)
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
	if cn.json && verb != "rm" {
		if err := printJSON(std.stdout, api.ScheduleList{Schedules: nonNil(out)}); err != nil {
			return err
		}
	}
	return firstErr
}
