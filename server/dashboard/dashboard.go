// Package dashboard serves kiln's web dashboard: a few static files (HTML,
// JavaScript modules, CSS) embedded in the binary, a sign-in that turns a
// token into a session cookie, and a proxy that forwards the browser's
// calls to the server's own APIs (/v1/ and /2/) with the session's token.
//
// Security, in short: the session cookie is HttpOnly, SameSite=Strict and
// Secure when the server speaks TLS; the token stays on the server (the
// browser holds only a random session id); every request that changes
// something must carry the session's CSRF token in the X-CSRF-Token header
// and come from the same origin; every answer carries a strict
// Content-Security-Policy (scripts from the server's own files only: no
// inline script, no eval). The pages show values from tasks as text only.
package dashboard

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kilnhq/kiln/store"
)

//go:embed static
var staticFiles embed.FS

// Defaults of Config.
const (
	SessionTTLDefault  = 12 * time.Hour
	MaxSessionsDefault = 10000
)

// Header and cookie names.
const (
	// CSRFHeader carries the session's CSRF token on every request that
	// is not GET or HEAD.
	CSRFHeader = "X-CSRF-Token"
	// CookieName is the session cookie's name over plain HTTP; over TLS
	// it is SecureCookieName (the __Host- prefix binds it to the host).
	CookieName       = "kiln_session"
	SecureCookieName = "__Host-kiln_session"
)

// CSP is the Content-Security-Policy of every page and file of the
// dashboard: scripts, styles and connections only from the server itself.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// apiCSP is the policy of the answers the proxy forwards (JSON, logs,
// downloads): nothing in them may run, even when opened as a page.
const apiCSP = "default-src 'none'; sandbox; frame-ancestors 'none'"

// Config configures a Handler. Backend is required.
type Config struct {
	// Backend serves the APIs the proxy forwards to: /v1/... and /2/...
	// (the server's own handlers, called in the same process).
	Backend http.Handler
	// Identify tells whether a token is an admin token (for the pages
	// that only admins may use); nil: every session is shown as a project
	// token's (the API still decides what each token may do).
	Identify func(ctx context.Context, token string) (admin bool, project string, err error)
	// Secure marks the session cookie Secure (and names it
	// SecureCookieName): set it when the server speaks TLS.
	Secure bool
	// SessionTTL is how long a session lasts after its sign-in; default
	// SessionTTLDefault (12 h).
	SessionTTL time.Duration
	// MaxSessions caps the sessions kept at once; signing in beyond it
	// drops the oldest. Default MaxSessionsDefault.
	MaxSessions int
	// Meta, when set, keeps the sessions as records of a store, in
	// MetaNamespace, so that every server sharing the store knows them (a
	// load balancer may send a browser's requests to any): a record is
	// found by a hash of the session id, holds the token sealed with a key
	// derived from the id, and is deleted at sign-out and once expired.
	// Nil: the sessions live in this process's memory.
	Meta store.Meta
	// MetaNamespace is the store namespace of the session records;
	// required with Meta (the server's own, which no project can use).
	MetaNamespace string
	// Logger receives sign-in and sign-out records (never a token or a
	// session id); nil discards them.
	Logger *slog.Logger
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// Handler serves the dashboard. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	static http.Handler
	mux    *http.ServeMux

	sessions sessions
}

// New returns the dashboard's handler. It serves GET / (the page),
// /assets/... (its files) and /ui/... (sign-in, sign-out, the session, and
// the proxy /ui/api/v1/..., /ui/api/2/...).
func New(cfg Config) (*Handler, error) {
	if cfg.Backend == nil {
		return nil, errors.New("dashboard: Config.Backend is required")
	}
	if cfg.Meta != nil && cfg.MetaNamespace == "" {
		return nil, errors.New("dashboard: Config.MetaNamespace is required with Config.Meta")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = SessionTTLDefault
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = MaxSessionsDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, static: http.FileServerFS(sub), mux: http.NewServeMux()}
	if cfg.Meta != nil {
		h.sessions = &metaSessions{meta: cfg.Meta, ns: cfg.MetaNamespace}
	} else {
		h.sessions = &memSessions{m: map[string]*session{}}
	}
	h.mux.HandleFunc("GET /{$}", h.page)
	h.mux.HandleFunc("GET /assets/", h.asset)
	h.mux.HandleFunc("POST /ui/login", h.login)
	h.mux.HandleFunc("POST /ui/logout", h.logout)
	h.mux.HandleFunc("GET /ui/session", h.session)
	h.mux.HandleFunc("/ui/api/", h.proxy)
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such page")
	})
	return h, nil
}

// Owns reports whether r is the dashboard's: GET or HEAD of /, and every
// path under /assets/ and /ui/. The server sends every other request to
// its APIs.
func Owns(r *http.Request) bool {
	p := r.URL.Path
	if p == "/" {
		return r.Method == http.MethodGet || r.Method == http.MethodHead
	}
	return strings.HasPrefix(p, "/ui/") || strings.HasPrefix(p, "/assets/")
}

// ServeHTTP serves the dashboard's pages, files and proxy.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/index.html"
	h.serveFile(w, r2, "index.html")
}

func (h *Handler) asset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/assets/")
	if name == "" || name == "index.html" || strings.HasSuffix(name, "/") {
		writeError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + name
	h.serveFile(w, r2, name)
}

func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	if _, err := fs.Stat(staticFiles, "static/"+name); err != nil {
		writeError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	if name == "index.html" {
		// http.FileServer redirects /index.html to ./; serve it directly.
		b, err := staticFiles.ReadFile("static/index.html")
		if err != nil {
			writeError(w, http.StatusInternalServerError, "internal", "the page is missing")
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b) // a failed write means the client left
		return
	}
	h.static.ServeHTTP(w, r)
}

// loginRequest is the body of POST /ui/login.
type loginRequest struct {
	Token string `json:"token"`
}

// sessionInfo is the answer of sign-in and GET /ui/session.
type sessionInfo struct {
	CSRF     string          `json:"csrf"`
	Admin    bool            `json:"admin"`
	Projects json.RawMessage `json:"projects"`
	Expires  time.Time       `json:"expires_at"`
}

// login checks a token against the API (GET /v1/projects with it), and on
// success opens a session and sets its cookie.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "forbidden", "cross-origin request refused")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusBadRequest, "bad_request", "the body must be JSON: {\"token\":\"...\"}")
		return
	}
	var req loginRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Token == "" || strings.ContainsAny(req.Token, " \t\r\n") {
		writeError(w, http.StatusBadRequest, "bad_request", "the body must be {\"token\":\"...\"} with a token")
		return
	}
	projects, admin, status := h.check(r, req.Token)
	if status != http.StatusOK {
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			h.cfg.Logger.Info("dashboard: sign-in refused", "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "unauthorized", "unknown or revoked token")
			return
		}
		writeError(w, status, "unavailable", "the token could not be checked; try again")
		return
	}
	now := h.cfg.Now()
	s := &session{token: req.Token, csrf: rand.Text(), created: now, expires: now.Add(h.cfg.SessionTTL)}
	id := rand.Text() + rand.Text()
	if err := h.sessions.add(r.Context(), id, s, now, h.cfg.MaxSessions); err != nil {
		h.cfg.Logger.Warn("dashboard: keeping a session failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the session could not be kept; try again")
		return
	}
	http.SetCookie(w, h.cookie(id, s.expires))
	h.cfg.Logger.Info("dashboard: signed in", "admin", admin, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, sessionInfo{CSRF: s.csrf, Admin: admin, Projects: projects, Expires: s.expires})
}

// check asks the API who tok is: its projects (GET /v1/projects with it),
// and whether it is an admin token (Config.Identify).
func (h *Handler) check(r *http.Request, tok string) (json.RawMessage, bool, int) {
	rec := &recorder{header: http.Header{}}
	h.cfg.Backend.ServeHTTP(rec, backendRequest(r, http.MethodGet, "/v1/projects", tok))
	if rec.status != http.StatusOK {
		return nil, false, rec.status
	}
	var body struct {
		Projects json.RawMessage `json:"projects"`
	}
	if json.Unmarshal(rec.body, &body) != nil {
		return nil, false, http.StatusBadGateway
	}
	admin := false
	if h.cfg.Identify != nil {
		a, _, err := h.cfg.Identify(r.Context(), tok)
		if err != nil {
			return nil, false, http.StatusServiceUnavailable
		}
		admin = a
	}
	return body.Projects, admin, http.StatusOK
}

func backendRequest(r *http.Request, method, path, tok string) *http.Request {
	b := r.Clone(r.Context())
	b.Method, b.Body, b.ContentLength = method, http.NoBody, 0
	b.URL = &url.URL{Path: path}
	b.RequestURI = path
	b.Header = http.Header{"Authorization": {"Bearer " + tok}}
	return b
}

func (h *Handler) cookie(id string, expires time.Time) *http.Cookie {
	c := &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Expires: expires}
	if h.cfg.Secure {
		c.Name, c.Secure = SecureCookieName, true
	}
	return c
}

// current returns the request's session and its id, or nil. When the
// sessions cannot be read it answers 503 itself and returns ok false.
func (h *Handler) current(w http.ResponseWriter, r *http.Request) (id string, s *session, ok bool) {
	name := CookieName
	if h.cfg.Secure {
		name = SecureCookieName
	}
	c, err := r.Cookie(name)
	if err != nil || c.Value == "" || len(c.Value) > 256 {
		return "", nil, true
	}
	s, err = h.sessions.get(r.Context(), c.Value, h.cfg.Now())
	if err != nil {
		h.cfg.Logger.Warn("dashboard: reading a session failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the session could not be read; try again")
		return "", nil, false
	}
	if s == nil {
		return "", nil, true
	}
	return c.Value, s, true
}

// checkAction refuses a request that changes something unless it comes
// from the same origin and carries the session's CSRF token.
func checkAction(w http.ResponseWriter, r *http.Request, s *session) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "forbidden", "cross-origin request refused")
		return false
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		writeError(w, http.StatusForbidden, "forbidden", "missing or wrong "+CSRFHeader+" header")
		return false
	}
	return true
}

// sameOrigin reports whether r may come from the dashboard's own pages:
// Sec-Fetch-Site, when the browser sends it, must be same-origin (or none:
// typed by the user), and Origin, when present, must name the request's
// own host.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	id, s, ok := h.current(w, r)
	if !ok {
		return
	}
	if s == nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "not signed in")
		return
	}
	if !checkAction(w, r, s) {
		return
	}
	if err := h.sessions.remove(r.Context(), id); err != nil {
		h.cfg.Logger.Warn("dashboard: ending a session failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the session could not be ended; try again")
		return
	}
	c := h.cookie("", time.Unix(0, 0)) //nolint:gosec // G124: HttpOnly and SameSite=Strict always, Secure whenever the server speaks TLS (h.cookie)
	c.MaxAge = -1
	http.SetCookie(w, c)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) session(w http.ResponseWriter, r *http.Request) {
	_, s, ok := h.current(w, r)
	if !ok {
		return
	}
	if s == nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "not signed in")
		return
	}
	projects, admin, status := h.check(r, s.token)
	if status != http.StatusOK {
		writeError(w, http.StatusUnauthorized, "unauthorized", "the session's token is no longer valid")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, sessionInfo{CSRF: s.csrf, Admin: admin, Projects: projects, Expires: s.expires})
}

// proxy forwards /ui/api/v1/... and /ui/api/2/... to the backend with the
// session's token, after the CSRF check for actions.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request) {
	_, s, ok := h.current(w, r)
	if !ok {
		return
	}
	if s == nil {
		writeError(w, http.StatusUnauthorized, "unauthorized", "not signed in")
		return
	}
	if !checkAction(w, r, s) {
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/ui/api")
	if !strings.HasPrefix(path, "/v1/") && !strings.HasPrefix(path, "/2/") {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
		return
	}
	b := r.Clone(r.Context())
	b.URL.Path, b.URL.RawPath = path, ""
	b.RequestURI = b.URL.RequestURI()
	b.Header.Del("Cookie")
	b.Header.Del(CSRFHeader)
	b.Header.Del("Authorization")
	b.Header.Set("Authorization", "Bearer "+s.token)
	hd := w.Header()
	hd.Set("Content-Security-Policy", apiCSP)
	hd.Set("Cache-Control", "no-store")
	h.cfg.Backend.ServeHTTP(w, b)
}

// Sessions returns how many sessions are kept (for tests and stats): in
// the store with Config.Meta (expired ones not yet dropped included; -1
// when the store fails), else in memory.
func (h *Handler) Sessions() int {
	n, err := h.sessions.count(context.Background())
	if err != nil {
		return -1
	}
	return n
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encoding failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n')) // a failed write means the client left
}

// recorder keeps a backend answer in memory (the sign-in's checks).
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if len(r.body) < 1<<20 {
		r.body = append(r.body, b...)
	}
	return len(b), nil
}
