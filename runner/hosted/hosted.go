package hosted

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/blob"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	ConcurrencyDefault  = 4
	PollIntervalDefault = 2 * time.Second
	// CollectIntervalDefault is the default Config.CollectInterval.
	CollectIntervalDefault = 10 * time.Minute
	// TimeoutDefault is a task's run-time limit when it names none, and
	// the most it may name (IronWorker's 3600 s).
	TimeoutDefault = time.Hour
)

// Config configures a Hosted runner. Store is required.
type Config struct {
	// Store holds the tasks and, through store.Meta, the packages.
	Store store.Store
	// Concurrency is how many task processes run at once on this runner,
	// over every package of every project; default ConcurrencyDefault.
	Concurrency int
	// WorkDir holds the unpacked packages (by checksum) and the task
	// directories; default a "kiln-hosted" folder in os.TempDir().
	WorkDir string
	// Runner configures the processes (limits, log cap, sandbox); nil
	// means runner defaults (SandboxAuto). Its WorkDir is set to
	// WorkDir/tasks, and WorkDir is added to its Hide.
	Runner *runner.Config
	// UIDBase and UIDCount are the range of user ids tasks run as when the
	// runner is root and its sandbox switches users: each project gets its
	// own, UIDBase + n with n < UIDCount, allocated once in the store (so
	// every runner sharing it agrees) and used as user and group id. The
	// ids need no /etc/passwd entries; no other user of the machine may
	// use them. Defaults UIDBaseDefault and UIDCountDefault.
	UIDBase, UIDCount int
	// PollInterval is how often the package index is read to start serving
	// new packages and stop serving deleted ones; default 2 s. Kick
	// re-reads it at once.
	PollInterval time.Duration
	// LeaseDuration is the kiln workers' lease duration; a cancel reaches a
	// running task within a third of it. Default kiln's.
	LeaseDuration time.Duration
	// LeaseWait is the kiln workers' lease wait; default kiln's.
	LeaseWait time.Duration
	// Logger receives the runner's logs; nil discards them.
	Logger *slog.Logger
	// Clock is the store's clock; nil means the system clock.
	Clock store.Clock
	// SlotTTL is how long a package's max_concurrency slot stays taken by
	// a runner that stopped renewing it (it died); default SlotTTLDefault.
	SlotTTL time.Duration
	// SlotPoll is how often a task waiting for a max_concurrency slot
	// tries again; default SlotPollDefault.
	SlotPoll time.Duration
	// ID names this runner in the slots it holds; default a random id.
	ID string
	// TracerProvider, when set, turns tracing on for the packages' tasks:
	// each package's worker records kiln.lease and kiln.handle spans
	// (kiln.WorkerConfig.TracerProvider), children of the task's trace
	// context, and each run of a program gets a kiln.code.run span, child
	// of kiln.handle. Nil: no spans.
	TracerProvider trace.TracerProvider
	// EventFunc, when set, is called for every event of every package
	// worker (kiln.WorkerConfig.EventFunc) with the task's project: it
	// must be fast and safe for concurrent use.
	EventFunc func(project string, e kiln.Event)
	// CollectInterval is how often the logs and progress of tasks the
	// store no longer has are deleted; default CollectIntervalDefault;
	// negative: never.
	CollectInterval time.Duration
}

// Hosted runs the tasks of every code package of every project in a store:
// one kiln.Worker per package (its queue "code:<name>", so pausing the
// package's task queue pauses the store queue), all sharing one limit of
// concurrent processes. Several Hosted runners may share a store. It is
// safe for concurrent use.
type Hosted struct {
	cfg  Config
	reg  *Registry
	meta store.Meta
	run  *runner.Runner
	log  *slog.Logger
	sem  chan struct{}
	kick chan struct{}
	// tracer is nil unless Config.TracerProvider is set.
	tracer trace.Tracer

	unpackMu sync.Mutex

	uidMu sync.Mutex
	uids  map[string]*syscall.Credential // project -> its user

	mu      sync.Mutex
	workers map[string]*served // project + "/" + name
	closing bool               // Shutdown was called: no new workers
	wg      sync.WaitGroup
}

type served struct {
	w    *kiln.Worker
	conc int
	done chan struct{}
}

// New checks cfg and returns a runner, not yet running.
func New(cfg *Config) (*Hosted, error) {
	if cfg == nil || cfg.Store == nil {
		return nil, errors.New("hosted: Config.Store is required")
	}
	c := *cfg
	meta, ok := c.Store.(store.Meta)
	if !ok {
		return nil, fmt.Errorf("hosted: the store %T does not implement store.Meta", c.Store)
	}
	if c.Concurrency == 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.Concurrency < 0 {
		return nil, errors.New("hosted: Config.Concurrency is negative")
	}
	if c.WorkDir == "" {
		c.WorkDir = filepath.Join(os.TempDir(), "kiln-hosted")
	}
	if !filepath.IsAbs(c.WorkDir) {
		abs, err := filepath.Abs(c.WorkDir)
		if err != nil {
			return nil, fmt.Errorf("hosted: %w", err)
		}
		c.WorkDir = abs
	}
	if c.PollInterval <= 0 {
		c.PollInterval = PollIntervalDefault
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = store.SystemClock{}
	}
	if c.CollectInterval == 0 {
		c.CollectInterval = CollectIntervalDefault
	}
	if c.SlotTTL <= 0 {
		c.SlotTTL = SlotTTLDefault
	}
	if c.SlotPoll <= 0 {
		c.SlotPoll = SlotPollDefault
	}
	if c.ID == "" {
		c.ID = "runner-" + ids.New()
	}
	if c.UIDBase == 0 {
		c.UIDBase = UIDBaseDefault
	}
	if c.UIDCount == 0 {
		c.UIDCount = UIDCountDefault
	}
	if c.UIDBase < 1 || c.UIDCount < 1 || c.UIDBase > math.MaxInt32-c.UIDCount+1 {
		return nil, fmt.Errorf("hosted: the user id range %d+%d is not within 1..%d", c.UIDBase, c.UIDCount, math.MaxInt32)
	}
	var rc runner.Config
	if c.Runner != nil {
		rc = *c.Runner
	}
	rc.WorkDir = filepath.Join(c.WorkDir, "tasks")
	rc.Hide = append(slices.Clone(rc.Hide), c.WorkDir)
	// The folders exist before the runner checks them. Tasks running as
	// other users without bwrap must traverse WorkDir and WorkDir/tasks to
	// their own task directory (0700, theirs): search, no listing, for
	// others. The package cache stays the server's alone.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{c.WorkDir, 0o711}, {rc.WorkDir, 0o711}, {filepath.Join(c.WorkDir, "packages"), 0o700}} {
		if err := os.MkdirAll(d.path, 0o700); err != nil {
			return nil, fmt.Errorf("hosted: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("hosted: %w", err)
		}
	}
	removeOldPackages(filepath.Join(c.WorkDir, "packages"), c.Logger)
	run, err := runner.New(&rc)
	if err != nil {
		return nil, fmt.Errorf("hosted: %w", err)
	}
	return &Hosted{
		cfg: c, reg: NewRegistry(meta, c.Clock), meta: meta, run: run, log: c.Logger,
		sem: make(chan struct{}, c.Concurrency), kick: make(chan struct{}, 1),
		workers: make(map[string]*served), uids: make(map[string]*syscall.Credential),
		tracer: tracerOf(c.TracerProvider),
	}, nil
}

// removeOldPackages removes the unpacked packages of dir that an earlier
// kiln cached by checksum alone (a folder named by 64 hexadecimal digits):
// packages are now cached by project and checksum (Hosted.unpacked), and
// nothing reads those folders any more.
func removeOldPackages(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if _, herr := hex.DecodeString(name); !e.IsDir() || len(name) != 2*sha256.Size || herr != nil {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			log.Warn("hosted: removing a package unpacked by an earlier version failed", "dir", name, "err", err)
		}
	}
}

// tracerOf returns tp's tracer for the runner's spans, or nil for a nil tp.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer("github.com/kilnhq/kiln/runner/hosted")
}

// Sandbox returns the protection the runner gives its tasks.
func (h *Hosted) Sandbox() runner.SandboxState { return h.run.Sandbox() }

// logSandbox says once, at the start, what protects the server from the
// tasks.
func (h *Hosted) logSandbox() {
	st := h.run.Sandbox()
	attrs := []any{"mode", string(st.Mode), "separate_users", st.SwitchUser}
	if st.SwitchUser {
		attrs = append(attrs, "uids", fmt.Sprintf("%d-%d (one per project)", h.cfg.UIDBase, h.cfg.UIDBase+h.cfg.UIDCount-1))
	}
	if st.Note != "" {
		attrs = append(attrs, "note", st.Note)
	}
	// How the limits reach a task's program (docs/decisions/003-runner-limits.md).
	attrs = append(attrs, "limits", string(st.Limiter))
	if st.LimiterNote != "" {
		attrs = append(attrs, "limits_note", st.LimiterNote)
	}
	// Whether every process of a task ends with it, even one that left its
	// process group (docs/sandbox.md, "Group kills").
	attrs = append(attrs, "group_kill", st.GroupKill)
	if st.GroupKill {
		attrs = append(attrs, "cgroup", st.Cgroup)
	} else {
		attrs = append(attrs, "group_kill_note", st.GroupKillNote)
	}
	if st.Mode == runner.SandboxOff {
		h.log.Warn("hosted: code package tasks are not sandboxed", attrs...)
		return
	}
	h.log.Info("hosted: code package sandbox", attrs...)
}

// Registry returns the registry the runner reads packages from.
func (h *Hosted) Registry() *Registry { return h.reg }

// Kick makes Run re-read the package index now (after an upload).
func (h *Hosted) Kick() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run serves packages until ctx is done, then stops every worker
// gracefully (running tasks finish, or are handed back when the workers'
// shutdown timeout passes) and returns.
func (h *Hosted) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(h.cfg.WorkDir, "tasks"), 0o711); err != nil { //nolint:gosec // G301: searchable by the tasks' users, not listable
		return fmt.Errorf("hosted: %w", err)
	}
	h.logSandbox()
	t := time.NewTicker(h.cfg.PollInterval)
	defer t.Stop()
	var collect <-chan time.Time
	if h.cfg.CollectInterval > 0 {
		ct := time.NewTicker(h.cfg.CollectInterval)
		defer ct.Stop()
		collect = ct.C
	}
	for {
		if err := h.sync(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("hosted: reading the package index failed", "err", err)
		}
		select {
		case <-ctx.Done():
			h.stopAll()
			return h.run.Close()
		case <-t.C:
		case <-h.kick:
		case <-collect:
			if n, err := h.Collect(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("hosted: collecting old task logs failed", "err", err)
			} else if n > 0 {
				h.log.Info("hosted: deleted the logs of tasks that are gone", "tasks", n)
			}
		}
	}
}

// Collect deletes the logs and progress records of the tasks the store no
// longer has, in every project with a package, and returns how many tasks
// it cleaned up. Run calls it every CollectInterval; several runners may
// run it at once.
func (h *Hosted) Collect(ctx context.Context) (int, error) {
	entries, err := h.reg.Index(ctx)
	if err != nil {
		return 0, err
	}
	seen := make(map[string]bool)
	total := 0
	for _, e := range entries {
		if seen[e.Project] {
			continue
		}
		seen[e.Project] = true
		n, err := h.reg.Collect(ctx, h.cfg.Store, e.Project)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// sync starts a worker for every package in the index without one, and
// stops those whose package is gone or whose concurrency changed.
func (h *Hosted) sync(ctx context.Context) error {
	entries, err := h.reg.Index(ctx)
	if err != nil {
		return err
	}
	want := make(map[string]IndexEntry, len(entries))
	for _, e := range entries {
		want[e.Project+"/"+e.Name] = e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return nil
	}
	for key, s := range h.workers {
		e, ok := want[key]
		if ok && h.concurrency(e) == s.conc {
			continue
		}
		delete(h.workers, key)
		h.stopWorker(s)
	}
	for key, e := range want {
		if _, ok := h.workers[key]; ok {
			continue
		}
		s, err := h.startWorker(e)
		if err != nil {
			h.log.Warn("hosted: cannot serve a package", "project", e.Project, "code", e.Name, "err", err)
			continue
		}
		h.workers[key] = s
	}
	return nil
}

func (h *Hosted) concurrency(e IndexEntry) int {
	if e.MaxConcurrency > 0 && e.MaxConcurrency < h.cfg.Concurrency {
		return e.MaxConcurrency
	}
	return h.cfg.Concurrency
}

func (h *Hosted) startWorker(e IndexEntry) (*served, error) {
	typ := TaskType(e.Name)
	conc := h.concurrency(e)
	wc := &kiln.WorkerConfig{
		Namespace:      e.Project,
		Queues:         map[string]int{typ: 1},
		Concurrency:    conc,
		LeaseDuration:  h.cfg.LeaseDuration,
		LeaseWait:      h.cfg.LeaseWait,
		SweepInterval:  -1, // the server sweeps
		RetryDelayFunc: retryDelay,
		Logger:         h.log,
		TracerProvider: h.cfg.TracerProvider,
	}
	if f := h.cfg.EventFunc; f != nil {
		wc.EventFunc = func(ev kiln.Event) { f(e.Project, ev) }
	}
	w, err := kiln.NewWorker(h.cfg.Store, wc)
	if err != nil {
		return nil, err
	}
	if err := w.Register(typ, kiln.HandlerFunc(func(ctx context.Context, t *kiln.Task) error {
		return h.process(ctx, e.Project, t)
	})); err != nil {
		return nil, err
	}
	s := &served{w: w, conc: conc, done: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(s.done)
		if err := w.Run(context.Background()); err != nil {
			h.log.Warn("hosted: worker stopped", "project", e.Project, "code", e.Name, "err", err)
		}
	}()
	return s, nil
}

// stopWorker stops a worker in the background (its running tasks finish
// within kiln.ShutdownTimeoutDefault).
func (h *Hosted) stopWorker(s *served) {
	h.stopWorkerCtx(context.Background(), s)
}

// stopWorkerCtx stops a worker in the background, its running tasks
// bounded by ctx's deadline, or kiln.ShutdownTimeoutDefault when ctx has
// none.
func (h *Hosted) stopWorkerCtx(ctx context.Context, s *served) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ctx, cancel := context.WithTimeout(ctx, kiln.ShutdownTimeoutDefault)
		defer cancel()
		_ = s.w.Shutdown(ctx) // the tasks it could not finish are handed back, or left to their lease's expiry
	}()
}

func (h *Hosted) stopAll() {
	h.mu.Lock()
	for key, s := range h.workers {
		delete(h.workers, key)
		h.stopWorker(s)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Shutdown stops every worker, running tasks finishing until ctx is done
// (then they are cancelled and handed back, see kiln.Worker.Shutdown), and
// waits for them, but never past ctx: it then returns ctx's error, and the
// tasks not handed back run again when their leases expire. No worker
// starts after Shutdown; Run returns once its own context ends.
func (h *Hosted) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	for key, s := range h.workers {
		delete(h.workers, key)
		h.stopWorkerCtx(ctx, s)
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { // ends when the workers have stopped, each bounded by ctx
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		// The task directories kept for later tasks go with the workers.
		return h.run.Close()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryDelay is the workers' RetryDelayFunc: the package's retries_delay
// (recorded in the task's envelope, or found by process for a task that
// has none), or kiln's default backoff when the package has none.
func retryDelay(attempt int, err error, t *kiln.Task) time.Duration {
	var pe *packageError
	if errors.As(err, &pe) {
		return packageDelay(pe.retriesDelay, attempt, err, t)
	}
	var env Envelope
	if json.Unmarshal(t.Payload, &env) != nil {
		return kiln.RetryDelayDefault(attempt, err, t)
	}
	return packageDelay(env.RetriesDelay, attempt, err, t)
}

// packageDelay is the pause before the next attempt of a package whose
// retries_delay is seconds: that many seconds, or with 0 (not set)
// kiln.RetryDelayDefault, an exponential backoff with jitter.
func packageDelay(seconds, attempt int, err error, t *kiln.Task) time.Duration {
	if seconds > 0 {
		return time.Duration(seconds) * time.Second
	}
	return kiln.RetryDelayDefault(attempt, err, t)
}

// packageError is the failure of an attempt of a task that entered
// without an envelope (kiln enqueue, the native API, the library, a
// native schedule): it carries the package's retry settings, which such a
// task did not get when it was enqueued. Its text is the failure's own.
type packageError struct {
	err          error
	retriesDelay int  // the package's retries_delay, for retryDelay
	last         bool // the package's retries are used up: wraps kiln.SkipRetry
}

func (e *packageError) Error() string { return e.err.Error() }

func (e *packageError) Unwrap() []error {
	if e.last {
		return []error{e.err, kiln.SkipRetry}
	}
	return []error{e.err}
}

// packageRetries applies rev's retries and retries_delay to the failure
// err of attempt t.Attempt of a task without an envelope. A task with an
// envelope got them when it was queued (its max_retries, its envelope's
// retries_delay); so do the tasks of the native API, whose server records
// the package's retries as their max_retries, but not those a library
// client enqueued into the store directly. A cancelled or stopped attempt
// is left as it is.
func packageRetries(ctx context.Context, err error, env *Envelope, rev *Revision, t *kiln.Task) error {
	if err == nil || !env.native || ctx.Err() != nil || errors.Is(err, kiln.SkipRetry) {
		return err
	}
	return &packageError{err: err, retriesDelay: rev.RetriesDelay, last: t.Attempt > rev.Retries}
}

// process runs one attempt of a code package task: it finds the package
// revision (revisionOf), takes a runner slot and, with max_concurrency, a
// slot across runners (takeSlot), runs the program (runProgram) and turns
// how it ended into the attempt's outcome (outcome).
func (h *Hosted) process(ctx context.Context, project string, t *kiln.Task) error {
	env, rev, err := h.revisionOf(ctx, project, t)
	if err != nil {
		return err
	}
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-h.sem }()

	if rev.MaxConcurrency > 0 {
		release, err := h.takeSlot(ctx, project, rev, t.ID)
		if err != nil {
			return err
		}
		defer release()
	}
	ctx, span := h.startRun(ctx, project, rev, t)
	res, err := h.runProgram(ctx, project, rev, &env, t)
	ran := err == nil
	if ran {
		err = outcome(ctx, res, rev, t)
	}
	endRun(span, ran, res.ExitCode, err)
	return packageRetries(ctx, err, &env, rev, t)
}

// spanRun names the span of one run of a package's program.
const spanRun = "kiln.code.run"

// startRun starts the span of one run of rev's program for t, child of
// ctx's (kiln.handle); without a tracer it returns ctx and nil.
func (h *Hosted) startRun(ctx context.Context, project string, rev *Revision, t *kiln.Task) (context.Context, trace.Span) {
	if h.tracer == nil {
		return ctx, nil
	}
	return h.tracer.Start(ctx, spanRun, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
		attribute.String("kiln.project", project),
		attribute.String("kiln.code.name", rev.Name),
		attribute.Int("kiln.code.rev", rev.Rev),
		attribute.String("messaging.message.id", t.ID),
		attribute.Int("kiln.task.attempt", t.Attempt),
	))
}

// endRun ends span (nil: nothing) with the program's exit status, when it
// ran, and err as its status.
func endRun(span trace.Span, ran bool, exitCode int, err error) {
	if span == nil {
		return
	}
	if ran {
		span.SetAttributes(attribute.Int("process.exit.code", exitCode))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// revisionOf reads the task's envelope and finds the code package revision
// it runs. A task not queued through the IronWorker API (kiln enqueue
// code:<name>, the native API, the library) has no envelope: its whole
// payload is the program's payload, and the package's latest revision
// runs. A package or revision that does not exist fails for good.
func (h *Hosted) revisionOf(ctx context.Context, project string, t *kiln.Task) (Envelope, *Revision, error) {
	var env Envelope
	if err := json.Unmarshal(t.Payload, &env); err != nil || (env.CodeID == "" && env.CodeName == "") {
		env = Envelope{Payload: string(t.Payload), CodeName: strings.TrimPrefix(t.Type, TypePrefix), native: true}
		code, err := h.reg.Lookup(ctx, project, env.CodeName)
		if errors.Is(err, ErrNotFound) {
			return env, nil, fmt.Errorf("%sno code package %q in this project (%w)", ErrPrefixError, env.CodeName, kiln.SkipRetry)
		}
		if err != nil {
			return env, nil, fmt.Errorf("%s%w", ErrPrefixError, err)
		}
		env.CodeID = code.ID
	}
	var rev *Revision
	var err error
	if env.Rev == 0 {
		rev, err = h.reg.Latest(ctx, project, env.CodeID)
	} else {
		rev, err = h.reg.Revision(ctx, project, env.CodeID, env.Rev)
	}
	if errors.Is(err, ErrNotFound) {
		return env, nil, fmt.Errorf("%scode package %s revision %d was deleted (%w)", ErrPrefixError, env.CodeName, env.Rev, kiln.SkipRetry)
	}
	if err != nil {
		return env, nil, fmt.Errorf("%s%w", ErrPrefixError, err)
	}
	return env, rev, nil
}

// takeSlot takes one of rev's max_concurrency slots, shared by every runner
// on the store, waiting for one to free up, and holds it (renewing it in
// the background) until release is called.
func (h *Hosted) takeSlot(ctx context.Context, project string, rev *Revision, taskID string) (release func(), err error) {
	holder := h.cfg.ID + "/" + taskID
	sl, err := acquireSlot(ctx, h.meta, h.cfg.Clock, project, rev.CodeID, rev.MaxConcurrency, holder, h.cfg.SlotTTL, h.cfg.SlotPoll)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err // cancelled, lease lost or shutdown while waiting
		}
		return nil, fmt.Errorf("%scannot take a max_concurrency slot: %w", ErrPrefixError, err)
	}
	hctx, stop := context.WithCancel(ctx)
	held := make(chan struct{})
	go func() {
		defer close(held)
		sl.hold(hctx, holder, func() {
			h.log.Warn("hosted: a max_concurrency slot expired while its task ran", "task", taskID, "code", rev.Name)
		})
	}()
	return func() {
		stop()
		<-held
	}, nil
}

// runProgram unpacks rev, opens the task's log and runs the program with
// the envelope's payload and timeout (at most TimeoutDefault).
func (h *Hosted) runProgram(ctx context.Context, project string, rev *Revision, env *Envelope, t *kiln.Task) (runner.Result, error) {
	fail := func(format string, err error) (runner.Result, error) {
		return runner.Result{}, fmt.Errorf(ErrPrefixError+format, err)
	}
	dir, err := h.unpacked(ctx, project, rev)
	if err != nil {
		return fail("cannot get the code package: %w", err)
	}
	// The task is marked for Collect only once its log has something to
	// keep, right before the first chunk is written: a task that prints
	// nothing costs no store write here.
	log, err := blob.OpenLog(ctx, h.meta, project, LogKey(t.ID), blob.LogConfig{
		BeforeFirstPut: func(ctx context.Context) error { return h.reg.MarkTask(ctx, project, t.ID) },
	})
	if err != nil {
		return fail("%w", err)
	}
	if t.Attempt > 1 && log.Size() > 0 {
		_, _ = fmt.Fprintf(log, "\n[kiln: attempt %d]\n", t.Attempt) // the log's errors surface at Close
	}
	timeout := time.Duration(env.Timeout) * time.Second
	if timeout <= 0 || timeout > TimeoutDefault {
		timeout = TimeoutDefault
	}
	cred, err := h.projectCredential(ctx, project)
	if err != nil {
		_ = log.Close(context.WithoutCancel(ctx))
		return fail("%w", err)
	}
	spec := runner.Spec{
		Credential: cred,
		TaskID:     t.ID,
		PackageDir: dir,
		Runtime:    rev.Runtime,
		Payload:    []byte(env.Payload),
		Config:     []byte(rev.Config),
		Env:        rev.EnvVars,
		Timeout:    timeout,
		Log:        log,
	}
	if rev.Command != "" {
		spec.Command = rev.Argv()
	} else {
		spec.File = rev.FileName
	}
	res, err := h.run.Run(ctx, spec)
	if cerr := log.Close(context.WithoutCancel(ctx)); cerr != nil {
		h.log.Warn("hosted: writing a task log failed", "task", t.ID, "err", cerr)
	}
	if err != nil {
		return fail("cannot start the program: %w", err)
	}
	return res, nil
}

// outcome turns how the program ended into the attempt's outcome: nil (and
// the task's result) when it completed, else the error the task records.
func outcome(ctx context.Context, res runner.Result, rev *Revision, t *kiln.Task) error {
	switch res.Status {
	case runner.StatusComplete:
		b, _ := json.Marshal(map[string]any{"status": "complete", "duration_ms": res.Duration.Milliseconds(), "rev": rev.Rev}) // cannot fail
		t.SetResult(b)
		return nil
	case runner.StatusTimeout:
		return errors.New(ErrPrefixTimeout + res.Msg)
	case runner.StatusCancelled:
		if c := context.Cause(ctx); c != nil {
			return c
		}
		return errors.New("cancelled")
	case runner.StatusError:
		return errors.New(ErrPrefixError + res.Msg)
	}
	return errors.New(ErrPrefixError + res.Msg)
}

// unpacked returns the directory of rev's unpacked zip, unpacking it on
// first use: packages are cached by project and checksum in
// WorkDir/packages. Two projects that upload the same zip get a folder
// each: their tasks, given links to the package's files (runner.Config.
// LinkPackage), share no file with another project's.
func (h *Hosted) unpacked(ctx context.Context, project string, rev *Revision) (string, error) {
	ph := sha256.Sum256([]byte(project))
	dir := filepath.Join(h.cfg.WorkDir, "packages", hex.EncodeToString(ph[:8])+"-"+rev.SHA256)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	h.unpackMu.Lock()
	defer h.unpackMu.Unlock()
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Join(h.cfg.WorkDir, "packages"), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Join(h.cfg.WorkDir, "packages"), ".zip-*")
	if err != nil {
		return "", err
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	rd, err := h.reg.OpenZip(ctx, project, rev)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, rd)
	if err != nil {
		return "", err
	}
	if _, err := runner.Unpack(f, n, dir, runner.Limits{}); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another process sharing WorkDir unpacked it first
		}
		return "", err
	}
	return dir, nil
}
