package dashboard

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// session is one signed-in browser.
type session struct {
	token   string // the bearer token the proxy sends; never logged
	csrf    string
	expires time.Time
	created time.Time
}

// sessions keeps the sessions by their id (the cookie's value).
type sessions interface {
	// add keeps s under id, after dropping the expired sessions and, beyond
	// limit - 1, the oldest.
	add(ctx context.Context, id string, s *session, now time.Time, limit int) error
	// get returns the session of id, or nil when there is none or it
	// expired (then it is dropped).
	get(ctx context.Context, id string, now time.Time) (*session, error)
	// remove drops the session of id.
	remove(ctx context.Context, id string) error
	// count returns how many sessions are kept.
	count(ctx context.Context) (int, error)
}

// memSessions keeps sessions in the process's memory.
type memSessions struct {
	mu sync.Mutex
	m  map[string]*session
}

func (ms *memSessions) add(_ context.Context, id string, s *session, now time.Time, limit int) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for id, s := range ms.m {
		if !now.Before(s.expires) {
			delete(ms.m, id)
		}
	}
	for len(ms.m) >= limit {
		var oldest string
		for id, s := range ms.m {
			if oldest == "" || s.created.Before(ms.m[oldest].created) {
				oldest = id
			}
		}
		delete(ms.m, oldest)
	}
	ms.m[id] = s
	return nil
}

func (ms *memSessions) get(_ context.Context, id string, now time.Time) (*session, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	s := ms.m[id]
	if s != nil && !now.Before(s.expires) {
		delete(ms.m, id)
		return nil, nil
	}
	return s, nil
}

func (ms *memSessions) remove(_ context.Context, id string) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, id)
	return nil
}

func (ms *memSessions) count(context.Context) (int, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.m), nil
}

// sessionKeyPrefix starts the meta keys of the sessions; the rest is the
// hex SHA-256 of the session id (with a label of its own), never the id.
const sessionKeyPrefix = "dashboard-session/"

// metaSessions keeps sessions as records of a store (store.Meta), so that
// every server sharing the store knows them. A record is found by a hash
// of the session id and holds the token sealed (AES-256-GCM) with a key
// derived from the id by another hash: reading the store gives neither
// a session id nor a token.
type metaSessions struct {
	meta store.Meta
	ns   string
}

// sessionRecord is a session as the store keeps it.
type sessionRecord struct {
	// Token is the nonce and the sealed token.
	Token   []byte    `json:"token"`
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created_at"`
	Expires time.Time `json:"expires_at"`
}

// labelled returns the SHA-256 of a label and id.
func labelled(label, id string) [32]byte {
	return sha256.Sum256([]byte(label + "\x00" + id))
}

func sessionKey(id string) string {
	sum := labelled("kiln dashboard session record", id)
	return sessionKeyPrefix + hex.EncodeToString(sum[:])
}

func sessionAEAD(id string) (cipher.AEAD, error) {
	key := labelled("kiln dashboard session token key", id)
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (m *metaSessions) add(ctx context.Context, id string, s *session, now time.Time, limit int) error {
	if err := m.prune(ctx, now, limit); err != nil {
		return err
	}
	aead, err := sessionAEAD(id)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	rec := sessionRecord{
		Token: aead.Seal(nonce, nonce, []byte(s.token), []byte(sessionKey(id))),
		CSRF:  s.csrf, Created: s.created.UTC(), Expires: s.expires.UTC(),
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	res, err := m.meta.MetaPut(ctx, store.MetaPutParams{Namespace: m.ns, Key: sessionKey(id), Value: b, IfAbsent: true})
	if err != nil {
		return err
	}
	if !res.Stored {
		return errors.New("dashboard: a session id was drawn twice") // 256 random bits: never
	}
	return nil
}

// prune drops the expired sessions, and the oldest beyond limit - 1 (room
// for one more). A session another server drops at the same time is
// skipped: the deletes are conditional on the value read.
func (m *metaSessions) prune(ctx context.Context, now time.Time, limit int) error {
	res, err := m.meta.MetaList(ctx, store.MetaListParams{Namespace: m.ns, Prefix: sessionKeyPrefix})
	if err != nil {
		return err
	}
	type kept struct {
		item    store.MetaItem
		created time.Time
	}
	var live []kept
	for _, it := range res.Items {
		var rec sessionRecord
		if json.Unmarshal(it.Value, &rec) == nil && now.Before(rec.Expires) {
			live = append(live, kept{it, rec.Created})
			continue
		}
		if _, err := m.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: m.ns, Key: it.Key, IfValue: it.Value}); err != nil {
			return err
		}
	}
	if len(live) < limit {
		return nil
	}
	slices.SortFunc(live, func(a, b kept) int { return a.created.Compare(b.created) })
	for _, k := range live[:len(live)-limit+1] {
		if _, err := m.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: m.ns, Key: k.item.Key, IfValue: k.item.Value}); err != nil {
			return err
		}
	}
	return nil
}

func (m *metaSessions) get(ctx context.Context, id string, now time.Time) (*session, error) {
	key := sessionKey(id)
	res, err := m.meta.MetaGet(ctx, store.MetaGetParams{Namespace: m.ns, Key: key})
	if err != nil || !res.Found {
		return nil, err
	}
	var rec sessionRecord
	if err := json.Unmarshal(res.Value, &rec); err != nil {
		return nil, fmt.Errorf("dashboard: session record: %w", err)
	}
	if !now.Before(rec.Expires) {
		_, err := m.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: m.ns, Key: key, IfValue: res.Value})
		return nil, err
	}
	aead, err := sessionAEAD(id)
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(rec.Token) < ns {
		return nil, errors.New("dashboard: session record: the token is cut short")
	}
	tok, err := aead.Open(nil, rec.Token[:ns], rec.Token[ns:], []byte(key))
	if err != nil {
		return nil, errors.New("dashboard: session record: the token does not open")
	}
	return &session{token: string(tok), csrf: rec.CSRF, created: rec.Created, expires: rec.Expires}, nil
}

func (m *metaSessions) remove(ctx context.Context, id string) error {
	_, err := m.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: m.ns, Key: sessionKey(id)})
	return err
}

func (m *metaSessions) count(ctx context.Context) (int, error) {
	res, err := m.meta.MetaList(ctx, store.MetaListParams{Namespace: m.ns, Prefix: sessionKeyPrefix})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, it := range res.Items {
		if strings.HasPrefix(it.Key, sessionKeyPrefix) {
			n++
		}
	}
	return n, nil
}
