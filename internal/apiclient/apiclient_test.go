package apiclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseBaseURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.0.0.1:7878":           "http://127.0.0.1:7878",
		"http://h:1/":              "http://h:1",
		"https://h/prefix/":        "https://h/prefix",
		" http://h ":               "http://h",
		"":                         "",
		"ftp://h":                  "",
		"http://":                  "",
		"http://h/?q=1":            "",
		"http://user:pw@h":         "",
		"http://h/#frag":           "",
		"http://[::1]:7878/kiln/x": "http://[::1]:7878/kiln/x",
	} {
		got, err := ParseBaseURL(in)
		if want == "" {
			if err == nil {
				t.Errorf("ParseBaseURL(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseBaseURL(%q) = (%q, %v), want %q", in, got, err, want)
		}
	}
	if got, want := Path("v1", "projects", "a/b", "tasks:batchGet"), "/v1/projects/a%2Fb/tasks:batchGet"; got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
}

// TestErrors: the catalogue's objects match their sentinels and validation
// errors; an answer without an object (a proxy's page) gets a code from its
// status.
func TestErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/object":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":{"code":"lease_lost","message":"gone"}}`))
		case "/field":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"code":"invalid_option","message":"-1 is negative","field":"priority"}}`))
		case "/proxy":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>bad gateway</html>"))
		case "/garbage":
			_, _ = w.Write([]byte("{not json"))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, &Config{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.HTTPClient().CloseIdleConnections()
	err = c.Do(t.Context(), Request{Method: http.MethodGet, Path: "/object"}, nil)
	if !errors.Is(err, store.ErrLeaseLost) || CodeOf(err) != wire.CodeLeaseLost {
		t.Errorf("object: got %v (code %q)", err, CodeOf(err))
	}
	err = c.Do(t.Context(), Request{Method: http.MethodGet, Path: "/field"}, nil)
	var ve *store.ValidationError
	if !errors.Is(err, store.ErrInvalidOption) || !errors.As(err, &ve) || ve.Field != "priority" {
		t.Errorf("field: got %v", err)
	}
	err = c.Do(t.Context(), Request{Method: http.MethodGet, Path: "/proxy"}, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code() != wire.CodeStoreUnavailable || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("proxy: got %v", err)
	}
	var out map[string]any
	err = c.Do(t.Context(), Request{Method: http.MethodGet, Path: "/garbage"}, &out)
	var te *TransportError
	if !errors.As(err, &te) {
		t.Errorf("garbage: got %v, want a *TransportError", err)
	}
}

// TestKeepAnswer: a KeepAnswer request is ended by its context while it
// waits for the answer (with the context's error, and the server sees the
// request go), but once the answer has started to arrive it is read to its
// end whatever happens to the context.
func TestKeepAnswer(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	serverSawEnd := make(chan struct{}, 1)
	proceed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/wait":
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				serverSawEnd <- struct{}{}
			case <-time.After(30 * time.Second):
			}
		case "/slow":
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("first half, "))
			_ = http.NewResponseController(w).Flush()
			select {
			case <-proceed:
			case <-time.After(30 * time.Second):
			}
			_, _ = w.Write([]byte("second half"))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.HTTPClient().CloseIdleConnections()
	req := func(path string) Request {
		return Request{Method: http.MethodPost, Path: path, Body: map[string]int{"x": 1}, Wait: 20 * time.Second, KeepAnswer: true}
	}

	// Cancelled while waiting.
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	if err := c.Do(ctx, req("/wait"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while waiting: %v, want %v", err, context.Canceled)
	}
	select {
	case <-serverSawEnd:
	case <-time.After(30 * time.Second):
		t.Error("the server did not see the cancelled request go")
	}

	// Deadline while waiting.
	dctx, dcancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer dcancel()
	if err := c.Do(dctx, req("/wait"), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline while waiting: %v, want %v", err, context.DeadlineExceeded)
	}

	// Cancelled once the answer started to arrive: it is read in full.
	actx, acancel := context.WithCancel(t.Context())
	defer acancel()
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotFirstResponseByte: func() {
		acancel()
		close(proceed)
	}})
	var raw Raw
	if err := c.Do(actx, req("/slow"), &raw); err != nil || string(raw.Body) != "first half, second half" {
		t.Errorf("cancelled after the first byte: %q, %v; want the whole answer", raw.Body, err)
	}
	if actx.Err() == nil {
		t.Error("the context was not cancelled")
	}
}
