package resque

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln"
)

// gather reads reg into "name{label="value",...}" -> value, with
// histograms as their _count.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			name := mf.GetName()
			v := m.GetCounter().GetValue()
			if h := m.GetHistogram(); h != nil {
				name, v = name+"_count", float64(h.GetSampleCount())
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// TestWorkMetricsAndSpans: on real Redis, with Config.Metrics and
// Config.TracerProvider, the worker counts the jobs it takes, their
// successes and failures (failed = dead: Resque does not retry) and their
// durations by queue and class, and records a kiln.handle span per job
// that the handler's context carries, with an error status on a failure;
// a Client with Metrics counts what it enqueues. Without them, nothing.
func TestWorkMetricsAndSpans(t *testing.T) {
	t.Parallel()
	rdb, ns := testClient(t)
	reg := prometheus.NewRegistry()
	met, err := kiln.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	jobs := NewRegistry()
	var withSpan atomic.Int32
	jobs.RegisterContext("Ok", func(ctx context.Context, _ string, _ ...any) error {
		if trace.SpanContextFromContext(ctx).IsValid() {
			withSpan.Add(1)
		}
		return nil
	})
	jobs.Register("Boom", func(string, ...any) error { return errors.New("boom") })
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns, Metrics: met})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.EnqueueMany(ctx, "high", "Ok", []any{1}, []any{2}, []any{3}); err != nil {
		t.Fatal(err)
	}
	if err := c.Enqueue(ctx, "low", "Boom", "x"); err != nil {
		t.Fatal(err)
	}
	push(t, rdb, ns, "low", `not json`)

	cfg := testConfig(rdb, ns, jobs, "high", "low")
	cfg.Metrics, cfg.TracerProvider, cfg.ExitOnComplete = met, tp, true
	if err := Work(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	got := gather(t, reg)
	want := map[string]float64{
		`kiln_tasks_enqueued_total{queue="high",type="Ok"}`:                 3,
		`kiln_tasks_enqueued_total{queue="low",type="Boom"}`:                1,
		`kiln_tasks_started_total{queue="high",type="Ok"}`:                  3,
		`kiln_tasks_succeeded_total{queue="high",type="Ok"}`:                3,
		`kiln_task_handler_duration_seconds_count{queue="high",type="Ok"}`:  3,
		`kiln_tasks_started_total{queue="low",type="Boom"}`:                 1,
		`kiln_tasks_failed_total{queue="low",type="Boom"}`:                  1,
		`kiln_tasks_dead_total{queue="low",type="Boom"}`:                    1,
		`kiln_task_handler_duration_seconds_count{queue="low",type="Boom"}`: 1,
		`kiln_tasks_failed_total{queue="low",type="_invalid"}`:              1,
		`kiln_tasks_succeeded_total{queue="low",type="Boom"}`:               0,
		`kiln_tasks_retried_total{queue="low",type="Boom"}`:                 0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if n := withSpan.Load(); n != 3 {
		t.Errorf("%d of 3 handlers saw a span in their context", n)
	}
	var ok, boom, invalid int
	for _, s := range exp.GetSpans() {
		if s.Name != "kiln.handle" || s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span %q kind %v, want kiln.handle consumer", s.Name, s.SpanKind)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if attrs["messaging.system"] != "resque" {
			t.Errorf("messaging.system = %q", attrs["messaging.system"])
		}
		switch attrs["kiln.task.type"] {
		case "Ok":
			ok++
			if attrs["messaging.destination.name"] != "high" || s.Status.Code.String() == "Error" {
				t.Errorf("an Ok job's span: %v %v", attrs, s.Status)
			}
		case "Boom":
			boom++
			if attrs["messaging.destination.name"] != "low" || s.Status.Code.String() != "Error" || !strings.Contains(s.Status.Description, "boom") {
				t.Errorf("the Boom job's span: %v %v", attrs, s.Status)
			}
		case invalidClass:
			invalid++
		}
	}
	if ok != 3 || boom != 1 || invalid != 1 {
		t.Errorf("spans: %d Ok, %d Boom, %d invalid; want 3, 1, 1", ok, boom, invalid)
	}
}
