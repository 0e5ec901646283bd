package kiln

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/store"
)

// traced gives b a TracerProvider whose spans go to the returned in-memory
// exporter, a client and a started worker (its handlers set by handle) that
// use it.
func traced(t *testing.T, b *bundle, handle func(w *Worker, tp trace.TracerProvider)) (*tracetest.InMemoryExporter, *sdktrace.TracerProvider, *Client) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	client, err := NewClient(b.store, &ClientConfig{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	b.startWorker(t, &WorkerConfig{TracerProvider: tp}, func(w *Worker) { handle(w, tp) })
	return exp, tp, client
}

// TestTracingEnqueueToHandle: with a TracerProvider on the client and the
// worker, the task's record carries the enqueue span's trace context, and
// the worker's kiln.lease and kiln.handle spans are its children in the
// same trace; a span the handler starts is a child of kiln.handle. Checked
// with the SDK's in-memory exporter, on every store.
func TestTracingEnqueueToHandle(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, func(t *testing.T, b *bundle) { //nolint:thelper // the test itself, on each store
		exp, tp, client := traced(t, b, func(w *Worker, tp trace.TracerProvider) {
			w.Handle("traced", HandlerFunc(func(ctx context.Context, _ *Task) error {
				// The span is in the handler's context's values, not
				// wrapped around it: contexts derived from it register
				// with its AfterFunc (no goroutine of the context package).
				if _, ok := ctx.(interface{ AfterFunc(func()) func() bool }); !ok {
					t.Errorf("the handler's context is a %T, not the worker's own", ctx)
				}
				_, span := tp.Tracer("app").Start(ctx, "inside")
				span.End()
				return nil
			}))
		})
		ctx := waitCtx(t)
		root, rootSpan := tp.Tracer("app").Start(ctx, "request")
		r, err := client.Enqueue(root, "traced", nil, nil)
		rootSpan.End()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		rec := b.storeTask(t, r.ID())
		if !store.ValidTraceParent(rec.TraceParent) {
			t.Fatalf("the record's trace context is %q", rec.TraceParent)
		}
		var spans map[string]tracetest.SpanStub
		waitFor(t, "the spans", func() bool {
			spans = map[string]tracetest.SpanStub{}
			for _, s := range exp.GetSpans() {
				spans[s.Name] = s
			}
			return len(spans) == 5
		})
		req, enq, lease, handle, inside := spans["request"], spans[spanEnqueue], spans[spanLease], spans[spanHandle], spans["inside"]
		trace0 := req.SpanContext.TraceID()
		for _, s := range []tracetest.SpanStub{enq, lease, handle, inside} {
			if s.SpanContext.TraceID() != trace0 {
				t.Errorf("span %s is in trace %s, want %s", s.Name, s.SpanContext.TraceID(), trace0)
			}
		}
		parent := func(child, want tracetest.SpanStub) {
			t.Helper()
			if child.Parent.SpanID() != want.SpanContext.SpanID() {
				t.Errorf("the parent of %s is %s, want %s (%s)", child.Name, child.Parent.SpanID(), want.Name, want.SpanContext.SpanID())
			}
		}
		parent(enq, req)
		parent(lease, enq)
		parent(handle, enq)
		parent(inside, handle)
		if !lease.Parent.IsRemote() || !handle.Parent.IsRemote() {
			t.Error("the worker's spans do not have the enqueue's as a remote parent")
		}
		if enq.SpanKind != trace.SpanKindProducer || handle.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span kinds: enqueue %v, handle %v", enq.SpanKind, handle.SpanKind)
		}
		if want := enq.SpanContext.TraceID().String(); rec.TraceParent[3:35] != want {
			t.Errorf("record traceparent %s, want trace %s", rec.TraceParent, want)
		}
	})
}

// TestTracingOffByDefault: without a TracerProvider no trace context is
// stored, even when the caller's context has a span.
func TestTracingOffByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("app").Start(waitCtx(t), "request")
	r, err := b.client.Enqueue(ctx, "x", nil, nil)
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	if rec := b.storeTask(t, r.ID()); rec.TraceParent != "" {
		t.Errorf("trace context %q stored with tracing off", rec.TraceParent)
	}
}

// TestTracingWorkflow: a workflow enqueued with a TracerProvider is one
// kiln.enqueue span, and every task of it, the first step and the step held
// until it ends alike, is handled in that trace as the span's child.
func TestTracingWorkflow(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, func(t *testing.T, b *bundle) { //nolint:thelper // the test itself, on each store
		exp, tp, client := traced(t, b, func(w *Worker, _ trace.TracerProvider) {
			for _, ty := range []string{"wf-first", "wf-second"} {
				w.Handle(ty, HandlerFunc(func(context.Context, *Task) error { return nil }))
			}
		})
		ctx := waitCtx(t)
		root, rootSpan := tp.Tracer("app").Start(ctx, "request")
		r, err := client.EnqueueWorkflow(root, Chain(NewSignature("wf-first"), NewSignature("wf-second")), nil)
		rootSpan.End()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Get(ctx, nil); err != nil {
			t.Fatal(err)
		}
		var enq []tracetest.SpanStub
		var handles []tracetest.SpanStub
		waitFor(t, "the spans", func() bool {
			enq, handles = nil, nil
			for _, s := range exp.GetSpans() {
				switch s.Name {
				case spanEnqueue:
					enq = append(enq, s)
				case spanHandle:
					handles = append(handles, s)
				}
			}
			return len(handles) == 2
		})
		if len(enq) != 1 {
			t.Fatalf("%d enqueue spans, want 1 for the workflow", len(enq))
		}
		trace0 := enq[0].SpanContext.TraceID()
		for _, h := range handles {
			if h.SpanContext.TraceID() != trace0 || h.Parent.SpanID() != enq[0].SpanContext.SpanID() {
				t.Errorf("handle span in trace %s with parent %s, want trace %s and the workflow's enqueue span %s",
					h.SpanContext.TraceID(), h.Parent.SpanID(), trace0, enq[0].SpanContext.SpanID())
			}
		}
	})
}
