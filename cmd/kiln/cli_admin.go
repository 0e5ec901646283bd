package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
)

func runQueue(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "queue", args, map[string]func(context.Context, stdio, []string) error{
		"ls": runQueueList,
		"pause": func(ctx context.Context, std stdio, args []string) error {
			return runQueuePause(ctx, std, "pause", args)
		},
		"resume": func(ctx context.Context, std stdio, args []string) error {
			return runQueuePause(ctx, std, "resume", args)
		},
	})
}

func runQueueList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("queue", "ls", "", "Ls lists the project's queues with their task counts by state.")
	return show(ctx, std, c, args, 0, func(cn *conn, _ []string) (string, string) {
		return "queue ls", projectRoute(cn.project, "queues")
	}, func(cn *conn, ql *wire.QueueList) error {
		if cn.json {
			ql.Queues = nonNil(ql.Queues)
			return printJSON(std.stdout, ql)
		}
		return printQueues(std, nil, ql.Queues)
	})
}

// printQueues writes one row per queue; project, when not nil, adds a
// first column.
func printQueues(std stdio, project []string, qs []wire.Queue) error {
	header := append([]string{"QUEUE", "PAUSED"}, upper(stateColumns)...)
	header = append(header, "TOTAL")
	if project != nil {
		header = append([]string{"PROJECT"}, header...)
	}
	tb := newTable(std.stdout, header...)
	for i, q := range qs {
		row := []string{q.Queue, yesNo(q.Paused)}
		for _, s := range stateColumns {
			row = append(row, strconv.FormatInt(q.Counts[s], 10))
		}
		row = append(row, strconv.FormatInt(q.Total, 10))
		if project != nil {
			row = append([]string{project[i]}, row...)
		}
		tb.row(row...)
	}
	return tb.flush()
}

func upper(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		b := []byte(v)
		for j, c := range b {
			if c >= 'a' && c <= 'z' {
				b[j] = c - 'a' + 'A'
			}
		}
		out[i] = string(b)
	}
	return out
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func runQueuePause(ctx context.Context, std stdio, verb string, args []string) error {
	help := "Pause stops leasing from a queue; it still accepts tasks."
	if verb == "resume" {
		help = "Resume lets workers lease from a paused queue again."
	}
	args0 := "<queue>"
	if verb == "pause" {
		help += "\nA queue without tasks is refused as a likely typo: --create pauses it before its first task."
		args0 = "<queue> [--create]"
	}
	c := subcommand("queue", verb, args0, help)
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var create bool
	if verb == "pause" {
		fs.BoolVar(&create, "create", false, "pause a queue that has no tasks yet (without it, an unknown queue is an error)")
	}
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	var q wire.Queue
	req := apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "queues", pos[0], verb)}
	if create {
		req.Query = url.Values{"create": {"true"}}
	}
	if err := cn.do(ctx, "queue "+verb+" "+pos[0], req, &q); err != nil {
		if apiclient.CodeOf(err) == wire.CodeNotFound {
			var ce *cliError
			if errors.As(err, &ce) {
				ce.hint = "`kiln queue ls` lists the project's queues (project " + cn.project + ")"
				if verb == "pause" {
					ce.hint += "; --create pauses a queue before its first task"
				}
			}
		}
		return err
	}
	if cn.json {
		return printJSON(std.stdout, q)
	}
	state := "resumed"
	if q.Paused {
		state = "paused"
	}
	_, err = fmt.Fprintf(std.stdout, "queue %s %s\n", pos[0], state)
	return err
}

func runWorker(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "worker", args, map[string]func(context.Context, stdio, []string) error{
		"ls":     runWorkerList,
		"revoke": runWorkerRevoke,
	})
}

func runWorkerList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("worker", "ls", "", "Ls lists the project's remote workers: registered, verified (with a session) or revoked.")
	return show(ctx, std, c, args, 0, func(cn *conn, _ []string) (string, string) {
		return "worker ls", projectRoute(cn.project, "workers")
	}, func(cn *conn, wl *wire.WorkerList) error {
		if cn.json {
			wl.Workers = nonNil(wl.Workers)
			return printJSON(std.stdout, wl)
		}
		tb := newTable(std.stdout, "ID", "NAME", "STATE", "CREATED", "LAST SEEN", "SESSION EXPIRES")
		for _, w := range wl.Workers {
			created := w.CreatedAt
			tb.row(w.ID, orDash(w.Name), w.State, fmtTime(&created), fmtTime(w.LastSeenAt), fmtTime(w.SessionExpiresAt))
		}
		return tb.flush()
	})
}

func runWorkerRevoke(ctx context.Context, std stdio, args []string) error {
	c := subcommand("worker", "revoke", "<id>", "Revoke ends a remote worker's session keys at once; its calls get 401 from then on.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	var w wire.Worker
	if err := cn.do(ctx, "worker revoke "+pos[0], apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "workers", pos[0], "revoke")}, &w); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, w)
	}
	_, err = fmt.Fprintf(std.stdout, "worker %s revoked\n", pos[0])
	return err
}

func runProject(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "project", args, map[string]func(context.Context, stdio, []string) error{
		"create": runProjectCreate,
		"token":  runProjectToken,
		"ls":     runProjectList,
	})
}

func runProjectCreate(ctx context.Context, std stdio, args []string) error {
	c := subcommand("project", "create", "<id> [--name N]",
		"Create makes a project (admin token). It prints the project's worker secret, which remote\n"+
			"workers prove themselves with: it is shown only this once.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var name string
	fs.StringVar(&name, "name", "", "a display name")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	var resp wire.CreateProjectResponse
	if err := cn.do(ctx, "project create "+pos[0], apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects"), Body: wire.CreateProjectRequest{ID: pos[0], Name: name}}, &resp); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, resp)
	}
	tb := newTable(std.stdout, "project", resp.Project.ID)
	tb.row("worker secret", resp.WorkerSecret)
	if err := tb.flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(std.stderr, "The worker secret is shown only now: keep it where your workers read it (remote.Config.WorkerSecret).")
	return err
}

func runProjectToken(ctx context.Context, std stdio, args []string) error {
	c := subcommand("project", "token", "[id] [--name N]",
		"Token creates an API token for a project (default: --project); it is shown only this once.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	var name string
	fs.StringVar(&name, "name", "", "a name for the token, to tell it apart later")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 0, 1); err != nil {
		return err
	}
	project := cn.project
	if len(pos) == 1 {
		project = pos[0]
	}
	var tok wire.NewToken
	if err := cn.do(ctx, "project token "+project, apiclient.Request{Method: http.MethodPost, Path: projectRoute(project, "tokens"), Body: wire.TokenRequest{Name: name}}, &tok); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, tok)
	}
	_, err = fmt.Fprintln(std.stdout, tok.Token)
	if err == nil {
		_, err = fmt.Fprintf(std.stderr, "Token %s of project %s: shown only now (use it as %s or --token).\n", tok.ID, project, envToken)
	}
	return err
}

func runProjectList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("project", "ls", "", "Ls lists the projects the token can see (all of them with an admin token).")
	return show(ctx, std, c, args, 0, func(*conn, []string) (string, string) {
		return "project ls", apiclient.Path("v1", "projects")
	}, func(cn *conn, pl *wire.ProjectList) error {
		if cn.json {
			pl.Projects = nonNil(pl.Projects)
			return printJSON(std.stdout, pl)
		}
		tb := newTable(std.stdout, "ID", "NAME", "CREATED")
		for _, p := range pl.Projects {
			created := p.CreatedAt
			tb.row(p.ID, orDash(p.Name), fmtTime(&created))
		}
		return tb.flush()
	})
}

func runStats(ctx context.Context, std stdio, args []string) error {
	c := lookupClient("stats")
	return show(ctx, std, c, args, 0, func(*conn, []string) (string, string) {
		return "stats", apiclient.Path("v1", "stats")
	}, func(cn *conn, st *wire.ServerStats) error {
		if cn.json {
			st.Projects = nonNil(st.Projects)
			return printJSON(std.stdout, st)
		}
		var projects []string
		var queues []wire.Queue
		for _, p := range st.Projects {
			for _, q := range p.Queues {
				projects = append(projects, p.Project)
				queues = append(queues, q)
			}
		}
		if projects == nil {
			projects = []string{}
		}
		return printQueues(std, projects, queues)
	})
}
