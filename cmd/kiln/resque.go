package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kilnhq/kiln"
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

-metrics-listen <addr> serves GET /metrics there for Prometheus, without a
token (for a private network): the worker's jobs by queue and class
(kiln_tasks_started_total, kiln_tasks_succeeded_total, ...; a failed job
counts as failed and dead, since Resque does not retry), their durations,
and the process's Go runtime figures (docs/metrics.md).

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
	metricsListen := fs.String("metrics-listen", "", "an address serving GET /metrics (Prometheus) without a token, for a private network (default: none)")
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
	if *metricsListen != "" {
		stop, err := serveResqueMetrics(*metricsListen, &cfg, cfg.Logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return resque.Work(ctx, cfg)
}

// serveResqueMetrics gives cfg a kiln.Metrics and serves its registry, with
// the Go runtime and process collectors, at GET /metrics on addr. stop
// closes the listener.
func serveResqueMetrics(addr string, cfg *resque.Config, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := kiln.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg.Metrics = m
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("resque: -metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
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
