// Package tracing holds the OpenTelemetry helpers that kiln's packages
// share: the kiln.enqueue span and its attributes, the W3C traceparent of
// a context, and the server span of an HTTP request (docs/metrics.md).
package tracing

import (
	"context"
	"net"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/store"
)

// SpanEnqueue is the name of the span of an enqueue.
const SpanEnqueue = "kiln.enqueue"

var traceContext propagation.TraceContext

// TraceParent returns the W3C traceparent of ctx's span, or "" when ctx
// has no valid span.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx with the remote span context of a
// traceparent; an empty or invalid one leaves ctx alone.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}

// StartEnqueue starts the span of an enqueue of inputs (a producer span,
// child of ctx's span) and sets their trace context to it: every input's
// when all, else only those that have none of their own. It returns ctx
// unchanged and a nil span when tr is nil.
func StartEnqueue(ctx context.Context, tr trace.Tracer, inputs []store.TaskInput, all bool) (context.Context, trace.Span) {
	if tr == nil {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{attribute.String("messaging.system", "kiln"), attribute.Int("messaging.batch.message_count", len(inputs))}
	if len(inputs) == 1 {
		attrs = append(attrs, attribute.String("messaging.message.id", inputs[0].ID),
			attribute.String("messaging.destination.name", inputs[0].Queue), attribute.String("kiln.task.type", inputs[0].Type))
	}
	ctx, span := tr.Start(ctx, SpanEnqueue, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if tp := TraceParent(ctx); tp != "" {
		for i := range inputs {
			if all || inputs[i].TraceParent == "" {
				inputs[i].TraceParent = tp
			}
		}
	}
	return ctx, span
}

// End ends span (nil: nothing) with err as its status.
func End(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// StartServer starts the server span of an HTTP request, child of the
// span of the request's W3C traceparent header when it has a valid one,
// and returns r with a context that carries it. Its name is the method
// until EndServer names the route. Its attributes are the method, the
// scheme and the client's address: never the path, the query or a header
// (they may hold ids and tokens).
func StartServer(tr trace.Tracer, r *http.Request) (*http.Request, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", r.Method),
		attribute.String("url.scheme", scheme),
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		attrs = append(attrs, attribute.String("client.address", host))
	}
	ctx, span := tr.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return r.WithContext(ctx), span
}

// EndServer names span after the route pattern the request matched (as
// the mux set it in r.Pattern: "POST /v1/projects/{p}/tasks"; the method
// alone when no route matched), records the status and ends it; a 5xx
// status is an error.
func EndServer(span trace.Span, r *http.Request, status int) {
	if p := r.Pattern; p != "" {
		route := p
		if i := strings.IndexByte(p, ' '); i >= 0 {
			route = p[i+1:]
		}
		if i := strings.IndexByte(route, '/'); i > 0 { // a host in the pattern: not kiln's
			route = route[i:]
		}
		span.SetName(r.Method + " " + route)
		span.SetAttributes(attribute.String("http.route", route))
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
