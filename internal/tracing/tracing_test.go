package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/tracing"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServerSpanNames: a server span takes the matched route (method and
// template) as its name, the method alone without a route, and the
// header's span as its parent; an invalid header starts a new trace; a 5xx
// is an error, a 4xx is not.
func TestServerSpanNames(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("test")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("/any/", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	serve := func(method, path, traceparent string) {
		r := httptest.NewRequest(method, path, nil)
		if traceparent != "" {
			r.Header.Set("traceparent", traceparent)
		}
		r, span := tracing.StartServer(tr, r)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		tracing.EndServer(span, r, w.Code)
	}
	serve("GET", "/v1/things/secret-id-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	serve("POST", "/any/thing", "00-nope")
	serve("GET", "/nothing", "")
	spans := exp.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	if s := spans[0]; s.Name != "GET /v1/things/{id}" || s.Parent.SpanID().String() != "00f067aa0ba902b7" ||
		s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Status.Code.String() != "Error" || s.SpanKind != trace.SpanKindServer {
		t.Errorf("the routed span: %q parent %v trace %v status %v kind %v", s.Name, s.Parent.SpanID(), s.SpanContext.TraceID(), s.Status, s.SpanKind)
	}
	if s := spans[1]; s.Name != "POST /any/" || s.Parent.IsValid() || s.Status.Code.String() == "Error" {
		t.Errorf("the span of a method-less pattern with a bad header: %q parent %v status %v", s.Name, s.Parent, s.Status)
	}
	if s := spans[2]; s.Name != "GET" {
		t.Errorf("an unmatched request's span is %q, want GET", s.Name)
	}
}

// TestStartEnqueue: the enqueue span sets the trace context of every task
// (all), or of those without one; without a tracer nothing changes.
func TestStartEnqueue(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	const own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, all := range []bool{false, true} {
		in := []store.TaskInput{{ID: "a"}, {ID: "b", TraceParent: own}}
		ctx, span := tracing.StartEnqueue(context.Background(), tp.Tracer("test"), in, all)
		tracing.End(span, nil)
		want := tracing.TraceParent(ctx)
		if want == "" || in[0].TraceParent != want {
			t.Errorf("all=%v: the first task's trace context %q, want the span's %q", all, in[0].TraceParent, want)
		}
		if wantOwn := map[bool]string{false: own, true: want}[all]; in[1].TraceParent != wantOwn {
			t.Errorf("all=%v: the second task's trace context %q, want %q", all, in[1].TraceParent, wantOwn)
		}
	}
	in := []store.TaskInput{{ID: "a"}}
	ctx, span := tracing.StartEnqueue(context.Background(), nil, in, true)
	if span != nil || ctx != context.Background() || in[0].TraceParent != "" {
		t.Error("without a tracer StartEnqueue changed something")
	}
	tracing.End(nil, nil) // no span: nothing
}
