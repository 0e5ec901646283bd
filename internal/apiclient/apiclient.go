// Package apiclient is the small HTTP client of kiln's native API (see
// docs/api.md) that store/remote and the kiln command line share: one pooled,
// keep-alive http.Client, JSON in and out, and the server's error objects
// turned back into Go errors that match the store's sentinels.
//
// It is internal: its methods follow the routes one to one and carry no
// policy (no retries, no handshake); the callers add that.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// RequestTimeoutDefault bounds a request that does not wait on the
	// server (every route but the long polls).
	RequestTimeoutDefault = 30 * time.Second
	// LongPollSlack is added to the wait of a long-poll request to make its
	// whole timeout: the server answers when the wait ends, and the slack
	// covers the trip and a busy server.
	LongPollSlack = 15 * time.Second
	// MaxResponseBytes caps a response body the client reads (a full batch
	// of 10000 tasks with 1 MiB payloads is not a sane answer; 256 MiB is
	// far above any real one).
	MaxResponseBytes = 256 << 20
	// AnswerGrace is how long a Request.KeepAnswer request waits, once its
	// context ended, for an answer to start arriving before it is
	// cancelled.
	AnswerGrace = 250 * time.Millisecond
)

// NewHTTPClient returns the pooled, keep-alive http.Client kiln's clients use
// by default: connections are reused across requests (up to 256 idle per
// host, for workers with many goroutines), dials and TLS handshakes are
// bounded, and there is no overall client timeout, because each request
// carries its own deadline (long polls wait longer than other calls).
func NewHTTPClient() *http.Client { return NewHTTPClientTLS(nil) }

// NewHTTPClientTLS is NewHTTPClient with tc as the TLS configuration of
// https:// URLs (nil: Go's defaults, the system's roots).
func NewHTTPClientTLS(tc *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: tr}
}

// LoadCAFile returns a TLS configuration (TLS 1.2 or later) that trusts the
// CA certificates of a PEM file, and only them: the system's roots are not
// used.
func LoadCAFile(path string) (*tls.Config, error) {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the CA file is the user's own setting
	if err != nil {
		return nil, fmt.Errorf("CA certificate file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA certificate file %s: no PEM certificate in it", path)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Client calls one kiln server. It is safe for concurrent use.
type Client struct {
	base    string // scheme://host[:port][/prefix], without a trailing slash
	hc      *http.Client
	timeout time.Duration
	agent   string

	mu    sync.RWMutex
	token string
}

// Config configures a Client. The zero value means every default.
type Config struct {
	// HTTPClient sends the requests; nil means NewHTTPClient().
	HTTPClient *http.Client
	// Token is the bearer token sent with every request that names none
	// of its own; empty sends none.
	Token string
	// RequestTimeout bounds each request that is not a long poll; 0 means
	// RequestTimeoutDefault.
	RequestTimeout time.Duration
	// UserAgent is sent as User-Agent; empty means "kiln".
	UserAgent string
}

// New returns a client of the server at rawURL (http or https, with an
// optional path prefix).
func New(rawURL string, cfg *Config) (*Client, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	base, err := ParseBaseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient()
	}
	if c.RequestTimeout < 0 {
		return nil, fmt.Errorf("apiclient: request timeout %s is negative", c.RequestTimeout)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = RequestTimeoutDefault
	}
	if c.UserAgent == "" {
		c.UserAgent = "kiln"
	}
	return &Client{base: base, hc: c.HTTPClient, timeout: c.RequestTimeout, agent: c.UserAgent, token: c.Token}, nil
}

// ParseBaseURL checks a server URL and returns it without a trailing slash.
// A URL without a scheme ("127.0.0.1:7878") gets http://.
func ParseBaseURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", errors.New("no server URL")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("server URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("server URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("server URL %q: no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("server URL %q: must not have a query, fragment or user info", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// BaseURL returns the server's URL as the client uses it.
func (c *Client) BaseURL() string { return c.base }

// HTTPClient returns the http.Client the client sends with.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// SetToken replaces the default bearer token.
func (c *Client) SetToken(tok string) {
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
}

// Token returns the default bearer token.
func (c *Client) Token() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.token
}

// Request is one call of the API.
type Request struct {
	Method string
	// Path is the URL path below the base URL, with each variable part
	// already escaped (use Path or url.PathEscape).
	Path string
	// Query is added to the URL.
	Query url.Values
	// Body, when not nil, is sent as JSON.
	Body any
	// RawBody, when not nil, is sent as it is with ContentType (one of the
	// binary media types of the worker routes) instead of Body.
	RawBody     []byte
	ContentType string
	// Accept, when set, is sent as the Accept header instead of
	// "application/json" (to ask for a binary answer; the server may still
	// answer JSON, and errors are always JSON).
	Accept string
	// Token, when set, is the bearer token of this request instead of the
	// client's.
	Token string
	// NoAuth sends no Authorization header at all.
	NoAuth bool
	// TraceParent, when set, is sent as the W3C traceparent header (the
	// caller's client span).
	TraceParent string
	// Wait, for a long poll, is how long the server may hold the request;
	// the request's timeout is then Wait + LongPollSlack.
	Wait time.Duration
	// KeepAnswer is for a request whose answer must not be lost once the
	// server sent it (a lease: the server has leased its tasks to this
	// client). When the caller's ctx ends, the request is given
	// AnswerGrace for its answer to start arriving (one the server wrote
	// just before may be on its way) and is cancelled only if none does;
	// an answer that started to arrive is read to its end, bounded by the
	// request's own timeout, whatever happens to ctx.
	KeepAnswer bool
}

// Path joins escaped path segments under "/": Path("v1", "projects", p)
// gives "/v1/projects/<p escaped>".
func Path(segs ...string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// Raw receives a successful answer as it is, when passed to Do as out: its
// media type (without parameters), its header and its whole body.
type Raw struct {
	ContentType string
	Header      http.Header
	Body        []byte
}

// Do sends r and decodes a successful answer's JSON into out (unless out is
// nil or the answer has no body); a *Raw out gets the answer undecoded. A non-2xx answer gives an *Error; a
// request that never got an answer gives a *TransportError.
func (c *Client) Do(ctx context.Context, r Request, out any) error {
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // the body was read to its end or dropped
	body := io.LimitReader(resp.Body, MaxResponseBytes)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(r, resp.StatusCode, body)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, body) // drain so the connection is reused
		return nil
	}
	if raw, ok := out.(*Raw); ok {
		b, err := io.ReadAll(body)
		if err != nil {
			return &TransportError{Method: r.Method, Path: r.Path, Err: fmt.Errorf("read answer: %w", err)}
		}
		raw.Body, raw.Header = b, resp.Header
		raw.ContentType, _, _ = strings.Cut(resp.Header.Get("Content-Type"), ";")
		raw.ContentType = strings.TrimSpace(raw.ContentType)
		return nil
	}
	dec := json.NewDecoder(body)
	if err := dec.Decode(out); err != nil {
		return &TransportError{Method: r.Method, Path: r.Path, Err: fmt.Errorf("decode answer: %w", err)}
	}
	_, _ = io.Copy(io.Discard, body) // drain so the connection is reused
	return nil
}

// Stream sends r and returns the open answer for the caller to read (the
// event stream). A non-2xx answer gives an *Error and no response. The
// caller closes the body.
func (c *Client) Stream(ctx context.Context, r Request) (*http.Response, error) {
	r.Wait = -1 // no timeout beyond ctx
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer func() { _ = resp.Body.Close() }()
		return nil, decodeError(r, resp.StatusCode, io.LimitReader(resp.Body, 1<<20))
	}
	return resp, nil
}

func (c *Client) send(ctx context.Context, r Request) (*http.Response, error) {
	var body io.Reader
	if r.RawBody != nil {
		body = bytes.NewReader(r.RawBody)
	} else if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return nil, fmt.Errorf("apiclient: encode %s %s: %w", r.Method, r.Path, err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + r.Path
	if len(r.Query) > 0 {
		u += "?" + r.Query.Encode()
	}
	parent := ctx
	if r.KeepAnswer {
		ctx = context.WithoutCancel(ctx)
	}
	cancel := context.CancelFunc(func() {})
	switch {
	case r.Wait < 0:
	case r.Wait > 0:
		ctx, cancel = context.WithTimeout(ctx, r.Wait+LongPollSlack)
	default:
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
	}
	if r.KeepAnswer {
		var release context.CancelFunc
		ctx, release = untilAnswered(parent, ctx)
		timeout := cancel
		cancel = func() { release(); timeout() }
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("apiclient: %s %s: %w", r.Method, r.Path, err)
	}
	switch {
	case r.RawBody != nil:
		req.Header.Set("Content-Type", r.ContentType)
	case r.Body != nil:
		req.Header.Set("Content-Type", "application/json")
	}
	accept := r.Accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.agent)
	if r.TraceParent != "" {
		req.Header.Set("traceparent", r.TraceParent)
	}
	if !r.NoAuth {
		tok := r.Token
		if tok == "" {
			tok = c.Token()
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		if r.KeepAnswer && parent.Err() != nil {
			err = parent.Err() // the caller's end, as without KeepAnswer
		}
		return nil, &TransportError{Method: r.Method, Path: r.Path, Err: WrapCertError(req.URL.Hostname(), err)}
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// untilAnswered returns ctx made to end with parent, AnswerGrace after
// parent ends, unless the first byte of the answer to the request sent
// with it arrived by then; and a function that releases it.
func untilAnswered(parent, ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu       sync.Mutex
		answered bool
		released bool
		grace    *time.Timer
	)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() {
			mu.Lock()
			answered = true
			mu.Unlock()
		},
	})
	stop := context.AfterFunc(parent, func() {
		mu.Lock()
		defer mu.Unlock()
		if answered || released {
			return
		}
		grace = time.AfterFunc(AnswerGrace, func() {
			mu.Lock()
			defer mu.Unlock()
			if !answered {
				cancel()
			}
		})
	})
	return ctx, func() {
		stop()
		mu.Lock()
		released = true
		if grace != nil {
			grace.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// cancelBody releases the request's timer when the answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// TransportError is a request that got no answer from the server: it could
// not be sent, the connection broke, the context ended, or the answer was
// not the JSON the API promises.
type TransportError struct {
	Method, Path string
	Err          error
}

// Error returns "METHOD PATH: cause".
func (e *TransportError) Error() string { return e.Method + " " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the cause (a *url.Error, a context error, ...).
func (e *TransportError) Unwrap() error { return e.Err }
