package kiln

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// serveMetrics registers a Metrics on a new registry and serves it over
// HTTP; scrape reads it.
func serveMetrics(t *testing.T) (*Metrics, func() map[string]float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return m, func() map[string]float64 {
		t.Helper()
		return testenv.Scrape(t, srv.Client(), srv.URL, nil)
	}
}

// TestMetricsCountTasks: a worker and a client given one Metrics count
// every task by queue and type, time the handlers and the waits, and the
// queue depth gauge shows the store's counts; scraped over HTTP.
func TestMetricsCountTasks(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, func(t *testing.T, b *bundle) { //nolint:thelper // the test itself, on each store
		m, scrape := serveMetrics(t)
		client, err := NewClient(b.store, &ClientConfig{Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		b.startWorker(t, &WorkerConfig{
			Metrics: m, Queues: map[string]int{"default": 1, "mail": 1},
			RetryDelayFunc: func(int, error, *Task) time.Duration { return 0 },
		}, func(w *Worker) {
			w.Handle("ok", HandlerFunc(func(context.Context, *Task) error { return nil }))
			w.Handle("fail", HandlerFunc(func(context.Context, *Task) error { return errBoom }))
		})
		ctx := waitCtx(t)
		var ids []string
		for range 3 {
			r, err := client.Enqueue(ctx, "ok", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID())
		}
		r, err := client.Enqueue(ctx, "ok", nil, &TaskOptions{Queue: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID())
		// Two attempts: the first retried, the second dead.
		r, err = client.Enqueue(ctx, "fail", nil, &TaskOptions{MaxRetries: new(1)})
		if err != nil {
			t.Fatal(err)
		}
		dead := r.ID()
		for _, id := range ids {
			if _, err := client.Result(id).Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.Result(dead).Wait(ctx); !errors.Is(err, ErrTaskDead) {
			t.Fatalf("Wait(fail) = %v, want ErrTaskDead", err)
		}
		got := scrape()
		want := map[string]float64{
			`kiln_tasks_enqueued_total{queue="default",type="ok"}`:                    3,
			`kiln_tasks_enqueued_total{queue="mail",type="ok"}`:                       1,
			`kiln_tasks_enqueued_total{queue="default",type="fail"}`:                  1,
			`kiln_tasks_started_total{queue="default",type="ok"}`:                     3,
			`kiln_tasks_started_total{queue="mail",type="ok"}`:                        1,
			`kiln_tasks_started_total{queue="default",type="fail"}`:                   2,
			`kiln_tasks_succeeded_total{queue="default",type="ok"}`:                   3,
			`kiln_tasks_succeeded_total{queue="mail",type="ok"}`:                      1,
			`kiln_tasks_failed_total{queue="default",type="fail"}`:                    2,
			`kiln_tasks_retried_total{queue="default",type="fail"}`:                   1,
			`kiln_tasks_dead_total{queue="default",type="fail"}`:                      1,
			`kiln_task_handler_duration_seconds_count{queue="default",type="ok"}`:     3,
			`kiln_task_handler_duration_seconds_count{queue="default",type="fail"}`:   2,
			`kiln_task_wait_seconds_count{queue="default"}`:                           5,
			`kiln_task_wait_seconds_count{queue="mail"}`:                              1,
			`kiln_queue_tasks{namespace="default",queue="default",state="succeeded"}`: 3,
			`kiln_queue_tasks{namespace="default",queue="default",state="dead"}`:      1,
			`kiln_queue_tasks{namespace="default",queue="default",state="pending"}`:   0,
			`kiln_queue_tasks{namespace="default",queue="mail",state="succeeded"}`:    1,
		}
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
			}
		}
		for k, v := range got {
			if strings.HasPrefix(k, "kiln_tasks_succeeded_total") && strings.Contains(k, `type="fail"`) && v != 0 {
				t.Errorf("%s = %v, want 0", k, v)
			}
			if strings.HasPrefix(k, "kiln_store_errors_total") && v != 0 {
				t.Errorf("%s = %v, want 0", k, v)
			}
		}
	})
}

// TestMetricsStoreErrorsAndExpiries: failed store calls are counted by
// operation, and the leases that the worker's sweeps find expired are
// counted.
func TestMetricsStoreErrorsAndExpiries(t *testing.T) {
	t.Parallel()
	var leaseFails atomic.Int32
	leaseFails.Store(2)
	h := &hookStore{}
	h.lease = func(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
		if leaseFails.Add(-1) >= 0 {
			return store.LeaseResult{}, errors.New("store down")
		}
		return h.Store.Lease(ctx, p)
	}
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store { h.Store = s; return h }})
	m, scrape := serveMetrics(t)
	ctx := waitCtx(t)
	r, err := b.client.Enqueue(ctx, "ok", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A lease taken and abandoned: the worker's sweep recovers it.
	if res, err := b.raw.Lease(ctx, store.LeaseParams{Namespace: store.DefaultNamespace, Queues: []string{"default"}, Max: 1, Duration: LeaseDurationMin, WorkerID: "gone"}); err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %v, %v", res.Tasks, err)
	}
	b.startWorker(t, &WorkerConfig{Metrics: m}, func(w *Worker) {
		w.Handle("ok", HandlerFunc(func(context.Context, *Task) error { return nil }))
	})
	if _, err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	got := scrape()
	if g := got[`kiln_store_errors_total{op="lease"}`]; g != 2 {
		t.Errorf(`kiln_store_errors_total{op="lease"} = %v, want 2`, g)
	}
	if g := got[`kiln_lease_expiries_total`]; g != 1 {
		t.Errorf("kiln_lease_expiries_total = %v, want 1", g)
	}
	if g := got[`kiln_tasks_succeeded_total{queue="default",type="ok"}`]; g != 1 {
		t.Errorf("succeeded = %v, want 1", g)
	}
}

// TestMetricsTwiceOnOneRegistry: a second Metrics on the same registry is
// refused, not silently merged.
func TestMetricsTwiceOnOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("second NewMetrics on one registry succeeded")
	}
}
