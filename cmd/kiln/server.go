package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/server/ironapi"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
)

// serverCommand is `kiln server`; main.go lists it.
func serverCommand() *command {
	return &command{
		name:    "server",
		args:    "[flags]",
		summary: "run the kiln server: the HTTP API, remote workers, the sweeper",
		help: `Server opens the store, serves kiln's HTTP API (docs/api.md) and sweeps the
store until SIGINT or SIGTERM, then stops gracefully: no new requests, running
requests finish, no task is lost.

Each setting comes from its flag, else the environment variable KILN_<NAME>
(upper case, "-" as "_"), else the config file (--config, a JSON object with
the flag names as keys, e.g. {"addr": ":7878", "sweep-interval": "2s"}),
else its default.

--store is a path or embedded:///path (the embedded store, the default, in
--data) or redis://..., rediss://..., redis+cluster://..., redis+sentinel://...
(the Redis store; see docs/redis.md).

On the first start the server creates the project "default" and an admin
token, prints the token once and writes it with the URL to <data>/cli.json
(mode 0600), where the CLI finds it. KILN_BOOTSTRAP_PROJECT and
KILN_BOOTSTRAP_TOKEN set them instead.

--tls-cert and --tls-key (both or neither) make the server speak TLS 1.2+
with that PEM key pair; it loads the files again when they change (looked
at, at most once a second, on a new connection), so a renewed certificate
needs no restart. A pair that fails to load keeps the old one (and is
logged). Without TLS on an --addr other than loopback, the worker routes
(register, verify, refresh, lease, extend, report) are refused with 403
tls_required unless --allow-insecure-workers; see docs/api.md, "Transport
security".

The server also serves the IronWorker API v2 under /2/ (docs/ironworker.md)
and, unless --runner=false, runs the tasks of uploaded code packages itself,
--runner-concurrency processes at a time, unpacking packages into
--runner-dir (default <data>/runner).

--sandbox says how tasks are kept away from the server and from each other
(docs/sandbox.md): auto (the default) gives each task namespaces of its
own where it can (the task sees neither the server's processes nor its
data folder, store, config file or runner folder) — ns, the server's own
resident sandbox helper, when the server runs as root, else bubblewrap
when it works here — and when the server runs as root always runs each
project's tasks as a user of its own (--sandbox-uid-base + n, one of
--sandbox-uid-count), never as root; ns, bwrap and user insist on one
protection (the server does not start without it); off runs tasks as the
server's user. --sandbox-network=false gives tasks in the ns and bwrap
sandboxes no network. --sandbox-limits says how the resource
limits reach a task's program (docs/decisions/003-runner-limits.md): auto
(the default) stops the program at its exec to limit it (ptrace) where that
works and bwrap is not used, else re-executes the server as a trampoline;
the server logs which. Without bwrap each task runs in a cgroup v2 of its
own where the server can make one (--sandbox-cgroup: auto, off or a cgroup
folder), so that every process of the task ends with it, even one that
called setsid; the server logs whether (group_kill=...).

--otel-exporter otlp turns OpenTelemetry tracing on (docs/metrics.md): a
span per HTTP request, per enqueue and per code package task, sent in
batches over OTLP/HTTP (protobuf) to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else
http://localhost:4318/v1/traces; the other standard OTEL_EXPORTER_OTLP_*
variables (headers, timeout, compression, certificates), OTEL_SERVICE_NAME
(default kiln), OTEL_RESOURCE_ATTRIBUTES and OTEL_TRACES_SAMPLER apply. The
spans still queued are sent when the server stops.`,
		run: runServer,
	}
}

// serverOptions are the settings of `kiln server`.
type serverOptions struct {
	addr, store, data, config        string
	logLevel, logFormat              string
	maxBody                          int64
	handshakeTimeout, sessionTTL     time.Duration
	handshakeRate, projectRate       float64
	handshakeBurst, projectBurst     int
	maxOpenHandshakes                int
	maxStreams, maxProjectStreams    int
	streamWriteTimeout               time.Duration
	diskReserve                      int64
	sweepInterval, shutdownTimeout   time.Duration
	bootstrapProject, bootstrapToken string
	runner                           bool
	runnerConcurrency                int
	runnerDir                        string
	maxCode                          int64
	tlsCert, tlsKey                  string
	allowInsecureWorkers             bool
	metrics                          bool
	metricsListen                    string
	otelExporter                     string
	sandbox                          runner.Sandbox
	sandboxLimits                    runner.Limiter
	sandboxNetwork                   bool
	linkPackages                     bool
	sandboxCgroup                    string
	sandboxUIDBase, sandboxUIDCount  int
}

// setting is one setting: its flag name (and so its variable and file
// key), its usage, and how to parse a value into it.
type setting struct {
	name, usage string
	def         string
	set         func(string) error
}

func (o *serverOptions) settings() []setting {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	dur := func(p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*p = d
			return nil
		}
	}
	rate := func(p *float64) func(string) error {
		return func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil && (f == 0 || math.IsNaN(f) || math.IsInf(f, 0)) {
				err = errors.New("must be a positive number a second (negative: no limit)")
			}
			*p = f
			return err
		}
	}
	positive := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err == nil && n <= 0 {
				err = errors.New("must be positive")
			}
			*p = n
			return err
		}
	}
	return []setting{
		{"addr", "address to listen on", server.AddrDefault, str(&o.addr)},
		{"tls-cert", "PEM certificate (chain) file: serve TLS with it and --tls-key, reloaded when it changes", "", str(&o.tlsCert)},
		{"tls-key", "PEM private key file of --tls-cert", "", str(&o.tlsKey)},
		{"allow-insecure-workers", "allow the worker routes over plain HTTP on a non-loopback --addr (true or false)", "false", func(v string) error {
			b, err := strconv.ParseBool(v)
			o.allowInsecureWorkers = b
			return err
		}},
		{"store", "the store: a path, embedded:///path or a redis:// URL (default: the embedded store in --data)", "", str(&o.store)},
		{"data", "data folder: cli.json, and the embedded store unless --store names another", "kiln-data", str(&o.data)},
		{"log-level", "debug, info, warn or error", "info", str(&o.logLevel)},
		{"log-format", "text or json", "text", str(&o.logFormat)},
		{"max-body", "largest request body in bytes", strconv.Itoa(8 << 20), func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil && n <= 0 {
				err = errors.New("must be positive")
			}
			o.maxBody = n
			return err
		}},
		{"handshake-timeout", "how long a remote worker has to answer its challenge", "30s", dur(&o.handshakeTimeout)},
		{"handshake-rate", "worker handshake requests (register, verify) a second per client address (negative: no limit)", "10", rate(&o.handshakeRate)},
		{"handshake-burst", "worker handshake requests at once per client address", "20", positive(&o.handshakeBurst)},
		{"project-handshake-rate", "worker handshake requests a second per project (negative: no limit)", "100", rate(&o.projectRate)},
		{"project-handshake-burst", "worker handshake requests at once per project", "200", positive(&o.projectBurst)},
		{"max-open-handshakes", "open worker handshakes (registered, not yet verified) per project (negative: no cap)", "1000", func(v string) error {
			n, err := strconv.Atoi(v)
			if err == nil && n == 0 {
				err = errors.New("must not be 0 (negative: no cap)")
			}
			o.maxOpenHandshakes = n
			return err
		}},
		{"max-streams", "event streams (GET /v1/events) open at once, of every project", "1000", positive(&o.maxStreams)},
		{"max-project-streams", "event streams open at once per project", "100", positive(&o.maxProjectStreams)},
		{"stream-write-timeout", "how long one write of an event stream may wait for a client that does not read before it is dropped", "10s", func(v string) error {
			d, err := time.ParseDuration(v)
			if err == nil && d <= 0 {
				err = errors.New("must be positive")
			}
			o.streamWriteTimeout = d
			return err
		}},
		{"disk-reserve", "bytes of disk the embedded store keeps for itself: it refuses writes (507 storage_full) below it (negative: off)", strconv.Itoa(32 << 20), func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil && n == 0 {
				err = errors.New("must not be 0 (negative: off)")
			}
			o.diskReserve = n
			return err
		}},
		{"session-ttl", "how long a worker session key lasts", "1h", dur(&o.sessionTTL)},
		{"sweep-interval", "how often to sweep the store (negative: never)", "1s", dur(&o.sweepInterval)},
		{"shutdown-timeout", "how long a graceful stop may take", "30s", dur(&o.shutdownTimeout)},
		{"bootstrap-project", "the first project's id", server.BootstrapProjectDefault, str(&o.bootstrapProject)},
		{"bootstrap-token", "the admin token to accept (at least 32 characters; prefer the environment)", "", str(&o.bootstrapToken)},
		{"runner", "run the tasks of code packages in this server (true or false)", "true", func(v string) error {
			b, err := strconv.ParseBool(v)
			o.runner = b
			return err
		}},
		{"runner-concurrency", "how many code package tasks run at once", strconv.Itoa(hosted.ConcurrencyDefault), positiveInt(&o.runnerConcurrency)},
		{"runner-dir", "where the runner unpacks packages and runs tasks (default: <data>/runner)", "", str(&o.runnerDir)},
		{"sandbox", "how tasks are isolated: auto, ns, bwrap, user or off (docs/sandbox.md)", string(runner.SandboxAuto), func(v string) error {
			sb, err := runner.ParseSandbox(v)
			o.sandbox = sb
			if err != nil {
				return errors.New("want auto, ns, bwrap, user or off")
			}
			return nil
		}},
		{"sandbox-limits", "how the limits reach a task's program: auto, ptrace or trampoline (docs/decisions/003-runner-limits.md)", string(runner.LimiterAuto), func(v string) error {
			l, err := runner.ParseLimiter(v)
			o.sandboxLimits = l
			if err != nil {
				return errors.New("want auto, ptrace or trampoline")
			}
			return nil
		}},
		{"sandbox-network", "whether tasks may use the network (false: none, in the bwrap sandbox)", "true", func(v string) error {
			b, err := strconv.ParseBool(v)
			o.sandboxNetwork = b
			return err
		}},
		{"sandbox-cgroup", "where each task without bwrap gets a cgroup v2 of its own, killed with every process in it at the task's end: auto (under the server's own cgroup), off, or the path of a cgroup v2 folder (docs/sandbox.md)", runner.CgroupAuto, func(v string) error {
			if v != runner.CgroupAuto && v != runner.CgroupOff && !filepath.IsAbs(v) {
				return errors.New("want auto, off or an absolute path")
			}
			o.sandboxCgroup = v
			return nil
		}},
		{"link-packages", "give tasks hard links to their package's files instead of copies, read-only to them, where tasks run as a user of their own (a root server): much cheaper for packages of many files, but a task cannot change a file of its package in place or chmod it (docs/ironworker.md)", "false", func(v string) error {
			b, err := strconv.ParseBool(v)
			o.linkPackages = b
			return err
		}},
		{"sandbox-uid-base", "the first user id of tasks when the server is root (one per project)", strconv.Itoa(hosted.UIDBaseDefault), positiveInt(&o.sandboxUIDBase)},
		{"sandbox-uid-count", "how many user ids tasks may use (one per project)", strconv.Itoa(hosted.UIDCountDefault), positiveInt(&o.sandboxUIDCount)},
		{"metrics", "count tasks, store errors and HTTP requests, and serve them at GET /metrics to admin tokens (true or false; docs/metrics.md)", "true", func(v string) error {
			b, err := strconv.ParseBool(v)
			o.metrics = b
			return err
		}},
		{"metrics-listen", "a second address serving GET /metrics without a token, for Prometheus on a private network (default: none)", "", str(&o.metricsListen)},
		{"otel-exporter", "where OpenTelemetry spans go: none, or otlp (OTLP over HTTP to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; docs/metrics.md)", "none", func(v string) error {
			if v != "none" && v != "otlp" {
				return errors.New("want none or otlp")
			}
			o.otelExporter = v
			return nil
		}},
		{"max-code", "largest code package zip in bytes", strconv.Itoa(ironapi.MaxCodeBytesDefault), func(v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil && n <= 0 {
				err = errors.New("must be positive")
			}
			o.maxCode = n
			return err
		}},
	}
}

// positiveInt parses a positive int into p.
func positiveInt(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err == nil && n <= 0 {
			err = errors.New("must be positive")
		}
		*p = n
		return err
	}
}

// envName returns the environment variable of a setting.
func envName(name string) string {
	return "KILN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseServerOptions applies defaults, the config file, the environment
// and the flags, in that order of increasing precedence.
func parseServerOptions(std stdio, c *command, args []string, getenv func(string) string) (*serverOptions, error) {
	o := &serverOptions{}
	sets := o.settings()
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	flagVals := make(map[string]*string, len(sets))
	for _, s := range sets {
		flagVals[s.name] = fs.String(s.name, s.def, s.usage+" (env "+envName(s.name)+")")
	}
	config := fs.String("config", "", "a JSON config file with the flag names as keys (env KILN_CONFIG)")
	if err := parseFlags(fs, std, c, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usagef("server takes no arguments, got %q", fs.Args())
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if !explicit["config"] {
		*config = getenv("KILN_CONFIG")
	}
	file := map[string]any{}
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return nil, fmt.Errorf("server: config file: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		if err := dec.Decode(&file); err != nil {
			return nil, fmt.Errorf("server: config file %s: %w", *config, err)
		}
	}
	known := map[string]bool{}
	var errs []error
	for _, s := range sets {
		known[s.name] = true
		v, from := s.def, "default"
		if fv, ok := file[s.name]; ok {
			v, from = fmt.Sprint(fv), *config
		}
		if ev := getenv(envName(s.name)); ev != "" {
			v, from = ev, envName(s.name)
		}
		if explicit[s.name] {
			v, from = *flagVals[s.name], "--"+s.name
		}
		if err := s.set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", s.name, from, err))
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together: set both to serve TLS, or neither"))
	}
	for k := range file {
		if !known[k] {
			errs = append(errs, fmt.Errorf("config file %s: unknown setting %q", *config, k))
		}
	}
	o.config = *config
	if err := errors.Join(errs...); err != nil {
		return nil, usagef("server: %v", err)
	}
	return o, nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("server: log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usagef("server: log-format: %q is not text or json", format)
	}
}

// openStore opens the store that --store names (default: the embedded
// store in --data).
func openStore(ctx context.Context, o *serverOptions, log *slog.Logger) (store.Store, error) {
	u := o.store
	switch {
	case u == "":
		return embedded.Open(o.data, &embedded.Config{Logger: log, ReserveBytes: o.diskReserve})
	case strings.HasPrefix(u, "embedded://"):
		path := strings.TrimPrefix(u, "embedded://")
		if path == "" {
			return nil, usagef("server: store: embedded:// needs a path (embedded:///var/lib/kiln)")
		}
		return embedded.Open(path, &embedded.Config{Logger: log, ReserveBytes: o.diskReserve})
	case strings.HasPrefix(u, "redis://"), strings.HasPrefix(u, "rediss://"), strings.HasPrefix(u, "unix://"),
		strings.HasPrefix(u, "redis+"), strings.HasPrefix(u, "rediss+"):
		return redisstore.Open(ctx, u, &redisstore.Config{Logger: log})
	case strings.Contains(u, "://"):
		return nil, usagef("server: store: unknown kind of store URL %q (want a path, embedded://, redis://)", redactURL(u))
	default:
		return embedded.Open(u, &embedded.Config{Logger: log, ReserveBytes: o.diskReserve})
	}
}

// secretPaths are what tasks in the bwrap sandbox must not see: the data
// folder (cli.json, the embedded store), the embedded store elsewhere, the
// config file. Relative paths are made absolute; the runner ignores those
// that do not exist.
func secretPaths(o *serverOptions) []string {
	paths := []string{o.data, o.config}
	switch u := o.store; {
	case strings.HasPrefix(u, "embedded://"):
		paths = append(paths, strings.TrimPrefix(u, "embedded://"))
	case u != "" && !strings.Contains(u, "://"):
		paths = append(paths, u)
	}
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			out = append(out, abs)
		}
	}
	return out
}

// tracesFlushTimeout bounds the sending of the last spans when the server
// stops.
const tracesFlushTimeout = 5 * time.Second

// newTracerProvider returns the tracer provider of --otel-exporter: nil
// for none; for otlp, the SDK's with a batch span processor in front of
// the OTLP/HTTP exporter, which reads the standard OTEL_EXPORTER_OTLP_*
// variables itself. The resource is service.name kiln, which
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override.
func newTracerProvider(ctx context.Context, exporter string) (*sdktrace.TracerProvider, error) {
	if exporter != "otlp" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: otel-exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithAttributes(attribute.String("service.name", "kiln"),
		attribute.String("service.version", kilnVersion())), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) { // partial: a bad OTEL_RESOURCE_ATTRIBUTES entry is left out
		_ = exp.Shutdown(ctx) // nothing was sent; the error that matters is the resource's
		return nil, fmt.Errorf("server: otel resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// redactURL drops a URL's user information, which may hold a password.
func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
		rest = rest[at+1:]
	}
	return scheme + "://" + rest
}

func runServer(ctx context.Context, std stdio, args []string) error {
	c := lookup("server")
	o, err := parseServerOptions(std, c, args, os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(std.stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			log.Error("closing the store", "err", cerr)
		}
	}()
	data := o.data // cli.json goes here, wherever the store is
	tp, err := newTracerProvider(ctx, o.otelExporter)
	if err != nil {
		return err
	}
	// tracing stays a nil interface without an exporter: a nil
	// *sdktrace.TracerProvider in it would be a provider that panics.
	var tracing trace.TracerProvider
	if tp != nil {
		tracing = tp
		defer func() {
			// Sends the spans still in the batch, within a bound: a
			// collector that is down must not hold the exit.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracesFlushTimeout)
			defer cancel()
			if err := tp.Shutdown(sctx); err != nil {
				log.Warn("sending the last spans", "err", err)
			}
		}()
	}
	var rc *hosted.Config
	if o.runner {
		dir := o.runnerDir
		if dir == "" {
			dir = filepath.Join(data, "runner")
		}
		rc = &hosted.Config{
			Concurrency: o.runnerConcurrency, WorkDir: dir,
			UIDBase: o.sandboxUIDBase, UIDCount: o.sandboxUIDCount,
			Runner: &runner.Config{Sandbox: o.sandbox, Limiter: o.sandboxLimits, IsolateNetwork: !o.sandboxNetwork, Hide: secretPaths(o), Cgroup: o.sandboxCgroup, LinkPackage: o.linkPackages},
		}
	}
	srv, err := server.New(&server.Config{
		Store: st, Addr: o.addr, Logger: log, MaxBodyBytes: o.maxBody,
		HandshakeTimeout: o.handshakeTimeout, SessionTTL: o.sessionTTL,
		HandshakeRate: o.handshakeRate, HandshakeBurst: o.handshakeBurst,
		ProjectHandshakeRate: o.projectRate, ProjectHandshakeBurst: o.projectBurst,
		MaxOpenHandshakes: o.maxOpenHandshakes,
		MaxStreams:        o.maxStreams, MaxProjectStreams: o.maxProjectStreams, StreamWriteTimeout: o.streamWriteTimeout,
		SweepInterval: o.sweepInterval, ShutdownTimeout: o.shutdownTimeout,
		BootstrapProject: o.bootstrapProject, BootstrapToken: o.bootstrapToken,
		CLIFile: filepath.Join(data, "cli.json"), Stdout: std.stdout,
		Runner: rc, MaxCodeBytes: o.maxCode,
		TLSCertFile: o.tlsCert, TLSKeyFile: o.tlsKey, AllowInsecureWorkers: o.allowInsecureWorkers,
		DisableMetrics: !o.metrics, MetricsAddr: o.metricsListen, TracerProvider: tracing,
	})
	if err != nil {
		return err
	}
	log.Info("kiln server", "version", kilnVersion(), "addr", o.addr, "url", srv.URL(), "tls", o.tlsCert != "", "store", redactURL(o.store), "data", data)
	err = srv.Run(ctx)
	// The tasks have ended: remove the runner's empty cgroups.
	runner.RemoveCgroups()
	return err
}
