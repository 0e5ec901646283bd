package redisstore

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// dflt is a task of the default record (isDefaultRecord): kiln's default
// max retries and timeout, and nothing else but its id, type, queue,
// priority and payload.
func dflt(id, q, ty string, prio int, payload string) store.TaskInput {
	in := store.TaskInput{ID: id, Type: ty, Queue: q, Priority: prio, MaxRetries: defaultRecordMaxRetries, Timeout: defaultRecordTimeout}
	if payload != "" {
		in.Payload = []byte(payload)
	}
	return in
}

// TestDefaultRecordLease: the first lease of a task whose record is the
// default one reads nothing of it but its payload (no HMGET, no HGETALL;
// one HGET per task with a payload), returns the task as its member, its
// queue and type (given once per run of tasks of one queue and type), and
// the payload, and Lease makes the same task of it as Get reads after the
// lease; a task of other settings, or with options, is read as before.
func TestDefaultRecordLease(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
	hook := &leaseReplyHook{}
	c.AddHook(hook)
	s.rdb.AddHook(hook)
	ctx := t.Context()
	const ns = "n"
	in := []store.TaskInput{
		dflt("d1", "q1", "a", 0, ""),
		dflt("d2", "q1", "a", 0, "p\x00\x1f"),
		dflt("d3", "q1", "a", 0, ""),
		dflt("d4", "q1", "b", 0, ""),
		dflt("d5", "q2", "a", 0, "x"),
		{ID: "o1", Type: "a", Queue: "q2", MaxRetries: 3, Timeout: defaultRecordTimeout},              // other max retries
		{ID: "o2", Type: "a", Queue: "q2", MaxRetries: defaultRecordMaxRetries},                       // no timeout
		{ID: "o3", Type: "a", Queue: "q2", MaxRetries: defaultRecordMaxRetries, Timeout: time.Second}, // other timeout
		{ID: "o4", Type: "a", Queue: "q2", MaxRetries: defaultRecordMaxRetries, Timeout: defaultRecordTimeout, Retention: time.Hour},
		{ID: "o5", Type: "a", Queue: "q2", MaxRetries: defaultRecordMaxRetries, Timeout: defaultRecordTimeout, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{ID: "o6", Type: "a", Queue: "q2", MaxRetries: defaultRecordMaxRetries, Timeout: defaultRecordTimeout, Deadline: time.Now().Add(time.Hour).Truncate(time.Microsecond)},
	}
	in[3].Priority = 9 // first of q1: leased before d1..d3
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
		t.Fatal(err)
	}
	// The members: byte 19 is 2, and the last sequence byte's low bits
	// are the mark: 1 for a task without options, 3 with a payload, 4
	// more for a default record.
	for _, x := range in {
		m, err := c.HGet(ctx, s.tag(ns)+":t:"+x.ID, "m").Result()
		if err != nil {
			t.Fatal(err)
		}
		want := byte(1)
		if len(x.Payload) > 0 {
			want = 3
		}
		if strings.HasPrefix(x.ID, "d") {
			want += 4
		}
		if x.ID == "o4" {
			want = 0 // options: no mark
		}
		if m[18] != 2 || m[25]%8 != want || m[memberIDStart:] != x.ID {
			t.Errorf("%s: member %q: byte 19 %d mark %d, want 2 and %d", x.ID, m, m[18], m[25]%8, want)
		}
	}
	hook.mu.Lock()
	hook.replies = nil
	hook.mu.Unlock()
	mon := startMonitor(t, opts.Addr)
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"q1", "q2"}, Max: len(in), Duration: time.Hour, WorkerID: "w"})
	cmds := mon.stop(t, c, "end")
	if err != nil || len(res.Tasks) != len(in) {
		t.Fatalf("Lease = %d tasks, %v; want %d", len(res.Tasks), err, len(in))
	}
	// Which records were read, and how.
	reads := map[string][]string{}
	for _, args := range cmds {
		name := strings.ToUpper(args[0])
		if (name == "HGET" || name == "HMGET" || name == "HGETALL") && len(args) > 1 {
			id := args[1][strings.LastIndex(args[1], ":")+1:]
			reads[id] = append(reads[id], name)
		}
	}
	want := map[string][]string{
		"d2": {"HGET"}, "d5": {"HGET"},
		"o1": {"HMGET"}, "o2": {"HMGET"}, "o3": {"HMGET"}, "o5": {"HMGET"}, "o6": {"HMGET"},
		"o4": {"HGETALL"},
	}
	if !reflect.DeepEqual(reads, want) {
		t.Errorf("records read by the lease: %v, want %v", reads, want)
	}
	hook.mu.Lock()
	reply, _ := hook.replies[0].([]any)
	hook.mu.Unlock()
	kinds, _ := reply[4].(string)
	// q1's b (priority 9) first, then q1's a, then q2's a.
	if kinds[:5] != "TTutU" {
		t.Errorf("kinds of the lease reply %q, want TTutU first", kinds)
	}
	ids := make([]string, len(res.Tasks))
	for i, lt := range res.Tasks {
		ids[i] = lt.ID
	}
	if want := []string{"d4", "d1", "d2", "d3", "d5", "o1", "o2", "o3", "o4", "o5", "o6"}; !slices.Equal(ids, want) {
		t.Errorf("leased %v, want %v", ids, want)
	}
	read, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: ids})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]store.TaskInput{}
	for _, x := range in {
		byID[x.ID] = x
	}
	for i, lt := range res.Tasks {
		if g := read.Tasks[i]; g == nil || !reflect.DeepEqual(lt, g) {
			t.Errorf("leased %s:\n%+v\nGet after the lease:\n%+v", lt.ID, *lt, g)
		}
		x := byID[lt.ID]
		if lt.Attempt != 1 || lt.Priority != x.Priority || lt.MaxRetries != x.MaxRetries || lt.Timeout != x.Timeout ||
			string(lt.Payload) != string(x.Payload) || lt.Queue != x.Queue || lt.Type != x.Type || lt.State != store.StateActive {
			t.Errorf("leased %s: %+v, enqueued %+v", lt.ID, *lt, x)
		}
	}
}

// TestDefaultRecordMarkDropped: a default record's task made ready again
// (released, retried) loses the mark and is read whole; a member that kept
// the default mark though its record was leased (as a kiln before the
// default mark, which knows only the members of byte 1, leaves it when it
// hands a task back) is told by the lease's own write, which finds the
// lease fields there, and read whole, its attempt the one after the
// failures in its error history; and a member of byte 1, as earlier
// kilns write them, is never taken for a default record, whatever its
// sequence's bits.
func TestDefaultRecordMarkDropped(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
	ctx := t.Context()
	const ns = "n"
	key, rk := s.tag(ns)+":t:k", s.tag(ns)+":r:q/t"
	lease := func(whole bool, attempt int) *store.Task {
		t.Helper()
		mon := startMonitor(t, opts.Addr)
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, WorkerID: "w"})
		var names []string
		for _, args := range mon.stop(t, c, "end") {
			names = append(names, strings.ToUpper(args[0]))
		}
		if err != nil || len(res.Tasks) != 1 {
			t.Fatalf("Lease = %d tasks, %v", len(res.Tasks), err)
		}
		lt := res.Tasks[0]
		if got := slices.Contains(names, "HGETALL"); got != whole {
			t.Errorf("record read whole %v, want %v (commands %v)", got, whole, names)
		}
		if lt.Attempt != attempt || string(lt.Payload) != "pp" || lt.MaxRetries != defaultRecordMaxRetries {
			t.Errorf("leased attempt %d payload %q max retries %d, want attempt %d", lt.Attempt, lt.Payload, lt.MaxRetries, attempt)
		}
		if a, err := c.HGet(ctx, key, "a").Result(); err != nil || a != itoa(int64(attempt)) {
			t.Errorf("field a %q, %v; want %d", a, err, attempt)
		}
		return lt
	}
	report := func(lt *store.Task, kind store.OutcomeKind) {
		t.Helper()
		o := store.Outcome{ID: lt.ID, LeaseID: lt.LeaseID, Kind: kind}
		if kind == store.OutcomeRetry {
			o.Error = "boom"
		}
		if rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{o}}); err != nil || rep.Errs[0] != nil {
			t.Fatalf("Report %s: %v %v", kind, err, rep)
		}
	}
	remark := func(key string, f func(b []byte)) { t.Helper(); rewriteMember(t, c, key, rk, f) }
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{dflt("k", "q", "t", 0, "pp")}}); err != nil {
		t.Fatal(err)
	}
	report(lease(false, 1), store.OutcomeRetry) // retried now: ready again
	m, err := c.HGet(ctx, key, "m").Result()
	if err != nil || m[18] != 2 || m[25]%2 != 0 {
		t.Fatalf("member after a retry %q, %v: want byte 19 2 and no mark", m, err)
	}
	report(lease(true, 2), store.OutcomeRelease) // released after its start: the attempt counts
	// The default mark again on a record leased twice, failed once: the
	// attempt after the failures (2), which is what it can tell.
	remark(key, func(b []byte) { b[25] |= 7 })
	lt := lease(true, 2)
	if lt.LastError != "boom" || len(lt.Errors) != 1 {
		t.Errorf("leased with the default mark kept: last error %q, %d errors; want the record whole", lt.LastError, len(lt.Errors))
	}
	report(lt, store.OutcomeRelease)
	lease(true, 3) // released after its start: the attempt counts

	// A member of byte 1 whose sequence's bits read as a default mark in
	// the members of byte 2: its record is read (HMGET), not made.
	o := store.TaskInput{ID: "o", Type: "t", Queue: "q", Payload: []byte("pp"), MaxRetries: 3, Timeout: time.Second}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{o}}); err != nil {
		t.Fatal(err)
	}
	remark(s.tag(ns)+":t:o", func(b []byte) { b[18], b[25] = 1, b[25]|7 })
	mon := startMonitor(t, opts.Addr)
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute, WorkerID: "w"})
	cmds := mon.stop(t, c, "end-o")
	if err != nil || len(res.Tasks) != 1 {
		t.Fatalf("Lease = %d tasks, %v", len(res.Tasks), err)
	}
	if lt := res.Tasks[0]; lt.ID != "o" || lt.MaxRetries != 3 || lt.Timeout != time.Second || string(lt.Payload) != "pp" || lt.Attempt != 1 {
		t.Errorf("leased %+v, enqueued %+v", *lt, o)
	}
	if !slices.ContainsFunc(cmds, func(args []string) bool { return strings.EqualFold(args[0], "HMGET") }) {
		t.Errorf("the record of a member of byte 1 not read by HMGET: %v", cmds)
	}
}

// FuzzDecodeDefault: decodeDefault refuses what is no member of a default
// record, without panicking, and reads back the id, the priority and the
// creation time of one.
func FuzzDecodeDefault(f *testing.F) {
	f.Add("901796692567228126\x02\x00\x00\x00\x00\x00\x00\x0ek", "q", "t", 3, int64(1796692567228126), "id")
	f.Add("", "", "", 0, int64(0), "")
	f.Add("x", "q", "t", 9, int64(1), "\x00")
	f.Fuzz(func(t *testing.T, m, q, ty string, prio int, us int64, id string) {
		if task, err := decodeDefault("n", m, q, ty, "", false); err == nil {
			if task.ID != m[memberIDStart:] || task.Priority < 0 || task.Priority > store.MaxPriority || task.Queue != q || task.Type != ty {
				t.Fatalf("decodeDefault(%q) = %+v", m, *task)
			}
		}
		prio = ((prio % (store.MaxPriority + 1)) + store.MaxPriority + 1) % (store.MaxPriority + 1)
		us = max(us%1e16, -us%1e16)
		if id == "" || q == "" || ty == "" || us <= 0 {
			return
		}
		member := string(rune('0'+store.MaxPriority-prio)) + fmt.Sprintf("%017d", us) + "\x02\x00\x00\x00\x00\x00\x00\x0d" + id
		task, err := decodeDefault("n", member, q, ty, "p", true)
		if err != nil {
			t.Fatalf("decodeDefault(%q): %v", member, err)
		}
		if task.ID != id || task.Priority != prio || task.Queue != q || task.Type != ty || string(task.Payload) != "p" ||
			!task.CreatedAt.Equal(time.UnixMicro(us)) || !task.RunAt.Equal(task.CreatedAt) ||
			task.MaxRetries != defaultRecordMaxRetries || task.Timeout != defaultRecordTimeout {
			t.Fatalf("decodeDefault(%q) = %+v", member, *task)
		}
	})
}

// rewriteMember rewrites with f the member of the task at key, in its
// ready set rk and in its record.
func rewriteMember(t *testing.T, c *redis.Client, key, rk string, f func(b []byte)) {
	t.Helper()
	ctx := t.Context()
	m, err := c.HGet(ctx, key, "m").Result()
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(m)
	f(b)
	if err := c.ZRem(ctx, rk, m).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, rk, redis.Z{Member: string(b)}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, key, "m", string(b)).Err(); err != nil {
		t.Fatal(err)
	}
}
