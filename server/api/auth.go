package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// Prefixes of the secrets the server makes. A session key is told from a
// token by its prefix.
const (
	TokenPrefix      = "kiln_"
	SessionKeyPrefix = "kiln_ws_"
	// MinTokenLen is the shortest token accepted (KILN_BOOTSTRAP_TOKEN).
	MinTokenLen = 32
)

// Keys of the records in SystemNamespace and in project namespaces.
const (
	keyProject   = "project/"   // + project id (system)
	keyToken     = "token/"     // + hex SHA-256 of the token (system)
	keySession   = "session/"   // + hex SHA-256 of the session key (system)
	keyWorker    = "worker/"    // + worker id (project)
	keyChallenge = "challenge/" // + worker id (project)
	keyBootstrap = "bootstrap"  // set once, by the first server start (system)
)

type projectRecord struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// WorkerSecret keys the HMAC of the worker handshake, so it is kept as
	// it is (a server must compute with it), unlike tokens.
	WorkerSecret string    `json:"worker_secret"`
	CreatedAt    time.Time `json:"created_at"`
}

type tokenRecord struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Project   string    `json:"project,omitempty"` // empty for admin tokens
	Admin     bool      `json:"admin"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
}

type sessionRecord struct {
	Project   string    `json:"project"`
	WorkerID  string    `json:"worker_id"`
	Hash      string    `json:"hash"`
	ExpiresAt time.Time `json:"expires_at"`
}

// principal is who made a request.
type principal struct {
	admin       bool
	project     string // the token's or session's project; empty for admin
	tokenID     string
	session     bool
	workerID    string
	sessionHash string
}

func hashSecret(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", wire.Errorf(wire.CodeUnauthorized, "missing Authorization: Bearer <token> header")
	}
	if len(vals) > 1 {
		return "", wire.Errorf(wire.CodeUnauthorized, "more than one Authorization header")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", wire.Errorf(wire.CodeUnauthorized, "the Authorization header must be \"Bearer <token>\"")
	}
	return tok, nil
}

// authenticate finds the principal of r's bearer credential.
func (a *API) authenticate(r *http.Request) (*principal, error) {
	tok, err := bearer(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	hash := hashSecret(tok)
	if strings.HasPrefix(tok, SessionKeyPrefix) {
		var s sessionRecord
		found, err := a.getRecord(ctx, SystemNamespace, keySession+hash, &s)
		if err != nil {
			return nil, err
		}
		if !found || subtle.ConstantTimeCompare([]byte(s.Hash), []byte(hash)) != 1 {
			return nil, wire.Errorf(wire.CodeUnauthorized, "unknown session key")
		}
		if !a.clock.Now().Before(s.ExpiresAt) {
			return nil, wire.Errorf(wire.CodeSessionExpired, "the session key expired at %s", s.ExpiresAt.Format(time.RFC3339))
		}
		var wr workerRecord
		found, err = a.getRecord(ctx, s.Project, keyWorker+s.WorkerID, &wr)
		if err != nil {
			return nil, err
		}
		// The worker's record is read on every request (no cache): a
		// revoke (compare-and-set, never undone) ends every session of
		// the worker on every server at once.
		switch {
		case !found || wr.State == workerRevoked:
			return nil, wire.Errorf(wire.CodeUnauthorized, "the worker %s was revoked", s.WorkerID)
		case wr.State != workerVerified:
			return nil, wire.Errorf(wire.CodeUnauthorized, "the worker %s is not verified", s.WorkerID)
		}
		return &principal{project: s.Project, session: true, workerID: s.WorkerID, sessionHash: hash}, nil
	}
	var t tokenRecord
	found, err := a.getRecord(ctx, SystemNamespace, keyToken+hash, &t)
	if err != nil {
		return nil, err
	}
	if !found || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(hash)) != 1 {
		return nil, wire.Errorf(wire.CodeUnauthorized, "unknown or revoked token")
	}
	return &principal{admin: t.Admin, project: t.Project, tokenID: t.ID}, nil
}

// getRecord reads a JSON meta record into v.
func (a *API) getRecord(ctx context.Context, ns, key string, v any) (bool, error) {
	res, err := a.meta.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: key})
	if err != nil || !res.Found {
		return false, err
	}
	if err := json.Unmarshal(res.Value, v); err != nil {
		return false, fmt.Errorf("api: record %s/%s: %w", ns, key, err)
	}
	return true, nil
}

// putRecord writes a JSON meta record; with ifAbsent only when the key is
// free, and reports whether it wrote.
func (a *API) putRecord(ctx context.Context, ns, key string, v any, ifAbsent bool) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	res, err := a.meta.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: b, IfAbsent: ifAbsent})
	return res.Stored, err
}

func (a *API) deleteRecord(ctx context.Context, ns, key string) error {
	_, err := a.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: key})
	return err
}

// listRecords reads every record under prefix, decoding each with dec.
func (a *API) listRecords(ctx context.Context, ns, prefix string, each func(key string, value []byte) error) error {
	res, err := a.meta.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: prefix})
	if err != nil {
		return err
	}
	for _, it := range res.Items {
		if err := each(it.Key, it.Value); err != nil {
			return err
		}
	}
	return nil
}

// project returns the project id, creating it when create is set and it
// does not exist; an unknown project is not_found.
func (a *API) project(ctx context.Context, id string, create bool) (*projectRecord, error) {
	if v, ok := a.projects.Load(id); ok {
		return v.(*projectRecord), nil
	}
	var p projectRecord
	found, err := a.getRecord(ctx, SystemNamespace, keyProject+id, &p)
	if err != nil {
		return nil, err
	}
	if !found {
		if !create || id == SystemNamespace {
			return nil, notFoundProject(id)
		}
		if _, _, err := a.CreateProject(ctx, id, id); err != nil && !isCode(err, wire.CodeConflict) {
			return nil, err
		}
		return a.project(ctx, id, false)
	}
	a.projects.Store(id, &p)
	return &p, nil
}

func isCode(err error, code string) bool {
	e := wire.Object(err)
	return e != nil && e.Code == code
}

// CheckProjectID validates a new project's id: a store name that does not
// start with "_" (reserved for the server).
func CheckProjectID(id string) error {
	if err := store.CheckName("id", id); err != nil {
		return err
	}
	if strings.HasPrefix(id, "_") {
		return errf(wire.CodeInvalidName, "id", "%q: project ids starting with \"_\" are reserved", id)
	}
	return nil
}

// CreateProject creates a project and returns it with its worker secret;
// a project that exists is a conflict error.
func (a *API) CreateProject(ctx context.Context, id, name string) (wire.Project, string, error) {
	if err := CheckProjectID(id); err != nil {
		return wire.Project{}, "", err
	}
	if name == "" {
		name = id
	}
	p := projectRecord{ID: id, Name: name, WorkerSecret: randomText(32), CreatedAt: a.clock.Now().UTC()}
	stored, err := a.putRecord(ctx, SystemNamespace, keyProject+id, p, true)
	if err != nil {
		return wire.Project{}, "", err
	}
	if !stored {
		return wire.Project{}, "", errf(wire.CodeConflict, "id", "project %q exists", id)
	}
	return wire.Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt}, p.WorkerSecret, nil
}

// CreateToken makes a token: an admin token when project is empty. It
// returns the token's text, which is kept nowhere (only its SHA-256).
func (a *API) CreateToken(ctx context.Context, project, name string) (wire.NewToken, error) {
	tok := TokenPrefix + randomText(32)
	id, err := a.AddToken(ctx, project, name, tok)
	return wire.NewToken{ID: id, Token: tok}, err
}

// AddToken records a token whose text the caller chose (the bootstrap
// token): an admin token when project is empty. A token already recorded
// keeps its record. It returns the token's id.
func (a *API) AddToken(ctx context.Context, project, name, tok string) (string, error) {
	if len(tok) < MinTokenLen || strings.HasPrefix(tok, SessionKeyPrefix) || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("api: a token must be at least %d characters without white space and must not start with %q", MinTokenLen, SessionKeyPrefix)
	}
	hash := hashSecret(tok)
	rec := tokenRecord{ID: randomID("tok_"), Name: name, Project: project, Admin: project == "", Hash: hash, CreatedAt: a.clock.Now().UTC()}
	stored, err := a.putRecord(ctx, SystemNamespace, keyToken+hash, rec, true)
	if err != nil {
		return "", err
	}
	if !stored {
		var old tokenRecord
		if _, err := a.getRecord(ctx, SystemNamespace, keyToken+hash, &old); err != nil {
			return "", err
		}
		return old.ID, nil
	}
	return rec.ID, nil
}

// MarkBootstrapped records that the first start happened and reports
// whether this call was the one that did (only one server of many
// sharing a store bootstraps).
func (a *API) MarkBootstrapped(ctx context.Context) (bool, error) {
	return a.putRecord(ctx, SystemNamespace, keyBootstrap, map[string]time.Time{"at": a.clock.Now().UTC()}, true)
}

// EnsureProject creates project id unless it exists.
func (a *API) EnsureProject(ctx context.Context, id string) error {
	_, err := a.project(ctx, id, false)
	if err == nil {
		return nil
	}
	if !isCode(err, wire.CodeNotFound) {
		return err
	}
	_, _, err = a.CreateProject(ctx, id, id)
	if isCode(err, wire.CodeConflict) {
		return nil
	}
	return err
}
