package schedule_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store"
)

// TestRunsTraced: with a TracerProvider, each run's enqueue is a kiln.enqueue
// span that starts a trace of its own, named by the schedule and the run,
// and the run's task carries that span's trace context to its handler;
// without one, the task carries none.
func TestRunsTraced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	traced, err := schedule.New(b.st, &schedule.Config{Clock: b.clock, InstanceID: "traced", TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	b.create(schedule.Schedule{ID: "tr", Task: schedule.Task{Type: "tr"}, Every: "10s"})
	if n := b.fire(traced); n != 1 {
		t.Fatalf("fired %d runs, want 1", n)
	}
	b.clock.Advance(10 * time.Second)
	if n := b.fire(b.sch); n != 1 {
		t.Fatalf("the untraced scheduler fired %d runs, want 1", n)
	}
	ids := []string{schedule.TaskID("tr", t0), schedule.TaskID("tr", t0.Add(10*time.Second))}
	res, err := b.st.Get(context.Background(), store.GetParams{Namespace: store.DefaultNamespace, IDs: ids})
	if err != nil || res.Tasks[0] == nil || res.Tasks[1] == nil {
		t.Fatalf("the runs' tasks: %+v, %v", res.Tasks, err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "kiln.enqueue" || spans[0].Parent.IsValid() {
		t.Fatalf("spans %+v, want one kiln.enqueue, the root of its trace", spans)
	}
	sc := spans[0].SpanContext
	if want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"; res.Tasks[0].TraceParent != want {
		t.Errorf("the traced run's task carries %q, want %q", res.Tasks[0].TraceParent, want)
	}
	if res.Tasks[1].TraceParent != "" {
		t.Errorf("the untraced run's task carries %q", res.Tasks[1].TraceParent)
	}
	attrs := map[string]string{}
	for _, a := range spans[0].Attributes {
		attrs[string(a.Key)] = a.Value.AsString()
	}
	if attrs["kiln.schedule.id"] != "tr" || attrs["kiln.schedule.run"] != t0.UTC().Format(time.RFC3339Nano) {
		t.Errorf("span attributes %v, want the schedule's id and the run time", attrs)
	}
}
