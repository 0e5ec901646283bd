package redisstore

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// leaseReplyHook keeps the lease script's replies.
type leaseReplyHook struct {
	mu      sync.Mutex
	replies []any
}

func (h *leaseReplyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *leaseReplyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if c, ok := cmd.(onceCmd); ok && err == nil && cmd.Name() == "evalsha" && len(args) > 1 && args[1] == leaseScript.Hash() {
			h.mu.Lock()
			h.replies = append(h.replies, c.Val())
			h.mu.Unlock()
		}
		return err
	}
}

func (h *leaseReplyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLeaseReply: the lease script returns a record of no fields but those
// Lease needs (d, m, p, a, and rtu, dp, fl as a list with a) and those it
// ignores (q, ty, mr, st and the lease fields) without field names, any
// other record whole; and Lease decodes both as Get reads the leased task.
func TestLeaseReply(t *testing.T) {
	t.Parallel()
	hook := &leaseReplyHook{}
	rdb := hookedClient(t, hook)
	s, err := New(t.Context(), rdb, &Config{Prefix: newPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	const ns = "n"
	lease := func(q string, n int) []*store.Task {
		t.Helper()
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{q}, Max: n, Duration: time.Hour, WorkerID: "w\x1fx"})
		if err != nil || len(res.Tasks) != n {
			t.Fatalf("Lease(%s) = %d tasks, %v; want %d", q, len(res.Tasks), err, n)
		}
		return res.Tasks
	}
	// "again" has the fields a, l, le and sw of a lease it was released
	// from; "past" has ca and ra, "kept" rtu.
	in := []store.TaskInput{
		{ID: "again", Type: "t", Queue: "q", Payload: []byte("p\x00q"), MaxRetries: 3, Priority: 2},
		{ID: "bare", Type: "t", Queue: "q"},
		{ID: "past", Type: "t", Queue: "q", RunAt: time.Now().Add(-time.Hour).Truncate(time.Microsecond)},
		{ID: "kept", Type: "t", Queue: "q", Retention: time.Hour},
		{ID: "retries", Type: "t", Queue: "q", MaxRetries: 2},
		{ID: "payload", Type: "t", Queue: "q", Payload: []byte("x")},
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in[:1]}); err != nil {
		t.Fatal(err)
	}
	first := lease("q", 1)[0]
	rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: "again", LeaseID: first.LeaseID, Kind: store.OutcomeRelease}}})
	if err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report release: %v %v", err, rep)
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in[1:]}); err != nil {
		t.Fatal(err)
	}
	hook.mu.Lock()
	hook.replies = nil
	hook.mu.Unlock()
	leased := lease("q", 6)

	hook.mu.Lock()
	if len(hook.replies) != 1 {
		t.Fatalf("%d lease script replies, want 1", len(hook.replies))
	}
	reply, _ := hook.replies[0].([]any)
	hook.mu.Unlock()
	raw, _ := reply[2].([]any)
	if len(raw) != 6*leaseStride {
		t.Fatalf("lease script reply of %d values for 6 tasks: %q", len(raw), raw)
	}
	compact, listed := map[string]bool{}, map[string]bool{}
	for i, lt := range leased {
		_, whole := raw[i*leaseStride].([]any)
		compact[lt.ID] = !whole
		_, listed[lt.ID] = raw[i*leaseStride+3].([]any)
	}
	if want := map[string]bool{"again": true, "bare": true, "past": false, "kept": true, "retries": true, "payload": true}; !reflect.DeepEqual(compact, want) {
		t.Errorf("returned without field names: %v, want %v", compact, want)
	}
	if want := map[string]bool{"again": false, "bare": false, "past": false, "kept": true, "retries": false, "payload": false}; !reflect.DeepEqual(listed, want) {
		t.Errorf("attempt given with the workflow fields: %v, want %v", listed, want)
	}

	ids := make([]string, len(leased))
	for i, lt := range leased {
		ids[i] = lt.ID
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	for i, lt := range leased {
		g := got.Tasks[i]
		if g == nil {
			t.Fatalf("Get(%s) = nil", lt.ID)
		}
		if !reflect.DeepEqual(lt, g) {
			t.Errorf("leased %s:\n%+v\nGet after the lease:\n%+v", lt.ID, *lt, *g)
		}
	}
	for _, lt := range leased {
		if lt.ID == "again" && (lt.Attempt != 2 || string(lt.Payload) != "p\x00q" || lt.MaxRetries != 3 || lt.Priority != 2) {
			t.Errorf("leased again: attempt %d payload %q max retries %d priority %d", lt.Attempt, lt.Payload, lt.MaxRetries, lt.Priority)
		}
		if lt.ID == "retries" && (lt.MaxRetries != 2 || lt.Attempt != 1 || len(lt.Payload) != 0) {
			t.Errorf("leased retries: max retries %d attempt %d payload %q", lt.MaxRetries, lt.Attempt, lt.Payload)
		}
		if lt.ID == "payload" && string(lt.Payload) != "x" {
			t.Errorf("leased payload: payload %q", lt.Payload)
		}
	}
	if leased[0].LeaseID+5 != leased[5].LeaseID || leased[0].LeaseID <= first.LeaseID {
		t.Errorf("lease ids %d..%d after %d, want consecutive and later", leased[0].LeaseID, leased[5].LeaseID, first.LeaseID)
	}
}

// TestLeaseReadsCommonRecord: the lease reads the record of a task leased
// for the first time with no fields but those its enqueue wrote for a task
// without options (with or without payload and max retries) by HLEN and
// HMGET; a record of up to seven fields otherwise looked at by HMGET too,
// then whole (one with options has as many fields as one with a payload, or
// more); one of more (a task leased before) whole at once; and a user
// granted what an older kiln needed, without HLEN, still leases: its script
// reads every record whole.
func TestLeaseReadsCommonRecord(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
	ctx := t.Context()
	// whole: the record is read with HGETALL; fields: with HMGET.
	check := func(s *Store, ns string, in store.TaskInput, whole, fields bool, attempt int) {
		t.Helper()
		if attempt == 1 {
			if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{in}}); err != nil {
				t.Fatal(err)
			}
		}
		mon := startMonitor(t, opts.Addr)
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, WorkerID: "w"})
		var names []string
		for _, args := range mon.stop(t, c, "end-"+ns) {
			names = append(names, strings.ToUpper(args[0]))
		}
		if err != nil || len(res.Tasks) != 1 {
			t.Fatalf("%s: Lease = %d tasks, %v", ns, len(res.Tasks), err)
		}
		lt := res.Tasks[0]
		if lt.ID != in.ID || string(lt.Payload) != string(in.Payload) || lt.MaxRetries != in.MaxRetries || lt.Attempt != attempt || lt.Type != in.Type {
			t.Errorf("%s: leased %+v, enqueued %+v", ns, *lt, in)
		}
		if got := slices.Contains(names, "HGETALL"); got != whole {
			t.Errorf("%s: record read whole %v, want %v (commands %v)", ns, got, whole, names)
		}
		if got := slices.Contains(names, "HMGET"); got != fields {
			t.Errorf("%s: record's fields read %v, want %v (commands %v)", ns, got, fields, names)
		}
		// Released for the next check of the same task.
		if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: lt.ID, LeaseID: lt.LeaseID, Kind: store.OutcomeRelease}}}); err != nil || rep.Errs[0] != nil {
			t.Fatalf("%s: release: %v %v", ns, err, rep)
		}
	}
	bare := store.TaskInput{ID: "a", Type: "t", Queue: "q"}
	both := store.TaskInput{ID: "d", Type: "t", Queue: "q", Payload: []byte("pp"), MaxRetries: 1}
	check(s, "bare", bare, false, true, 1)
	check(s, "retries", store.TaskInput{ID: "b", Type: "t", Queue: "q", MaxRetries: 4}, false, true, 1)
	check(s, "payload", store.TaskInput{ID: "c", Type: "t", Queue: "q", Payload: []byte("pp")}, false, true, 1)
	check(s, "both", both, false, true, 1)
	// Six and seven fields: looked at, then read whole.
	check(s, "kept", store.TaskInput{ID: "f", Type: "t", Queue: "q", Retention: time.Hour}, true, true, 1)
	check(s, "past", store.TaskInput{ID: "g", Type: "t", Queue: "q", RunAt: time.Now().Add(-time.Hour)}, true, true, 1)
	// Eight fields or more: ca, ra and a payload; or leased before.
	check(s, "pastpayload", store.TaskInput{ID: "h", Type: "t", Queue: "q", Payload: []byte("pp"), RunAt: time.Now().Add(-time.Hour)}, true, false, 1)
	check(s, "bare", bare, true, false, 2)
	check(s, "both", both, true, false, 2)

	prefix := newPrefix()
	noHLEN := mustOpen(t, aclUser(t, "redis://"+opts.Addr+"/0", prefix, "HLEN"), &Config{Prefix: prefix})
	t.Cleanup(func() { _ = noHLEN.Close() })
	check(noHLEN, "nohlen", store.TaskInput{ID: "e", Type: "t", Queue: "q"}, true, false, 1)
}
