package hosted

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"

	"github.com/kilnhq/kiln/store"
)

// Defaults of the user ids tasks run as when the runner is root.
const (
	// UIDBaseDefault is the first user id of the range: 1,900,000,000,
	// above the ranges distributions and systemd hand out (regular users,
	// dynamic users, container ranges up to 1,879,048,191) and below 2^31.
	UIDBaseDefault = 1_900_000_000
	// UIDCountDefault is how many user ids the range holds: one per
	// project, 1,000,000.
	UIDCountDefault = 1_000_000
)

// Keys of the project user ids, in IndexNamespace: keyUID + project holds
// the project's number n (its user id is Config.UIDBase + n), keyUIDSlot +
// n the project holding n. Both are taken with put-if-absent, so every
// runner sharing the store gives a project the same user id, and no two
// projects the same.
const (
	keyUID     = "uid/project/"
	keyUIDSlot = "uid/n/"
)

// uidTries bounds the random draws for a free number.
const uidTries = 64

// uidWalkMax is the largest range that is walked whole when the random
// draws found no free number.
const uidWalkMax = 1 << 16

// projectCredential returns the user and group a task of project runs as:
// nil when the runner does not switch users.
func (h *Hosted) projectCredential(ctx context.Context, project string) (*syscall.Credential, error) {
	if !h.run.Sandbox().SwitchUser {
		return nil, nil
	}
	h.uidMu.Lock()
	defer h.uidMu.Unlock()
	if c, ok := h.uids[project]; ok {
		return c, nil
	}
	n, err := allocateUID(ctx, h.meta, project, h.cfg.UIDCount)
	if err != nil {
		return nil, fmt.Errorf("the user id of project %q: %w", project, err)
	}
	id := uint32(h.cfg.UIDBase + n) //nolint:gosec // G115: New keeps the range below 2^31
	c := &syscall.Credential{Uid: id, Gid: id}
	h.uids[project] = c
	return c, nil
}

// allocateUID returns project's number in [0, count), taking a free one
// at random the first time.
func allocateUID(ctx context.Context, m store.Meta, project string, count int) (int, error) {
	get := func(key string) (string, bool, error) {
		res, err := m.MetaGet(ctx, store.MetaGetParams{Namespace: IndexNamespace, Key: key})
		return string(res.Value), res.Found, err
	}
	known := func() (int, bool, error) {
		v, ok, err := get(keyUID + project)
		if err != nil || !ok {
			return 0, false, err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, false, fmt.Errorf("the record %s%s holds %q", keyUID, project, v)
		}
		if n >= count {
			return 0, false, fmt.Errorf("the project has number %d, outside the range of %d user ids: widen it", n, count)
		}
		return n, true, nil
	}
	if n, ok, err := known(); ok || err != nil {
		return n, err
	}
	// uidTries random draws, then, in a range small enough to walk, every
	// number from a random start: a nearly full small range still finds
	// its last free numbers.
	tries, start := uidTries, rand.IntN(count) //nolint:gosec // G404: spreading, not a secret
	if count <= uidWalkMax {
		tries += count
	}
	for i := range tries {
		n := (start + i - uidTries) % count
		if i < uidTries {
			n = rand.IntN(count) //nolint:gosec // G404: spreading, not a secret
		}
		slot := keyUIDSlot + strconv.Itoa(n)
		res, err := m.MetaPut(ctx, store.MetaPutParams{Namespace: IndexNamespace, Key: slot, Value: []byte(project), IfAbsent: true})
		if err != nil {
			return 0, err
		}
		if !res.Stored {
			// Taken, unless by this project in a run that stopped before
			// its second record.
			if holder, _, err := get(slot); err != nil || holder != project {
				if err != nil {
					return 0, err
				}
				continue
			}
		}
		res, err = m.MetaPut(ctx, store.MetaPutParams{Namespace: IndexNamespace, Key: keyUID + project, Value: []byte(strconv.Itoa(n)), IfAbsent: true})
		if err != nil {
			return 0, err
		}
		if res.Stored {
			return n, nil
		}
		// Another runner gave the project a number meanwhile: use it, and
		// free the one drawn here.
		won, ok, err := known()
		if err != nil || !ok {
			return 0, errors.Join(err, errors.New("the project's number vanished"))
		}
		if won != n {
			_, _ = m.MetaDelete(ctx, store.MetaDeleteParams{Namespace: IndexNamespace, Key: slot, IfValue: []byte(project)})
		}
		return won, nil
	}
	return 0, fmt.Errorf("no free user id after %d tries in a range of %d: widen it", tries, count)
}
