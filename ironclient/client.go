// Package ironclient is a small Go client for kiln's IronWorker-compatible
// API (the routes under /2/, docs/ironworker.md): queue tasks of a code
// package, read their status and log, wait for them, cancel them, and
// schedule them. It needs nothing but the standard library.
//
//	c, err := ironclient.New(ironclient.Config{
//		URL: "http://127.0.0.1:7878", ProjectID: "default", Token: tok})
//	id, err := c.Queue(ctx, "task", map[string]string{"x": "abc"},
//		ironclient.TaskOptions{Timeout: 2 * time.Minute})
//	info, err := c.WaitForTask(ctx, id)
//	out, err := c.Log(ctx, id)
//
// Fields left empty in Config are read from the usual IronWorker
// environment variables (IRON_TOKEN, IRON_PROJECT_ID, IRON_HOST,
// IRON_SCHEME, IRON_PORT). A failed call returns an *Error carrying the
// server's HTTP status and its "msg". A Client is safe for concurrent use.
package ironclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Defaults of Config.
const (
	// HostDefault is the host used when neither Config.URL nor IRON_HOST
	// says one: a kiln server on this machine.
	HostDefault = "127.0.0.1"
	// PortDefault is kiln server's default port.
	PortDefault = "7878"
	// SchemeDefault is the scheme used when neither Config.URL nor
	// IRON_SCHEME says one.
	SchemeDefault = "http"
	// PollMinDefault is WaitForTask's first poll interval.
	PollMinDefault = 100 * time.Millisecond
	// PollMaxDefault is WaitForTask's longest poll interval.
	PollMaxDefault = 5 * time.Second
	// MaxWaitDefault bounds WaitForTask when its context has no deadline.
	MaxWaitDefault = 2 * time.Hour
	// MaxBatch is the most tasks the server takes in one request;
	// QueueBatch sends larger batches in several requests.
	MaxBatch = 1000
)

// Config configures a Client. Empty fields are read from the environment
// (see New).
type Config struct {
	// URL is the server's base URL, such as "http://127.0.0.1:7878"; a
	// bare "host:port" means http. Empty: built from IRON_SCHEME,
	// IRON_HOST and IRON_PORT (defaults http, 127.0.0.1, 7878); IRON_HOST
	// may also hold a whole URL.
	URL string
	// ProjectID is the kiln project (IronWorker project id); empty:
	// IRON_PROJECT_ID, else "default".
	ProjectID string
	// Token is a kiln token of the project; empty: IRON_TOKEN. It is sent
	// as "Authorization: OAuth <token>" and never appears in errors.
	Token string
	// HTTPClient sends the requests; nil means a client with a 60 s
	// timeout.
	HTTPClient *http.Client
	// PollMin and PollMax bound WaitForTask's poll interval, which doubles
	// from PollMin up to PollMax; defaults PollMinDefault, PollMaxDefault.
	PollMin, PollMax time.Duration
	// MaxWait bounds WaitForTask when its context has no deadline;
	// default MaxWaitDefault.
	MaxWait time.Duration
}

// Client calls the IronWorker API of one kiln server for one project.
type Client struct {
	cfg  Config
	base string // scheme://host[:port]/2/projects/<project>
	hc   *http.Client
}

// New returns a client. Empty fields of cfg are read from IRON_TOKEN,
// IRON_PROJECT_ID, IRON_HOST, IRON_SCHEME and IRON_PORT; a missing token is
// an error.
func New(cfg Config) (*Client, error) {
	return newClient(cfg, os.Getenv)
}

func newClient(cfg Config, getenv func(string) string) (*Client, error) {
	if cfg.URL == "" {
		cfg.URL = urlFromEnv(getenv)
	}
	if !strings.Contains(cfg.URL, "://") {
		cfg.URL = SchemeDefault + "://" + cfg.URL
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ironclient: URL %q: %w", cfg.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("ironclient: URL %q: want http(s)://host[:port]", cfg.URL)
	}
	if cfg.ProjectID == "" {
		cfg.ProjectID = getenv("IRON_PROJECT_ID")
	}
	if cfg.ProjectID == "" {
		cfg.ProjectID = "default"
	}
	if cfg.Token == "" {
		cfg.Token = getenv("IRON_TOKEN")
	}
	if cfg.Token == "" {
		return nil, errors.New("ironclient: no token: set Config.Token or IRON_TOKEN")
	}
	if cfg.PollMin <= 0 {
		cfg.PollMin = PollMinDefault
	}
	if cfg.PollMax < cfg.PollMin {
		cfg.PollMax = max(PollMaxDefault, cfg.PollMin)
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = MaxWaitDefault
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	base := strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/") + "/2/projects/" + url.PathEscape(cfg.ProjectID)
	return &Client{cfg: cfg, base: base, hc: hc}, nil
}

// urlFromEnv builds the base URL from IRON_SCHEME, IRON_HOST and IRON_PORT.
func urlFromEnv(getenv func(string) string) string {
	host := getenv("IRON_HOST")
	if strings.Contains(host, "://") {
		return host
	}
	if host == "" {
		host = HostDefault
	}
	scheme := getenv("IRON_SCHEME")
	if scheme == "" {
		scheme = SchemeDefault
	}
	port := getenv("IRON_PORT")
	if port == "" && getenv("IRON_HOST") == "" {
		port = PortDefault
	}
	if port != "" && !strings.Contains(host, ":") {
		host += ":" + port
	}
	return scheme + "://" + host
}

// ProjectID returns the project the client works on.
func (c *Client) ProjectID() string { return c.cfg.ProjectID }

// Error is a failed call: the server's HTTP status and message.
type Error struct {
	// Method and Path name the call (the path below /2/projects/<id>).
	Method, Path string
	// Status is the HTTP status (400, 401, 404, 405, 413, 500...).
	Status int
	// Msg is the server's "msg", or the start of its body.
	Msg string
}

func (e *Error) Error() string {
	return fmt.Sprintf("ironclient: %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Msg)
}

// IsNotFound reports whether err is the server's 404 (unknown project,
// code package, task or schedule).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// do sends a request below the project's path and decodes a 200 JSON
// answer into out (when not nil); it returns the raw body as well.
func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("ironclient: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "OAuth "+c.cfg.Token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ironclient: %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("ironclient: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode}
		var m struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(b, &m) == nil && m.Msg != "" {
			e.Msg = m.Msg
		} else {
			e.Msg = strings.TrimSpace(string(b[:min(len(b), 512)]))
		}
		return nil, e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("ironclient: %s %s: decoding the answer: %w", method, path, err)
		}
	}
	return b, nil
}

// doJSON sends in as JSON (nil: no body).
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("ironclient: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	_, err := c.do(ctx, method, path, "application/json", body, out)
	return err
}

// payloadString turns a payload into the string the API carries: a string,
// []byte or json.RawMessage as it is, nil as "", anything else as JSON.
func payloadString(p any) (string, error) {
	switch v := p.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	case json.RawMessage:
		return string(v), nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("ironclient: payload: %w", err)
	}
	return string(b), nil
}

// seconds rounds d up to whole seconds (the API's unit).
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// Code describes a code package upload (POST /codes): how the runner
// starts the program in the zip.
type Code struct {
	// Name is the package's name (1-250 of A-Z a-z 0-9 . _ : -).
	Name string `json:"name"`
	// FileName is the program in the zip, started with Runtime (sh, bash,
	// python, ruby, node, binary...); or give Command instead.
	FileName string `json:"file_name,omitempty"`
	Runtime  string `json:"runtime,omitempty"`
	Command  string `json:"command,omitempty"`
	// Config is given to every task as its -config file (at most 64 KB).
	Config string `json:"config,omitempty"`
	// EnvVars are added to each task's environment.
	EnvVars map[string]string `json:"env_vars,omitempty"`
	// MaxConcurrency caps the package's running tasks (0: no cap).
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Retries (0-10) and RetriesDelay (seconds) retry failed tasks.
	Retries      int `json:"retries,omitempty"`
	RetriesDelay int `json:"retries_delay,omitempty"`
	// DefaultPriority (0-2) is the priority of tasks queued without one.
	DefaultPriority int `json:"default_priority,omitempty"`
}

// UploadResult is the answer to an upload.
type UploadResult struct {
	ID  string `json:"id"`
	Rev int    `json:"rev"`
	Msg string `json:"msg"`
}

// UploadCode uploads zipData as a new revision of the package code.Name
// (the first upload creates it). The zip is streamed.
func (c *Client) UploadCode(ctx context.Context, code Code, zipData io.Reader) (*UploadResult, error) {
	data, err := json.Marshal(code)
	if err != nil {
		return nil, fmt.Errorf("ironclient: upload: %w", err)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := mw.WriteField("data", string(data))
		if err == nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("file", code.Name+".zip"); err == nil {
				_, err = io.Copy(fw, zipData)
			}
		}
		if err == nil {
			err = mw.Close()
		}
		_ = pw.CloseWithError(err) // nil closes normally
	}()
	var out UploadResult
	_, err = c.do(ctx, http.MethodPost, "/codes", mw.FormDataContentType(), pr, &out)
	_ = pr.Close() // ends the writer if the request stopped early
	<-done
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// BaseURL returns the URL the client's calls go below:
// <server>/2/projects/<project id>.
func (c *Client) BaseURL() string { return c.base }
