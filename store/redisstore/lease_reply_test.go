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
// ignores (q, ty, mr, st and the lease fields) without field names, and
// without p and a when it has neither; any other record whole; and Lease
// decodes each as Get reads the leased task.
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
	// The values per task: d and m ("a"), and p ("b"), and a or the list
	// of a and the workflow fields ("c"), or the record whole ("r").
	raw, _ := reply[2].([]any)
	kinds, _ := reply[4].(string)
	if len(kinds) != 6 || len(raw) != 2+4+1+4+2+3 {
		t.Fatalf("lease script reply of %d values for tasks of kinds %q: %q", len(raw), kinds, raw)
	}
	got := map[string]string{}
	listed := map[string]bool{}
	i := 0
	for k, lt := range leased {
		n := strings.IndexByte("-rabc", kinds[k])
		if _, whole := raw[i].([]any); whole != (kinds[k] == 'r') {
			t.Errorf("%s: kind %q, first value %q", lt.ID, kinds[k], raw[i])
		}
		if n == 4 {
			_, listed[lt.ID] = raw[i+3].([]any)
		}
		got[lt.ID] = kinds[k : k+1]
		i += n
	}
	if want := map[string]string{"again": "c", "bare": "a", "past": "r", "kept": "c", "retries": "a", "payload": "b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("kinds of the returned tasks: %v, want %v", got, want)
	}
	if want := map[string]bool{"again": false, "kept": true}; !reflect.DeepEqual(listed, want) {
		t.Errorf("attempt given with the workflow fields: %v, want %v", listed, want)
	}

	ids := make([]string, len(leased))
	for i, lt := range leased {
		ids[i] = lt.ID
	}
	read, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	for i, lt := range leased {
		g := read.Tasks[i]
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
// without options (with or without payload and max retries) by one HMGET,
// told by the mark in its ready-set member; any other record whole at once
// (a task with options, a workflow member, a task made ready again after a
// lease: released, retried or its lease expired, whose member loses the
// mark); and a task whose member kept the mark though its record changed
// (as a kiln of the release before would leave it) by the HMGET, which
// finds field a, then whole.
func TestLeaseReadsCommonRecord(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
	ctx := t.Context()
	// whole: the record is read with HGETALL; fields: with HMGET. after:
	// the outcome reported once the checks are done (release, or retry
	// now), which makes the task ready for the next check of it.
	check := func(ns string, in store.TaskInput, whole, fields bool, attempt int, after store.OutcomeKind) {
		t.Helper()
		if attempt == 1 && ns != "flow" { // the workflow's member is written by EnqueueFlow
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
		o := store.Outcome{ID: lt.ID, LeaseID: lt.LeaseID, Kind: after}
		if after == store.OutcomeRetry {
			o.Error = "again"
		}
		if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{o}}); err != nil || rep.Errs[0] != nil {
			t.Fatalf("%s: %s: %v %v", ns, after, err, rep)
		}
	}
	rel, retry := store.OutcomeRelease, store.OutcomeRetry
	bare := store.TaskInput{ID: "a", Type: "t", Queue: "q"}
	both := store.TaskInput{ID: "d", Type: "t", Queue: "q", Payload: []byte("pp"), MaxRetries: 1}
	again := store.TaskInput{ID: "r", Type: "t", Queue: "q", MaxRetries: 3}
	check("bare", bare, false, true, 1, rel)
	check("retries", store.TaskInput{ID: "b", Type: "t", Queue: "q", MaxRetries: 4}, false, true, 1, rel)
	check("payload", store.TaskInput{ID: "c", Type: "t", Queue: "q", Payload: []byte("pp")}, false, true, 1, rel)
	check("both", both, false, true, 1, rel)
	check("again", again, false, true, 1, retry)
	// With options: read whole.
	check("kept", store.TaskInput{ID: "f", Type: "t", Queue: "q", Retention: time.Hour}, true, false, 1, rel)
	check("past", store.TaskInput{ID: "g", Type: "t", Queue: "q", RunAt: time.Now().Add(-time.Hour)}, true, false, 1, rel)
	check("pastpayload", store.TaskInput{ID: "h", Type: "t", Queue: "q", Payload: []byte("pp"), RunAt: time.Now().Add(-time.Hour)}, true, false, 1, rel)
	// Made ready again after a lease: no mark.
	check("bare", bare, true, false, 2, rel)
	check("both", both, true, false, 2, rel)
	check("again", again, true, false, 2, rel)
	exp := store.TaskInput{ID: "x", Type: "t", Queue: "q", MaxRetries: 2}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "expired", Tasks: []store.TaskInput{exp}}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Lease(ctx, store.LeaseParams{Namespace: "expired", Queues: []string{"q"}, Max: 1, Duration: time.Millisecond, WorkerID: "w"}); err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %v, %v", res, err)
	}
	time.Sleep(5 * time.Millisecond) // past the lease's end
	if sw, err := s.Sweep(ctx, store.SweepParams{}); err != nil || sw.Recovered < 1 {
		t.Fatalf("Sweep = %+v, %v; want the expired lease recovered", sw, err)
	}
	check("expired", exp, true, false, 2, rel)
	// A member that kept its mark through a release (a kiln of the release
	// before this one hands tasks back so): field a tells the record from
	// the common one.
	kept := store.TaskInput{ID: "k", Type: "t", Queue: "q", Payload: []byte("pp")}
	check("marked", kept, false, true, 1, rel)
	key, rk := s.tag("marked")+":t:k", s.tag("marked")+":r:q/t"
	rewriteMember(t, c, key, rk, func(b []byte) { b[25]++ }) // the mark again
	check("marked", kept, true, true, 2, rel)
	// A workflow member: no mark.
	member := store.TaskInput{ID: "w", Type: "t", Queue: "q"}
	if err := s.EnqueueFlow(ctx, store.FlowParams{Namespace: "flow", ID: "fl", Spec: []byte("s"), Tasks: []store.TaskInput{member}}); err != nil {
		t.Fatal(err)
	}
	check("flow", member, true, false, 1, rel)
}
