package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

func runWorkflow(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "workflow", args, map[string]func(context.Context, stdio, []string) error{
		"get":    runWorkflowGet,
		"ls":     runWorkflowList,
		"cancel": runWorkflowCancel,
	})
}

func runWorkflowGet(ctx context.Context, std stdio, args []string) error {
	c := subcommand("workflow", "get", "<id>", "Get shows a workflow: its state and each member's (waiting: not enqueued yet).")
	return show(ctx, std, c, args, 1, func(cn *conn, pos []string) (string, string) {
		return "workflow " + pos[0], projectRoute(cn.project, "workflows", pos[0])
	}, func(cn *conn, f *wire.Flow) error {
		if cn.json {
			f.Spec = nil
			return printJSON(std.stdout, f)
		}
		return printFlow(std, f)
	})
}

func printFlow(std stdio, f *wire.Flow) error {
	if _, err := fmt.Fprintf(std.stdout, "workflow %s: %s (created %s)\n", f.ID, orDash(f.State), fmtTime(&f.CreatedAt)); err != nil {
		return err
	}
	tb := newTable(std.stdout, "ID", "TYPE", "STATE", "ERROR")
	for _, m := range f.Members {
		tb.row(m.ID, m.Type, m.State, orDash(oneLine(m.Error)))
	}
	return tb.flush()
}

// runWorkflowCancel cancels every member of a workflow that has not
// finished, until none is left pending: the members released meanwhile are
// cancelled too.
func runWorkflowCancel(ctx context.Context, std stdio, args []string) error {
	c := subcommand("workflow", "cancel", "<id>", "Cancel cancels a workflow: every member not finished (an active one is asked to stop); members that wait for cancelled ones are cancelled by the workers.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	for first := true; ; first = false {
		var f wire.Flow
		if err := cn.do(ctx, "workflow "+pos[0], apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "workflows", pos[0])}, &f); err != nil {
			return err
		}
		var ids []string
		for _, m := range f.Members {
			switch m.State {
			case store.StatePending.String(), store.StateScheduled.String(), store.StateRetry.String():
				ids = append(ids, m.ID)
			case store.StateActive.String():
				if first { // asked once to stop
					ids = append(ids, m.ID)
				}
			}
		}
		if len(ids) == 0 {
			if cn.json {
				f.Spec = nil
				return printJSON(std.stdout, f)
			}
			return printFlow(std, &f)
		}
		for start := 0; start < len(ids); start += store.MaxBatch {
			var resp wire.AdminResponse
			req := apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "tasks:cancel"), Body: wire.IDsRequest{IDs: ids[start:min(start+store.MaxBatch, len(ids))]}}
			if err := cn.do(ctx, "workflow cancel", req, &resp); err != nil {
				return err
			}
		}
	}
}

func runWorkflowList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("workflow", "ls", "[--after ID] [--limit N]", "Ls lists the project's workflows in id order (oldest first for generated ids), each with its state, a page at a time.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	after := fs.String("after", "", "start after this workflow id (the previous page's next cursor)")
	limit := fs.Int("limit", 20, "workflows per page, 1..100")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 0, 0); err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *after != "" {
		q.Set("after", *after)
	}
	var resp wire.FlowList
	if err := cn.do(ctx, "workflow ls", apiclient.Request{Method: http.MethodGet, Path: projectRoute(cn.project, "workflows") + "?" + q.Encode()}, &resp); err != nil {
		return err
	}
	if cn.json {
		for i := range resp.Workflows {
			resp.Workflows[i].Spec = nil
		}
		return printJSON(std.stdout, resp)
	}
	tb := newTable(std.stdout, "ID", "CREATED", "STATE", "TASKS", "WAITING")
	for _, f := range resp.Workflows {
		tb.row(f.ID, fmtTime(&f.CreatedAt), orDash(f.State), strconv.Itoa(f.Size), strconv.Itoa(len(f.Held)))
	}
	if err := tb.flush(); err != nil {
		return err
	}
	if resp.NextCursor != "" {
		_, err := fmt.Fprintf(std.stdout, "more: kiln workflow ls --after %s\n", resp.NextCursor)
		return err
	}
	return nil
}
