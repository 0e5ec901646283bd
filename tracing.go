package kiln

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/store"
)

// tracerName names kiln's tracer (the instrumentation scope).
const tracerName = "github.com/kilnhq/kiln"

// The span names.
const (
	spanEnqueue = tracing.SpanEnqueue
	spanLease   = "kiln.lease"
	spanHandle  = "kiln.handle"
)

var traceContext propagation.TraceContext

// contextWithTraceParent returns ctx with the remote span context of a
// traceparent; an empty or invalid one leaves ctx alone.
func contextWithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

func taskAttrs(id, typ, queue string, attempt int) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("messaging.system", "kiln"),
		attribute.String("messaging.destination.name", queue),
		attribute.String("messaging.message.id", id),
		attribute.String("kiln.task.type", typ),
		attribute.Int("kiln.task.attempt", attempt),
	}
}

// startEnqueue starts the span of an enqueue of inputs and sets their trace
// context to it. It returns ctx unchanged and a nil span without a tracer.
func startEnqueue(ctx context.Context, tr trace.Tracer, inputs []store.TaskInput) (context.Context, trace.Span) {
	return tracing.StartEnqueue(ctx, tr, inputs, true)
}

// endSpan ends span (nil: nothing) with err as its status.
func endSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceLease records the lease of t, from start to now, as a span whose
// parent is the task's enqueue span.
func traceLease(tr trace.Tracer, t *store.Task, start time.Time) {
	ctx := contextWithTraceParent(context.Background(), t.TraceParent)
	_, span := tr.Start(ctx, spanLease, trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(taskAttrs(t.ID, t.Type, t.Queue, t.Attempt)...))
	span.End()
}

// startHandle starts the span of one attempt, child of the task's enqueue
// span; the handler's context carries it.
func startHandle(ctx context.Context, tr trace.Tracer, t *Task, tp string) (context.Context, trace.Span) {
	ctx = contextWithTraceParent(ctx, tp)
	return tr.Start(ctx, spanHandle, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(taskAttrs(t.ID, t.Type, t.Queue, t.Attempt)...))
}
