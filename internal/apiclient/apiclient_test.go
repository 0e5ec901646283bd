package apiclient

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

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
