package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// feedBatch enqueues n tasks named prefix-<i> (26-byte ids, as the
// client's) into namespace ns in one call and returns their ids.
func feedBatch(t *testing.T, s *Store, ns, prefix string, n int) []string {
	t.Helper()
	tasks := make([]store.TaskInput, n)
	ids := make([]string, n)
	for i := range tasks {
		ids[i] = fmt.Sprintf("%s-%0*d", prefix, 25-len(prefix), i)
		tasks[i] = store.TaskInput{ID: ids[i], Type: "noop"}
	}
	res, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: ns, Tasks: tasks})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range res.Items {
		if it.Err != nil {
			t.Fatal(it.Err)
		}
	}
	return ids
}

// readFeed reads every change of ns after cursor, limit at a time, and
// returns their ids; it fails on Missed.
func readFeed(t *testing.T, s *Store, ns, cursor string, limit int) []string {
	t.Helper()
	var prev uint64
	var ids []string
	for {
		res, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns, Cursor: cursor, Max: limit})
		if err != nil {
			t.Fatal(err)
		}
		if res.Missed {
			t.Fatalf("Changes(%s): Missed", cursor)
		}
		if len(res.Changes) == 0 {
			return ids
		}
		if len(res.Changes) > limit {
			t.Fatalf("Changes(Max %d) returned %d", limit, len(res.Changes))
		}
		for _, c := range res.Changes {
			if c.Seq <= prev {
				t.Fatalf("change %s has Seq %d after %d", c.ID, c.Seq, prev)
			}
			prev = c.Seq
			ids = append(ids, c.ID)
		}
		cursor = res.Cursor
	}
}

// TestChangeFeedBytesBounded: enqueuing 200 batches of 1,000 tasks (26-byte
// ids), about 9 MB of changes, leaves a change feed of at most 4 MiB (the
// bound docs/redis.md states for changes of this size: about changeFeedLen
// entries of at most changeEntryBytes plus one change), and its newest
// changes read back whole and in order.
func TestChangeFeedBytesBounded(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	const ns = "n"
	start, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var written int
	var ids []string
	for b := range 200 {
		ids = feedBatch(t, s, ns, "b"+strconv.Itoa(b), 1000)
		for _, id := range ids {
			written += len(id) + len("E2\x1f\x1fdefault\x1fnoop\x1f0\x1f\x1e")
		}
	}
	key := s.tag(ns) + ":ev"
	c := s.rdb
	n, err := c.XLen(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := c.MemoryUsage(t.Context(), key, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	const bound = 4 << 20
	t.Logf("%d bytes of changes written; feed: %d entries, MEMORY USAGE %d bytes (bound %d)", written, n, mem, bound)
	if written < 2*bound {
		t.Fatalf("the test wrote %d bytes of changes: too few to test the bound", written)
	}
	if mem > bound || n > changeFeedLen+100 {
		t.Errorf("feed after 200 batches of 1,000: %d entries, %d bytes; want at most %d entries (and trimming slack) and %d bytes", n, mem, changeFeedLen, bound)
	}
	msgs, err := c.XRange(t.Context(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if e, _ := m.Values["e"].(string); len(e) >= changeEntryBytes+100 {
			t.Fatalf("entry %s holds %d bytes of changes, want under %d plus one change", m.ID, len(e), changeEntryBytes)
		}
	}
	// The first cursor is long trimmed: the reader learns it missed some.
	res, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns, Cursor: start.Cursor, Max: 10})
	if err != nil || !res.Missed {
		t.Fatalf("Changes(from before the batches) = Missed %v, %v; want Missed", res.Missed, err)
	}
	// A cursor inside the feed reads the last batch whole, in order.
	before, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	last := feedBatch(t, s, ns, "last", 1000)
	got := readFeed(t, s, ns, before.Cursor, 333)
	if strings.Join(got, " ") != strings.Join(last, " ") {
		t.Fatalf("changes of the last batch: %d ids, want its %d in order", len(got), len(last))
	}
}

// TestChangeFeedOldEntries: an entry written by the previous version (all
// the changes of a script in one entry, here 1,500) is read as before, and
// a cursor inside it continues into the entries written since.
func TestChangeFeedOldEntries(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	const ns = "n"
	start, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	recs := make([]string, 1500)
	for i := range recs {
		old = append(old, fmt.Sprintf("old-%d", i))
		recs[i] = "E2\x1f" + old[i] + "\x1fdefault\x1fnoop\x1f0\x1f"
	}
	key := s.tag(ns) + ":ev"
	if err := s.rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: key, MaxLen: 10000, Approx: true, ID: "0-*",
		Values: []any{"t", "1", "e", strings.Join(recs, "\x1e")}}).Err(); err != nil {
		t.Fatal(err)
	}
	ids := feedBatch(t, s, ns, "new", 1000)
	if n := s.rdb.XLen(t.Context(), key).Val(); n < 3 {
		t.Fatalf("feed has %d entries after an old one and a batch of 1,000; want the batch split", n)
	}
	want := append(append([]string(nil), old...), ids...)
	got := readFeed(t, s, ns, start.Cursor, 700)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("read %d changes, want the old entry's 1,500 then the batch's 1,000 in order", len(got))
	}
	// A cursor in the middle of the old entry (as an event stream's
	// Last-Event-ID) resumes right after it.
	mid, err := s.Changes(t.Context(), store.ChangesParams{Namespace: ns, Cursor: start.Cursor, Max: 700})
	if err != nil || len(mid.Changes) != 700 {
		t.Fatalf("Changes = %d, %v", len(mid.Changes), err)
	}
	got = readFeed(t, s, ns, strconv.FormatUint(mid.Changes[699].Seq, 10), 1000)
	if strings.Join(got, " ") != strings.Join(want[700:], " ") {
		t.Fatalf("resumed in the old entry: %d changes, want %d in order", len(got), len(want)-700)
	}
}

// TestChangesShortWait asks for changes with waits of under a millisecond
// (a caller's deadline nearly reached): XREAD's BLOCK takes whole
// milliseconds and BLOCK 0 waits for ever, so a remaining wait that
// rounded to 0 blocked the call until go-redis' read timeout, 10 s later
// (the conformance suite's Changes/Wait failed that way now and then).
// Each call must return before the context's deadline.
func TestChangesShortWait(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	feedBatch(t, s, "ns", "w", 1)
	start, err := s.Changes(t.Context(), store.ChangesParams{Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	// (A wait that reaches XREAD blocks up to Redis' 100 ms tick: few calls.)
	for range 3 {
		for _, w := range []time.Duration{100 * time.Microsecond, 300 * time.Microsecond, 500 * time.Microsecond, 700 * time.Microsecond, 900 * time.Microsecond} {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			res, err := s.Changes(ctx, store.ChangesParams{Namespace: "ns", Cursor: start.Cursor, Wait: w})
			cancel()
			if err != nil || len(res.Changes) != 0 {
				t.Fatalf("Changes(wait %s) with nothing new = %+v, %v; want nothing", w, res, err)
			}
		}
	}
}

// TestFeedRecordsWhileRead: a namespace's feed records changes only while
// it is read (T:evw); changes made while it is not are told to a reader as
// Missed, never skipped silently, whether later changes follow them or
// not, and a reader that starts after them misses nothing. Also as a user
// granted what an older kiln needed, without XDEL: the scripts still run,
// and the entry they could not delete is read as the gap.
func TestFeedRecordsWhileRead(t *testing.T) {
	t.Parallel()
	for _, noXDEL := range []bool{false, true} {
		t.Run(fmt.Sprintf("without XDEL %v", noXDEL), func(t *testing.T) {
			t.Parallel()
			url := testenv.RedisURL(t)
			prefix := newPrefix()
			storeURL := url
			if noXDEL {
				storeURL = aclUser(t, url, prefix, "XDEL")
			}
			s := mustOpen(t, storeURL, &Config{Prefix: prefix})
			defer func() { _ = s.Close() }()
			c := redis.NewClient(must(redis.ParseURL(url)))
			defer func() { _ = c.Close() }()
			feedWhileRead(t, s, c, noXDEL)
		})
	}
}

func feedWhileRead(t *testing.T, s *Store, c *redis.Client, noXDEL bool) {
	t.Helper()
	ctx := t.Context()
	ev, mark := s.tag("n")+":ev", s.tag("n")+":evw"
	changes := func(cursor string) store.ChangesResult {
		t.Helper()
		res, err := s.Changes(ctx, store.ChangesParams{Namespace: "n", Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ids := func(res store.ChangesResult) []string {
		var out []string
		for _, ch := range res.Changes {
			out = append(out, ch.ID)
		}
		return out
	}
	unread := func() { // every reader gone (or its mark lost)
		t.Helper()
		if err := c.Del(ctx, mark).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Not read yet: nothing recorded, the ids taken.
	feedBatch(t, s, "n", "a", 3)
	if n := c.XLen(ctx, ev).Val(); n != 0 && !noXDEL {
		t.Fatalf("feed never read: %d entries recorded, want 0", n)
	}
	// A reader starting now misses nothing.
	start := changes("")
	feedBatch(t, s, "n", "b", 1)
	res := changes(start.Cursor)
	if res.Missed || len(res.Changes) != 1 || !strings.HasPrefix(res.Changes[0].ID, "b-") {
		t.Fatalf("after a start: %v, Missed %v; want the one change b", ids(res), res.Missed)
	}
	// Readers gone: a change goes unrecorded, and the next read says so
	// at once, with no change after it.
	unread()
	feedBatch(t, s, "n", "c", 1)
	res = changes(res.Cursor)
	if !res.Missed || len(res.Changes) != 0 {
		t.Fatalf("after an unrecorded change: %v, Missed %v; want Missed", ids(res), res.Missed)
	}
	// That read marked the feed again: the next change is recorded.
	feedBatch(t, s, "n", "d", 1)
	res = changes(res.Cursor)
	if res.Missed || len(res.Changes) != 1 || !strings.HasPrefix(res.Changes[0].ID, "d-") {
		t.Fatalf("after Missed: %v, Missed %v; want the one change d", ids(res), res.Missed)
	}
	// A gap between recorded changes: those before it come alone, then
	// Missed with those after it.
	cursor := res.Cursor
	feedBatch(t, s, "n", "e", 1)
	unread()
	feedBatch(t, s, "n", "f", 1)
	if err := c.Set(ctx, mark, "1", time.Minute).Err(); err != nil { // another reader
		t.Fatal(err)
	}
	feedBatch(t, s, "n", "g", 1)
	res = changes(cursor)
	if res.Missed || len(res.Changes) != 1 || !strings.HasPrefix(res.Changes[0].ID, "e-") {
		t.Fatalf("before a gap: %v, Missed %v; want the one change e", ids(res), res.Missed)
	}
	res = changes(res.Cursor)
	if !res.Missed || len(res.Changes) != 1 || !strings.HasPrefix(res.Changes[0].ID, "g-") {
		t.Fatalf("after a gap: %v, Missed %v; want Missed and the change g", ids(res), res.Missed)
	}
	// The feed holds no change made unread; without XDEL, their calls'
	// empty entries.
	empty := 0
	for _, m := range c.XRange(ctx, ev, "-", "+").Val() {
		e, _ := m.Values["e"].(string)
		if e == "" {
			empty++
		}
		if strings.Contains(e, "a-") || strings.Contains(e, "c-") || strings.Contains(e, "f-") {
			t.Errorf("feed entry %s holds %q: an unrecorded change", m.ID, e)
		}
	}
	if want := map[bool]int{false: 0, true: 3}[noXDEL]; empty != want {
		t.Errorf("%d empty entries, want %d", empty, want)
	}
}
