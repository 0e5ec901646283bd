package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/server"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestTraceParentOverHTTP: a task takes its trace context from its
// options (checked) or from the request's traceparent header, answers
// carry it, and a lease answer holding it goes in binary only to a client
// that says it reads it (trace=1); others get JSON.
func TestTraceParentOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	var bad wire.EnqueueResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok,
		wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{TraceParent: "00-nope"}}}}, &bad)
	if e := bad.Tasks[0].Error; e == nil || e.Code != wire.CodeInvalidOption || e.Field != "traceparent" {
		t.Fatalf("a bad traceparent gives %+v, want invalid_option on traceparent", bad.Tasks[0])
	}

	body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t"}}})
	status, resp := b.ts.Do(t, "POST", "/v1/projects/p/tasks", http.Header{
		"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}, "Traceparent": {testTraceParent},
	}, bytes.NewReader(body))
	var er wire.EnqueueResponse
	if status != http.StatusOK || json.Unmarshal(resp, &er) != nil || len(er.Tasks) != 1 {
		t.Fatalf("enqueue = %d %s", status, resp)
	}
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+er.Tasks[0].ID, tok, nil, &task)
	if task.TraceParent != testTraceParent {
		t.Fatalf("task traceparent = %q, want the header's", task.TraceParent)
	}

	lease := func(accept string) (string, []byte) {
		t.Helper()
		lb, _ := json.Marshal(wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000})
		req, err := http.NewRequestWithContext(testenv.Context(t), "POST", b.ts.URL+"/v1/projects/p/lease", bytes.NewReader(lb))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", accept)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		data, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("lease = %s %s", res.Status, data)
		}
		return res.Header.Get("Content-Type"), data
	}
	ct, data := lease(wirebin.TasksType + ", application/json;q=0.5")
	if !strings.HasPrefix(ct, "application/json") || !bytes.Contains(data, []byte(testTraceParent)) {
		t.Fatalf("a client without trace=1 got %s %s, want JSON with the trace context", ct, data)
	}
	var lr wire.LeaseResponse
	if err := json.Unmarshal(data, &lr); err != nil || len(lr.Tasks) != 1 {
		t.Fatalf("lease answer %s: %v", data, err)
	}
	// Hand it back, then lease again as a client that reads traces.
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: []wire.Outcome{{ID: lr.Tasks[0].ID, LeaseID: lr.Tasks[0].LeaseID, Kind: "release", NotStarted: true}}}, nil)
	ct, data = lease(wirebin.TasksType + ";trace=1, application/json;q=0.5")
	if ct != wirebin.TasksType {
		t.Fatalf("a client with trace=1 got %s, want %s", ct, wirebin.TasksType)
	}
	ts, err := wirebin.DecodeTasks(data, "p")
	if err != nil || len(ts) != 1 || ts[0].TraceParent != testTraceParent {
		t.Fatalf("binary lease answer: %v %+v", err, ts)
	}
}

// tracedServer starts a server on the embedded store whose spans go to
// the returned in-memory exporter.
func tracedServer(t *testing.T) (*bundle, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return setup(t, func(c *server.Config) { c.TracerProvider = tp }), exp
}

// spanNamed returns the one span named name, failing the test otherwise.
func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		names := make([]string, len(spans))
		for i, s := range spans {
			names[i] = s.Name
		}
		t.Fatalf("%d spans named %q, want 1; spans: %q", len(found), name, names)
	}
	return found[0]
}

func spanAttr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestServerSpans: with a TracerProvider each request of the native API,
// the IronWorker API and the worker routes makes a server span named after
// its route template (never the raw path with its ids), with its status;
// an enqueue request's traceparent header is the parent of that span, whose
// child kiln.enqueue span is the task's trace context. No token, session
// key, Authorization header or query string reaches a span.
func TestServerSpans(t *testing.T) {
	t.Parallel()
	b, exp := tracedServer(t)
	tok, secret := b.project("p")
	_, sess := b.handshake("p", secret)

	body, _ := json.Marshal(wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t"}, {Type: "own", Options: &wire.TaskOptions{TraceParent: otherTraceParent}}}})
	status, resp := b.ts.Do(t, "POST", "/v1/projects/p/tasks", http.Header{
		"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}, "Traceparent": {testTraceParent},
	}, bytes.NewReader(body))
	var er wire.EnqueueResponse
	if status != http.StatusOK || json.Unmarshal(resp, &er) != nil || len(er.Tasks) != 2 {
		t.Fatalf("enqueue = %d %s", status, resp)
	}
	id := er.Tasks[0].ID
	var task, own wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+er.Tasks[1].ID, tok, nil, &own)
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", sess, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000}, nil)
	b.fail(wire.CodeNotFound, "GET", "/v1/projects/p/tasks/nope-"+id, tok, nil)
	b.fail(wire.CodeUnauthorized, "GET", "/v1/projects/p/tasks", "", nil)
	if status, _ := b.ts.Do(t, "GET", "/2/projects/p/codes?oauth="+tok, nil, nil); status != http.StatusOK {
		t.Fatalf("IronWorker codes with ?oauth= = %d", status)
	}
	if status, _ := b.ts.Do(t, "GET", "/no/such/"+id, nil, nil); status != http.StatusNotFound {
		t.Fatalf("an unknown path = %d", status)
	}

	spans := exp.GetSpans()
	want := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": testTraceParent}))
	srvSpan := spanNamed(t, spans, "POST /v1/projects/{p}/tasks")
	if srvSpan.SpanKind != trace.SpanKindServer || srvSpan.SpanContext.TraceID() != want.TraceID() || srvSpan.Parent.SpanID() != want.SpanID() {
		t.Errorf("the enqueue request's span: kind %v, trace %v, parent %v; want a server span, child of the traceparent header %v",
			srvSpan.SpanKind, srvSpan.SpanContext.TraceID(), srvSpan.Parent.SpanID(), want.SpanID())
	}
	if v, _ := spanAttr(srvSpan, "http.response.status_code"); v.AsInt64() != http.StatusOK {
		t.Errorf("http.response.status_code = %v, want 200", v.String())
	}
	if v, _ := spanAttr(srvSpan, "http.route"); v.AsString() != "/v1/projects/{p}/tasks" {
		t.Errorf("http.route = %q", v.String())
	}
	enq := spanNamed(t, spans, "kiln.enqueue")
	if enq.Parent.SpanID() != srvSpan.SpanContext.SpanID() || enq.SpanContext.TraceID() != want.TraceID() || enq.SpanKind != trace.SpanKindProducer {
		t.Errorf("kiln.enqueue: kind %v, parent %v, want a producer child of the server span %v", enq.SpanKind, enq.Parent.SpanID(), srvSpan.SpanContext.SpanID())
	}
	if wantTP := "00-" + want.TraceID().String() + "-" + enq.SpanContext.SpanID().String() + "-01"; task.TraceParent != wantTP {
		t.Errorf("the task's traceparent = %q, want the kiln.enqueue span's %q", task.TraceParent, wantTP)
	}
	if own.TraceParent != otherTraceParent {
		t.Errorf("a task with its own traceparent got %q, want it kept", own.TraceParent)
	}
	var gets []int64
	for _, s := range spans {
		if s.Name == "GET /v1/projects/{p}/tasks/{id}" {
			v, _ := spanAttr(s, "http.response.status_code")
			gets = append(gets, v.AsInt64())
		}
	}
	if !slices.Equal(gets, []int64{200, 200, 404}) {
		t.Errorf("the GET task spans have the statuses %v, want [200 200 404]", gets)
	}
	spanNamed(t, spans, "POST /v1/projects/{p}/lease")
	spanNamed(t, spans, "POST /v1/projects/{p}/workers/verify")
	spanNamed(t, spans, "GET /2/projects/{pid}/codes")
	spanNamed(t, spans, "GET /v1/projects/{p}/tasks")
	if v, _ := spanAttr(spanNamed(t, spans, "GET /v1/projects/{p}/tasks"), "http.response.status_code"); v.AsInt64() != http.StatusUnauthorized {
		t.Errorf("the refused request's status = %v, want 401", v.String())
	}
	spanNamed(t, spans, "GET") // the unknown path: the method only

	for _, s := range spans {
		texts := []string{s.Name}
		for _, kv := range s.Attributes {
			texts = append(texts, string(kv.Key)+"="+kv.Value.String())
		}
		for _, ev := range s.Events {
			texts = append(texts, ev.Name)
			for _, kv := range ev.Attributes {
				texts = append(texts, kv.Value.String())
			}
		}
		for _, x := range texts {
			for _, secret := range []string{tok, sess, adminToken, "Bearer", "oauth", "nope-"} {
				if strings.Contains(x, secret) {
					t.Errorf("span %q holds %q: %s", s.Name, secret, x)
				}
			}
			if strings.HasPrefix(s.Name, "GET ") && strings.Contains(s.Name, id) {
				t.Errorf("span %q names the raw path", s.Name)
			}
		}
	}
}

const otherTraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// TestFlowTraceParentOverHTTP: the tasks of a workflow keep the trace
// context they bring and take the request's traceparent header when they
// bring none, held tasks too; a task's bad traceparent refuses the whole
// workflow.
func TestFlowTraceParentOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	const own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req := wire.FlowRequest{ID: "wf", Spec: []byte("s"), Tasks: []wire.FlowTask{
		{ID: "wf.a", Type: "t", Queue: "default", TraceParent: own},
		{ID: "wf.b", Type: "t", Queue: "default"},
	}, Held: []wire.FlowTask{{ID: "wf.c", Type: "t", Queue: "default", After: []string{"wf.a", "wf.b"}}}}
	body, _ := json.Marshal(req)
	status, resp := b.ts.Do(t, "POST", "/v1/projects/p/workflows", http.Header{
		"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}, "Traceparent": {testTraceParent},
	}, bytes.NewReader(body))
	if status != http.StatusCreated {
		t.Fatalf("create workflow = %d %s", status, resp)
	}
	for id, want := range map[string]string{"wf.a": own, "wf.b": testTraceParent} {
		var task wire.Task
		b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id, tok, nil, &task)
		if task.TraceParent != want {
			t.Errorf("%s: traceparent %q, want %q", id, task.TraceParent, want)
		}
	}
	// The held task is not a task yet; once its tasks end, it carries the
	// header's trace context too.
	var lr wire.LeaseResponse
	b.ok(http.StatusOK, "POST", "/v1/projects/p/lease", tok, wire.LeaseRequest{Queues: []string{"default"}, Max: 2, DurationMS: 60000}, &lr)
	if len(lr.Tasks) != 2 {
		t.Fatalf("leased %d tasks, want 2", len(lr.Tasks))
	}
	var outs []wire.Outcome
	for _, tk := range lr.Tasks {
		outs = append(outs, wire.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: "succeeded"})
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/report", tok, wire.ReportRequest{Outcomes: outs}, nil)
	var held wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/wf.c", tok, nil, &held)
	if held.TraceParent != testTraceParent {
		t.Errorf("held task: traceparent %q, want the header's", held.TraceParent)
	}

	bad := wire.FlowRequest{ID: "wf2", Spec: []byte("s"), Tasks: []wire.FlowTask{{ID: "wf2.a", Type: "t", Queue: "default", TraceParent: "00-nope"}}}
	var e wire.ErrorBody
	b.ok(http.StatusBadRequest, "POST", "/v1/projects/p/workflows", tok, bad, &e)
	if e.Error == nil || e.Error.Code != wire.CodeInvalidOption || e.Error.Field != "traceparent" {
		t.Errorf("a workflow with a bad traceparent: %+v, want invalid_option on traceparent", e.Error)
	}
	b.ok(http.StatusNotFound, "GET", "/v1/projects/p/tasks/wf2.a", tok, nil, nil)
}
