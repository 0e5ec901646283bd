// Package metrics holds kiln's Prometheus collectors (docs/metrics.md):
// the counters and histograms of tasks that workers, clients and the server
// record, the cached queue depth gauge, and the store and HTTP counters.
// Package kiln exposes a Set as kiln.Metrics; the server makes its own.
//
// Recording is cheap: the series of a (queue, type) pair are resolved once
// and cached, so that a task's events cost a map lookup and a few atomic
// additions. The number of distinct queue and type labels is bounded
// (MaxLabelValues each); further names are counted under OtherLabel.
package metrics

import (
	"strconv"
	"sync"

	"github.com/kilnhq/kiln/store"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxLabelValues bounds the distinct queue names, and the distinct type
// names, that a Set gives a label of their own.
const MaxLabelValues = 200

// OtherLabel is the queue or type label of the names beyond MaxLabelValues.
const OtherLabel = "_other"

// The store operations of StoreError.
const (
	OpEnqueue     = "enqueue"
	OpLease       = "lease"
	OpExtend      = "extend"
	OpReport      = "report"
	OpSweep       = "sweep"
	OpWaitCancels = "wait_cancels"
	OpStats       = "stats"
)

var storeOps = []string{OpEnqueue, OpLease, OpExtend, OpReport, OpSweep, OpWaitCancels, OpStats}

// Buckets of the histograms, in seconds.
var (
	handlerBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}
	waitBuckets    = []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 1800, 3600}
)

// Set is one set of kiln's collectors, registered together.
type Set struct {
	enqueued, started, succeeded, failed, retried, dead *prometheus.CounterVec

	handler, wait *prometheus.HistogramVec
	leaseExpiry   prometheus.Counter
	storeErrors   map[string]prometheus.Counter
	httpRequests  *prometheus.CounterVec
	depth         *depthCollector

	series sync.Map // key -> *Series

	mu     sync.Mutex // guards queues and types
	queues map[string]bool
	types  map[string]bool
}

type key struct{ queue, typ string }

// Series are the collectors of one (queue, type) pair.
type Series struct {
	Enqueued, Started, Succeeded, Failed, Retried, Dead prometheus.Counter
	// Handler observes how long an attempt ran, in seconds.
	Handler prometheus.Observer
	// Wait observes how long a task waited from when it was due to the
	// start of its attempt, in seconds (labelled by queue only).
	Wait prometheus.Observer
}

// New returns a Set whose collectors are registered with reg.
func New(reg prometheus.Registerer) (*Set, error) {
	tasks := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "kiln", Name: name, Help: help}, []string{"queue", "type"})
	}
	s := &Set{
		enqueued:  tasks("tasks_enqueued_total", "Tasks enqueued."),
		started:   tasks("tasks_started_total", "Attempts started (tasks leased to a handler)."),
		succeeded: tasks("tasks_succeeded_total", "Attempts that succeeded."),
		failed:    tasks("tasks_failed_total", "Attempts that failed (error, panic or timeout), retried or not."),
		retried:   tasks("tasks_retried_total", "Failed attempts whose task will be retried."),
		dead:      tasks("tasks_dead_total", "Failed attempts whose task will not be retried (the task is dead)."),
		handler: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kiln", Name: "task_handler_duration_seconds",
			Help: "How long attempts ran, succeeded or failed.", Buckets: handlerBuckets,
		}, []string{"queue", "type"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kiln", Name: "task_wait_seconds",
			Help: "Enqueue-to-start latency: from when a task was due (enqueued, or its scheduled or retry time) to the start of its attempt.", Buckets: waitBuckets,
		}, []string{"queue"}),
		leaseExpiry: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "kiln", Name: "lease_expiries_total",
			Help: "Leases that ran out without a heartbeat, recovered by this process's sweeps.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kiln", Name: "http_requests_total", Help: "HTTP requests served, by route and status.",
		}, []string{"route", "status"}),
		storeErrors: make(map[string]prometheus.Counter, len(storeOps)),
		queues:      make(map[string]bool),
		types:       make(map[string]bool),
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "kiln", Name: "store_errors_total", Help: "Store calls that failed, by operation.",
	}, []string{"op"})
	for _, op := range storeOps {
		s.storeErrors[op] = errs.WithLabelValues(op)
	}
	s.depth = newDepthCollector()
	s.depth.onErr = s.storeErrors[OpStats].Inc
	for _, c := range []prometheus.Collector{
		s.enqueued, s.started, s.succeeded, s.failed, s.retried, s.dead,
		s.handler, s.wait, s.leaseExpiry, errs, s.httpRequests, s.depth,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Series returns the collectors of a queue and a type.
func (s *Set) Series(queue, typ string) *Series {
	if queue == "" {
		queue = store.DefaultQueue
	}
	k := key{queue, typ}
	if v, ok := s.series.Load(k); ok {
		return v.(*Series)
	}
	s.mu.Lock()
	bq, bt := s.bound(s.queues, queue), s.bound(s.types, typ)
	s.mu.Unlock()
	bk := key{bq, bt}
	if v, ok := s.series.Load(bk); ok {
		return v.(*Series)
	}
	ser := &Series{
		Enqueued: s.enqueued.WithLabelValues(bq, bt), Started: s.started.WithLabelValues(bq, bt),
		Succeeded: s.succeeded.WithLabelValues(bq, bt), Failed: s.failed.WithLabelValues(bq, bt),
		Retried: s.retried.WithLabelValues(bq, bt), Dead: s.dead.WithLabelValues(bq, bt),
		Handler: s.handler.WithLabelValues(bq, bt), Wait: s.wait.WithLabelValues(bq),
	}
	v, _ := s.series.LoadOrStore(bk, ser)
	return v.(*Series)
}

// bound returns name, or OtherLabel when seen already holds MaxLabelValues
// other names. s.mu is held.
func (s *Set) bound(seen map[string]bool, name string) string {
	if seen[name] {
		return name
	}
	if len(seen) >= MaxLabelValues {
		return OtherLabel
	}
	seen[name] = true
	return name
}

// StoreError counts a failed store call of operation op (one of the Op
// constants).
func (s *Set) StoreError(op string) {
	if c := s.storeErrors[op]; c != nil {
		c.Inc()
	}
}

// LeaseExpiries counts leases that a sweep found expired.
func (s *Set) LeaseExpiries(n int) {
	if n > 0 {
		s.leaseExpiry.Add(float64(n))
	}
}

// HTTPRequest counts a request served by route (a route pattern, never a
// raw path) with status.
func (s *Set) HTTPRequest(route string, status int) {
	s.httpRequests.WithLabelValues(route, statusText(status)).Inc()
}

var statusTexts sync.Map // int -> string

func statusText(code int) string {
	if v, ok := statusTexts.Load(code); ok {
		return v.(string)
	}
	t := strconv.Itoa(code)
	if code >= 100 && code < 600 {
		statusTexts.Store(code, t)
	}
	return t
}
