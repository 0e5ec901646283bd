package ironapi_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
)

// TestCodeRunTraced: with the runner's TracerProvider set, a task queued
// through /2/ with a traceparent header is handled in that trace: the
// package worker's kiln.handle span is a child of the caller's span, and
// the program's run is a kiln.code.run span, child of kiln.handle, with the
// program's exit status.
func TestCodeRunTraced(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	b := setupWith(t, kilntest.Embedded(t, nil), &hosted.Config{
		WorkDir: t.TempDir(), Concurrency: 2, PollInterval: 100 * time.Millisecond,
		LeaseDuration: 900 * time.Millisecond, LeaseWait: 200 * time.Millisecond,
		Runner: &runner.Config{KillGrace: 500 * time.Millisecond}, SlotPoll: 20 * time.Millisecond,
		TracerProvider: tp,
	})
	b.mustUpload(map[string]any{"name": "exit3", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo hi\nexit 3\n")}))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequestWithContext(testenv.Context(t), http.MethodPost, b.url+"/2/projects/"+project+"/tasks",
		bytes.NewReader([]byte(`{"tasks":[{"code_name":"exit3","payload":"{}"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "OAuth "+b.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("queue: %d", res.StatusCode)
	}

	var handle, run tracetest.SpanStub
	kilntest.Eventually(t, "the kiln.handle and kiln.code.run spans", func() bool {
		handle, run = tracetest.SpanStub{}, tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			switch s.Name {
			case "kiln.handle":
				handle = s
			case "kiln.code.run":
				run = s
			}
		}
		return handle.Name != "" && run.Name != ""
	})
	if got := handle.SpanContext.TraceID().String(); got != traceID {
		t.Errorf("kiln.handle is in trace %s, want the caller's %s", got, traceID)
	}
	if got := handle.Parent.SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("kiln.handle's parent is %s, want the caller's span", got)
	}
	if run.Parent.SpanID() != handle.SpanContext.SpanID() || run.SpanContext.TraceID() != handle.SpanContext.TraceID() {
		t.Errorf("kiln.code.run's parent is %s, want kiln.handle %s", run.Parent.SpanID(), handle.SpanContext.SpanID())
	}
	attrs := map[string]any{}
	for _, kv := range run.Attributes {
		attrs[string(kv.Key)] = kv.Value.AsInterface()
	}
	if attrs["kiln.code.name"] != "exit3" || attrs["process.exit.code"] != int64(3) || attrs["kiln.project"] != project {
		t.Errorf("kiln.code.run's attributes = %v", attrs)
	}
	if run.Status.Code.String() != "Error" {
		t.Errorf("kiln.code.run's status = %v, want Error for exit status 3", run.Status)
	}
}
