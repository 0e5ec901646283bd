package resque

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln"
)

// Config configures [Work]. The zero value works: it serves no queue, so
// at least Queues must be set.
type Config struct {
	// URI is the Redis to work on: redis://[user:pass@]host:port[/db],
	// rediss://... (TLS) or unix:///path. Empty: the URL in the environment
	// variable that $REDIS_PROVIDER names, else $REDIS_URL, else
	// redis://localhost:6379/ (goworker's rule). Redis, when set, wins.
	URI string
	// Namespace is the prefix of every key, colon included; default
	// "resque:". A namespace that does not end with ':' gets one.
	Namespace string
	// Queues lists the queues to serve, goworker's way: plain names
	// ("high", "low") are served in strict order; names with weights
	// ("high=2", "low=1") in a weighted random order on every pass. A list
	// with any weight is weighted; names without one weigh 1.
	Queues []string
	// Concurrency is how many jobs run at once; default 25.
	Concurrency int
	// Connections is the least size of the Redis connection pool (default
	// 2); the pool grows to hold one blocking read per queue besides.
	Connections int
	// Interval is how long one blocking read waits while every queue is
	// empty (default 5 s; whole seconds, at least 1, on the dedicated
	// connections of a *redis.Client; at most 1 s on other clients, whose
	// reads a stop cannot end early). Unlike goworker, an idle worker does
	// not sleep between polls: it blocks on the queues and takes a new job
	// as soon as it is pushed; a stop ends the reads at once (CLIENT
	// UNBLOCK).
	Interval time.Duration
	// ExitOnComplete makes Work return once a pass finds every queue empty
	// and the running jobs have finished.
	ExitOnComplete bool
	// UseNumber decodes numbers in args as json.Number instead of float64.
	UseNumber bool
	// TLSConfig is used for rediss:// URIs (default: the system's roots).
	TLSConfig *tls.Config
	// ShutdownTimeout bounds how long running jobs may take to finish once
	// the context is done (default 30 s). Jobs still running then go back
	// to the head of their queue (their handler's context is cancelled).
	ShutdownTimeout time.Duration
	// Plain takes jobs as goworker does (LPOP/BLPOP, at most once): a
	// killed process loses the jobs it was running. Default: reliable.
	Plain bool
	// HeartbeatInterval is how often a process writes its heartbeat and
	// looks for dead workers (default 5 s).
	HeartbeatInterval time.Duration
	// DeadAfter is how old a process's heartbeat must be before another
	// worker returns its jobs to their queues and removes it from the
	// registry (default 60 s). Keep it well above HeartbeatInterval: a live
	// process that stalls longer than DeadAfter has its jobs run twice.
	DeadAfter time.Duration
	// Logger receives the worker's log (default slog.Default()).
	Logger *slog.Logger
	// Redis, when set, is used instead of connecting to URI; Work does not
	// close it. It must reach one Redis server (not a Cluster): the scripts
	// touch keys of several queues. An idle worker holds one of its pooled
	// connections per queue for its blocking reads, so its PoolSize must
	// be well above the number of queues (Work sizes its own pool at
	// Concurrency + queues + 2). Give it MaxRetries -1: a resent script
	// could record an outcome twice.
	Redis redis.UniversalClient
	// Registry holds the job classes; default the package's registry that
	// Register fills.
	Registry *Registry
	// Hostname overrides the host part of the worker ids (default
	// os.Hostname()).
	Hostname string
	// Scheduler also runs a Scheduler in the worker's process, on the same
	// Redis and namespace, so that jobs written by EnqueueAt/EnqueueIn (or
	// Ruby's and node-resque's enqueue_at) reach their queues when due.
	// Any number of workers may run one at once: each due job is moved
	// exactly once.
	Scheduler bool
	// Metrics, when set, counts the jobs the worker runs in kiln's
	// Prometheus collectors (docs/metrics.md), with the job's queue as
	// queue and its class as type: kiln_tasks_started_total when a job is
	// taken, kiln_tasks_succeeded_total, or kiln_tasks_failed_total and
	// kiln_tasks_dead_total when it fails (Resque does not retry: the job
	// goes to the failed list), and kiln_task_handler_duration_seconds. A
	// job handed back to its queue at a stop is in started only. Resque
	// jobs carry no enqueue time, so kiln_task_wait_seconds stays empty.
	Metrics *kiln.Metrics
	// TracerProvider, when set, records a kiln.handle span (consumer) per
	// job, with messaging.system "resque", the queue and the class
	// (kiln.task.type); the handler's context carries it, a failed job
	// has an error status, and a job handed back to its queue at a stop
	// has kiln.released true. A Resque payload has no trace context, so each
	// job's span starts a trace.
	TracerProvider trace.TracerProvider
}

// Defaults of Config.
const (
	DefaultNamespace         = "resque:"
	DefaultConcurrency       = 25
	DefaultConnections       = 2
	DefaultInterval          = 5 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultDeadAfter         = 60 * time.Second
)

// queueSpec is the parsed queue list.
type queueSpec struct {
	names   []string // distinct names, in the order given
	weights []int    // weight of each name (1 when strict)
	strict  bool
}

// parseQueues parses goworker's queue syntax.
func parseQueues(list []string) (queueSpec, error) {
	var q queueSpec
	if len(list) == 0 {
		return q, errors.New("resque: you must specify at least one queue")
	}
	q.strict = true
	seen := map[string]int{}
	for _, item := range list {
		item = strings.TrimSpace(item)
		name, w, weighted := strings.Cut(item, "=")
		weight := 1
		if weighted {
			q.strict = false
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil || n < 1 {
				return q, fmt.Errorf("resque: queue %q: the weight must be a positive integer", item)
			}
			weight = n
			name = strings.TrimSpace(name)
		}
		if name == "" {
			return q, fmt.Errorf("resque: empty queue name in %q", strings.Join(list, ","))
		}
		if i, ok := seen[name]; ok {
			q.weights[i] += weight
			continue
		}
		seen[name] = len(q.names)
		q.names = append(q.names, name)
		q.weights = append(q.weights, weight)
	}
	return q, nil
}

// order returns the queues in the order of one pass: as listed when strict,
// else goworker's weighted shuffle (each queue repeated weight times, the
// list shuffled, first occurrences kept).
func (q queueSpec) order(r *rand.Rand) []string {
	if q.strict || len(q.names) == 1 {
		return q.names
	}
	var expanded []string
	for i, n := range q.names {
		for range q.weights[i] {
			expanded = append(expanded, n)
		}
	}
	out := make([]string, 0, len(q.names))
	seen := make(map[string]bool, len(q.names))
	for _, i := range r.Perm(len(expanded)) {
		if n := expanded[i]; !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// idString is the queue part of a worker id: the names in the order given,
// each once (weights left out).
func (q queueSpec) idString() string {
	return strings.Join(q.names, ",")
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, queueSpec, error) {
	qs, err := parseQueues(cfg.Queues)
	if err != nil {
		return cfg, qs, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if !strings.HasSuffix(cfg.Namespace, ":") {
		cfg.Namespace += ":"
	}
	switch {
	case cfg.Concurrency < 0:
		return cfg, qs, fmt.Errorf("resque: concurrency %d: must be at least 1", cfg.Concurrency)
	case cfg.Concurrency == 0:
		cfg.Concurrency = DefaultConcurrency
	}
	switch {
	case cfg.Connections < 0:
		return cfg, qs, fmt.Errorf("resque: connections %d: must be at least 1", cfg.Connections)
	case cfg.Connections == 0:
		cfg.Connections = DefaultConnections
	}
	if cfg.Interval < 0 || cfg.ShutdownTimeout < 0 || cfg.HeartbeatInterval < 0 || cfg.DeadAfter < 0 {
		return cfg, qs, errors.New("resque: durations may not be negative")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.DeadAfter < 2*cfg.HeartbeatInterval {
		return cfg, qs, fmt.Errorf("resque: DeadAfter %v must be at least twice HeartbeatInterval %v", cfg.DeadAfter, cfg.HeartbeatInterval)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = defaultRegistry
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return cfg, qs, fmt.Errorf("resque: hostname: %w", err)
		}
		cfg.Hostname = h
	}
	if strings.Contains(cfg.Hostname, ":") {
		return cfg, qs, fmt.Errorf("resque: hostname %q contains ':' (worker ids are host:pid:queues)", cfg.Hostname)
	}
	for _, n := range qs.names {
		if strings.ContainsAny(n, ":,") {
			return cfg, qs, fmt.Errorf("resque: queue name %q contains ':' or ',' (worker ids are host:pid:queues)", n)
		}
	}
	return cfg, qs, nil
}

// defaultURI is goworker's default Redis URI.
func defaultURI() string {
	if p := os.Getenv("REDIS_PROVIDER"); p != "" {
		if u := os.Getenv(p); u != "" {
			return u
		}
	}
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://localhost:6379/"
}

// connect makes the client of cfg (when cfg.Redis is nil).
func connect(cfg *Config, pool int) (redis.UniversalClient, error) {
	uri := cfg.URI
	if uri == "" {
		uri = defaultURI()
	}
	o, err := redis.ParseURL(uri)
	if err != nil {
		return nil, fmt.Errorf("resque: uri: %w", err)
	}
	if o.TLSConfig != nil && cfg.TLSConfig != nil {
		tc := cfg.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = o.TLSConfig.ServerName
		}
		o.TLSConfig = tc
	}
	if o.PoolSize < pool {
		o.PoolSize = pool
	}
	// A resent script could record an outcome twice; fail instead.
	o.MaxRetries = -1
	return redis.NewClient(o), nil
}

// BindFlags defines goworker's command-line flags on fs (-queues,
// -interval, -concurrency, -connections, -uri, -namespace,
// -exit-on-complete, -use-number, -insecure-tls, -tls-cert) and kiln's
// -plain, -shutdown-timeout and -scheduler. After fs.Parse, the returned function gives
// the Config they describe (its Registry, Logger and Redis left unset).
func BindFlags(fs *flag.FlagSet) func() (Config, error) {
	queues := fs.String("queues", "", "comma-separated queues to serve: high,low (strict order) or high=2,low=1 (weighted)")
	interval := fs.Float64("interval", DefaultInterval.Seconds(), "seconds an idle worker blocks on the queues at a time (a pushed job starts at once)")
	concurrency := fs.Int("concurrency", DefaultConcurrency, "number of jobs run at once")
	connections := fs.Int("connections", DefaultConnections, "least number of Redis connections")
	uri := fs.String("uri", defaultURI(), "Redis URI (redis://, rediss://, unix://)")
	namespace := fs.String("namespace", DefaultNamespace, "key prefix, colon included")
	exit := fs.Bool("exit-on-complete", false, "exit once every queue is empty")
	useNumber := fs.Bool("use-number", false, "decode numbers as json.Number instead of float64")
	insecure := fs.Bool("insecure-tls", false, "do not verify the Redis server's certificate (rediss://)")
	cert := fs.String("tls-cert", "", "file of a CA certificate to trust for rediss:// besides the system's")
	plain := fs.Bool("plain", false, "take jobs as goworker does (LPOP: a killed worker loses its running jobs)")
	shutdown := fs.Duration("shutdown-timeout", DefaultShutdownTimeout, "how long running jobs may take to finish at a stop before they go back to their queue")
	scheduler := fs.Bool("scheduler", false, "also move due delayed jobs (resque-scheduler's layout) to their queues")
	return func() (Config, error) {
		cfg := Config{
			URI: *uri, Namespace: *namespace, Concurrency: *concurrency, Connections: *connections,
			ExitOnComplete: *exit, UseNumber: *useNumber, Plain: *plain, ShutdownTimeout: *shutdown,
			Scheduler: *scheduler,
		}
		if *queues != "" {
			cfg.Queues = strings.Split(*queues, ",")
		}
		if *interval <= 0 {
			return cfg, fmt.Errorf("resque: -interval %v: must be more than 0 seconds", *interval)
		}
		cfg.Interval = time.Duration(*interval * float64(time.Second))
		if *insecure || *cert != "" {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: *insecure} //nolint:gosec // G402: asked for with -insecure-tls, as goworker's flag does
			if *cert != "" {
				pem, err := os.ReadFile(*cert)
				if err != nil {
					return cfg, fmt.Errorf("resque: -tls-cert: %w", err)
				}
				pool, err := x509.SystemCertPool()
				if err != nil {
					pool = x509.NewCertPool()
				}
				if !pool.AppendCertsFromPEM(pem) {
					return cfg, fmt.Errorf("resque: -tls-cert %s: no PEM certificate in it", *cert)
				}
				tc.RootCAs = pool
			}
			cfg.TLSConfig = tc
		}
		if _, err := parseQueues(cfg.Queues); err != nil {
			return cfg, err
		}
		return cfg, nil
	}
}
