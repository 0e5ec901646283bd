package remote_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/server/api" //nolint:depguard // the tests serve the API in-process
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
)

// TestClientSpans: with a TracerProvider, a call of the remote store is a
// client span, child of the caller's, and the server's span of the request
// (its kiln.enqueue) is the client span's child, in the same trace; without
// one, no span is made and no trace context is sent (the server's span is
// the root of its own trace).
func TestClientSpans(t *testing.T) {
	t.Parallel()
	srvExp := tracetest.NewInMemoryExporter()
	srvTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(srvExp))
	t.Cleanup(func() { _ = srvTP.Shutdown(context.Background()) })
	ts := startServer(t, nil, func(c *api.Config) { c.TracerProvider = srvTP })
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	traced := ts.open(t, &remote.Config{Token: adminToken, TracerProvider: tp})
	ctx, parent := tp.Tracer("app").Start(t.Context(), "request")
	_, err := traced.Enqueue(ctx, store.EnqueueParams{Namespace: "p", Tasks: []store.TaskInput{{ID: "a", Type: "t"}}})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var client tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "kiln.remote enqueue" {
			client = s
		}
	}
	if client.SpanKind != trace.SpanKindClient || client.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("client span %q kind %v parent %s; want kiln.remote enqueue, a client span, child of the caller's %s",
			client.Name, client.SpanKind, client.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	enq := srvExp.GetSpans()
	if len(enq) != 1 || enq[0].Parent.SpanID() != client.SpanContext.SpanID() || enq[0].SpanContext.TraceID() != client.SpanContext.TraceID() {
		t.Fatalf("server spans %+v; want one, child of the client span %s", enq, client.SpanContext.SpanID())
	}

	srvExp.Reset()
	plain := ts.open(t, &remote.Config{Token: adminToken})
	if _, err := plain.Enqueue(ctx, store.EnqueueParams{Namespace: "p", Tasks: []store.TaskInput{{ID: "b", Type: "t"}}}); err != nil {
		t.Fatal(err)
	}
	if got := srvExp.GetSpans(); len(got) != 1 || got[0].Parent.IsValid() {
		t.Fatalf("server spans without a client TracerProvider: %+v; want one, the root of its trace", got)
	}
	if got := len(exp.GetSpans()); got != 2 {
		t.Errorf("%d spans on the client's provider after an untraced call, want the 2 from before", got)
	}
}
