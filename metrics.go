package kiln

import (
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are kiln's Prometheus collectors (docs/metrics.md lists them):
// tasks enqueued, started, succeeded, failed, retried and dead by queue
// and type, handler duration and enqueue-to-start latency histograms,
// queue depth by state, lease expiries and store errors. Give one Metrics
// to any number of workers and clients (WorkerConfig.Metrics,
// ClientConfig.Metrics) and serve its registry, for instance with
// promhttp.HandlerFor. It is safe for concurrent use.
//
// Labels stay few: at most 200 queue names and 200 type names get a label
// of their own; the others are counted under "_other". The queue depth
// gauge reads the counts the store keeps (never a scan of tasks), for the
// queues of the running workers, at most every 5 seconds whatever the
// number of scrapes.
type Metrics struct {
	set *metrics.Set
}

// NewMetrics returns collectors registered with reg (for instance
// prometheus.DefaultRegisterer, or a prometheus.NewRegistry()). It fails
// when reg already holds collectors of the same names, such as those of
// another Metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	set, err := metrics.New(reg)
	if err != nil {
		return nil, err
	}
	return &Metrics{set: set}, nil
}

// Package resque counts into a Metrics through internal/hook.
func init() { hook.SetMetricsSet(func(m *Metrics) *metrics.Set { return m.set }) }
