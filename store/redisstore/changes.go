package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

var _ store.Feed = (*Store)(nil)

// The change feed of a namespace is the stream T:ev. Every script that
// changes tasks adds its changes (in flush, so in the same atomic step as
// the changes), in the order it applied them, as entries of
//
//	t  the script's time, µs
//	e  the changes, separated by \x1e; each is
//	   <kind code><state digit>\x1f<id>\x1f<queue>\x1f<type>\x1f<attempt>\x1f<extra>
//	   extra being the worker of a start and the error of a failure
//
// A script's changes go in one entry until it holds changeEntryBytes
// bytes; the changes after those start another entry (so an enqueue of
// 1,000 tasks is about 30 entries, and a call that changes a few tasks one
// entry, as before). An entry is therefore shorter than changeEntryBytes
// plus one change (at most about 2 KB: three names, an attempt and an
// error of store.MaxAttemptErrorBytes), and the stream, trimmed to about
// changeFeedLen entries, holds at most about changeFeedLen times that
// (docs/redis.md states the bound). Entries written before this rule (one
// per script, whatever its size) have the same format and are read alike.
//
// Entries are added with the id "0-*", so their ids are 0-1, 0-2, ...; a
// gap after a cursor means changes the reader will not get: the stream was
// trimmed past it (MAXLEN ~ changeFeedLen entries), or they were not
// recorded. The change at index i of entry 0-n has Seq n<<seqShift | i;
// every process sharing the Redis reads the same changes with the same Seq.
//
// The feed records changes only while someone reads it: a reader (Changes)
// keeps the key T:evw, which lives feedReadTTL after its last refresh, and
// a script that finds no T:evw records nothing of its changes (building
// them is about 8 % of what a task costs Redis end to end) but takes one
// entry id and deletes the entry at once, so that the ids jump and a
// reader whose cursor is from before learns that it missed changes, as
// after a trim. Readers of an older kiln see the jump too.
const seqShift = 20

// feedReadTTL is how long a namespace's feed records changes after a
// reader last marked it read, and feedReadRefresh how often a Store's
// reader marks it again.
const (
	feedReadTTL     = 5 * time.Minute
	feedReadRefresh = time.Minute
)

// changeFeedLen is the approximate number of entries a feed keeps, and
// changeEntryBytes the size at which an entry takes no more changes.
const (
	changeFeedLen    = 2000
	changeEntryBytes = 1536
)

var (
	changeFeedLenArg    = strconv.Itoa(changeFeedLen)
	changeEntryBytesArg = strconv.Itoa(changeEntryBytes)
)

// changeKinds maps the kind codes of the scripts to store.ChangeKind.
var changeKinds = [256]store.ChangeKind{
	'E': store.ChangeEnqueued, 'S': store.ChangeStarted, 'K': store.ChangeSucceeded,
	'F': store.ChangeFailed, 'R': store.ChangeRetrying, 'D': store.ChangeDead,
	'C': store.ChangeCancelled, 'L': store.ChangeLeaseLost, 'Z': store.ChangeReleased,
	'T': store.ChangeRetried, 'X': store.ChangeDeleted,
}

// Changes implements store.Feed.
func (s *Store) Changes(ctx context.Context, p store.ChangesParams) (store.ChangesResult, error) {
	if err := s.begin(ctx, "changes", p.Namespace, 0); err != nil {
		return store.ChangesResult{}, err
	}
	if p.Wait < 0 {
		return store.ChangesResult{}, fmt.Errorf("redisstore: changes: wait %s: %w", p.Wait, store.ErrInvalidOption)
	}
	limit := p.Max
	if limit <= 0 || limit > store.MaxBatch {
		limit = store.MaxBatch
	}
	key := s.tag(p.Namespace) + ":ev"
	// Before the read: the changes after the cursor this call returns are
	// recorded from here on.
	if err := s.markFeedRead(ctx, p.Namespace); err != nil {
		return store.ChangesResult{}, err
	}
	if p.Cursor == "" {
		last, _, err := s.feedEnd(ctx, key)
		if err != nil {
			return store.ChangesResult{}, err
		}
		return store.ChangesResult{Cursor: strconv.FormatUint(last, 10)}, nil
	}
	after, err := strconv.ParseUint(p.Cursor, 10, 64)
	if err != nil {
		return store.ChangesResult{}, fmt.Errorf("redisstore: changes: cursor %q: %w", p.Cursor, store.ErrInvalidOption)
	}
	deadline := time.Now().Add(p.Wait)
	for {
		msgs, err := s.rdb.XRangeN(ctx, key, "0-"+strconv.FormatUint(after>>seqShift, 10), "+", int64(limit)+1).Result()
		if err != nil {
			return store.ChangesResult{}, s.wrap("changes", err)
		}
		res, ok, err := decodeChanges(msgs, after, limit)
		if err != nil {
			return store.ChangesResult{}, fmt.Errorf("redisstore: changes: %w", err)
		}
		if ok {
			if res.Missed {
				return res, s.markFeedAgain(ctx, p.Namespace)
			}
			return res, nil
		}
		// Nothing after the cursor: is it beyond the feed (another store's)?
		last, top, err := s.feedEnd(ctx, key)
		if err != nil {
			return store.ChangesResult{}, err
		}
		if after>>seqShift > last>>seqShift {
			return store.ChangesResult{Cursor: strconv.FormatUint(last, 10), Missed: true}, nil
		}
		if last>>seqShift > after>>seqShift {
			if top > after>>seqShift {
				continue // an entry came after the read: read it
			}
			// Ids taken after the cursor with no entry: changes that
			// were not recorded (no reader then).
			return store.ChangesResult{Cursor: strconv.FormatUint(last, 10), Missed: true}, s.markFeedAgain(ctx, p.Namespace)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return store.ChangesResult{Cursor: p.Cursor}, nil
		}
		// Block for the next entry, a second at a time so that a closed
		// store or a done context ends the wait; and at least a
		// millisecond: BLOCK takes whole milliseconds, and BLOCK 0 waits
		// for ever (until go-redis' read timeout of 10 s past the block).
		block := max(min(wait, time.Second), time.Millisecond)
		_, err = s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{key, "0-" + strconv.FormatUint(after>>seqShift, 10)}, Count: 1, Block: block}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return store.ChangesResult{}, s.wrap("changes", err)
		}
		if err := s.usable(ctx); err != nil {
			return store.ChangesResult{Cursor: p.Cursor}, err
		}
	}
}

// markFeedRead keeps the change feed of ns recording (T:evw), at most once
// per feedReadRefresh from this Store.
func (s *Store) markFeedRead(ctx context.Context, ns string) error {
	now := time.Now()
	if v, ok := s.feedRead.Load(ns); ok && now.Sub(v.(time.Time)) < feedReadRefresh { //nolint:forcetypeassert // only times are stored
		return nil
	}
	if err := s.rdb.Set(ctx, s.tag(ns)+":evw", "1", feedReadTTL).Err(); err != nil {
		return s.wrap("changes", err)
	}
	s.feedRead.Store(ns, now)
	return nil
}

// markFeedAgain marks the feed of ns read now, whenever this Store last
// did: after a reader missed changes, its mark may be what was lost (a
// flush, a restart of a Redis without persistence, a reader away longer
// than feedReadTTL).
func (s *Store) markFeedAgain(ctx context.Context, ns string) error {
	s.feedRead.Delete(ns)
	return s.markFeedRead(ctx, ns)
}

// feedEnd returns where the stream key ends: last is the Seq of its newest
// change, or, when ids were taken after that change's entry (changes not
// recorded), n<<seqShift for the last id taken n, so that a cursor there
// misses nothing recorded; top is the number of the newest entry (0 when
// none).
func (s *Store) feedEnd(ctx context.Context, key string) (last, top uint64, err error) {
	info, err := s.rdb.XInfoStream(ctx, key).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return 0, 0, nil
		}
		return 0, 0, s.wrap("changes", err)
	}
	gen, err := entrySeq(info.LastGeneratedID)
	if err != nil {
		return 0, 0, fmt.Errorf("redisstore: changes: %w", err)
	}
	if info.Length > 0 {
		if top, err = entrySeq(info.LastEntry.ID); err != nil {
			return 0, 0, fmt.Errorf("redisstore: changes: %w", err)
		}
	}
	if info.Length == 0 || top != gen {
		return gen << seqShift, top, nil
	}
	e, _ := info.LastEntry.Values["e"].(string)
	return gen<<seqShift | uint64(strings.Count(e, "\x1e")), top, nil //nolint:gosec // G115: a count
}

// isNoSuchKey reports Redis' reply to XINFO STREAM of a missing key.
func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
}

// entrySeq returns n of a stream id "0-n".
func entrySeq(id string) (uint64, error) {
	rest, ok := strings.CutPrefix(id, "0-")
	n, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("unexpected change feed entry id %q", id)
	}
	return n, nil
}

// decodeChanges returns up to limit changes of msgs (the entries from the
// cursor's on) after the cursor after; ok is false when there are none.
func decodeChanges(msgs []redis.XMessage, after uint64, limit int) (res store.ChangesResult, ok bool, err error) {
	res.Cursor = strconv.FormatUint(after, 10)
	want := after>>seqShift + 1 // the next entry expected after the cursor's
	for _, m := range msgs {
		n, err := entrySeq(m.ID)
		if err != nil {
			return res, false, err
		}
		if n >= want {
			if n > want {
				if len(res.Changes) > 0 {
					// Changes after a gap go out after the gap is
					// told: the next call starts here and says Missed.
					return res, true, nil
				}
				res.Missed = true // trimmed past the cursor, or not recorded
			}
			want = n + 1
		}
		e, _ := m.Values["e"].(string)
		if e == "" {
			// The id an unrecorded call took, its entry not deleted (a user
			// not granted XDEL): a gap, as when the id is missing.
			if seq := n << seqShift; seq > after {
				if len(res.Changes) > 0 {
					return res, true, nil
				}
				res.Missed = true
				res.Cursor = strconv.FormatUint(seq, 10)
			}
			continue
		}
		ts, _ := m.Values["t"].(string)
		us, _ := strconv.ParseInt(ts, 10, 64)
		at := time.UnixMicro(us).UTC()
		for i, rec := range strings.Split(e, "\x1e") {
			seq := n<<seqShift | uint64(i)
			if seq <= after {
				continue
			}
			if len(res.Changes) == limit {
				return res, true, nil
			}
			c, err := decodeChange(rec)
			if err != nil {
				return res, false, err
			}
			c.Seq, c.Time = seq, at
			res.Changes = append(res.Changes, c)
			res.Cursor = strconv.FormatUint(seq, 10)
		}
	}
	return res, len(res.Changes) > 0 || res.Missed, nil
}

// decodeChange reads one change record of a feed entry.
func decodeChange(rec string) (store.Change, error) {
	f := strings.Split(rec, "\x1f")
	if len(f) != 6 || len(f[0]) != 2 || changeKinds[f[0][0]] == 0 {
		return store.Change{}, fmt.Errorf("unexpected change record %q", rec)
	}
	a, _ := strconv.Atoi(f[4])
	c := store.Change{Kind: changeKinds[f[0][0]], State: store.State(f[0][1] - '0'), ID: f[1], Queue: f[2], Type: f[3], Attempt: a}
	switch c.Kind { //nolint:exhaustive // only these two carry the extra field
	case store.ChangeStarted:
		c.WorkerID = f[5]
	case store.ChangeFailed:
		c.Error = f[5]
	}
	return c, nil
}
