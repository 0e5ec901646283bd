package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Keys of the records in store.Meta. A schedule is a chain of versions,
// "schedule/<id>/<version>", of which the highest is the current one: a
// change writes version+1 with put-if-absent (so of two concurrent changes
// exactly one wins) and then deletes the older version. A run is claimed
// with put-if-absent on "schedule-fire/<id>/<run time in unix nanos>".
// The index "schedule-ns/<namespace>" in Config.IndexNamespace lists the
// namespaces that have schedules.
const (
	keySchedule = "schedule/"
	keyFire     = "schedule-fire/"
	keyIndex    = "schedule-ns/"
)

func versionKey(id string, v int64) string {
	return fmt.Sprintf("%s%s/%020d", keySchedule, id, v)
}

func claimKey(id string, at time.Time) string {
	return fmt.Sprintf("%s%s/%020d", keyFire, id, at.UnixNano())
}

// claim is the value of a run's claim record.
type claim struct {
	// By names the instance that claimed the run.
	By string `json:"by"`
	// At is when it claimed it, by its clock.
	At time.Time `json:"at"`
	// Enqueued is set once the run's task was enqueued (or refused).
	Enqueued bool `json:"enqueued,omitempty"`
}

// errStale: the record changed since it was read.
var errStale = errors.New("schedule: the record changed concurrently")

// records reads and writes schedule records.
type records struct {
	meta store.Meta
}

// versions returns the versions of one schedule, oldest first, with their
// keys.
func (r records) versions(ctx context.Context, ns, id string) ([]*Schedule, []string, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: keySchedule + id + "/"})
	if err != nil {
		return nil, nil, err
	}
	out := make([]*Schedule, 0, len(res.Items))
	keys := make([]string, 0, len(res.Items))
	for _, it := range res.Items {
		s, err := decode(it.Value)
		if err != nil {
			return nil, nil, fmt.Errorf("schedule: record %s/%s: %w", ns, it.Key, err)
		}
		out = append(out, s)
		keys = append(keys, it.Key)
	}
	return out, keys, nil
}

// get returns the current version of a schedule, the tombstone of a
// deleted one included, or nil.
func (r records) get(ctx context.Context, ns, id string) (*Schedule, error) {
	vs, _, err := r.versions(ctx, ns, id)
	if err != nil || len(vs) == 0 {
		return nil, err
	}
	return vs[len(vs)-1], nil
}

// list returns the current version of every schedule of ns in id order,
// tombstones included.
func (r records) list(ctx context.Context, ns string) ([]*Schedule, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: keySchedule})
	if err != nil {
		return nil, err
	}
	var out []*Schedule
	for i, it := range res.Items {
		id, _, ok := splitVersionKey(it.Key)
		if !ok {
			continue
		}
		if i+1 < len(res.Items) {
			if next, _, ok := splitVersionKey(res.Items[i+1].Key); ok && next == id {
				continue // an older version: the next key is newer
			}
		}
		s, err := decode(it.Value)
		if err != nil {
			return nil, fmt.Errorf("schedule: record %s/%s: %w", ns, it.Key, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func splitVersionKey(key string) (id string, v int64, ok bool) {
	rest, ok := strings.CutPrefix(key, keySchedule)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], v, true
}

func decode(b []byte) (*Schedule, error) {
	var s Schedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// put writes s as version s.Version if that version is free: false means
// another change won.
func (r records) put(ctx context.Context, s *Schedule) (bool, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	res, err := r.meta.MetaPut(ctx, store.MetaPutParams{Namespace: s.Namespace, Key: versionKey(s.ID, s.Version), Value: b, IfAbsent: true})
	if err != nil {
		return false, err
	}
	return res.Stored, nil
}

// replace writes next as the version after cur, then deletes cur's record.
// It fails with errStale when cur is no longer the current version.
func (r records) replace(ctx context.Context, cur, next *Schedule) error {
	next.Version = cur.Version + 1
	ok, err := r.put(ctx, next)
	if err != nil {
		return err
	}
	if !ok {
		return errStale
	}
	// The old version is shadowed by the new one; a failed delete leaves
	// it for the cleanup.
	_, _ = r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: cur.Namespace, Key: versionKey(cur.ID, cur.Version)})
	return nil
}

// claim claims the run at time at of schedule s: true when this call
// claimed it. Otherwise it returns the existing claim.
func (r records) claim(ctx context.Context, s *Schedule, at time.Time, c claim) (bool, *claim, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, nil, err
	}
	key := claimKey(s.ID, at)
	res, err := r.meta.MetaPut(ctx, store.MetaPutParams{Namespace: s.Namespace, Key: key, Value: b, IfAbsent: true})
	if err != nil {
		return false, nil, err
	}
	if res.Stored {
		return true, nil, nil
	}
	got, err := r.meta.MetaGet(ctx, store.MetaGetParams{Namespace: s.Namespace, Key: key})
	if err != nil {
		return false, nil, err
	}
	var old claim
	if got.Found {
		if err := json.Unmarshal(got.Value, &old); err != nil {
			return false, nil, fmt.Errorf("schedule: claim %s: %w", key, err)
		}
	}
	return false, &old, nil
}

// markEnqueued records on a claim that its task was enqueued.
func (r records) markEnqueued(ctx context.Context, s *Schedule, at time.Time, c claim) error {
	c.Enqueued = true
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = r.meta.MetaPut(ctx, store.MetaPutParams{Namespace: s.Namespace, Key: claimKey(s.ID, at), Value: b})
	return err
}

// addIndex records that ns has schedules.
func (r records) addIndex(ctx context.Context, indexNS, ns string) error {
	_, err := r.meta.MetaPut(ctx, store.MetaPutParams{Namespace: indexNS, Key: keyIndex + ns, Value: []byte("{}"), IfAbsent: true})
	return err
}

// namespaces lists the namespaces in the index.
func (r records) namespaces(ctx context.Context, indexNS string) ([]string, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: indexNS, Prefix: keyIndex})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(res.Items))
	for _, it := range res.Items {
		ns := strings.TrimPrefix(it.Key, keyIndex)
		if store.ValidName(ns) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// cleanup deletes, in ns, claims of runs more than keep before now, the
// versions that a newer one shadows, and tombstones older than keep. It
// returns how many records it deleted.
func (r records) cleanup(ctx context.Context, ns string, now time.Time, keep time.Duration) (int, error) {
	n := 0
	del := func(key string) error {
		res, err := r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: key})
		if err == nil && res.Deleted {
			n++
		}
		return err
	}
	claims, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: keyFire})
	if err != nil {
		return n, err
	}
	cutoff := now.Add(-keep).UnixNano()
	for _, it := range claims.Items {
		i := strings.LastIndexByte(it.Key, '/')
		at, err := strconv.ParseInt(it.Key[i+1:], 10, 64)
		if err != nil || at < cutoff {
			if err := del(it.Key); err != nil {
				return n, err
			}
		}
	}
	recs, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: keySchedule})
	if err != nil {
		return n, err
	}
	for i, it := range recs.Items {
		id, _, ok := splitVersionKey(it.Key)
		if !ok {
			continue
		}
		if i+1 < len(recs.Items) {
			if next, _, ok := splitVersionKey(recs.Items[i+1].Key); ok && next == id {
				if err := del(it.Key); err != nil {
					return n, err
				}
				continue
			}
		}
		s, err := decode(it.Value)
		if err == nil && s.Status == statusDeleted && s.UpdatedAt.Before(now.Add(-keep)) {
			if err := del(it.Key); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}
