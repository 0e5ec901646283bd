package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	// PrefixDefault is the key prefix when Config.Prefix is empty.
	PrefixDefault = "kiln"
	// WaitTimeoutDefault bounds WAIT when Config.WaitReplicas is set and
	// Config.WaitTimeout is not.
	WaitTimeoutDefault = time.Second
	// OpenTimeoutDefault bounds the checks Open and New make when the
	// context given to them has no deadline.
	OpenTimeoutDefault = 10 * time.Second
)

// wakeCheckMax bounds one wait of a Lease for a notification: if a
// notification was lost (the subscription reconnected), the Lease looks again
// after at most this long.
const wakeCheckMax = time.Second

// Config configures a Redis store. The zero value (or nil) means all defaults.
type Config struct {
	// Prefix starts every key and channel name of the store; default
	// PrefixDefault ("kiln"). Stores with different prefixes share nothing.
	// It must be 1-100 characters of [A-Za-z0-9._:-].
	Prefix string
	// Clock, when set, is the store's clock: its time is passed to every
	// script instead of Redis' own clock (TIME). It exists for tests (a
	// storetest.FakeClock) and for single-host use; with several hosts,
	// leave it nil so that every lease and due time is judged by the one
	// Redis clock, whatever the hosts' clocks say.
	Clock store.Clock
	// Limits bounds what the store accepts; zero fields mean the defaults of
	// store.Limits.
	Limits store.Limits
	// Logger receives the store's few log lines (the eviction warning);
	// default discards.
	Logger *slog.Logger
	// AllowEviction lets the store start on a Redis whose maxmemory-policy
	// is not noeviction, with a loud warning. An evicting Redis deletes
	// tasks silently; the default refuses to start.
	AllowEviction bool
	// WaitReplicas, when positive, makes every call that changes tasks wait
	// (Redis WAIT) until that many replicas have the change, and fail when
	// fewer acknowledge within WaitTimeout. Lease waits too, after its
	// script and before it returns tasks: a task is handed to a worker
	// only once that many replicas have its enqueue (and the lease); when
	// they do not acknowledge in time, Lease gives the tasks back unstarted
	// and fails with store.ErrUnavailable. Default 0: no waiting.
	WaitReplicas int
	// WaitTimeout bounds WAIT; default WaitTimeoutDefault (1 s).
	WaitTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = PrefixDefault
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.WaitReplicas > 0 && c.WaitTimeout == 0 {
		c.WaitTimeout = WaitTimeoutDefault
	}
	c.Limits = c.Limits.WithDefaults()
	return c
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Prefix) > 100 || !store.ValidName(c.Prefix) {
		errs = append(errs, fmt.Errorf("redisstore: prefix %q must be 1-100 characters of [A-Za-z0-9._:-]: %w", c.Prefix, store.ErrInvalidOption))
	}
	if c.WaitReplicas < 0 {
		errs = append(errs, fmt.Errorf("redisstore: wait replicas %d is negative: %w", c.WaitReplicas, store.ErrInvalidOption))
	}
	if c.WaitTimeout < 0 {
		errs = append(errs, fmt.Errorf("redisstore: wait timeout %s is negative: %w", c.WaitTimeout, store.ErrInvalidOption))
	}
	return errors.Join(errs...)
}

// Store is the Redis store. It is safe for concurrent use by many goroutines,
// and many Stores in many processes may share one Redis (with one Prefix).
type Store struct {
	rdb    redis.UniversalClient
	own    bool // Close closes rdb
	cfg    Config
	limits store.Limits
	log    *slog.Logger

	closed   chan struct{}
	closeMu  sync.Mutex
	isClosed bool

	nsMu  sync.Mutex
	known map[string]bool // namespaces registered in the namespace set

	wk *waker

	groupMu sync.Mutex
	groups  map[string]*enqueueGroup // by namespace; see batch.go

	hints hints // of the tasks this Store leased; see hints.go
	// feedRead holds, by namespace, when this Store last marked the
	// namespace's change feed as read (time.Time; see changes.go).
	feedRead sync.Map
	// wakeCheck is wakeCheckMax; tests lengthen it to show that a Lease
	// wakes by notification and due time, not by this fallback.
	wakeCheck time.Duration
	// flowPartsHook, when set (tests), is called before each part of a
	// flow written in parts (off: the index of its first reserved task);
	// false stops the parts there, as if the client had stopped.
	flowPartsHook func(off int) bool
}

// Open connects to the Redis that url names and returns a store on it. The
// URL forms are:
//
//	redis://[user:password@]host:port[/db][?options]       one server
//	rediss://...                                            one server over TLS
//	unix://[user:password@]/path/to/redis.sock[?db=N]       a Unix socket
//	redis+cluster://[user:password@]host:port[?addr=host:port&addr=...]
//	rediss+cluster://...                                    a Redis Cluster (over TLS)
//	redis+sentinel://[user:password@]host:port?master_name=NAME[&addr=host:port...]
//	rediss+sentinel://...                                   a master found by Sentinel
//
// The options are go-redis' URL options (dial_timeout, pool_size, ...); for
// Sentinel the user and password are the Sentinel's, and the master's are
// given as ?username=...&password=... (see docs/redis.md). Open checks the
// server as New does; the store owns the connection and Close closes it.
func Open(ctx context.Context, rawURL string, cfg *Config) (*Store, error) {
	rdb, err := connect(rawURL)
	if err != nil {
		return nil, err
	}
	s, err := newStore(ctx, rdb, cfg, true)
	if err != nil {
		return nil, errors.Join(err, rdb.Close())
	}
	return s, nil
}

// connect parses a store URL into a go-redis client.
func connect(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: open: bad URL: %w", redactErr(err))
	}
	scheme, kind, _ := strings.Cut(u.Scheme, "+")
	u.Scheme = scheme
	switch kind {
	case "":
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redisstore: open: %w", redactErr(err))
		}
		o.MaxRetries = maxRetries(u, o.MaxRetries)
		return redis.NewClient(o), nil
	case "cluster":
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redisstore: open: %w", redactErr(err))
		}
		o.MaxRetries = maxRetries(u, o.MaxRetries)
		return redis.NewClusterClient(o), nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("redisstore: open: %w", redactErr(err))
		}
		o.MaxRetries = maxRetries(u, o.MaxRetries)
		return redis.NewFailoverClient(o), nil
	default:
		return nil, fmt.Errorf("redisstore: open: unknown URL scheme %q (want redis, rediss, unix, redis+cluster, redis+sentinel): %w", u.Scheme+"+"+kind, store.ErrInvalidOption)
	}
}

// maxRetries is the go-redis MaxRetries of a client Open makes: none (-1)
// unless the URL sets max_retries. It governs the store's reads: its
// scripts are never resent after a failure that may have followed their
// run (runOnce), since they are not idempotent: such a call fails with
// ErrUnavailable (it may or may not have been applied), and the caller
// decides: the worker retries with backoff, an enqueue is retried with the
// same task ids.
func maxRetries(u *url.URL, parsed int) int {
	if u.Query().Has("max_retries") {
		return parsed
	}
	return -1
}

// redactErr drops the URL (and any password in it) from a parse error.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// New returns a store on a go-redis client (a *redis.Client, a
// *redis.ClusterClient or a failover client). The caller keeps ownership of
// the client: Close does not close it. New checks that the server is
// reachable, that its maxmemory-policy is noeviction (see
// Config.AllowEviction), loads the scripts and subscribes to wake-ups.
// The store never lets the client send one of its scripts twice (a resent
// lease would lease twice and burn the first batch's attempts), whatever
// the client's MaxRetries; Open makes clients with MaxRetries: -1, which
// applies to the store's reads too.
func New(ctx context.Context, rdb redis.UniversalClient, cfg *Config) (*Store, error) {
	return newStore(ctx, rdb, cfg, false)
}

func newStore(ctx context.Context, rdb redis.UniversalClient, cfg *Config, own bool) (*Store, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, OpenTimeoutDefault)
		defer cancel()
	}
	s := &Store{
		rdb:       rdb,
		own:       own,
		cfg:       c,
		wakeCheck: wakeCheckMax,
		limits:    c.Limits,
		log:       c.Logger,
		closed:    make(chan struct{}),
		known:     make(map[string]bool),
		groups:    make(map[string]*enqueueGroup),
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		if unavailable(err) {
			return nil, fmt.Errorf("redisstore: open: ping: %w: %w", store.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("redisstore: open: ping: %w", err)
	}
	if err := s.checkEviction(ctx); err != nil {
		return nil, err
	}
	for _, sc := range slices.Concat(allScripts, metaScripts) {
		if err := sc.Load(ctx, rdb).Err(); err != nil {
			return nil, fmt.Errorf("redisstore: open: load scripts: %w", err)
		}
	}
	wk, err := startWaker(ctx, rdb, c.Prefix+":wake:")
	if err != nil {
		return nil, fmt.Errorf("redisstore: open: subscribe: %w", err)
	}
	s.wk = wk
	return s, nil
}

// checkEviction refuses an evicting Redis unless AllowEviction is set.
func (s *Store) checkEviction(ctx context.Context) error {
	check := func(ctx context.Context, c *redis.Client) error {
		res, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			s.log.Warn("redisstore: cannot read maxmemory-policy (CONFIG GET is not allowed?); make sure it is noeviction, or Redis may delete tasks under memory pressure",
				"addr", c.Options().Addr, "err", err)
			return nil
		}
		policy := res["maxmemory-policy"]
		if policy == "noeviction" || policy == "" {
			return nil
		}
		if s.cfg.AllowEviction {
			s.log.Error("redisstore: DANGER: Redis maxmemory-policy is not noeviction: Redis will silently delete tasks when it runs out of memory (started anyway: Config.AllowEviction is set)",
				"addr", c.Options().Addr, "maxmemory-policy", policy)
			return nil
		}
		return fmt.Errorf("redisstore: open: Redis at %s has maxmemory-policy %q: it would silently delete tasks under memory pressure; set it to noeviction (or set Config.AllowEviction to start anyway): %w",
			c.Options().Addr, policy, store.ErrInvalidOption)
	}
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, check)
	case *redis.Client:
		return check(ctx, c)
	default:
		res, err := s.rdb.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			s.log.Warn("redisstore: cannot read maxmemory-policy; make sure it is noeviction", "err", err)
			return nil
		}
		if p := res["maxmemory-policy"]; p != "noeviction" && p != "" && !s.cfg.AllowEviction {
			return fmt.Errorf("redisstore: open: Redis has maxmemory-policy %q; set it to noeviction (or set Config.AllowEviction): %w", p, store.ErrInvalidOption)
		}
		return nil
	}
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s.wrap("ping", err)
	}
	return nil
}

// Close stops the store: calls in progress and later calls return
// store.ErrClosed, waiting Leases return at once. It closes the connection
// when the store opened it (Open). It is safe to call more than once.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.isClosed {
		return nil
	}
	s.isClosed = true
	close(s.closed)
	err := s.wk.close()
	if s.own {
		err = errors.Join(err, s.rdb.Close())
	}
	return err
}

// usable returns why a call cannot proceed: a done context or a closed store.
func (s *Store) usable(ctx context.Context) error {
	select {
	case <-s.closed:
		return store.ErrClosed
	default:
	}
	return ctx.Err()
}

// wrap turns a Redis error into the store's error for op: ErrClosed once the
// store is closed, the context's error as is.
func (s *Store) wrap(op string, err error) error {
	select {
	case <-s.closed:
		return store.ErrClosed
	default:
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, redis.ErrClosed) {
		return store.ErrClosed
	}
	if unavailable(err) {
		return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// unavailablePrefixes are the Redis error replies that mean "not now": the
// server is loading its data set, a script runs too long, the cluster or
// the master is down or moving slots, the node is a replica, too few
// replicas are connected, persistence is failing, or memory is full.
var unavailablePrefixes = []string{"LOADING", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "MASTERDOWN", "NOREPLICAS", "MISCONF", "OOM", "max number of clients"}

// unavailable reports whether err means that Redis cannot serve now rather
// than that the call is wrong: a network error (refused, reset, timed out,
// unreachable), a connection closed under the call, a pool that found no
// connection in time, or one of unavailablePrefixes.
func unavailable(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		for _, p := range unavailablePrefixes {
			if redis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted)
}

// tag is the hash tag every key of namespace ns starts with.
func (s *Store) tag(ns string) string { return "{" + s.cfg.Prefix + ":" + ns + "}" }

// wakeChannel is the channel scripts publish to when tasks of ns get ready.
func (s *Store) wakeChannel(ns string) string { return s.cfg.Prefix + ":wake:" + ns }

// nsSetKey is the set of every namespace that was ever used, for Sweep.
func (s *Store) nsSetKey() string { return s.cfg.Prefix + ":namespaces" }

// nowArg is ARGV[1] of the scripts: the clock's time in µs, or empty for
// Redis' own TIME.
func (s *Store) nowArg() string {
	if s.cfg.Clock == nil {
		return ""
	}
	return itoa(s.cfg.Clock.Now().UnixMicro())
}

// localNow is the time used to validate inputs before they reach Redis.
func (s *Store) localNow() time.Time {
	if s.cfg.Clock != nil {
		return s.cfg.Clock.Now()
	}
	return time.Now()
}

// register adds ns to the namespace set once per process.
func (s *Store) register(ctx context.Context, ns string) error {
	s.nsMu.Lock()
	ok := s.known[ns]
	s.nsMu.Unlock()
	if ok {
		return nil
	}
	if err := s.rdb.SAdd(ctx, s.nsSetKey(), ns).Err(); err != nil {
		return s.wrap("register namespace", err)
	}
	s.nsMu.Lock()
	s.known[ns] = true
	s.nsMu.Unlock()
	return nil
}

// scriptConn is what a script is sent through: the store's client, or one
// of its connections.
type scriptConn interface {
	redis.Scripter
	Process(ctx context.Context, cmd redis.Cmder) error
}

// onceCmd is a script call that go-redis may not send a second time. A
// Redis Cluster client resends a command whose reply timed out or whose
// connection broke, up to MaxRedirects times whatever MaxRetries says; a
// script that ran before its reply was lost must not run again (a resent
// lease leases a second batch, a resent enqueue finds its own tasks).
// Redirects (MOVED, ASK) and commands that never reached a server are still
// sent again: those did not run.
type onceCmd struct{ *redis.Cmd }

// NoRetry tells go-redis not to resend the call after a failure that may
// have followed its execution.
func (onceCmd) NoRetry() bool { return true }

// runOnce runs script sc through c by its hash, and loads it when the
// server does not have it (NOSCRIPT: it did not run), never sending a call
// that may have run twice.
func runOnce(ctx context.Context, c scriptConn, sc *redis.Script, keys []string, args []any) *redis.Cmd {
	cmd := evalSha(ctx, sc, keys, args)
	_ = c.Process(ctx, onceCmd{cmd})
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		if err := sc.Load(ctx, c).Err(); err != nil {
			return cmd
		}
		cmd = evalSha(ctx, sc, keys, args)
		_ = c.Process(ctx, onceCmd{cmd})
	}
	return cmd
}

// evalSha returns the EVALSHA command of script sc.
func evalSha(ctx context.Context, sc *redis.Script, keys []string, args []any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "evalsha", sc.Hash(), len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	return redis.NewCmd(ctx, append(a, args...)...)
}

// run runs a script in namespace ns with the common arguments first. With
// WaitReplicas set, it waits for the replicas in the same round trip.
func (s *Store) run(ctx context.Context, op string, sc *redis.Script, ns string, write bool, args []any) (any, error) {
	keys := []string{s.tag(ns)}
	if !write || s.cfg.WaitReplicas <= 0 {
		v, err := runOnce(ctx, s.rdb, sc, keys, args).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, s.wrap(op, err)
		}
		return v, nil
	}
	// WAIT counts the replicas that have every write made on this
	// connection, so it must follow the script on the same one: a pipeline
	// on the master that owns the namespace's slot.
	var c redis.Cmdable = s.rdb
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, s.wrap(op, err)
		}
		c = m
	}
	for attempt := 0; ; attempt++ {
		var ev *redis.Cmd
		var wait *redis.Cmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			ev = evalSha(ctx, sc, keys, args)
			_ = p.Process(ctx, onceCmd{ev})
			wait = p.Do(ctx, "WAIT", s.cfg.WaitReplicas, s.cfg.WaitTimeout.Milliseconds())
			return nil
		})
		if err != nil && attempt == 0 && redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return nil, s.wrap(op, err)
			}
			continue
		}
		v, err := ev.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, s.wrap(op, err)
		}
		if err := s.checkWait(op, wait); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// master returns the client of the master that holds namespace ns: the
// store's own client, or on a Redis Cluster the master of the namespace's
// slot.
func (s *Store) master(ctx context.Context, ns string) (*redis.Client, error) {
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, s.tag(ns))
	case *redis.Client:
		return c, nil
	default:
		return nil, fmt.Errorf("redisstore: WaitReplicas needs a *redis.Client or a *redis.ClusterClient, not %T: %w", s.rdb, store.ErrInvalidOption)
	}
}

// waitReplicas runs WAIT on conn, after the writes it must cover.
func (s *Store) waitReplicas(ctx context.Context, conn *redis.Conn, op string) error {
	return s.checkWait(op, conn.Do(ctx, "WAIT", s.cfg.WaitReplicas, s.cfg.WaitTimeout.Milliseconds()))
}

// checkWait checks WAIT's answer: at least Config.WaitReplicas replicas.
func (s *Store) checkWait(op string, wait *redis.Cmd) error {
	n, err := wait.Int64()
	if err != nil {
		return s.wrap(op+": wait", err)
	}
	if n < int64(s.cfg.WaitReplicas) {
		return fmt.Errorf("redisstore: %s: WAIT: %d of %d replicas acknowledged within %s; the change was made on the master but may be lost in a failover", op, n, s.cfg.WaitReplicas, s.cfg.WaitTimeout)
	}
	return nil
}
