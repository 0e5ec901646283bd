package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// TestHugeMillisecondsAreRefused sends *_ms values that do not fit a
// duration (2^62 ms once became "no timeout" and 2^62+1000 a 1 s timeout)
// and negative ones in every request that takes them: each is
// invalid_option naming its field, and nothing is enqueued.
func TestHugeMillisecondsAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	huge := []int64{1 << 62, 1<<62 + 1000, math.MaxInt64, math.MinInt64, -(1 << 62)}
	for _, field := range []string{"timeout_ms", "process_in_ms", "unique_ttl_ms", "retention_ms"} {
		for _, v := range append(huge, -1) {
			opts := fmt.Sprintf(`{%q:%d}`, field, v)
			if field == "unique_ttl_ms" {
				opts = fmt.Sprintf(`{"unique_key":"k",%q:%d}`, field, v)
			}
			var res wire.EnqueueResponse
			b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok, `{"tasks":[{"type":"t","options":`+opts+`}]}`, &res)
			if len(res.Tasks) != 1 || res.Tasks[0].Error == nil || res.Tasks[0].Error.Code != wire.CodeInvalidOption {
				t.Errorf("enqueue with %s = %d: %+v, want invalid_option", field, v, res.Tasks)
				continue
			}
			e := res.Tasks[0].Error
			if v != -1 && e.Field != field {
				t.Errorf("enqueue with %s = %d: field %q (%s), want %q", field, v, e.Field, e.Message, field)
			}
			if e.Field == "" {
				t.Errorf("enqueue with %s = %d: no field in %+v", field, v, e)
			}
			// The same option in a schedule's task.
			sched := `{"task":{"type":"t","options":` + opts + `},"every_ms":1000}`
			if v != -1 || field == "timeout_ms" {
				msg := b.fail(wire.CodeInvalidOption, "POST", "/v1/projects/p/schedules", tok, sched)
				if msg == "" {
					t.Errorf("schedule with %s = %d: empty message", field, v)
				}
			}
		}
	}
	if n := b.counts("p"); n != 0 {
		t.Errorf("%d tasks were enqueued, want none", n)
	}
	for _, v := range huge {
		for _, rq := range []struct{ path, body, field string }{
			{"/v1/projects/p/lease", fmt.Sprintf(`{"queues":["q"],"max":1,"duration_ms":%d}`, v), "duration_ms"},
			{"/v1/projects/p/lease", fmt.Sprintf(`{"queues":["q"],"max":1,"duration_ms":1000,"wait_ms":%d}`, v), "wait_ms"},
			{"/v1/projects/p/extend", fmt.Sprintf(`{"leases":[{"id":"x","lease_id":"1"}],"duration_ms":%d}`, v), "duration_ms"},
		} {
			status, body := b.do("POST", rq.path, tok, rq.body)
			if status != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_option"`) || !strings.Contains(string(body), `"field":"`+rq.field+`"`) {
				t.Errorf("POST %s %s = %d %s, want 400 invalid_option naming %s", rq.path, rq.body, status, body, rq.field)
			}
		}
	}
}

// TestExpectContinueOversizedBody sends requests that declare a body
// larger than the route's cap and wait for "100 Continue" before sending
// it, on a raw connection: the server answers 413 with the catalogue code
// (IronWorker: its {"msg"}) at once, without asking for the body, so the
// client never sends it and sees no reset.
func TestExpectContinueOversizedBody(t *testing.T) { //nolint:tparallel // the rows share one server, then the test sends the same through net/http's client: they run in order
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	addr := strings.TrimPrefix(b.ts.URL, "http://")
	for _, tc := range []struct {
		name, path, auth, contentType string
		length                        int64
		want                          string
	}{
		{"native enqueue", "/v1/projects/p/tasks", "Bearer " + tok, "application/json", 100 << 20, `"code":"body_too_large"`},
		{"native bodiless route", "/v1/projects/p/worker-secret", "Bearer " + tok, "application/json", 1 << 20, `"code":"body_too_large"`},
		{"IronWorker queue", "/2/projects/p/tasks", "OAuth " + tok, "application/json", 100 << 20, `"msg":"Request body too large`},
		{"IronWorker upload", "/2/projects/p/codes", "OAuth " + tok, "multipart/form-data; boundary=x", 1 << 40, `"msg":"Request body too large`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			// A generous guard against a server that waits for the body.
			if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: kiln\r\nAuthorization: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
				tc.path, tc.auth, tc.contentType, tc.length)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), tc.want) {
				t.Errorf("POST %s with Content-Length %d and Expect: 100-continue = %d %s, want 413 with %s", tc.path, tc.length, resp.StatusCode, body, tc.want)
			}
		})
	}
	// The same through net/http's client, which waits for the answer to
	// the Expect header before it sends the body: a 413, not an error.
	big := io.LimitReader(zeros{}, 100<<20)
	req, err := http.NewRequestWithContext(t.Context(), "POST", b.ts.URL+"/v1/projects/p/tasks", big)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 100 << 20
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{ExpectContinueTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("net/http client: %v, want a 413 answer", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), `"code":"body_too_large"`) {
		t.Errorf("net/http client = %d %s, want 413 body_too_large", resp.StatusCode, body)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// openStream opens project p's event stream with tok. It returns the open
// stream's body (200; closed at cleanup, or earlier by the caller) or nil
// and the status, Retry-After and error code of a refusal.
func (b *bundle) openStream(p, tok string) (stream io.Closer, status int, retryAfter, code string) {
	b.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", b.ts.URL+"/v1/projects/"+p+"/events", nil)
	if err != nil {
		cancel()
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	r, err := b.ts.Client().Do(req)
	if err != nil {
		cancel()
		b.t.Fatal(err)
	}
	if r.StatusCode == http.StatusOK {
		r.Body = &cancelOnClose{r.Body, cancel}
		b.t.Cleanup(func() { _ = r.Body.Close() })
		return r.Body, r.StatusCode, "", ""
	}
	defer cancel()
	defer func() { _ = r.Body.Close() }()
	var eb wire.ErrorBody
	if err := json.NewDecoder(r.Body).Decode(&eb); err != nil || eb.Error == nil {
		b.t.Fatalf("events = %d without an error object (%v)", r.StatusCode, err)
	}
	return nil, r.StatusCode, r.Header.Get("Retry-After"), eb.Error.Code
}

// cancelOnClose cancels the request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	c.cancel()
	return c.ReadCloser.Close()
}

// waitStreams waits (bounded) until the server has n event streams open.
func (b *bundle) waitStreams(n int) {
	b.t.Helper()
	kilntest.Eventually(b.t, fmt.Sprintf("%d event streams open", n), func() bool { return b.srv.API().EventStreams() == n })
}

// TestEventStreamCaps opens event streams up to the caps of a project and
// of the server: one more is refused with 429 too_many_streams and
// Retry-After, a closed stream frees its slot, and result waits do not
// count.
func TestEventStreamCaps(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxStreams = 3; c.MaxProjectStreams = 2 })
	tokP, _ := b.project("p")
	tokQ, _ := b.project("q")
	refused := func(p, tok, why string) {
		t.Helper()
		stream, status, retry, code := b.openStream(p, tok)
		if stream != nil || status != http.StatusTooManyRequests || code != wire.CodeTooManyStreams || retry == "" {
			t.Fatalf("%s: events of %s = %d %q (Retry-After %q), want 429 too_many_streams with Retry-After", why, p, status, code, retry)
		}
	}
	opened := func(p, tok, why string) io.Closer {
		t.Helper()
		stream, status, _, code := b.openStream(p, tok)
		if stream == nil {
			t.Fatalf("%s: events of %s = %d %s, want 200", why, p, status, code)
		}
		return stream
	}
	p1 := opened("p", tokP, "first of p")
	opened("p", tokP, "second of p")
	refused("p", tokP, "third of p (project cap 2)")
	opened("q", tokQ, "first of q")
	refused("q", tokQ, "second of q (server cap 3)")
	var st wire.ServerStats
	b.ok(http.StatusOK, "GET", "/v1/stats", adminToken, nil, &st)
	if st.EventStreams != 3 {
		t.Errorf("stats: event_streams = %d, want 3", st.EventStreams)
	}
	// Result waits are not streams: they work with every slot taken.
	id := b.enqueue("p", tokP, wire.TaskRequest{Type: "t"})
	b.ok(http.StatusOK, "GET", "/v1/projects/p/tasks/"+id+"/result?wait_ms=10", tokP, nil, nil)
	_ = p1.Close()
	b.waitStreams(2)
	opened("q", tokQ, "second of q after one of p closed")
	refused("p", tokP, "p again, with the server full")
}

// TestEventStreamDropsStuckClient opens an event stream on a raw
// connection that never reads and publishes large events: once the socket
// buffers are full, a write waits StreamWriteTimeout and the server drops
// the client, freeing the project's only slot for a new stream; the events
// the stuck client missed were dropped and counted.
func TestEventStreamDropsStuckClient(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) {
		c.MaxProjectStreams = 1
		c.StreamWriteTimeout = 200 * time.Millisecond
		c.EventBuffer = 4
	})
	tok, _ := b.project("p")
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(b.ts.URL, "http://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := fmt.Fprintf(conn, "GET /v1/projects/p/events HTTP/1.1\r\nHost: kiln\r\nAuthorization: Bearer %s\r\n\r\n", tok); err != nil {
		t.Fatal(err)
	}
	// It never reads a byte.
	b.waitStreams(1)
	if stream, status, _, code := b.openStream("p", tok); stream != nil || code != wire.CodeTooManyStreams {
		t.Fatalf("a second stream while the stuck one holds the slot = %d %s, want 429 too_many_streams", status, code)
	}
	big := strings.Repeat("x", 64<<10)
	kilntest.Eventually(t, "the stuck client to lose its stream once its socket filled up", func() bool {
		for range 20 {
			b.srv.API().Publish(wire.Event{Kind: "task.progress", Project: "p", TaskID: "x", Message: big})
		}
		return b.srv.API().EventStreams() == 0
	})
	if b.srv.API().EventsDropped() == 0 {
		t.Error("no event was dropped for the stuck client")
	}
	stream, status, _, code := b.openStream("p", tok)
	if stream == nil {
		t.Fatalf("a new stream after the stuck one was dropped = %d %s, want 200", status, code)
	}
	_ = stream.Close()
}
