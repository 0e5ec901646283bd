package schedule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/store"
)

// Defaults of Config.
const (
	// IndexNamespaceDefault is the reserved namespace that holds the index
	// of namespaces with schedules (the server's own namespace).
	IndexNamespaceDefault = "_kiln"
	// MinEveryDefault is the shortest interval Create accepts by default.
	MinEveryDefault = time.Second
	// MaxSchedulesDefault caps the schedules of one namespace.
	MaxSchedulesDefault = 1000
	// RescanIntervalDefault is how often a Scheduler lists the schedules
	// to see those that other instances created or changed.
	RescanIntervalDefault = 5 * time.Second
	// MissedGraceDefault is how late a run may be seen and still run.
	MissedGraceDefault = time.Minute
	// RepairAfterDefault is how long a claimed run may stay unfinished
	// before another instance finishes it.
	RepairAfterDefault = 30 * time.Second
	// RetainDefault is how long claims of past runs and the tombstones of
	// deleted schedules are kept.
	RetainDefault = time.Hour
)

// ErrExists is returned by Create when a schedule with that id exists (or
// was deleted less than Config.Retain ago).
var ErrExists = errors.New("schedule id already exists")

// ErrFinished is returned by Pause, Resume and Update for a schedule that
// is done or cancelled: it fires no more, and cannot be changed (create a
// new one). It matches store.ErrInvalidState too.
var ErrFinished = fmt.Errorf("schedule is done or cancelled: %w", store.ErrInvalidState)

// Config configures a Scheduler. The zero value (or nil) means every
// default.
type Config struct {
	// Namespaces, when not nil, are the namespaces the Scheduler fires.
	// Nil means every namespace in the index that Create keeps in
	// IndexNamespace.
	Namespaces []string
	// IndexNamespace holds the index of namespaces with schedules; default
	// IndexNamespaceDefault ("_kiln").
	IndexNamespace string
	// Clock tells the time; nil means the system clock. Tests pass a fake
	// clock and call FireDue instead of Run.
	Clock store.Clock
	// Limits are the store's limits, for the tasks of the runs; the zero
	// value means store defaults.
	Limits store.Limits
	// MinEvery is the shortest interval Create accepts; default
	// MinEveryDefault (1 s).
	MinEvery time.Duration
	// MaxSchedules caps the schedules of a namespace; default
	// MaxSchedulesDefault (1000).
	MaxSchedules int
	// RescanInterval is how often Run lists every schedule; default
	// RescanIntervalDefault (5 s). Between scans Run sleeps until the
	// earliest run time it knows.
	RescanInterval time.Duration
	// MissedGrace is how late a run time may be noticed and still run. A
	// schedule whose next run time is older than that (every scheduler
	// was down) fires once, for the latest run time that has passed, and
	// counts the others in MissedRuns. Default MissedGraceDefault (1 min).
	MissedGrace time.Duration
	// RepairAfter is how long a run may stay claimed but unfinished (its
	// instance crashed) before another instance finishes it; default
	// RepairAfterDefault (30 s).
	RepairAfter time.Duration
	// Retain is how long claims of past runs and tombstones of deleted
	// schedules are kept; default RetainDefault (1 h).
	Retain time.Duration
	// InstanceID names this instance in claims; empty means
	// "hostname-pid-random".
	InstanceID string
	// Logger receives the scheduler's logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider, when set, traces every run: the enqueue of its task
	// is a kiln.enqueue span, the root of a trace of its own (attributes
	// kiln.schedule.id and kiln.schedule.run), whose trace context the task
	// carries to its handler. Nil traces nothing.
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	if c.IndexNamespace == "" {
		c.IndexNamespace = IndexNamespaceDefault
	}
	if c.Clock == nil {
		c.Clock = store.SystemClock{}
	}
	c.Limits = c.Limits.WithDefaults()
	if c.MinEvery == 0 {
		c.MinEvery = MinEveryDefault
	}
	if c.MaxSchedules == 0 {
		c.MaxSchedules = MaxSchedulesDefault
	}
	if c.RescanInterval == 0 {
		c.RescanInterval = RescanIntervalDefault
	}
	if c.MissedGrace == 0 {
		c.MissedGrace = MissedGraceDefault
	}
	if c.RepairAfter == 0 {
		c.RepairAfter = RepairAfterDefault
	}
	if c.Retain == 0 {
		c.Retain = RetainDefault
	}
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = rand.Read(b[:]) // never fails
		c.InstanceID = host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) { errs = append(errs, invalid(field, format, args...)) }
	for _, ns := range c.Namespaces {
		if err := store.CheckNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := store.CheckNamespace(c.IndexNamespace); err != nil {
		errs = append(errs, err)
	}
	if c.MinEvery < time.Second || c.MinEvery%time.Second != 0 {
		bad("min_every", "%s is not a whole number of seconds of at least 1 s", c.MinEvery)
	}
	if c.MaxSchedules < 0 {
		bad("max_schedules", "%d is negative", c.MaxSchedules)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"rescan_interval", c.RescanInterval}, {"missed_grace", c.MissedGrace}, {"repair_after", c.RepairAfter}, {"retain", c.Retain}} {
		if d.v < 0 {
			bad(d.name, "%s is negative", d.v)
		}
	}
	if c.Retain < c.RepairAfter+c.MissedGrace {
		bad("retain", "%s is shorter than repair_after plus missed_grace", c.Retain)
	}
	return errors.Join(errs...)
}

// Scheduler keeps schedules in a store's Meta records and fires their runs:
// at each run time it enqueues the schedule's task once, however many
// Schedulers share the store. It is safe for concurrent use.
//
// Its methods Create, Get, List, Update, Pause, Resume, Cancel and Delete
// manage schedules; Run
// fires them until Shutdown or the end of its context; FireDue fires what
// is due now, once (for tests with a fake clock, and for callers that
// drive the timing themselves).
type Scheduler struct {
	st     store.Store
	rec    records
	cfg    Config
	clock  store.Clock
	log    *slog.Logger
	tracer trace.Tracer // nil: no tracing

	wake chan struct{} // a Create on this instance: look again

	// mu guards known and lastCleanup. It is held while firing, so that
	// FireDue and Run do not fire in parallel on one instance.
	mu          sync.Mutex
	known       map[string]*entry // namespace + "\x00" + id
	lastCleanup time.Time

	runMu   sync.Mutex
	started bool // Run was called, or Shutdown
	stopped bool // stop is closed
	stop    chan struct{}
	done    chan struct{}
	abort   context.CancelFunc // cancels the firing of a running Run
}

// entry is a schedule this instance knows.
type entry struct {
	s       *Schedule
	rule    *Rule
	retryAt time.Time // do not look before
}

// New returns a Scheduler over st, which must implement store.Meta. A nil
// cfg means every default; every problem of cfg is returned at once.
func New(st store.Store, cfg *Config) (*Scheduler, error) {
	if st == nil {
		return nil, errors.New("schedule: New: nil store")
	}
	meta, ok := st.(store.Meta)
	if !ok {
		return nil, fmt.Errorf("schedule: the store %T cannot keep schedules (it does not implement store.Meta)", st)
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("schedule: config: %w", err)
	}
	var tr trace.Tracer
	if c.TracerProvider != nil {
		tr = c.TracerProvider.Tracer("github.com/kilnhq/kiln/schedule")
	}
	return &Scheduler{
		st: st, rec: records{meta: meta}, cfg: c, clock: c.Clock, log: c.Logger, tracer: tr,
		wake: make(chan struct{}, 1), known: make(map[string]*entry),
	}, nil
}

func knownKey(ns, id string) string { return ns + "\x00" + id }

// Create validates s, fills its defaults (ID, Namespace, StartAt) and
// state, and stores it. It returns the stored schedule. Invalid input
// fails with *store.ValidationError values (joined) that match
// store.ErrInvalidName, store.ErrInvalidOption or store.ErrPayloadTooLarge,
// and nothing is stored; an id that exists fails with ErrExists.
func (c *Scheduler) Create(ctx context.Context, s *Schedule) (*Schedule, error) {
	if s == nil {
		return nil, errors.New("schedule: Create: nil schedule")
	}
	in := s.Clone()
	if in.Namespace == "" {
		in.Namespace = store.DefaultNamespace
	}
	now := c.clock.Now()
	r, err := validate(in, c.cfg.Limits, c.cfg.MinEvery, now)
	if err != nil {
		return nil, fmt.Errorf("schedule: create: %w", err)
	}
	if in.ID == "" {
		in.ID = "s" + ids.New()
	}
	existing, err := c.rec.list(ctx, in.Namespace)
	if err != nil {
		return nil, fmt.Errorf("schedule: create: %w", err)
	}
	live := 0
	for _, e := range existing {
		if e.ID == in.ID {
			return nil, fmt.Errorf("schedule: create %s: %w", in.ID, ErrExists)
		}
		if e.Status != statusDeleted {
			live++
		}
	}
	if live >= c.cfg.MaxSchedules {
		return nil, fmt.Errorf("schedule: create: %w", invalid("namespace", "has %d schedules, the most allowed", live))
	}
	in.Status = StatusActive
	in.RunCount, in.MissedRuns = 0, 0
	in.LastRunTime, in.LastTaskID, in.LastError = time.Time{}, "", ""
	in.NextStart = firstRun(r, in.StartAt, now)
	in.CreatedAt, in.UpdatedAt = now.UTC(), now.UTC()
	in.Version = 1
	if c.cfg.Namespaces == nil {
		if err := c.rec.addIndex(ctx, c.cfg.IndexNamespace, in.Namespace); err != nil {
			return nil, fmt.Errorf("schedule: create: %w", err)
		}
	}
	ok, err := c.rec.put(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("schedule: create: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("schedule: create %s: %w", in.ID, ErrExists)
	}
	c.mu.Lock()
	c.known[knownKey(in.Namespace, in.ID)] = &entry{s: in.Clone(), rule: r}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return in, nil
}

func notFound(ns, id string) error {
	return fmt.Errorf("schedule: %s in namespace %s: %w", id, ns, store.ErrNotFound)
}

// Get returns the schedule id of namespace ns; a missing one gives an
// error that matches store.ErrNotFound.
func (c *Scheduler) Get(ctx context.Context, ns, id string) (*Schedule, error) {
	if err := checkRef(ns, id); err != nil {
		return nil, err
	}
	s, err := c.rec.get(ctx, ns, id)
	if err != nil {
		return nil, fmt.Errorf("schedule: get %s: %w", id, err)
	}
	if s == nil || s.Status == statusDeleted {
		return nil, notFound(ns, id)
	}
	return s, nil
}

// List returns the schedules of namespace ns in id order.
func (c *Scheduler) List(ctx context.Context, ns string) ([]*Schedule, error) {
	if err := store.CheckNamespace(ns); err != nil {
		return nil, err
	}
	all, err := c.rec.list(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("schedule: list: %w", err)
	}
	out := all[:0]
	for _, s := range all {
		if s.Status != statusDeleted {
			out = append(out, s)
		}
	}
	return out, nil
}

func checkRef(ns, id string) error {
	if err := store.CheckNamespace(ns); err != nil {
		return err
	}
	return store.CheckName("id", id)
}

// update applies f to the current version of a schedule and stores the
// result, retrying when another change wins. f returns false to store
// nothing.
func (c *Scheduler) update(ctx context.Context, ns, id string, f func(s *Schedule) (bool, error)) (*Schedule, error) {
	for range 100 {
		cur, err := c.rec.get(ctx, ns, id)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.Status == statusDeleted {
			return nil, notFound(ns, id)
		}
		next := cur.Clone()
		change, err := f(next)
		if err != nil || !change {
			return cur, err
		}
		next.UpdatedAt = c.clock.Now().UTC()
		switch err := c.rec.replace(ctx, cur, next); {
		case err == nil:
			return next, nil
		case !errors.Is(err, errStale):
			return nil, err
		}
	}
	return nil, fmt.Errorf("schedule: %s: too many concurrent changes", id)
}

// Cancel stops a schedule, active or paused: it fires no more.
// Cancelling a cancelled schedule changes nothing; a done one gives an
// error that matches store.ErrInvalidState, a missing one
// store.ErrNotFound.
func (c *Scheduler) Cancel(ctx context.Context, ns, id string) (*Schedule, error) {
	if err := checkRef(ns, id); err != nil {
		return nil, err
	}
	s, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		switch s.Status {
		case StatusCancelled:
			return false, nil
		case StatusDone:
			return false, fmt.Errorf("schedule %s is done: %w", id, store.ErrInvalidState)
		case StatusActive, StatusPaused, statusDeleted: // update never passes a deleted one
		}
		s.Status, s.NextStart = StatusCancelled, time.Time{}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("schedule: cancel %s: %w", id, err)
	}
	c.forget(ns, id)
	return s, nil
}

// Delete removes a schedule. It leaves a tombstone for Config.Retain, so
// that no instance that read the schedule before can bring it back, and
// its id cannot be taken again until then. Tasks already enqueued stay.
func (c *Scheduler) Delete(ctx context.Context, ns, id string) error {
	if err := checkRef(ns, id); err != nil {
		return err
	}
	_, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		s.Status, s.NextStart = statusDeleted, time.Time{}
		s.Task = Task{Type: s.Task.Type}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("schedule: delete %s: %w", id, err)
	}
	c.forget(ns, id)
	return nil
}

// finished is the error of Pause, Resume and Update for a schedule that
// fires no more.
func finished(s *Schedule) error {
	return fmt.Errorf("%s is %s: %w", s.ID, s.Status, ErrFinished)
}

// Pause pauses an active schedule: it fires nothing until Resume, and its
// NextStart is zero meanwhile. Pausing a paused schedule changes nothing;
// a done or cancelled one gives an error that matches ErrFinished (and
// store.ErrInvalidState), a missing one store.ErrNotFound.
//
// A run that a scheduler began to fire before the pause was stored (it
// read the schedule active and due) still enqueues its task and is
// counted; no run begins after it.
func (c *Scheduler) Pause(ctx context.Context, ns, id string) (*Schedule, error) {
	if err := checkRef(ns, id); err != nil {
		return nil, err
	}
	s, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		switch s.Status {
		case StatusPaused:
			return false, nil
		case StatusDone, StatusCancelled:
			return false, finished(s)
		case StatusActive, statusDeleted:
		}
		s.Status, s.NextStart = StatusPaused, time.Time{}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("schedule: pause %s: %w", id, err)
	}
	c.forget(ns, id)
	return s, nil
}

// Resume makes a paused schedule active again. Its next run is the first
// run time from now on (and after its last run): the run times that
// passed while it was paused are not made up, and are not counted in
// MissedRuns. A schedule whose EndAt passed or whose rule has no run time
// left while it was paused becomes done. Resuming an active schedule
// changes nothing; a done or cancelled one gives an error that matches
// ErrFinished, a missing one store.ErrNotFound.
func (c *Scheduler) Resume(ctx context.Context, ns, id string) (*Schedule, error) {
	if err := checkRef(ns, id); err != nil {
		return nil, err
	}
	var rule *Rule
	s, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		switch s.Status {
		case StatusActive:
			return false, nil
		case StatusDone, StatusCancelled:
			return false, finished(s)
		case StatusPaused, statusDeleted:
		}
		r, err := s.Rule()
		if err != nil {
			return false, err
		}
		rule = r
		s.Status = StatusActive
		s.NextStart = nextRun(r, s.StartAt, c.clock.Now(), s.LastRunTime)
		settle(s)
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("schedule: resume %s: %w", id, err)
	}
	c.know(s, rule)
	return s, nil
}

// settle makes an active schedule done when it has no run left: its
// NextStart is zero or after EndAt, or it made MaxRuns runs.
func settle(s *Schedule) {
	if s.Status != StatusActive {
		return
	}
	if s.NextStart.IsZero() || (s.MaxRuns > 0 && s.RunCount >= int64(s.MaxRuns)) || (!s.EndAt.IsZero() && s.NextStart.After(s.EndAt)) {
		s.Status, s.NextStart = StatusDone, time.Time{}
	}
}

// Update changes a schedule in place: edit is given a copy of the current
// version and may change its rule and task (Task, Cron, TimeZone, Every,
// StartAt, EndAt, MaxRuns); changes to any other field are ignored. The
// schedule keeps its id, status, RunCount, MissedRuns and last run. The
// result is validated like Create's input (every problem at once, nothing
// stored), and MaxRuns may not be lower than the runs already made.
//
// When the timing rule (Cron, TimeZone, Every, StartAt) changes, the next
// run of an active schedule is the first run time of the new rule from
// now on (and after the last run): nothing is made up. When only the task
// or the bounds change, the next run stays. A paused schedule stays
// paused. A done or cancelled schedule gives an error that matches
// ErrFinished, a missing one store.ErrNotFound.
//
// edit may be called more than once: a change that another scheduler
// stored meanwhile (a run) makes Update read the schedule again and apply
// edit to the newer version, so no change is lost. A run that a scheduler
// began to fire before the update was stored still enqueues the task of
// the old version, and counts.
func (c *Scheduler) Update(ctx context.Context, ns, id string, edit func(s *Schedule)) (*Schedule, error) {
	if err := checkRef(ns, id); err != nil {
		return nil, err
	}
	if edit == nil {
		return nil, errors.New("schedule: Update: nil edit")
	}
	var rule *Rule
	s, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		switch s.Status {
		case StatusDone, StatusCancelled:
			return false, finished(s)
		case StatusActive, StatusPaused, statusDeleted:
		}
		in := s.Clone()
		edit(in)
		next := s.Clone()
		next.Task, next.Cron, next.TimeZone, next.Every = in.Task, in.Cron, in.TimeZone, in.Every
		next.StartAt, next.EndAt, next.MaxRuns = in.StartAt, in.EndAt, in.MaxRuns
		if next.Task.Payload != nil {
			next.Task.Payload = append([]byte(nil), next.Task.Payload...)
		}
		now := c.clock.Now()
		r, err := validateFrom(next, c.cfg.Limits, c.cfg.MinEvery, now, s.LastRunTime)
		if err == nil && next.MaxRuns > 0 && int64(next.MaxRuns) <= s.RunCount {
			err = invalid("max_runs", "%d: the schedule has made %d runs already", next.MaxRuns, s.RunCount)
		}
		if err != nil {
			return false, err
		}
		rule = r
		if next.Status == StatusActive {
			if next.Cron != s.Cron || next.TimeZone != s.TimeZone || next.Every != s.Every || !next.StartAt.Equal(s.StartAt) {
				next.NextStart = nextRun(r, next.StartAt, now, next.LastRunTime)
			}
			if !next.EndAt.IsZero() && next.NextStart.After(next.EndAt) {
				return false, invalid("end_at", "%s is before the next run time %s", next.EndAt.Format(time.RFC3339), next.NextStart.Format(time.RFC3339))
			}
		}
		*s = *next
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("schedule: update %s: %w", id, err)
	}
	c.know(s, rule)
	return s, nil
}

// know makes this instance fire an active schedule that Resume or Update
// stored, and wakes Run to look at its next run time.
func (c *Scheduler) know(s *Schedule, r *Rule) {
	if s.Status != StatusActive || s.NextStart.IsZero() || r == nil {
		c.forget(s.Namespace, s.ID)
		return
	}
	c.mu.Lock()
	c.known[knownKey(s.Namespace, s.ID)] = &entry{s: s.Clone(), rule: r}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Scheduler) forget(ns, id string) {
	c.mu.Lock()
	delete(c.known, knownKey(ns, id))
	c.mu.Unlock()
}

// Namespaces returns the namespaces the Scheduler fires: Config.Namespaces,
// or those in the index.
func (c *Scheduler) Namespaces(ctx context.Context) ([]string, error) {
	if c.cfg.Namespaces != nil {
		return append([]string(nil), c.cfg.Namespaces...), nil
	}
	return c.rec.namespaces(ctx, c.cfg.IndexNamespace)
}

// rescan reloads every schedule of every namespace. Called with mu held.
func (c *Scheduler) rescan(ctx context.Context) error {
	nss, err := c.Namespaces(ctx)
	if err != nil {
		return err
	}
	known := make(map[string]*entry, len(c.known))
	for _, ns := range nss {
		all, err := c.rec.list(ctx, ns)
		if err != nil {
			return err
		}
		for _, s := range all {
			if s.Status != StatusActive || s.NextStart.IsZero() {
				continue
			}
			k := knownKey(ns, s.ID)
			e := c.known[k]
			if e == nil || e.s.Version != s.Version {
				r, err := s.Rule()
				if err != nil {
					c.log.Warn("schedule: a stored schedule has an invalid rule; skipped", "namespace", ns, "id", s.ID, "err", err)
					continue
				}
				retry := time.Time{}
				if e != nil {
					retry = e.retryAt
				}
				e = &entry{s: s, rule: r, retryAt: retry}
			}
			known[k] = e
		}
	}
	c.known = known
	now := c.clock.Now()
	if now.Sub(c.lastCleanup) >= c.cfg.Retain/4 {
		c.lastCleanup = now
		for _, ns := range nss {
			if _, err := c.rec.cleanup(ctx, ns, now, c.cfg.Retain); err != nil {
				c.log.Warn("schedule: cleanup failed", "namespace", ns, "err", err)
			}
		}
	}
	return nil
}

// FireDue reloads every schedule and fires, for each schedule that is due
// by the Scheduler's clock, its earliest due run (one run per schedule per
// call): it returns how many tasks this call enqueued. It is for tests with a fake clock and for callers that drive
// the timing; Run does the same on its own.
func (c *Scheduler) FireDue(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.rescan(ctx); err != nil {
		return 0, fmt.Errorf("schedule: scan: %w", err)
	}
	return c.fireKnown(ctx)
}

// fireKnown fires the due entries of known, earliest first. Called with
// mu held.
func (c *Scheduler) fireKnown(ctx context.Context) (int, error) {
	now := c.clock.Now()
	var due []*entry
	for _, e := range c.known {
		if !e.s.NextStart.After(now) && !e.retryAt.After(now) {
			due = append(due, e)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].s.NextStart.Before(due[j].s.NextStart) })
	fired := 0
	var errs []error
	for _, e := range due {
		n, err := c.fire(ctx, e)
		fired += n
		if err != nil {
			if ctx.Err() != nil {
				return fired, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("schedule %s/%s: %w", e.s.Namespace, e.s.ID, err))
			e.retryAt = c.clock.Now().Add(time.Second)
		}
	}
	return fired, errors.Join(errs...)
}

// fire runs the due run of e's schedule: it claims the run, enqueues its
// task with the run's deterministic id and advances the schedule. It
// returns 1 when this call enqueued the task. e is updated to what the
// store holds afterwards (or dropped from known when it fires no more).
func (c *Scheduler) fire(ctx context.Context, e *entry) (int, error) {
	s := e.s
	ns, id := s.Namespace, s.ID
	cur, err := c.rec.get(ctx, ns, id)
	if err != nil {
		return 0, err
	}
	if !c.refresh(e, cur) {
		return 0, nil
	}
	s = e.s
	now := c.clock.Now()
	if s.NextStart.After(now) {
		return 0, nil
	}
	at := s.NextStart
	var missed int64
	if now.Sub(at) > c.cfg.MissedGrace {
		if latest := e.rule.Latest(at, now); latest.After(at) && (s.EndAt.IsZero() || !latest.After(s.EndAt)) {
			missed = countRuns(e.rule, at, latest)
			c.log.Warn("schedule: runs were missed (no scheduler ran); firing the latest only",
				"namespace", ns, "id", id, "first_missed", at, "latest", latest, "missed", missed)
			at = latest
		}
	}
	mine := claim{By: c.cfg.InstanceID, At: now.UTC()}
	won, old, err := c.rec.claim(ctx, s, at, mine)
	if err != nil {
		return 0, err
	}
	if !won {
		// Another instance claimed the run. It advances the schedule;
		// finish its work only when it seems to have died.
		if old.By != c.cfg.InstanceID && now.Sub(old.At) < c.cfg.RepairAfter {
			e.retryAt = now.Add(min(c.cfg.RepairAfter, 250*time.Millisecond))
			return 0, nil
		}
		c.log.Info("schedule: finishing a run another instance claimed", "namespace", ns, "id", id, "run", at, "claimed_by", old.By)
		mine = *old
	}
	taskID := TaskID(id, at)
	enqueued, lastErr := 0, ""
	if won || !old.Enqueued {
		o := s.Task.Options
		o.ID = taskID
		in, err := hook.TaskInput(&o, s.Task.Type, s.Task.Payload, c.cfg.Limits, now)
		if err == nil {
			var res store.EnqueueResult
			tasks := []store.TaskInput{in}
			// A run starts a trace of its own (it has no caller).
			sctx, span := tracing.StartEnqueue(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), c.tracer, tasks, false)
			if span != nil {
				span.SetAttributes(attribute.String("kiln.schedule.id", id), attribute.String("kiln.schedule.run", at.UTC().Format(time.RFC3339Nano)))
			}
			res, err = c.st.Enqueue(sctx, store.EnqueueParams{Namespace: ns, Tasks: tasks})
			if err != nil {
				tracing.End(span, err)
				return 0, err // the claim stays: this or another instance finishes the run
			}
			err = res.Items[0].Err
			tracing.End(span, err)
		}
		switch {
		case err == nil:
			enqueued = 1
		case errors.Is(err, store.ErrTaskExists):
			// An earlier attempt enqueued it.
		case errors.Is(err, store.ErrDuplicate):
			lastErr = "skipped: the task's unique key is held by another task"
		default:
			lastErr = err.Error()
			c.log.Warn("schedule: the store refused a run's task", "namespace", ns, "id", id, "run", at, "err", err)
		}
		if err := c.rec.markEnqueued(ctx, s, at, mine); err != nil {
			return enqueued, err
		}
	}
	next, err := c.update(ctx, ns, id, func(s *Schedule) (bool, error) {
		// A later run counted already means this one was counted too (a
		// repair), unless this call enqueued its task: then the run was
		// read before an Update or Resume that another instance fired
		// the new rule of first. It counts, but is not the last run.
		late := !s.LastRunTime.IsZero() && !s.LastRunTime.Before(at)
		if late && (enqueued == 0 || s.LastRunTime.Equal(at)) {
			return false, nil // counted already
		}
		s.RunCount++
		s.MissedRuns += missed
		if late {
			if s.Status == StatusActive || s.Status == StatusPaused {
				if s.MaxRuns > 0 && s.RunCount >= int64(s.MaxRuns) {
					s.Status, s.NextStart = StatusDone, time.Time{}
				}
			}
			return true, nil
		}
		s.LastRunTime, s.LastTaskID, s.LastError = at, taskID, lastErr
		switch s.Status {
		case StatusActive:
			// The rule is the current version's: an Update may have
			// changed it since this run was read. Its NextStart, set from
			// the time of that Update, is kept when it is later.
			r := e.rule
			if s.Version != e.s.Version {
				if cur, err := s.Rule(); err == nil {
					r = cur
				}
			}
			n := r.Next(at)
			if s.NextStart.After(n) {
				n = s.NextStart
			}
			s.NextStart = n
			settle(s)
		case StatusPaused:
			if s.MaxRuns > 0 && s.RunCount >= int64(s.MaxRuns) {
				s.Status = StatusDone // the run begun before the pause was the last
			}
		case StatusDone, StatusCancelled, statusDeleted:
		}
		return true, nil
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			c.drop(e)
			return enqueued, nil
		}
		return enqueued, err
	}
	c.refresh(e, next)
	return enqueued, nil
}

// countRuns counts the run times in [from, to), at most 1e6.
func countRuns(r *Rule, from, to time.Time) int64 {
	if !r.IsCron() {
		return int64(to.Sub(from) / r.every)
	}
	var n int64
	for t := from; t.Before(to) && !t.IsZero() && n < 1e6; t = r.Next(t) {
		n++
	}
	return n
}

// refresh replaces e's schedule with cur and reports whether it may still
// fire; one that may not is dropped from known. Called with mu held.
func (c *Scheduler) refresh(e *entry, cur *Schedule) bool {
	if cur == nil || cur.Status != StatusActive || cur.NextStart.IsZero() {
		c.drop(e)
		return false
	}
	if cur.Version != e.s.Version {
		if cur.Cron != e.s.Cron || cur.TimeZone != e.s.TimeZone || cur.Every != e.s.Every || !cur.StartAt.Equal(e.s.StartAt) {
			r, err := cur.Rule() // an Update changed the rule
			if err != nil {
				c.log.Warn("schedule: a stored schedule has an invalid rule; skipped", "namespace", cur.Namespace, "id", cur.ID, "err", err)
				c.drop(e)
				return false
			}
			e.rule = r
		}
		e.s = cur
		e.retryAt = time.Time{}
	}
	return true
}

func (c *Scheduler) drop(e *entry) {
	delete(c.known, knownKey(e.s.Namespace, e.s.ID))
}

// nextWake returns when something known is due. Called with mu held.
func (c *Scheduler) nextWake() time.Time {
	var t time.Time
	for _, e := range c.known {
		w := e.s.NextStart
		if e.retryAt.After(w) {
			w = e.retryAt
		}
		if t.IsZero() || w.Before(t) {
			t = w
		}
	}
	return t
}

// Run fires schedules until ctx is done or Shutdown is called. It lists
// every schedule each RescanInterval and sleeps in between until the
// earliest run time it knows (or a Create on this instance). Store errors
// are logged and retried. A run being fired when Run is told to stop is
// finished first (Shutdown's context bounds the wait). Run returns nil
// when stopped, and an error when called twice or after Shutdown.
func (c *Scheduler) Run(ctx context.Context) error {
	c.runMu.Lock()
	if c.started {
		c.runMu.Unlock()
		return errors.New("schedule: Run called twice or after Shutdown")
	}
	c.started = true
	c.stop = make(chan struct{})
	c.done = make(chan struct{})
	// Firing is not cut short by ctx or stop; Shutdown cancels it when
	// its own context ends first.
	fctx, fcancel := context.WithCancel(context.WithoutCancel(ctx))
	c.abort = fcancel
	stop, done := c.stop, c.done
	c.runMu.Unlock()
	defer close(done)
	defer fcancel()

	timer := time.NewTimer(0)
	defer timer.Stop()
	var nextScan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-timer.C:
		case <-c.wake:
		}
		c.mu.Lock()
		if now := c.clock.Now(); !now.Before(nextScan) {
			if err := c.rescan(fctx); err != nil && fctx.Err() == nil {
				c.log.Warn("schedule: scan failed", "err", err)
			}
			nextScan = c.clock.Now().Add(c.cfg.RescanInterval)
		}
		if _, err := c.fireKnown(fctx); err != nil && fctx.Err() == nil {
			c.log.Warn("schedule: firing failed", "err", err)
		}
		wakeAt := nextScan
		if w := c.nextWake(); !w.IsZero() && w.Before(wakeAt) {
			wakeAt = w
		}
		c.mu.Unlock()
		timer.Reset(max(wakeAt.Sub(c.clock.Now()), time.Millisecond))
	}
}

// Shutdown stops Run and waits for it to return, or for ctx to be done,
// in which case a run being fired is interrupted (its claim lets any
// instance finish it after RepairAfter). It is safe to call more than
// once, and before or without Run; Run cannot start after it.
func (c *Scheduler) Shutdown(ctx context.Context) error {
	c.runMu.Lock()
	c.started = true
	stop, done, abort := c.stop, c.done, c.abort
	if stop != nil && !c.stopped {
		close(stop)
	}
	c.stopped = true
	c.runMu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		abort()
		<-done
		return fmt.Errorf("schedule: shutdown: %w", context.Cause(ctx))
	}
}
