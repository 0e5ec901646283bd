package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/resque"
)

// bridgeTypePrefix starts the type of the kiln tasks that kiln resque
// --bridge makes of Resque jobs: resque:<Class>.
const bridgeTypePrefix = "resque:"

// resqueCommand is `kiln resque`; main.go lists it.
func resqueCommand() *command {
	return &command{
		name:    "resque",
		args:    "--bridge -queues <q1,q2> [flags]",
		summary: "move Resque jobs from Redis into kiln as tasks of type resque:<Class>",
		help: `Resque serves Resque queues on Redis (the jobs Ruby Resque, node-resque,
goworker or redis-cli push) with goworker's flags, in kiln's reliable mode: a
job leaves its queue only together with the record of its outcome, and the
jobs of a killed worker go back to their queue (docs/resque.md).

The kiln binary holds no Go job classes, so it runs only as a bridge:
--bridge moves every job into the kiln server (--url, --token, --project, as
for kiln enqueue) as a task of type resque:<Class> in the queue of the same
name, its payload the job's args array; kiln's retries, schedules and API
then apply. A job the server refuses becomes a failed Resque job. To run
jobs in Go, write a program that registers its classes with resque.Register
and calls resque.Work (resque.BindFlags gives it these same flags).

QUIT, TERM and INT stop taking jobs at once; running jobs finish, for at most
-shutdown-timeout, after which they go back to the head of their queue; the
worker then leaves Resque's worker registry. A second signal ends the process
at once (nothing is lost: its jobs go back when its heartbeat expires).`,
		run: runResque,
	}
}

func runResque(ctx context.Context, std stdio, args []string) error {
	c := resqueCommand()
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	config := resque.BindFlags(fs)
	bridge := fs.Bool("bridge", false, "enqueue every job into the kiln server as a task of type resque:<Class>")
	var cf connFlags
	cf.register(fs)
	if err := parseFlags(fs, std, c, args); err != nil {
		return helpOK(err)
	}
	if fs.NArg() > 0 {
		return usagef("resque: takes no arguments, got %q", fs.Args())
	}
	cfg, err := config()
	if err != nil {
		return usagef("%v", err)
	}
	if !*bridge {
		return usagef("resque: the kiln binary has no Go job classes: run it with --bridge to move the jobs into kiln, " +
			"or write a Go program that registers its classes and calls resque.Work (docs/resque.md)")
	}
	cn, err := cf.resolve(os.Getenv)
	if err != nil {
		return err
	}
	if err := cn.needToken(); err != nil {
		return err
	}
	reg := resque.NewRegistry()
	reg.RegisterFallback(func(ctx context.Context, j *resque.Job) error { return bridgeJob(ctx, cn, j) })
	cfg.Registry = reg
	cfg.Logger = slog.New(slog.NewTextHandler(std.stderr, nil))
	return resque.Work(ctx, cfg)
}

// bridgeJob enqueues one Resque job into the kiln server.
func bridgeJob(ctx context.Context, cn *conn, j *resque.Job) error {
	req := wire.EnqueueRequest{Tasks: []wire.TaskRequest{{
		Type: bridgeTypePrefix + j.Class, Payload: j.Args, Options: &wire.TaskOptions{Queue: j.Queue},
	}}}
	var resp wire.EnqueueResponse
	if err := cn.do(ctx, "enqueue", apiclient.Request{Method: http.MethodPost, Path: projectRoute(cn.project, "tasks"), Body: req}, &resp); err != nil {
		return err
	}
	if len(resp.Tasks) != 1 {
		return fmt.Errorf("enqueue: the server answered %d items for one task", len(resp.Tasks))
	}
	if e := resp.Tasks[0].Error; e != nil {
		return fmt.Errorf("enqueue %s%s: %s", bridgeTypePrefix, j.Class, e.Message)
	}
	return nil
}
