package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
	"github.com/kilnhq/kiln/store/remote"
)

// The environment of a child process: the test binary plays the role
// envRole names (runRole) instead of running the tests.
const (
	envRole        = "KILN_CHAOS_ROLE"        // "server" or "worker"
	envDir         = "KILN_CHAOS_DIR"         // the scenario's folder: addr file, run logs
	envData        = "KILN_CHAOS_DATA"        // server: the embedded store's data folder
	envRedis       = "KILN_CHAOS_REDIS"       // server, worker: a Redis URL instead
	envPrefix      = "KILN_CHAOS_PREFIX"      // ... and the store's key prefix there
	envListen      = "KILN_CHAOS_LISTEN"      // server: the address to listen on
	envSessionTTL  = "KILN_CHAOS_SESSION_TTL" // server: worker session life (default 1 h)
	envURL         = "KILN_CHAOS_URL"         // worker: the server's URL (remote store)
	envSecret      = "KILN_CHAOS_SECRET"      // worker: the project's worker secret
	envWork        = "KILN_CHAOS_WORK"        // worker: how long each handler works
	envLease       = "KILN_CHAOS_LEASE"       // worker: lease duration
	envConcurrency = "KILN_CHAOS_CONCURRENCY" // worker: handlers at once
	envTimeout     = "KILN_CHAOS_TIMEOUT"     // worker: remote request timeout
)

// The project (and store namespace) of every scenario, its task type and
// the admin token of every server.
const (
	project    = "chaos"
	taskType   = "chaos"
	adminToken = "kiln_chaos-admin-token-0123456789abcdefghijklmnop"
)

// stallThreshold is the shortest stall of a server or worker process that
// the run logs record (chaos.WatchStalls): a quarter of the workers' 1 s
// leases.
const stallThreshold = 250 * time.Millisecond

func runRole(role string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	switch role {
	case "server":
		return serverRole(ctx, log)
	case "worker":
		return workerRole(ctx, log)
	default:
		return fmt.Errorf("unknown role %q", role)
	}
}

// openStore opens the store the environment names: Redis when envRedis is
// set, else the embedded store in envData.
func openStore(ctx context.Context) (store.Store, error) {
	if u := os.Getenv(envRedis); u != "" {
		return redisstore.Open(ctx, u, &redisstore.Config{Prefix: os.Getenv(envPrefix)})
	}
	return embedded.Open(os.Getenv(envData), nil)
}

// serverRole serves the API on its store at envListen until SIGTERM, and
// writes the address it listens on to <dir>/addr once it does.
func serverRole(ctx context.Context, log *slog.Logger) error {
	stalls, err := chaos.OpenRunLog(os.Getenv(envDir), chaos.ServerRunner)
	if err != nil {
		return err
	}
	defer func() { _ = stalls.Close() }()
	chaos.WatchStalls(ctx, stalls, stallThreshold)
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	ttl, err := envDuration(envSessionTTL, 0)
	if err != nil {
		return err
	}
	srv, err := server.New(&server.Config{
		Store: st, BootstrapToken: adminToken, BootstrapProject: project, Logger: log,
		SweepInterval: 100 * time.Millisecond, ShutdownTimeout: 10 * time.Second, SessionTTL: ttl,
		// The partition scenario serves workers on a bridge address the
		// test made, over plain HTTP.
		AllowInsecureWorkers: true,
	})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", os.Getenv(envListen))
	if err != nil {
		return err
	}
	if err := chaos.WriteFileAtomic(filepath.Join(os.Getenv(envDir), "addr"), []byte(ln.Addr().String())); err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

// workerRole runs a kiln.Worker until SIGTERM, on the remote store (envURL)
// or on Redis (envRedis). Its handler records its start and finish in the
// process's run log, named "p<pid>", and works envWork in between.
func workerRole(ctx context.Context, log *slog.Logger) error {
	work, err1 := envDuration(envWork, 20*time.Millisecond)
	lease, err2 := envDuration(envLease, time.Second)
	timeout, err3 := envDuration(envTimeout, 0)
	conc, err4 := strconv.Atoi(os.Getenv(envConcurrency))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	runs, err := chaos.OpenRunLog(os.Getenv(envDir), "p"+strconv.Itoa(os.Getpid()))
	if err != nil {
		return err
	}
	defer func() { _ = runs.Close() }()
	chaos.WatchStalls(ctx, runs, stallThreshold)
	var st store.Store
	if u := os.Getenv(envURL); u != "" {
		st, err = remote.Open(ctx, u, &remote.Config{Project: project, WorkerSecret: os.Getenv(envSecret), WorkerName: runs.Runner(), RequestTimeout: timeout, Logger: log})
	} else {
		st, err = openStore(ctx)
	}
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	w, err := kiln.NewWorker(st, &kiln.WorkerConfig{
		Namespace: project, ID: runs.Runner(), Concurrency: conc, LeaseDuration: lease, LeaseWait: time.Second,
		SweepInterval: -1, ShutdownTimeout: time.Minute, Logger: log,
	})
	if err != nil {
		return err
	}
	w.Handle(taskType, kiln.HandlerFunc(func(ctx context.Context, t *kiln.Task) error {
		if err := runs.Start(t.ID, t.Attempt); err != nil {
			return err
		}
		timer := time.NewTimer(work)
		defer timer.Stop()
		var err error
		select {
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-timer.C:
		}
		if ferr := runs.Finish(t.ID, t.Attempt, err); ferr != nil {
			return ferr
		}
		return err
	}))
	// Ready: SIGTERM is handled from here on.
	if err := chaos.WriteFileAtomic(filepath.Join(os.Getenv(envDir), "ready-"+runs.Runner()), nil); err != nil {
		return err
	}
	err = w.Run(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func envDuration(name string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}
