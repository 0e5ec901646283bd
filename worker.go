package kiln

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/leader"
	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/store"
)

// Tuning of the worker's loops; not configurable.
const (
	reportBatchMax  = 1000                   // most outcomes in one Report call
	progressGap     = 100 * time.Millisecond // least time between progress-only flushes
	storeBackoffMin = 50 * time.Millisecond  // first wait after a failed store call
	storeBackoffMax = 5 * time.Second        // longest wait after failed store calls
	cancelWait      = 25 * time.Second       // one wait for pushed cancel requests
	// cancelWatchStartMax bounds how long the first lease waits for the
	// cancel watcher's first answer (which an empty cursor gets at once).
	cancelWatchStartMax = 5 * time.Second
	// handBackShare is the share of the time left when Shutdown is called
	// that is kept, at the end, for handing back the tasks of the handlers
	// cancelled when the graceful wait runs out; at most handBackMax.
	handBackShare = 4 // a quarter
	handBackMax   = time.Second
)

// Worker leases tasks from a store and runs their handlers. Register
// handlers with Handle or Register and middleware with Use, then call Run.
// All methods are safe for concurrent use; Handle, Register and Use must be
// called before Run.
//
// # Locks
//
// Worker.mu guards registration and the run state; Worker.activeMu guards
// the set of held leases; each job has its own mutex for its cancel
// function. No goroutine holds two of them at once.
type Worker struct {
	s        store.Store
	cfg      WorkerConfig
	queues   []string
	weights  []int // nil for strict priority
	limits   store.Limits
	log      *slog.Logger
	event    func(Event)
	met      *metrics.Set  // nil: no metrics
	tracer   trace.Tracer  // nil: no tracing
	progress chan struct{} // signals that a handler set progress

	mu       sync.Mutex
	handlers map[string]Handler
	mws      []Middleware
	started  bool      // Run was called
	stopping bool      // Shutdown was called
	run      *runState // set by Run
	stopCh   chan struct{}
	stopOnce sync.Once

	activeMu sync.Mutex
	active   map[*job]struct{} // leases held, started or not
	// early holds pushed cancel requests of leases not held yet (the push
	// can overtake the answer of the Lease that took the task), with when
	// they came; addActive applies them.
	early map[store.LeaseRef]time.Time

	draining atomic.Bool // no more tasks are started; unstarted ones are handed back

	sweeps        atomic.Int64  // calls of the store's Sweep (tests)
	sweepLeaseTTL time.Duration // the sweeper lease's TTL; 0: sweepLeaseTTLFactor intervals (tests set it)
}

// runState is what one Run owns.
type runState struct {
	mux   map[string]Handler // handlers wrapped in the middleware
	types []string

	jobs     chan *job       // leased, not yet started
	slots    chan struct{}   // one token per free handler slot
	outcomes chan outcomeMsg // to the reporter
	// giveUp is closed when the stop's time is over: outcomes are then
	// dropped instead of queued (their leases expire and the tasks run
	// again), and unreported counts them.
	giveUp     chan struct{}
	unreported atomic.Int64
	shutdown   sync.Once     // the stop sequence runs once
	done       chan struct{} // closed when every goroutine has returned
	err        error         // the stop sequence's result, set before done is closed
	// The goroutines' contexts, cancelled in this order by the stop.
	fetchEnd context.CancelFunc // the fetcher's: first
	hbEnd    context.CancelFunc // heartbeats: once no handler runs
	repEnd   context.CancelFunc // reports: after the final flush
	bgEnd    context.CancelFunc // the sweeper's: last
	depthEnd func()             // removes the queue depth source; nil without metrics

	fetchWG, poolWG, hbWG, repWG, bgWG sync.WaitGroup

	deadlines deadlines // of the running handlers' contexts
}

// job is one leased task.
type job struct {
	task     Task
	leaseID  uint64
	timeout  time.Duration
	deadline time.Time       // the task's deadline, by the store's clock
	stStart  time.Time       // when the store leased it, by the store's clock
	leasedAt time.Time       // when the lease came back, by the local (monotonic) clock
	ser      *metrics.Series // the task's collectors; nil without metrics
	trace    string          // the task's trace context (W3C traceparent), with tracing on

	ctx taskCtx // the handler's context

	mu      sync.Mutex
	running bool  // the handler started: cancels go to ctx
	pending error // a cancel cause that came before the start
}

// storeNow estimates the store clock's current time: the lease time by the
// store's clock plus what the local monotonic clock measured since. Retry
// times and deadlines are computed this way so that a skewed (or fake) store
// clock is honoured.
func (j *job) storeNow() time.Time { return j.stStart.Add(time.Since(j.leasedAt)) }

// cancelWith cancels the handler's context with cause, or remembers the
// cause if the handler has not started.
func (j *job) cancelWith(cause error) {
	j.mu.Lock()
	if j.running {
		j.ctx.cancel(context.Canceled, cause)
	} else if j.pending == nil {
		j.pending = cause
	}
	j.mu.Unlock()
}

type outcomeMsg struct {
	o       store.Outcome
	typ     string
	queue   string
	attempt int
}

// NewWorker returns a worker that takes tasks from s. A nil cfg means every
// default. It returns every problem of cfg at once, joined.
func NewWorker(s store.Store, cfg *WorkerConfig) (*Worker, error) {
	if s == nil {
		return nil, errors.New("kiln: NewWorker: nil store")
	}
	var c WorkerConfig
	if cfg != nil {
		c = *cfg
	}
	var err error
	if c.Namespace, err = scopedNamespace(s, c.Namespace); err != nil {
		return nil, fmt.Errorf("kiln: worker config: %w", err)
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("kiln: worker config: %w", err)
	}
	w := &Worker{
		s: s, cfg: c, limits: c.Limits.WithDefaults(), log: c.Logger, event: c.EventFunc,
		progress: make(chan struct{}, 1),
		handlers: make(map[string]Handler),
		stopCh:   make(chan struct{}),
		active:   make(map[*job]struct{}),
	}
	if c.Metrics != nil {
		w.met = c.Metrics.set
	}
	w.tracer = tracerOf(c.TracerProvider)
	for q := range c.Queues {
		w.queues = append(w.queues, q)
	}
	// Highest weight first, then by name: the strict order, and a stable
	// order for the weighted draw.
	slices.SortFunc(w.queues, func(a, b string) int {
		if c := cmp.Compare(c.Queues[b], c.Queues[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if !c.StrictPriority {
		w.weights = make([]int, len(w.queues))
		for i, q := range w.queues {
			w.weights[i] = c.Queues[q]
		}
	}
	return w, nil
}

// ID returns the worker's id, as the store records it on leased tasks.
func (w *Worker) ID() string { return w.cfg.ID }

// Handle registers h for tasks of type typ. It panics if typ is not a valid
// name, h is nil, a handler is already registered for typ, or Run was
// called; Register returns those problems as errors instead.
func (w *Worker) Handle(typ string, h Handler) {
	if err := w.Register(typ, h); err != nil {
		panic(err)
	}
}

// Register registers h for tasks of type typ, like Handle, and returns an
// error instead of panicking.
func (w *Worker) Register(typ string, h Handler) error {
	if err := store.CheckName("type", typ); err != nil {
		return fmt.Errorf("kiln: register: %w", err)
	}
	if h == nil {
		return fmt.Errorf("kiln: register %q: nil handler", typ)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return fmt.Errorf("kiln: register %q: %w", typ, ErrWorkerStarted)
	}
	if _, ok := w.handlers[typ]; ok {
		return fmt.Errorf("kiln: register %q: a handler is already registered for this type", typ)
	}
	w.handlers[typ] = h
	return nil
}

// Use adds middleware around every handler. The first middleware added runs
// outermost. It panics if Run was called.
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		panic(fmt.Errorf("kiln: Use: %w", ErrWorkerStarted))
	}
	w.mws = append(w.mws, mw...)
}

// Run takes and runs tasks until ctx is done or Shutdown is called. When ctx
// is done it stops gracefully like Shutdown, bounded by
// WorkerConfig.ShutdownTimeout, and returns that stop's error (nil, or
// context.DeadlineExceeded when running handlers had to be cancelled). When
// Shutdown is called, Run returns nil once the stop is complete. A worker
// runs once: a second Run returns ErrWorkerStarted.
//
// Handlers' contexts carry ctx's values but are not cancelled with it; the
// graceful stop cancels them only when its time runs out.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return ErrWorkerStarted
	}
	w.started = true
	if w.stopping {
		w.mu.Unlock()
		return nil
	}
	if len(w.handlers) == 0 {
		w.mu.Unlock()
		return ErrNoHandlers
	}
	// The goroutines start under w.mu, so that a concurrent Shutdown sees
	// either no run at all or one whose goroutines are all counted.
	rs := w.newRunState()
	// base is the parent of the handlers' contexts: ctx's values, never
	// cancelled (the stop cancels handlers one by one).
	base := context.WithoutCancel(ctx)
	var fetchCtx, hbCtx, repCtx, bgCtx context.Context
	fetchCtx, rs.fetchEnd = context.WithCancel(base)
	hbCtx, rs.hbEnd = context.WithCancel(base)
	repCtx, rs.repEnd = context.WithCancel(base)
	bgCtx, rs.bgEnd = context.WithCancel(base)
	// The first lease waits for the cancel watcher's first answer (its
	// cursor), so that no cancel request made after a task is leased is
	// missed by the push (it would wait for a heartbeat).
	watching := make(chan struct{})
	rs.fetchWG.Go(func() {
		select {
		case <-watching:
		case <-fetchCtx.Done():
		case <-time.After(cancelWatchStartMax):
		}
		w.fetch(fetchCtx, rs)
	})
	for range w.cfg.Concurrency {
		rs.poolWG.Go(func() { w.work(base, rs) })
	}
	rs.hbWG.Go(func() { w.heartbeat(hbCtx) })
	rs.hbWG.Go(func() { w.watchCancels(hbCtx, watching) })
	rs.repWG.Go(func() { w.reportLoop(repCtx, rs) })
	if w.cfg.SweepInterval > 0 {
		rs.bgWG.Go(func() { w.sweep(bgCtx) })
	}
	if w.met != nil {
		rs.depthEnd = w.met.AddDepth(metrics.StoreDepth(w.s, w.cfg.Namespace, w.queues))
	}
	w.run = rs
	w.mu.Unlock()
	w.log.Info("kiln: worker started", "worker", w.cfg.ID, "queues", w.queues, "types", rs.types, "concurrency", w.cfg.Concurrency)

	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.ShutdownTimeout)
		defer cancel()
		return w.Shutdown(sctx)
	case <-w.stopCh:
		<-rs.done
		return nil
	}
}

func (w *Worker) newRunState() *runState {
	rs := &runState{
		mux:      make(map[string]Handler, len(w.handlers)),
		jobs:     make(chan *job, w.cfg.Concurrency),
		slots:    make(chan struct{}, w.cfg.Concurrency),
		outcomes: make(chan outcomeMsg, max(2*w.cfg.Concurrency, 256)),
		giveUp:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	for typ, h := range w.handlers {
		h = w.flowHandler(h) // workflow.go
		for i := len(w.mws) - 1; i >= 0; i-- {
			h = w.mws[i](h)
		}
		rs.mux[typ] = h
		rs.types = append(rs.types, typ)
	}
	slices.Sort(rs.types)
	for range w.cfg.Concurrency {
		rs.slots <- struct{}{}
	}
	return rs
}

// Shutdown stops the worker gracefully and waits until it has stopped, or
// until ctx is done, whichever comes first: it never waits past ctx's
// deadline. It stops leasing, hands tasks leased but not started back to
// the store at once (their attempt is not counted), and lets running
// handlers finish. When ctx has a deadline, handlers still running shortly
// before it (a quarter of the time left when Shutdown was called, at most
// a second) are cancelled with cause ErrShutdown and their tasks handed
// back (the attempt is counted); when ctx ends without a deadline they are
// cancelled then. Shutdown then returns ctx's error; otherwise nil.
//
// What cannot reach the store in time (the store refuses reports, or a
// handler ignores its cancelled context) is left behind: the log says how
// many outcomes were not reported and how many handlers still ran, their
// leases are no longer renewed, and the tasks run again when the leases
// expire, so nothing is lost.
//
// Shutdown may be called more than once and from any goroutine; each call
// waits for the same stop (or its own ctx). Calling it before Run makes Run
// return at once.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	rs := w.run
	w.mu.Unlock()
	w.stopOnce.Do(func() { close(w.stopCh) })
	if rs == nil {
		return nil
	}
	first := false
	rs.shutdown.Do(func() {
		first = true
		rs.err = w.stop(ctx, rs)
		close(rs.done)
	})
	if first {
		return rs.err
	}
	select {
	case <-rs.done:
		return rs.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop runs the stop sequence; see Shutdown. Every wait in it ends when ctx
// does.
func (w *Worker) stop(ctx context.Context, rs *runState) error {
	w.log.Info("kiln: worker stopping", "worker", w.cfg.ID)
	// The handlers' cut: when they are cancelled, leaving time to hand
	// their tasks back before ctx ends.
	cutCtx, cutEnd := context.WithCancel(ctx)
	defer cutEnd()
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		var stopCut context.CancelFunc
		cutCtx, stopCut = context.WithDeadline(ctx, d.Add(-min(left/handBackShare, handBackMax)))
		defer stopCut()
	}

	// 1. No more starts: the fetcher stops leasing and closes the jobs
	//    channel when it returns; the pool hands back what it has not
	//    started.
	w.draining.Store(true)
	rs.fetchEnd()

	// 2. Let the running handlers finish until the cut, then cancel them.
	poolDone := make(chan struct{})
	go func() { // owned here: it ends with the pool (or after the stop, with the last stuck handler)
		rs.fetchWG.Wait()
		rs.poolWG.Wait()
		close(poolDone)
	}()
	var err error
	select {
	case <-poolDone:
	case <-cutCtx.Done():
		err = ctx.Err()
		if err == nil {
			err = context.DeadlineExceeded // the cut, just before ctx's deadline
		}
		w.log.Warn("kiln: shutdown timed out; cancelling running tasks", "worker", w.cfg.ID)
		w.cancelActive(ErrShutdown)
	}
	poolOK := w.waitCtx(ctx, poolDone)

	// 3. Stop heartbeats (a handler that still runs loses its lease when
	//    it expires), then flush the outcomes.
	rs.hbEnd()
	hbDone := make(chan struct{})
	go func() { rs.hbWG.Wait(); close(hbDone) }() // ends with the heartbeat loop, whose context just ended
	if poolOK {
		close(rs.outcomes) // every sender has returned
	}
	flushed := make(chan struct{})
	go func() { // owned here: it ends with the reporter, whose context ends below at the latest
		rs.repWG.Wait()
		close(flushed)
	}()
	flushOK := poolOK && w.waitCtx(ctx, flushed)
	if !flushOK {
		// Give up: senders drop what they still have, the reporter stops
		// retrying and counts what it did not send.
		close(rs.giveUp)
		rs.repEnd()
		<-flushed
	}
	rs.repEnd()

	// 4. Stop the sweeper.
	rs.bgEnd()
	bgDone := make(chan struct{})
	go func() { rs.bgWG.Wait(); close(bgDone) }() // ends with the sweeper, whose context just ended
	w.waitCtx(ctx, bgDone)
	w.waitCtx(ctx, hbDone)
	rs.fetchEnd()
	if rs.depthEnd != nil {
		rs.depthEnd()
	}
	rs.deadlines.stop()
	if !flushOK {
		if err == nil {
			err = ctx.Err()
		}
		running := len(w.activeJobs())
		w.log.Error("kiln: shutdown deadline reached before every outcome reached the store; their leases will expire and the tasks run again",
			"worker", w.cfg.ID, "unreported", rs.unreported.Load(), "still_running", running)
	}
	w.log.Info("kiln: worker stopped", "worker", w.cfg.ID)
	return err
}

// waitCtx waits for done or ctx, and reports whether done was closed.
func (w *Worker) waitCtx(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// send queues an outcome for the reporter, or drops it (counted) once the
// stop gave up on reporting.
func (rs *runState) send(m outcomeMsg) {
	select {
	case rs.outcomes <- m:
	case <-rs.giveUp:
		rs.unreported.Add(1)
	}
}

func (w *Worker) cancelActive(cause error) {
	for _, j := range w.activeJobs() {
		j.cancelWith(cause)
	}
}

func (w *Worker) activeJobs() []*job {
	w.activeMu.Lock()
	defer w.activeMu.Unlock()
	out := make([]*job, 0, len(w.active))
	for j := range w.active {
		out = append(out, j)
	}
	return out
}

func (w *Worker) addActive(j *job) {
	ref := store.LeaseRef{ID: j.task.ID, LeaseID: j.leaseID}
	w.activeMu.Lock()
	w.active[j] = struct{}{}
	_, cancelled := w.early[ref]
	delete(w.early, ref)
	w.activeMu.Unlock()
	if cancelled {
		j.cancelWith(ErrTaskCancelled)
	}
}

// earlyKeep bounds how long, and how many, pushed cancel requests of
// leases not held are kept for a Lease answer still on its way.
const (
	earlyKeep = time.Minute
	earlyMax  = 10000
)

// cancelPushed cancels the held jobs that refs name, and keeps the others
// for a while: their Lease's answer may not have arrived yet.
func (w *Worker) cancelPushed(refs []store.LeaseRef) {
	want := make(map[store.LeaseRef]bool, len(refs))
	for _, r := range refs {
		want[r] = true
	}
	var hit []*job
	now := time.Now()
	w.activeMu.Lock()
	for j := range w.active {
		ref := store.LeaseRef{ID: j.task.ID, LeaseID: j.leaseID}
		if want[ref] {
			hit = append(hit, j)
			delete(want, ref)
		}
	}
	for ref, at := range w.early {
		if now.Sub(at) > earlyKeep {
			delete(w.early, ref)
		}
	}
	for ref := range want {
		if len(w.early) >= earlyMax {
			break // the heartbeat still sees them
		}
		if w.early == nil {
			w.early = make(map[store.LeaseRef]time.Time)
		}
		w.early[ref] = now
	}
	w.activeMu.Unlock()
	for _, j := range hit {
		j.cancelWith(ErrTaskCancelled)
	}
}

func (w *Worker) removeActive(j *job) {
	w.activeMu.Lock()
	delete(w.active, j)
	w.activeMu.Unlock()
}

// fetch leases tasks while there are free slots.
func (w *Worker) fetch(ctx context.Context, rs *runState) {
	defer close(rs.jobs) // the only sender: the pool drains what is left and returns
	backoff := time.Duration(0)
	full := false // the last lease got every task it asked for
	for {
		select {
		case <-ctx.Done():
			return
		case <-rs.slots:
		}
		n := 1
		yielded := !full // yield at most once, and only while the store has a backlog
	more:
		for n < w.cfg.Concurrency {
			select {
			case <-rs.slots:
				n++
			default:
				if yielded {
					break more
				}
				// The store had more tasks than the last lease asked for:
				// let the handlers that are about to end free their slots,
				// so that one lease takes their tasks together.
				runtime.Gosched()
				yielded = true
			}
		}
		leaseStart := time.Now()
		res, err := w.s.Lease(ctx, store.LeaseParams{
			Namespace: w.cfg.Namespace,
			Queues:    w.queues,
			Weights:   w.weights,
			Types:     rs.types,
			Max:       n,
			Duration:  w.cfg.LeaseDuration,
			Wait:      w.cfg.LeaseWait,
			WorkerID:  w.cfg.ID,
		})
		if err != nil {
			for range n {
				rs.slots <- struct{}{}
			}
			if ctx.Err() != nil {
				return
			}
			if w.met != nil {
				w.met.StoreError(metrics.OpLease)
			}
			backoff = nextBackoff(backoff)
			w.log.Error("kiln: lease failed", "worker", w.cfg.ID, "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
		now := time.Now()
		tasks := res.Tasks
		full = len(tasks) >= n
		jobs := make([]job, len(tasks)) // one allocation for the lease's jobs
		for i, t := range tasks {
			j := &jobs[i]
			j.task = Task{
				ID: t.ID, Type: t.Type, Queue: t.Queue, Payload: t.Payload,
				Attempt: t.Attempt, MaxRetries: t.MaxRetries, Priority: t.Priority, w: w,
				upstream: t.Upstream,
			}
			j.leaseID, j.timeout, j.deadline = t.LeaseID, t.Timeout, t.Deadline
			j.stStart, j.leasedAt = t.StartedAt, now
			if j.stStart.IsZero() {
				j.stStart = now
			}
			if w.met != nil {
				j.ser = w.met.Series(t.Queue, t.Type)
				metrics.ObserveWait(j.ser, t)
			}
			if w.tracer != nil {
				j.trace = t.TraceParent
				traceLease(w.tracer, t, leaseStart)
			}
			w.addActive(j)
			if i >= n { // the store gave more than asked: hand the rest back
				w.handBack(rs, j, true)
				continue
			}
			rs.jobs <- j // never blocks: one slot per job, and len(jobs) <= slots
		}
		for range n - min(len(tasks), n) {
			rs.slots <- struct{}{}
		}
	}
}

// work runs jobs until the jobs channel is closed. base is the parent of the
// handlers' contexts.
func (w *Worker) work(base context.Context, rs *runState) {
	for j := range rs.jobs {
		h := rs.mux[j.task.Type]
		if h == nil || w.draining.Load() {
			if h == nil {
				w.log.Error("kiln: store leased a task of a type this worker does not handle; handing it back", "task", j.task.ID, "type", j.task.Type)
			}
			w.handBack(rs, j, true)
		} else {
			w.execute(base, rs, j, h)
		}
		rs.slots <- struct{}{}
	}
}

// handBack releases a job's lease, at once.
func (w *Worker) handBack(rs *runState, j *job, notStarted bool) {
	w.removeActive(j)
	rs.send(outcomeMsg{
		o:   store.Outcome{ID: j.task.ID, LeaseID: j.leaseID, Kind: store.OutcomeRelease, NotStarted: notStarted},
		typ: j.task.Type, queue: j.task.Queue, attempt: j.task.Attempt,
	})
	w.emit(Event{Kind: EventReleased, TaskID: j.task.ID, Type: j.task.Type, Queue: j.task.Queue, Attempt: j.task.Attempt})
}

func (w *Worker) emit(e Event) {
	if w.event != nil {
		w.event(e)
	}
}

// execute runs one attempt and queues its outcome.
func (w *Worker) execute(base context.Context, rs *runState, j *job, h Handler) {
	t := &j.task

	// The attempt's deadline, on the local clock.
	var dl time.Time
	if j.timeout > 0 {
		dl = j.leasedAt.Add(j.timeout)
	}
	deadlineBound := false
	if !j.deadline.IsZero() {
		d := j.leasedAt.Add(j.deadline.Sub(j.stStart))
		if dl.IsZero() || d.Before(dl) {
			dl, deadlineBound = d, true
		}
	}
	tc := &j.ctx
	tc.init(base, t, dl)

	j.mu.Lock()
	pending := j.pending
	if pending == nil {
		j.running = true
	}
	j.mu.Unlock()
	if pending != nil { // cancelled or lost before it started
		w.finish(rs, j, false, nil, pending, 0, false)
		return
	}
	if !dl.IsZero() {
		if !dl.After(time.Now()) {
			tc.cancel(context.DeadlineExceeded, ErrTaskTimeout)
		} else {
			rs.deadlines.add(tc)
		}
	}

	if j.ser != nil {
		j.ser.Started.Inc()
	}
	w.emit(Event{Kind: EventStarted, TaskID: t.ID, Type: t.Type, Queue: t.Queue, Attempt: t.Attempt})
	var span trace.Span
	if w.tracer != nil {
		// The span goes into the values under the handler's context, not
		// around it, so that what the handler derives from it is still a
		// child the context package knows (see taskCtx).
		var vals context.Context
		vals, span = startHandle(base, w.tracer, t, j.trace)
		tc.setBase(vals)
	}
	start := time.Now()
	err := call(tc, h, t)
	dur := time.Since(start)
	if !dl.IsZero() {
		rs.deadlines.remove(tc)
	}
	endSpan(span, err)
	cause := tc.cause()
	timedOut := errors.Is(cause, ErrTaskTimeout) && errors.Is(tc.Err(), context.DeadlineExceeded)
	if timedOut && err != nil {
		err = timeoutError{err: err, deadline: deadlineBound}
	}
	// What the handler left running sees its context end, as the
	// attempt has.
	tc.cancel(context.Canceled, nil)
	w.finish(rs, j, true, err, cause, dur, timedOut && deadlineBound)
}

// call runs the handler, turning a panic into a *PanicError.
func call(ctx context.Context, h Handler, t *Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return h.ProcessTask(ctx, t)
}

type timeoutError struct {
	err      error
	deadline bool
}

func (e timeoutError) Error() string {
	if e.deadline {
		return "deadline reached: " + e.err.Error()
	}
	return "timed out: " + e.err.Error()
}

func (e timeoutError) Unwrap() []error { return []error{ErrTaskTimeout, e.err} }

// finish decides how an attempt ended and queues the outcome. started says
// whether the handler ran; cause is the handler context's cause (nil when it
// was not cancelled).
func (w *Worker) finish(rs *runState, j *job, started bool, err, cause error, dur time.Duration, pastDeadline bool) {
	t := &j.task
	w.removeActive(j)
	ev := Event{TaskID: t.ID, Type: t.Type, Queue: t.Queue, Attempt: t.Attempt, Duration: dur}
	msg := outcomeMsg{
		o:   store.Outcome{ID: t.ID, LeaseID: j.leaseID},
		typ: t.Type, queue: t.Queue, attempt: t.Attempt,
	}
	if err == nil && cause == nil {
		if res := t.Result(); len(res) > w.limits.MaxPayloadBytes {
			err = fmt.Errorf("kiln: result of %d bytes is more than the cap of %d: %w", len(res), w.limits.MaxPayloadBytes, ErrPayloadTooLarge)
		}
	}
	switch {
	case errors.Is(cause, ErrLeaseLost):
		// The store no longer lets this worker report; another worker may
		// already run the task.
		ev.Kind, ev.Err = EventLeaseLost, cause
		w.log.Warn("kiln: lease lost", "task", t.ID, "type", t.Type)
		w.emit(ev)
		return
	case err == nil && started:
		// Done is done, even if a cancel or a stop came meanwhile.
		msg.o.Kind, msg.o.Result = store.OutcomeSucceeded, t.Result()
		ev.Kind = EventSucceeded
		if j.ser != nil {
			j.ser.Succeeded.Inc()
			j.ser.Handler.Observe(dur.Seconds())
		}
	case errors.Is(cause, ErrTaskCancelled):
		msg.o.Kind, msg.o.Error = store.OutcomeCancelled, "cancelled"
		if err != nil {
			msg.o.Error = "cancelled: " + err.Error()
		}
		ev.Kind, ev.Err = EventCancelled, err
	case errors.Is(cause, ErrShutdown) || !started:
		msg.o.Kind, msg.o.NotStarted = store.OutcomeRelease, !started
		ev.Kind = EventReleased
	case isFlowCancel(err):
		// A workflow task that does not run (workflow.go).
		msg.o.Kind, msg.o.Error = store.OutcomeCancelled, err.Error()
		ev.Kind, ev.Err = EventCancelled, err
	default:
		if errors.Is(err, ErrTaskTimeout) {
			te := ev
			te.Kind, te.Err = EventTimedOut, err
			w.emit(te)
		}
		fe := ev
		fe.Kind, fe.Err = EventFailed, err
		w.emit(fe)
		if j.ser != nil {
			j.ser.Failed.Inc()
			j.ser.Handler.Observe(dur.Seconds())
		}
		msg.o.Error = err.Error()
		ev.Err = err
		var ra *retryAfterError
		switch {
		case errors.Is(err, SkipRetry), t.Attempt > t.MaxRetries, pastDeadline:
			msg.o.Kind = store.OutcomeDead
			ev.Kind = EventDead
			if j.ser != nil {
				j.ser.Dead.Inc()
			}
		default:
			var delay time.Duration
			if errors.As(err, &ra) {
				delay = ra.delay
			} else {
				delay = max(w.cfg.RetryDelayFunc(t.Attempt, err, t), 0)
			}
			msg.o.Kind, msg.o.RetryAt = store.OutcomeRetry, j.storeNow().Add(delay)
			ev.Kind, ev.RetryAt = EventRetrying, msg.o.RetryAt
			if j.ser != nil {
				j.ser.Retried.Inc()
			}
		}
	}
	rs.send(msg)
	w.emit(ev)
}

// reportLoop sends outcomes to the store in batches until the outcomes
// channel is closed and drained, or ctx ends (the stop gave up: what is
// left is counted as unreported).
func (w *Worker) reportLoop(ctx context.Context, rs *runState) {
	batch := make([]outcomeMsg, 0, 64)
	outs := make([]store.Outcome, 0, 64)
	for {
		var m outcomeMsg
		var ok bool
		select {
		case m, ok = <-rs.outcomes:
			if !ok {
				return
			}
		case <-ctx.Done():
			for {
				select {
				case _, ok := <-rs.outcomes:
					if !ok {
						return
					}
					rs.unreported.Add(1)
				default:
					return
				}
			}
		}
		batch = append(batch[:0], m)
	drain:
		for len(batch) < reportBatchMax {
			select {
			case m, ok := <-rs.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		outs = outs[:0]
		for i := range batch {
			outs = append(outs, batch[i].o)
		}
		if !w.report(ctx, batch, outs) {
			rs.unreported.Add(int64(len(outs)))
		}
	}
}

// report sends one batch, retrying until it is recorded or ctx ends; it
// reports whether the store recorded it.
func (w *Worker) report(ctx context.Context, batch []outcomeMsg, outs []store.Outcome) bool {
	backoff := time.Duration(0)
	for {
		res, err := w.s.Report(ctx, store.ReportParams{Namespace: w.cfg.Namespace, Outcomes: outs})
		if err == nil {
			for i, e := range res.Errs {
				if e == nil || i >= len(batch) {
					continue
				}
				m := &batch[i]
				if errors.Is(e, store.ErrLeaseLost) || errors.Is(e, store.ErrNotFound) {
					w.log.Warn("kiln: outcome refused: lease lost", "task", m.o.ID, "outcome", m.o.Kind, "err", e)
					w.emit(Event{Kind: EventLeaseLost, TaskID: m.o.ID, Type: m.typ, Queue: m.queue, Attempt: m.attempt, Err: e})
					continue
				}
				w.log.Error("kiln: outcome refused", "task", m.o.ID, "outcome", m.o.Kind, "err", e)
			}
			return true
		}
		if ctx.Err() != nil {
			w.log.Error("kiln: outcomes not reported; their leases will expire and the tasks run again", "count", len(outs), "err", err)
			return false
		}
		if w.met != nil {
			w.met.StoreError(metrics.OpReport)
		}
		backoff = nextBackoff(backoff)
		w.log.Error("kiln: report failed", "count", len(outs), "err", err, "retry_in", backoff)
		if !sleepCtx(ctx, backoff) {
			w.log.Error("kiln: outcomes not reported; their leases will expire and the tasks run again", "count", len(outs), "err", err)
			return false
		}
	}
}

// progressSignal wakes the heartbeat loop to send progress.
func (w *Worker) progressSignal() {
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

// heartbeat renews every held lease every third of the lease duration, and
// sends progress soon after handlers set it.
func (w *Worker) heartbeat(ctx context.Context) {
	ticker := time.NewTicker(w.cfg.LeaseDuration / 3)
	defer ticker.Stop()
	progress := w.progress
	var gap *time.Timer
	var gapC <-chan time.Time
	defer func() {
		if gap != nil {
			gap.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			w.extend(ctx, false)
		case <-progress:
			w.extend(ctx, true)
			progress = nil // coalesce: wait before the next progress-only call
			if gap == nil {
				gap = time.NewTimer(progressGap)
			} else {
				gap.Reset(progressGap)
			}
			gapC = gap.C
		case <-gapC:
			progress, gapC = w.progress, nil
		}
	}
}

// extend renews the held leases (all of them, or only those with progress
// to send) and acts on what the store answers.
func (w *Worker) extend(ctx context.Context, progressOnly bool) {
	jobs := w.activeJobs()
	leases := make([]store.ExtendLease, 0, len(jobs))
	sent := jobs[:0]
	for _, j := range jobs {
		p := j.task.takeProgress()
		if progressOnly && p == nil {
			continue
		}
		leases = append(leases, store.ExtendLease{LeaseRef: store.LeaseRef{ID: j.task.ID, LeaseID: j.leaseID}, Progress: p})
		sent = append(sent, j)
	}
	for start := 0; start < len(leases); start += store.MaxBatch {
		end := min(start+store.MaxBatch, len(leases))
		res, err := w.s.Extend(ctx, store.ExtendParams{Namespace: w.cfg.Namespace, Leases: leases[start:end], Duration: w.cfg.LeaseDuration})
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("kiln: heartbeat failed", "leases", end-start, "err", err)
				if w.met != nil {
					w.met.StoreError(metrics.OpExtend)
				}
			}
			for i := start; i < end; i++ {
				if leases[i].Progress != nil {
					sent[i].task.mu.Lock()
					sent[i].task.dirty = true
					sent[i].task.mu.Unlock()
				}
			}
			continue
		}
		for i, it := range res.Items {
			if start+i >= end {
				break
			}
			j := sent[start+i]
			switch {
			case errors.Is(it.Err, ErrLeaseLost):
				j.cancelWith(it.Err)
			case it.Err != nil:
				j.cancelWith(fmt.Errorf("%w: %w", ErrLeaseLost, it.Err))
			case it.CancelRequested:
				j.cancelWith(ErrTaskCancelled)
			}
		}
	}
}

// watchCancels waits for the cancel requests the store pushes and cancels
// the handlers they name at once, instead of at the next heartbeat (which
// still sees them, should a push be lost).
// It closes started once its first call has answered (or failed).
func (w *Worker) watchCancels(ctx context.Context, started chan<- struct{}) {
	cursor := ""
	backoff := time.Duration(0)
	first := true
	for {
		start := time.Now()
		res, err := w.s.WaitCancels(ctx, store.WaitCancelsParams{Namespace: w.cfg.Namespace, Cursor: cursor, Wait: cancelWait})
		if first {
			first = false
			close(started)
		}
		if err == nil && cursor != "" && len(res.Leases) == 0 && !res.Missed && time.Since(start) < cancelWait/10 {
			// An empty answer long before the wait's end (a server that is
			// stopping answers at once): do not spin.
			err = errors.New("empty answer before the end of the wait")
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if w.met != nil {
				w.met.StoreError(metrics.OpWaitCancels)
			}
			backoff = nextBackoff(backoff)
			w.log.Debug("kiln: waiting for cancel requests failed; heartbeats still see them", "worker", w.cfg.ID, "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
		if res.Missed {
			w.extend(ctx, false) // catch up: Extend reports every cancel request
		}
		cursor = res.Cursor
		if len(res.Leases) > 0 {
			w.cancelPushed(res.Leases)
		}
	}
}

// sweepLeaseKey names the lease of the sweeper role among the workers (and
// other users of internal/leader) that share a store.
const sweepLeaseKey = "sweeper"

// sweepLeaseTTLFactor times SweepInterval is how long a sweeper that stopped
// without handing the role over keeps it.
const sweepLeaseTTLFactor = 5

// sweep calls the store's Sweep every SweepInterval, if this worker is the
// store's sweeper: workers that share a store elect one sweeper among them
// through a lease in the store's meta records (when the store has them), so
// that N workers sweep once per interval, not N times. When the sweeper
// stops, another worker takes over: at once after a graceful stop, after
// sweepLeaseTTLFactor intervals after a crash.
func (w *Worker) sweep(ctx context.Context) {
	ticker := time.NewTicker(w.cfg.SweepInterval)
	defer ticker.Stop()
	var el *leader.Elector
	if m, ok := w.s.(store.Meta); ok {
		ttl := w.sweepLeaseTTL
		if ttl == 0 {
			ttl = sweepLeaseTTLFactor * w.cfg.SweepInterval
		}
		el = leader.New(m, sweepLeaseKey, w.cfg.ID, ttl, nil)
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if err := el.Resign(rctx); err != nil {
				w.log.Warn("kiln: could not hand the sweeper role over; another worker takes it when the lease runs out", "worker", w.cfg.ID, "err", err)
			}
		}()
	}
	leading := false
	for {
		sweep := true
		if el != nil {
			lead, err := el.Tick(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				// Sweep anyway: a sweep too many is harmless, none is not.
				w.log.Warn("kiln: sweeper election failed; sweeping", "worker", w.cfg.ID, "err", err)
			default:
				sweep = lead
			}
			if lead != leading {
				leading = lead
				w.log.Debug("kiln: sweeper role", "worker", w.cfg.ID, "sweeper", lead)
			}
		}
		if sweep {
			w.sweepOnce(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (w *Worker) sweepOnce(ctx context.Context) {
	w.sweeps.Add(1)
	if res, err := w.s.Sweep(ctx, store.SweepParams{}); err != nil {
		if ctx.Err() == nil {
			w.log.Error("kiln: sweep failed", "err", err)
			if w.met != nil {
				w.met.StoreError(metrics.OpSweep)
			}
		}
	} else if res.Total() > 0 {
		if w.met != nil {
			w.met.LeaseExpiries(res.Recovered + res.Dead + res.Cancelled)
		}
		w.log.Debug("kiln: swept", "promoted", res.Promoted, "recovered", res.Recovered, "dead", res.Dead, "cancelled", res.Cancelled, "deleted", res.Deleted)
	}
}

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return storeBackoffMin
	}
	return min(2*d, storeBackoffMax)
}

// sleepCtx waits d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
