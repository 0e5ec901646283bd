package metrics

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Bounds of the queue depth gauge.
const (
	// DepthRefresh is how old the counts a scrape shows may be: a scrape
	// asks the stores again only when the last answer is older.
	DepthRefresh = 5 * time.Second
	// depthTimeout bounds one refresh.
	depthTimeout = 5 * time.Second
	// MaxDepthQueues bounds the queues the gauge shows.
	MaxDepthQueues = 1000
)

// DepthFunc counts the tasks of some queues by state, from counts the
// store keeps (store.Reader.Stats): never a scan of tasks.
type DepthFunc func(ctx context.Context) ([]Depth, error)

// Depth counts the tasks of one queue of a namespace by state.
type Depth struct {
	Namespace string
	store.QueueStats
}

// StoreDepth returns a DepthFunc that counts the queues of namespace ns in
// s (nil queues: every queue).
func StoreDepth(s store.Reader, ns string, queues []string) DepthFunc {
	queues = slices.Clone(queues)
	return func(ctx context.Context) ([]Depth, error) {
		res, err := s.Stats(ctx, store.StatsParams{Namespace: ns, Queues: queues})
		if err != nil {
			return nil, err
		}
		out := make([]Depth, len(res.Queues))
		for i, q := range res.Queues {
			out[i] = Depth{Namespace: ns, QueueStats: q}
		}
		return out, nil
	}
}

// depthCollector is the kiln_queue_tasks gauge: the counts of its sources,
// asked at most every DepthRefresh, whatever the number of scrapes.
type depthCollector struct {
	desc   *prometheus.Desc
	onErr  func()
	mu     sync.Mutex // held during a refresh: concurrent scrapes wait for it
	srcs   map[int]DepthFunc
	next   int
	at     time.Time // of the cached answer
	cached []prometheus.Metric
}

func newDepthCollector() *depthCollector {
	return &depthCollector{
		desc: prometheus.NewDesc("kiln_queue_tasks",
			"Tasks by queue and state, from the store's counts (cached: at most "+DepthRefresh.String()+" old).",
			[]string{"namespace", "queue", "state"}, nil),
		srcs: make(map[int]DepthFunc),
	}
}

// add adds a source and returns its removal.
func (c *depthCollector) add(f DepthFunc) func() {
	c.mu.Lock()
	id := c.next
	c.next++
	c.srcs[id] = f
	c.at = time.Time{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.srcs, id)
		c.at = time.Time{}
		c.mu.Unlock()
	}
}

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.at) >= DepthRefresh {
		c.refresh()
	}
	ms := c.cached
	c.mu.Unlock()
	for _, m := range ms {
		ch <- m
	}
}

// refresh asks every source again; c.mu is held. A source that fails keeps
// its queues out of this answer and counts a store error.
func (c *depthCollector) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), depthTimeout)
	defer cancel()
	type nq struct{ ns, q string }
	seen := make(map[nq]bool)
	var out []prometheus.Metric
	ids := make([]int, 0, len(c.srcs))
	for id := range c.srcs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		ds, err := c.srcs[id](ctx)
		if err != nil {
			if c.onErr != nil {
				c.onErr()
			}
			continue
		}
		for _, d := range ds {
			k := nq{d.Namespace, d.Queue}
			if seen[k] || len(seen) >= MaxDepthQueues {
				continue
			}
			seen[k] = true
			for _, st := range store.AllStates {
				out = append(out, prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(d.Counts[st]), d.Namespace, d.Queue, st.String()))
			}
		}
	}
	c.cached, c.at = out, time.Now()
}

// AddDepth adds a source of the queue depth gauge; the returned function
// removes it.
func (s *Set) AddDepth(f DepthFunc) (remove func()) { return s.depth.add(f) }
