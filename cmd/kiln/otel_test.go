package main

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kilnhq/kiln/internal/testenv"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes the protobuf
// export requests sent to /v1/traces and keeps their spans.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	service []string // service.name of each batch of spans
	headers []string // the Authorization headers it was sent, if any
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want a POST of protobuf to /v1/traces", http.StatusBadRequest)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		name := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				name = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
			o.service = append(o.service, name)
		}
	}
	o.headers = append(o.headers, r.Header.Get("Authorization"))
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// TestServerOTLPExporter runs the real `kiln server --otel-exporter otlp`
// (this test binary as kiln) with OTEL_EXPORTER_OTLP_ENDPOINT naming a
// receiver started here, enqueues a code package's task over the API with
// a traceparent header, lets the server's runner run it, and stops the
// server with SIGTERM: the receiver got, in the header's trace, the
// request's server span, kiln.enqueue as its child, and kiln.lease,
// kiln.handle (children of kiln.enqueue) and kiln.code.run (child of
// kiln.handle), from service kiln; the same for a task queued through the
// IronWorker API; the last spans are sent at the stop.
func TestServerOTLPExporter(t *testing.T) {
	t.Parallel()
	recv := &otlpReceiver{}
	col := httptest.NewServer(recv)
	t.Cleanup(col.Close)

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var logs testenv.Buffer
	cmd := exec.Command(os.Args[0], // the test binary as kiln; stop ends it with SIGTERM
		"server", "--addr", addr, "--data", data, "--sweep-interval=-1s",
		"--sandbox", "off", "--otel-exporter", "otlp")
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0", "KILN_BOOTSTRAP_TOKEN="+testAdminToken,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+col.URL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_SERVICE_NAME=", "OTEL_TRACES_SAMPLER=")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Errorf("kiln server: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log:\n%s", logs.String())
		}
	})
	s := &cliServer{url: "http://" + addr}
	testenv.Eventually(t, "the server to answer", func() bool {
		code, _, _ := s.kiln(t, "project", "ls")
		return code == 0
	})
	pkg := t.TempDir()
	if err := os.WriteFile(filepath.Join(pkg, "run.sh"), []byte("echo traced\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustKiln(t, s, "code", "upload", pkg, "--name", "hello", "--file", "run.sh", "--runtime", "sh")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/v1/projects/default/tasks",
		strings.NewReader(`{"tasks":[{"type":"code:hello","payload_json":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enqueue = %s %s", resp.Status, b)
	}
	var id string
	if _, err := fmt.Sscanf(string(b), `{"tasks":[{"id":%q`, &id); err != nil {
		t.Fatalf("enqueue answered %s: %v", b, err)
	}
	if out := mustKiln(t, s, "task", "result", id, "--wait"); !strings.Contains(out, "succeeded") && !strings.Contains(out, `"status":"complete"`) {
		t.Fatalf("the task: %q", out)
	}
	// The same through the IronWorker API, in a second trace.
	const ironTraceID = "0af7651916cd43dd8448eb211c80319c"
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/2/projects/default/tasks",
		strings.NewReader(`{"tasks":[{"code_name":"hello","payload":"y"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "OAuth "+testAdminToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+ironTraceID+"-b7ad6b7169203331-01")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var ironID string
	if _, err := fmt.Sscanf(string(b), `{"msg":"Queued up","tasks":[{"id":%q`, &ironID); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("IronWorker queue = %s %s (%v)", resp.Status, b, err)
	}
	if out := mustKiln(t, s, "task", "result", ironID, "--wait"); !strings.Contains(out, "succeeded") && !strings.Contains(out, `"status":"complete"`) {
		t.Fatalf("the IronWorker task: %q", out)
	}
	stop() // flushes the batch

	recv.mu.Lock()
	defer recv.mu.Unlock()
	checkTrace := func(traceID, route, headerSpan string) {
		t.Helper()
		byName := map[string]*tracepb.Span{}
		for _, sp := range recv.spans {
			if hex.EncodeToString(sp.GetTraceId()) == traceID {
				if byName[sp.GetName()] != nil {
					t.Errorf("two spans named %q in the trace", sp.GetName())
				}
				byName[sp.GetName()] = sp
			}
		}
		var names []string
		for n := range byName {
			names = append(names, n)
		}
		child := func(name, parent string) {
			t.Helper()
			c, p := byName[name], byName[parent]
			if c == nil || p == nil {
				t.Fatalf("the trace %s lacks %q or %q; it has %q", traceID, name, parent, names)
			}
			if !bytes.Equal(c.GetParentSpanId(), p.GetSpanId()) {
				t.Errorf("%s's parent is %x, want %s (%x)", name, c.GetParentSpanId(), parent, p.GetSpanId())
			}
		}
		srv := byName[route]
		if srv == nil || hex.EncodeToString(srv.GetParentSpanId()) != headerSpan || srv.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Fatalf("no server span %q, child of the header's span, in %q", route, names)
		}
		child("kiln.enqueue", route)
		child("kiln.lease", "kiln.enqueue")
		child("kiln.handle", "kiln.enqueue")
		child("kiln.code.run", "kiln.handle")
	}
	checkTrace(traceID, "POST /v1/projects/{p}/tasks", "00f067aa0ba902b7")
	checkTrace(ironTraceID, "POST /2/projects/{pid}/tasks", "b7ad6b7169203331")
	for i, n := range recv.service {
		if n != "kiln" {
			t.Errorf("batch %d: service.name %q, want kiln", i, n)
		}
	}
}

// TestServerOTelExporterOption: --otel-exporter is none by default, takes
// otlp from the flag or KILN_OTEL_EXPORTER, and refuses anything else;
// none makes no tracer provider.
func TestServerOTelExporterOption(t *testing.T) {
	t.Parallel()
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	none := func(string) string { return "" }
	o, err := parseServerOptions(std, serverCommand(), nil, none)
	if err != nil || o.otelExporter != "none" {
		t.Fatalf("default: %q, %v; want none", o.otelExporter, err)
	}
	if tp, err := newTracerProvider(t.Context(), o.otelExporter); tp != nil || err != nil {
		t.Errorf("none made a tracer provider: %v %v", tp, err)
	}
	o, err = parseServerOptions(std, serverCommand(), nil, func(k string) string {
		return map[string]string{"KILN_OTEL_EXPORTER": "otlp"}[k]
	})
	if err != nil || o.otelExporter != "otlp" {
		t.Errorf("KILN_OTEL_EXPORTER=otlp: %q, %v", o.otelExporter, err)
	}
	if _, err := parseServerOptions(std, serverCommand(), []string{"--otel-exporter", "jaeger"}, none); err == nil || !strings.Contains(err.Error(), "none or otlp") {
		t.Errorf("--otel-exporter jaeger: %v, want a usage error", err)
	}
}
