package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// limitedError is a rate_limited error and when to retry (the Retry-After
// header of the answer).
type limitedError struct {
	err   *wire.Error
	after time.Duration
}

func (e *limitedError) Error() string { return e.err.Error() }

// Unwrap returns the catalogue error.
func (e *limitedError) Unwrap() error { return e.err }

func limited(after time.Duration, format string, args ...any) error {
	return &limitedError{err: wire.Errorf(wire.CodeRateLimited, format, args...), after: after}
}

// clientAddr returns the key of r's client for rate limits: the TCP peer's
// IP address, IPv4-mapped addresses as IPv4, an IPv6 address as its /64
// (what one host usually holds). Forwarding headers are not trusted: any
// client can write them.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host // not an IP (a Unix socket): one key for all
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// limitAddr takes a token of the client address's handshake bucket.
func (a *API) limitAddr(r *http.Request) error {
	if ok, wait := a.addrLimit.Allow(clientAddr(r), a.clock.Now()); !ok {
		return limited(wait, "too many worker handshake requests from this address (at most %g a second, %d at once)", a.cfg.HandshakeRate, a.cfg.HandshakeBurst)
	}
	return nil
}

// limitProject takes a token of the project's handshake bucket.
func (a *API) limitProject(c *call) error {
	if ok, wait := a.projectLimit.Allow(c.ns(), a.clock.Now()); !ok {
		return limited(wait, "too many worker handshake requests for project %q (at most %g a second, %d at once)", c.ns(), a.cfg.ProjectHandshakeRate, a.cfg.ProjectHandshakeBurst)
	}
	return nil
}

// openCount is what a server knows of a project's open handshakes.
type openCount struct {
	n        int       // counted at `at`, plus this server's registrations since
	at       time.Time // when the store was last counted
	earliest time.Time // when the first of those expires
}

// admitHandshake counts a new handshake of project against
// MaxOpenHandshakes: it recounts the project's open challenges in the
// store when its count is older than openRecount, and refuses when the
// cap is reached.
func (a *API) admitHandshake(ctx context.Context, project string, now time.Time) error {
	capacity := a.cfg.MaxOpenHandshakes
	if capacity < 0 {
		return nil
	}
	a.openMu.Lock()
	oc := a.open[project]
	a.openMu.Unlock()
	if oc == nil || now.Sub(oc.at) >= openRecount || now.Before(oc.at) {
		n, earliest, err := a.countOpen(ctx, project, now)
		if err != nil {
			return err
		}
		fresh := &openCount{n: n, at: now, earliest: earliest}
		a.openMu.Lock()
		if cur := a.open[project]; cur == nil || cur.at.Before(now) {
			a.open[project] = fresh
		}
		a.openMu.Unlock()
	}
	a.openMu.Lock()
	defer a.openMu.Unlock()
	oc = a.open[project] // the latest count, if another request recounted
	if oc.n >= capacity {
		// A slot frees when a handshake finishes or its challenge
		// expires; the first expiry is the latest a client need wait.
		return limited(min(max(oc.earliest.Sub(now), openRecount), a.cfg.HandshakeTimeout),
			"project %q has %d open worker handshakes, the most allowed; a slot frees when one finishes or expires", project, oc.n)
	}
	oc.n++
	if exp := now.Add(a.cfg.HandshakeTimeout); oc.earliest.IsZero() || exp.Before(oc.earliest) {
		oc.earliest = exp
	}
	return nil
}

// countOpen counts project's challenges that have not expired, and
// returns when the first of them expires.
func (a *API) countOpen(ctx context.Context, project string, now time.Time) (int, time.Time, error) {
	res, err := a.meta.MetaList(ctx, store.MetaListParams{Namespace: project, Prefix: keyChallenge})
	if err != nil {
		return 0, time.Time{}, err
	}
	n := 0
	var earliest time.Time
	for _, it := range res.Items {
		var ch challengeRecord
		if json.Unmarshal(it.Value, &ch) != nil || !now.Before(ch.ExpiresAt) {
			continue
		}
		n++
		if earliest.IsZero() || ch.ExpiresAt.Before(earliest) {
			earliest = ch.ExpiresAt
		}
	}
	return n, earliest, nil
}
