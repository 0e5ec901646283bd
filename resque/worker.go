package resque

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/internal/tracing"
)

// fetchScript takes up to ARGV[1] jobs, trying the queues in the order of
// KEYS. Reliable mode (ARGV[2] = "1"): KEYS are pairs of queue and
// processing list and the jobs move from the head of their queue to the
// head of the processing list (LPOP and LPUSH in the script: one atomic
// step, as LMOVE one by one; at most 1000 per queue and call). Plain mode: KEYS are queues, and jobs
// are popped (LPOP). It returns pairs of the queue's position (1-based) in
// the list and the job.
var fetchScript = redis.NewScript(`
local max = tonumber(ARGV[1])
local out = {}
local n = 0
if ARGV[2] == '1' then
  for i = 1, #KEYS, 2 do
    local vs = redis.call('LPOP', KEYS[i], math.min(max - n, 1000))
    if vs then
      -- As LMOVE LEFT LEFT one by one: the newest at the head.
      redis.call('LPUSH', KEYS[i + 1], unpack(vs))
      for _, v in ipairs(vs) do
        n = n + 1
        out[#out + 1] = (i + 1) / 2
        out[#out + 1] = v
      end
    end
    if n >= max then break end
  end
else
  for i = 1, #KEYS do
    local vs = redis.call('LPOP', KEYS[i], max - n)
    if vs then
      for _, v in ipairs(vs) do
        n = n + 1
        out[#out + 1] = i
        out[#out + 1] = v
      end
    end
    if n >= max then break end
  end
end
return out
`)

// finishScript records a job's outcome. ARGV: ns, processing list ("" in
// plain mode), job, worker id, "1" for success, failed record. In reliable
// mode the job leaves the processing list in the same step (LREM from the
// tail, where the oldest jobs are); a job that is
// no longer there (its process was taken for dead and the job returned to
// its queue) is not counted: it will run again.
var finishScript = redis.NewScript(`
local ns, proc, job, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('DEL', ns .. 'worker:' .. id)
if proc ~= '' and redis.call('LREM', proc, -1, job) == 0 then
  return 0
end
if ARGV[5] == '1' then
  redis.call('INCR', ns .. 'stat:processed')
  redis.call('INCR', ns .. 'stat:processed:' .. id)
else
  redis.call('RPUSH', ns .. 'failed', ARGV[6])
  redis.call('INCR', ns .. 'stat:failed')
  redis.call('INCR', ns .. 'stat:failed:' .. id)
end
return 1
`)

// requeueScript returns a taken job to the head of its queue. ARGV: queue
// key, processing list ("" in plain mode), job.
var requeueScript = redis.NewScript(`
if ARGV[2] ~= '' and redis.call('LREM', ARGV[2], 1, ARGV[3]) == 0 then
  return 0
end
redis.call('LPUSH', ARGV[1], ARGV[3])
return 1
`)

// maxBlock bounds one blocking read on a pooled connection, so that a stop
// never waits long for it.
const maxBlock = time.Second

// taken is a job taken from a queue (and, in reliable mode, held in the
// queue's processing list).
type taken struct {
	queue   string
	payload string
}

// Run states of a job.
const (
	stateRunning int32 = iota
	stateFinishing
	stateAbandoned
)

// running is a job being run.
type running struct {
	job    taken
	cancel context.CancelFunc
	state  atomic.Int32
}

type worker struct {
	cfg Config
	qs  queueSpec
	rdb redis.UniversalClient
	ids *ids
	log *slog.Logger
	rnd *rand.Rand

	free chan int // free slots
	wg   sync.WaitGroup

	recs []*recorder // by slot, modulo

	paused atomic.Bool // <ns>pause-all-workers is "true"

	met    *metrics.Set // nil without Config.Metrics
	tracer trace.Tracer // nil without Config.TracerProvider

	mu       sync.Mutex
	active   map[*running]struct{}
	blockers map[string]*blocker
}

// Work runs Resque jobs from cfg.Queues with the handlers of cfg.Registry
// until ctx is done (or, with cfg.ExitOnComplete, until the queues are
// empty). When ctx is done it takes no new job at once, lets the running
// jobs finish for at most cfg.ShutdownTimeout, returns the jobs still
// running then to the head of their queues, and removes the process from
// the registry. It returns nil after such a stop, or the error that kept it
// from starting (a bad Config, Redis unreachable).
//
// A Redis error while taking jobs is logged and retried with a growing
// pause; the worker does not stop for it.
func Work(ctx context.Context, cfg Config) error {
	cfg, qs, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	rdb := cfg.Redis
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return errors.New("resque: Config.Redis is a Redis Cluster client: the worker's scripts touch the keys of several queues and need one Redis server")
	}
	if rdb == nil {
		rdb, err = connect(&cfg, max(cfg.Connections, cfg.Concurrency+len(qs.names)+2))
		if err != nil {
			return err
		}
		defer func() { _ = rdb.Close() }()
	}
	w := &worker{
		cfg: cfg, qs: qs, rdb: rdb, log: cfg.Logger,
		ids:      newIDs(cfg.Namespace, cfg.Hostname, os.Getpid(), qs, cfg.Concurrency, cfg.Plain),
		rnd:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), //nolint:gosec // G404: queue order, not a secret
		free:     make(chan int, cfg.Concurrency),
		active:   map[*running]struct{}{},
		blockers: map[string]*blocker{},
		met:      hook.MetricsSet(cfg.Metrics),
	}
	if cfg.TracerProvider != nil {
		w.tracer = cfg.TracerProvider.Tracer("github.com/kilnhq/kiln/resque")
	}
	return w.work(ctx)
}

func (w *worker) work(ctx context.Context) error {
	// Registry writes must outlive ctx: the stop still needs them.
	bg := context.WithoutCancel(ctx)
	if err := w.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("resque: redis: %w", err)
	}
	// The recorders' script must be known to Redis: they use EVALSHA.
	if err := finishScript.Load(ctx, w.rdb).Err(); err != nil {
		return fmt.Errorf("resque: load scripts: %w", err)
	}
	if err := w.register(ctx); err != nil {
		return fmt.Errorf("resque: register: %w", err)
	}
	w.readPause(ctx)
	if !cmdlineHasResque() {
		w.log.Warn("resque: this process's command line does not contain \"resque\": a Ruby Resque worker starting on this host with the same queues would take it for dead (see docs/resque.md); it registers again at its next heartbeat")
	}
	w.log.Info("resque: worker started", "worker", w.ids.base, "concurrency", w.cfg.Concurrency, "reliable", !w.cfg.Plain)
	hbCtx, stopHB := context.WithCancel(bg)
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); w.heartbeat(hbCtx) }()
	schedDone := make(chan struct{})
	if w.cfg.Scheduler {
		s, err := NewScheduler(w.rdb, &SchedulerConfig{
			Namespace: w.cfg.Namespace, ID: w.ids.base + ":scheduler", Logger: w.log,
		})
		if err != nil {
			stopHB()
			<-hbDone
			return err
		}
		go func() { defer close(schedDone); _ = s.Run(ctx) }()
	} else {
		close(schedDone)
	}

	stopRecs := make(chan struct{})
	for range min(4, w.cfg.Concurrency) {
		r := newRecorder(w.rdb, w.log, w.cfg.Concurrency*2)
		w.recs = append(w.recs, r)
		go r.loop(bg, stopRecs)
	}
	for i := range w.cfg.Concurrency {
		w.free <- i
	}
	pending := w.poll(ctx)
	w.closeBlockers()

	// Stop: jobs taken but not started go back at once, to the head of
	// their queue in their order (the last one first).
	for i := len(pending) - 1; i >= 0; i-- {
		w.requeue(bg, pending[i])
	}
	w.drain()
	close(stopRecs)
	for _, r := range w.recs {
		<-r.stopped
	}
	stopHB()
	<-hbDone
	<-schedDone
	rs, err := reap(bg, w.rdb, w.ids.ns, 0, w.ids.base)
	if err != nil {
		return fmt.Errorf("resque: unregister: %w", err)
	}
	if len(rs) == 1 && rs[0].moved > 0 {
		w.log.Warn("resque: jobs left in the processing lists went back to their queues", "jobs", rs[0].moved)
	}
	w.log.Info("resque: worker stopped", "worker", w.ids.base)
	return nil
}

// blockResult is what one blocking read returned.
type blockResult struct {
	queue string // the queue read ("" in plain mode: all of them)
	job   *taken
	err   error
}

// poll takes jobs and starts them while slots are free, until ctx is done
// (or the queues are empty with ExitOnComplete). It returns the jobs it had
// taken but not started.
func (w *worker) poll(ctx context.Context) []taken {
	var pending []taken
	blocking := map[string]bool{} // queues with a blocking read out
	results := make(chan blockResult, len(w.qs.names)+1)
	backoff := time.Duration(0)
	handle := func(r blockResult) {
		delete(blocking, r.queue)
		if r.job != nil {
			pending = append(pending, *r.job)
		}
		if r.err != nil && ctx.Err() == nil {
			w.log.Error("resque: blocking read failed", "queue", r.queue, "err", r.err)
			w.reconcile(ctx, r.queue, pending)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	defer func() {
		// End the blocking reads (CLIENT UNBLOCK; again until they
		// answer): a job one of them took goes back with the others.
		for len(blocking) > 0 {
			w.unblock()
			select {
			case r := <-results:
				delete(blocking, r.queue)
				if r.job != nil {
					pending = append(pending, *r.job)
				}
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	for {
		var slots []int
		select {
		case <-ctx.Done():
			return pending
		case s := <-w.free:
			slots = append(slots, s)
		case r := <-results:
			handle(r)
			continue
		}
	more:
		for len(slots) < cap(w.free) {
			select {
			case s := <-w.free:
				slots = append(slots, s)
			default:
				break more
			}
		}
		for len(pending) > 0 && len(slots) > 0 {
			w.start(pending[0], slots[0])
			pending, slots = pending[1:], slots[1:]
		}
		if len(slots) == 0 {
			continue
		}
		if w.paused.Load() {
			// Paused from Ruby: take nothing until the flag is gone (the
			// heartbeat reads it).
			w.release(slots)
			select {
			case <-ctx.Done():
				return pending
			case r := <-results:
				handle(r)
			case <-time.After(min(w.cfg.HeartbeatInterval, time.Second)):
			}
			continue
		}
		got, err := w.fetch(ctx, len(slots))
		if err != nil {
			w.release(slots)
			if ctx.Err() != nil {
				return pending
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			w.log.Error("resque: taking jobs failed; retrying", "err", err, "in", backoff)
			// The script may have moved jobs whose answer was lost (a
			// queue with a blocking read out waits: its answer may be a
			// job of that list).
			for _, q := range w.qs.names {
				if !blocking[q] {
					w.reconcile(ctx, q, pending)
				}
			}
			select {
			case <-ctx.Done():
				return pending
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if len(got) == 0 {
			if w.cfg.ExitOnComplete && len(pending) == 0 {
				w.release(slots)
				return pending
			}
			// A blocking read on every queue that has none out.
			w.block(blocking, results)
		}
		for _, t := range got {
			if len(slots) > 0 {
				w.start(t, slots[0])
				slots = slots[1:]
			} else {
				pending = append(pending, t)
			}
		}
		if len(got) == 0 && len(slots) > 0 {
			// Every queue was empty: wait for a blocking read, or for
			// the context, keeping one slot for the job it brings.
			w.release(slots[1:])
			select {
			case <-ctx.Done():
				w.release(slots[:1])
				return pending
			case r := <-results:
				handle(r)
				if len(pending) > 0 && ctx.Err() == nil {
					w.start(pending[0], slots[0])
					pending = pending[1:]
				} else {
					w.release(slots[:1])
				}
			}
			continue
		}
		w.release(slots)
	}
}

// release gives slots back.
func (w *worker) release(slots []int) {
	for _, s := range slots {
		w.free <- s
	}
}

// fetch takes up to n jobs without waiting.
func (w *worker) fetch(ctx context.Context, n int) ([]taken, error) {
	order := w.qs.order(w.rnd)
	keys := make([]string, 0, 2*len(order))
	for _, q := range order {
		keys = append(keys, w.ids.queueKey(q))
		if !w.cfg.Plain {
			keys = append(keys, w.ids.proc[q])
		}
	}
	mode := "1"
	if w.cfg.Plain {
		mode = "0"
	}
	res, err := fetchScript.Run(ctx, w.rdb, keys, n, mode).Slice()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]taken, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		pos, _ := res[i].(int64)
		v, _ := res[i+1].(string)
		if pos < 1 || int(pos) > len(order) {
			return out, fmt.Errorf("resque: fetch script: bad queue position %v", res[i])
		}
		out = append(out, taken{queue: order[pos-1], payload: v})
	}
	return out, nil
}

// blocker is the connection of the blocking reads of one queue (plain
// mode: of all of them, key ""). A dedicated connection lets a stop end a
// read at once (CLIENT UNBLOCK of its id) and lets the read wait a whole
// Interval; on a client that cannot lend one (not a *redis.Client), reads
// go through the pool and wait at most maxBlock.
type blocker struct {
	conn  *redis.Conn
	named bool
	mu    sync.Mutex
	id    int64 // the connection's CLIENT ID while a read is out, else 0
}

func (b *blocker) setID(id int64) {
	b.mu.Lock()
	b.id = id
	b.mu.Unlock()
}

// blockerFor returns the blocker of key, made on first use.
func (w *worker) blockerFor(key string) *blocker {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.blockers[key]
	if b == nil {
		b = &blocker{}
		if c, ok := w.rdb.(*redis.Client); ok {
			b.conn = c.Conn()
		}
		w.blockers[key] = b
	}
	return b
}

// unblock ends every blocking read that is out (they answer nil).
func (w *worker) unblock() {
	w.mu.Lock()
	var ids []int64
	for _, b := range w.blockers {
		b.mu.Lock()
		if b.id != 0 {
			ids = append(ids, b.id)
		}
		b.mu.Unlock()
	}
	w.mu.Unlock()
	for _, id := range ids {
		if err := w.rdb.ClientUnblock(context.Background(), id).Err(); err != nil {
			w.log.Warn("resque: CLIENT UNBLOCK failed", "client", id, "err", err)
		}
	}
}

// closeBlockers closes the blockers' connections.
func (w *worker) closeBlockers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.blockers {
		if b.conn != nil {
			_ = b.conn.Close()
		}
	}
}

// blockingRead runs one blocking read of key on its blocker: read gets
// the client to use and the timeout.
func (w *worker) blockingRead(key string, read func(c redis.Cmdable, timeout time.Duration) (*taken, error)) blockResult {
	// Not the worker's context: a job the read takes must be seen, even at
	// a stop (which ends the read with CLIENT UNBLOCK instead).
	bg := context.Background()
	b := w.blockerFor(key)
	r := blockResult{queue: key}
	var c redis.Cmdable = w.rdb
	timeout := min(w.cfg.Interval, maxBlock)
	if b.conn != nil {
		if !b.named {
			// For CLIENT LIST; a name Redis refuses (a queue name with a
			// space) is left out.
			_ = b.conn.ClientSetName(bg, "kiln-resque:"+w.ids.ns+w.ids.base+":"+key).Err()
			b.named = true
		}
		id, err := b.conn.ClientID(bg).Result()
		if err != nil {
			r.err = err
			return r
		}
		b.setID(id)
		defer b.setID(0)
		c = b.conn
		// go-redis sends whole seconds (at least 1).
		timeout = max(w.cfg.Interval.Truncate(time.Second), time.Second)
	}
	job, err := read(c, timeout)
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		r.err = err
	default:
		r.job = job
	}
	return r
}

// block starts a blocking read on every queue that has none out (reliable
// mode: one BLMOVE per queue, each on a connection of its own, so that a
// job pushed onto any of them is taken at once; plain mode: one BLPOP on
// all). Results arrive on results.
func (w *worker) block(blocking map[string]bool, results chan<- blockResult) {
	if w.cfg.Plain {
		if blocking[""] {
			return
		}
		blocking[""] = true
		keys := make([]string, 0, len(w.qs.names))
		for _, q := range w.qs.order(w.rnd) {
			keys = append(keys, w.ids.queueKey(q))
		}
		go func() {
			results <- w.blockingRead("", func(c redis.Cmdable, timeout time.Duration) (*taken, error) {
				var kv []string
				var err error
				if timeout < time.Second {
					kv, err = w.rdb.Do(context.Background(), append(append([]any{"BLPOP"}, anySlice(keys)...), seconds(timeout))...).StringSlice()
				} else {
					kv, err = c.BLPop(context.Background(), timeout, keys...).Result()
				}
				if err != nil || len(kv) != 2 {
					return nil, err
				}
				return &taken{queue: strings.TrimPrefix(kv[0], w.ids.ns+"queue:"), payload: kv[1]}, nil
			})
		}()
		return
	}
	for _, q := range w.qs.names {
		if blocking[q] {
			continue
		}
		blocking[q] = true
		src, dst := w.ids.queueKey(q), w.ids.proc[q]
		go func() {
			results <- w.blockingRead(q, func(c redis.Cmdable, timeout time.Duration) (*taken, error) {
				var v string
				var err error
				if timeout < time.Second {
					v, err = w.rdb.Do(context.Background(), "BLMOVE", src, dst, "LEFT", "LEFT", seconds(timeout)).Text()
				} else {
					v, err = c.BLMove(context.Background(), src, dst, "LEFT", "LEFT", timeout).Result()
				}
				if err != nil {
					return nil, err
				}
				return &taken{queue: q, payload: v}, nil
			})
		}()
	}
}

func anySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// reconcile runs after a blocking read of queue q failed: the read may have
// moved a job into the processing list without the answer reaching the
// worker. Every entry of the list that is neither running nor pending here
// goes back to the head of the queue (a job that finishes meanwhile may
// run again; none is left behind).
func (w *worker) reconcile(ctx context.Context, q string, pending []taken) {
	pk := w.ids.proc[q]
	if pk == "" {
		return
	}
	held := map[string]int{}
	w.mu.Lock()
	for r := range w.active {
		if r.job.queue == q {
			held[r.job.payload]++
		}
	}
	w.mu.Unlock()
	for _, t := range pending {
		if t.queue == q {
			held[t.payload]++
		}
	}
	items, err := w.rdb.LRange(ctx, pk, 0, -1).Result()
	if err != nil {
		w.log.Warn("resque: checking the processing list after a failed read failed; its jobs go back when this worker stops", "queue", q, "err", err)
		return
	}
	for _, it := range items {
		if held[it] > 0 {
			held[it]--
			continue
		}
		w.requeue(ctx, taken{queue: q, payload: it})
		w.log.Warn("resque: a job taken by a failed blocking read went back to its queue", "queue", q)
	}
}

// seconds formats a blocking command's timeout (go-redis' own BLMove
// rounds it to whole seconds), at least a millisecond: a timeout of 0
// blocks for ever.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(max(d, time.Millisecond).Seconds(), 'f', 3, 64)
}

// start runs t on slot.
func (w *worker) start(t taken, slot int) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{job: t, cancel: cancel}
	w.mu.Lock()
	w.active[r] = struct{}{}
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { w.free <- slot }()
		defer cancel()
		w.run(ctx, r, slot)
		w.mu.Lock()
		delete(w.active, r)
		w.mu.Unlock()
	}()
}

// run runs one job and records its outcome.
func (w *worker) run(ctx context.Context, r *running, slot int) {
	id := w.ids.slots[slot]
	rec := w.recs[slot%len(w.recs)]
	payload := []byte(r.job.payload)
	j, err := DecodeJob(r.job.queue, payload)
	class := invalidClass
	if err == nil {
		class = j.Class
	}
	ctx, ob := w.observe(ctx, r.job.queue, class)
	if err == nil {
		rec.send(op{key: w.ids.workerKey(id), val: workingOn(j.Queue, payload, time.Now())})
		h := w.cfg.Registry.get(j.Class)
		if h == nil {
			err = &unregisteredError{class: j.Class, queue: j.Queue}
		} else {
			err = call(context.WithValue(ctx, jobKey{}, j), h, j, w.cfg.UseNumber)
		}
	}
	if !r.state.CompareAndSwap(stateRunning, stateFinishing) {
		ob.end(nil, false)
		return // abandoned at the shutdown timeout: back in its queue
	}
	ob.end(err, true)
	ok := "1"
	var failed []byte
	if err != nil {
		ok = "0"
		f := classify(err)
		failed = encodeFailure(time.Now(), payload, f, id, r.job.queue)
		w.log.Info("resque: job failed", "queue", r.job.queue, "worker", id, "exception", f.exception, "error", f.msg)
	}
	args := []any{w.ids.ns, w.ids.proc[r.job.queue], r.job.payload, id, ok, failed}
	if rec.finish(args) == nil {
		return
	}
	// The outcome must be written even during a stop.
	bg := context.WithoutCancel(ctx)
	pause := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := finishScript.Run(bg, w.rdb, nil, args...).Err()
		if err == nil {
			return
		}
		if attempt == 5 {
			// The job stays in the processing list: it goes back to its
			// queue when this process unregisters or is taken for dead.
			w.log.Error("resque: recording a job's outcome failed; it will run again", "queue", r.job.queue, "err", err)
			return
		}
		time.Sleep(pause)
		pause *= 2
	}
}

// invalidClass is the type label and span attribute of a payload that is
// not a valid job (it has no class).
const invalidClass = "_invalid"

// observation is the metrics and span of one job; the zero value records
// nothing.
type observation struct {
	ser   *metrics.Series // nil without metrics
	span  trace.Span      // nil without tracing
	start time.Time
}

// observe starts the metrics and span of a job of class taken from queue;
// the context it returns, the handler's, carries the span.
func (w *worker) observe(ctx context.Context, queue, class string) (context.Context, observation) {
	ob := observation{start: time.Now()}
	if w.met != nil {
		ob.ser = w.met.Series(queue, class)
		ob.ser.Started.Inc()
	}
	if w.tracer != nil {
		ctx, ob.span = w.tracer.Start(ctx, "kiln.handle", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String("messaging.system", "resque"),
			attribute.String("messaging.destination.name", queue),
			attribute.String("kiln.task.type", class)))
	}
	return ctx, ob
}

// end records the outcome of a job that finished (done), failed when err
// is set; a job that did not finish (handed back at a stop) has no
// outcome.
func (ob observation) end(err error, done bool) {
	if ob.ser != nil && done {
		ob.ser.Handler.Observe(time.Since(ob.start).Seconds())
		if err == nil {
			ob.ser.Succeeded.Inc()
		} else {
			ob.ser.Failed.Inc()
			ob.ser.Dead.Inc()
		}
	}
	if ob.span != nil {
		if !done {
			ob.span.SetAttributes(attribute.Bool("kiln.released", true))
		}
		tracing.End(ob.span, err)
	}
}

// op is one write of a recorder: a SET of a worker key (done nil), or a
// run of finishScript whose error goes to done.
type op struct {
	key  string
	val  []byte
	args []any
	done chan error
}

// recorder sends the registry writes and outcomes of the jobs of its slots
// in pipelines: what waits while one pipeline is out goes in the next, so
// a busy worker makes one round trip for many jobs. A slot's writes keep
// their order (its SET before its outcome's DEL).
type recorder struct {
	rdb     redis.UniversalClient
	log     *slog.Logger
	ch      chan op
	stopped chan struct{} // closed when loop has returned
}

func newRecorder(rdb redis.UniversalClient, log *slog.Logger, size int) *recorder {
	return &recorder{rdb: rdb, log: log, ch: make(chan op, size), stopped: make(chan struct{})}
}

// send queues a SET; once the recorder has stopped, it is sent at once.
func (r *recorder) send(o op) {
	select {
	case r.ch <- o:
	case <-r.stopped:
		if err := r.rdb.Set(context.Background(), o.key, o.val, 0).Err(); err != nil {
			r.log.Warn("resque: writing the running job to the registry failed", "key", o.key, "err", err)
		}
	}
}

// finish runs finishScript with args in the next pipeline and returns its
// error (errRecorderStopped when the recorder stopped first).
func (r *recorder) finish(args []any) error {
	o := op{args: args, done: make(chan error, 1)}
	select {
	case r.ch <- o:
	case <-r.stopped:
		return errRecorderStopped
	}
	select {
	case err := <-o.done:
		return err
	case <-r.stopped:
		// The loop answers every op it took before it returns.
		select {
		case err := <-o.done:
			return err
		default:
			return errRecorderStopped
		}
	}
}

var errRecorderStopped = errors.New("resque: recorder stopped")

// maxPipeline bounds the writes of one pipeline.
const maxPipeline = 256

// loop sends the queued writes until stop is closed.
// ctx must not end before stop: the outcomes of a stop are written.
func (r *recorder) loop(ctx context.Context, stop <-chan struct{}) {
	defer close(r.stopped)
	for {
		var first op
		select {
		case first = <-r.ch:
		case <-stop:
			return
		}
		batch := []op{first}
	more:
		for len(batch) < maxPipeline {
			select {
			case o := <-r.ch:
				batch = append(batch, o)
			default:
				break more
			}
		}
		pipe := r.rdb.Pipeline()
		cmds := make([]redis.Cmder, len(batch))
		for i, o := range batch {
			if o.done == nil {
				cmds[i] = pipe.Set(ctx, o.key, o.val, 0)
			} else {
				cmds[i] = pipe.EvalSha(ctx, finishScript.Hash(), nil, o.args...)
			}
		}
		_, _ = pipe.Exec(ctx) // each command's error is in its Cmder
		for i, o := range batch {
			err := cmds[i].Err()
			if o.done != nil {
				o.done <- err
			} else if err != nil {
				r.log.Warn("resque: writing the running job to the registry failed", "key", o.key, "err", err)
			}
		}
	}
}

// drain waits for the running jobs, at most ShutdownTimeout; then it
// cancels the ones still running and returns them to their queues.
func (w *worker) drain() {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	timer := time.NewTimer(w.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	w.mu.Lock()
	var late []*running
	for r := range w.active {
		if r.state.CompareAndSwap(stateRunning, stateAbandoned) {
			late = append(late, r)
		}
	}
	w.mu.Unlock()
	for _, r := range late {
		r.cancel()
		w.requeue(context.Background(), r.job)
		w.log.Warn("resque: a job still running at the shutdown timeout went back to its queue", "queue", r.job.queue, "timeout", w.cfg.ShutdownTimeout)
	}
	// Jobs that were recording their outcome finish that.
	w.mu.Lock()
	n := len(w.active) - len(late)
	w.mu.Unlock()
	if n > 0 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// requeue returns a taken job to the head of its queue.
func (w *worker) requeue(ctx context.Context, t taken) {
	err := requeueScript.Run(ctx, w.rdb, nil, w.ids.queueKey(t.queue), w.ids.proc[t.queue], t.payload).Err()
	if err != nil {
		w.log.Error("resque: returning a job to its queue failed", "queue", t.queue, "err", err, "job", t.payload)
	}
}
