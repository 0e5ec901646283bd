package remote

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
)

// sessionKey returns a usable worker session key: the current one, a
// refreshed one when the current one is past its refresh time, or a new one
// from a full handshake.
func (s *Store) sessionKey(ctx context.Context) (string, error) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	now := time.Now()
	if cur := s.sess; cur != nil {
		if now.Before(cur.refreshAt) {
			return cur.key, nil
		}
		if now.Before(cur.expiresAt) {
			next, err := s.refresh(ctx, cur)
			if err == nil {
				s.sess = next
				return next.key, nil
			}
			if ctx.Err() != nil {
				return "", err
			}
			// A refused refresh (expired meanwhile, server restarted
			// without the session): fall through to a new handshake.
			s.log.Warn("remote: session refresh failed; redoing the handshake", "worker", cur.workerID, "err", err)
		}
	}
	next, err := s.handshake(ctx)
	if err != nil {
		s.sess = nil
		return "", err
	}
	s.sess = next
	return next.key, nil
}

// dropSession forgets the session whose key the server refused.
func (s *Store) dropSession(key string) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.sess != nil && s.sess.key == key {
		s.sess = nil
	}
}

// handshake registers, answers the challenge and returns the new session
// (docs/api.md, "Remote workers").
func (s *Store) handshake(ctx context.Context) (*session, error) {
	p := s.cfg.Project
	var reg wire.RegisterResponse
	err := s.api.Do(ctx, apiclient.Request{
		Method: http.MethodPost, Path: projectPath(p, "workers", "register"), NoAuth: true,
		Body: wire.RegisterRequest{Name: s.cfg.WorkerName},
	}, &reg)
	if err != nil {
		return nil, fmt.Errorf("remote: register worker %q in project %s: %w", s.cfg.WorkerName, p, err)
	}
	proof, err := wire.Proof(s.cfg.WorkerSecret, reg.Challenge)
	if err != nil {
		return nil, fmt.Errorf("remote: register worker %q in project %s: %w", s.cfg.WorkerName, p, err)
	}
	var ses wire.Session
	err = s.api.Do(ctx, apiclient.Request{
		Method: http.MethodPost, Path: projectPath(p, "workers", "verify"), NoAuth: true,
		Body: wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof},
	}, &ses)
	if err != nil {
		return nil, fmt.Errorf("remote: verify worker %s in project %s: %w", reg.WorkerID, p, err)
	}
	s.log.Info("remote: worker verified", "project", p, "worker", reg.WorkerID, "session_expires_at", ses.ExpiresAt)
	return newSession(ses, reg.WorkerID), nil
}

// refresh trades cur for a new session key before cur expires.
func (s *Store) refresh(ctx context.Context, cur *session) (*session, error) {
	var ses wire.Session
	err := s.api.Do(ctx, apiclient.Request{
		Method: http.MethodPost, Path: projectPath(s.cfg.Project, "workers", "refresh"), Token: cur.key,
	}, &ses)
	if err != nil {
		return nil, fmt.Errorf("remote: refresh session of worker %s: %w", cur.workerID, err)
	}
	s.log.Debug("remote: session refreshed", "worker", cur.workerID, "session_expires_at", ses.ExpiresAt)
	return newSession(ses, cur.workerID), nil
}

// newSession times a session on the local clock. A clock that runs ahead of
// the server's makes the session look shorter than it is; one that runs
// behind is corrected by the session_expired answer, which makes the store
// redo the handshake.
func newSession(ses wire.Session, workerID string) *session {
	now := time.Now()
	life := max(time.Until(ses.ExpiresAt), time.Second)
	return &session{
		key:       ses.SessionKey,
		workerID:  workerID,
		refreshAt: now.Add(time.Duration(float64(life) * RefreshFractionDefault)),
		expiresAt: now.Add(life),
	}
}
