package redisstore

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// legacyEnqueueScript is the enqueue script of the previous release (twelve
// arguments per task: id, record, payload, queue, type, 9-priority digit,
// RunAt, unique key, unique TTL, max retries, retention, released unique
// key). TestLegacyEnqueuedTasks writes tasks with it, as a process of that
// release sharing the Redis would, and reads and runs them with this one.
var legacyEnqueueScript = redis.NewScript(prelude + `
local nt = (#ARGV - 2) / 12
local base = redis.call('INCRBY', T .. ':seq', nt) - nt
local res, dups = {}, {}
local all, delayed = {}, {}
local ready, readyKeys = {}, {}
local types = {}
local sNOW = S(NOW)
local nowR = R17(NOW)
for j = 0, nt - 1 do
  local i = 3 + j * 12
  local id = ARGV[i]
  local key = tkey(id)
  if redis.call('EXISTS', key) == 1 then
    res[j + 1] = 'E'
  else
    local uk = ARGV[i + 7]
    local dup = nil
    if uk ~= '' then
      local h = redis.call('HGET', T .. ':uq', uk)
      if h then
        local sep = string.find(h, '|', 1, true)
        if tonumber(string.sub(h, 1, sep - 1)) > NOW then dup = string.sub(h, sep + 1) end
      end
      if not dup then
        local untl = S(NOW + tonumber(ARGV[i + 8]))
        redis.call('HSET', T .. ':uq', uk, untl .. '|' .. id)
        redis.call('ZADD', T .. ':uz', untl, uk)
      end
    end
    if dup then
      res[j + 1] = 'D'
      dups[#dups + 1] = dup
    else
      local seq = base + j + 1
      local q, ty, ra = ARGV[i + 3], ARGV[i + 4], ARGV[i + 6]
      local tail = struct.pack('>I8', seq) .. id
      local st, m
      local f = {'d', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW}
      if ARGV[i + 2] ~= '' then f[#f + 1] = 'p'; f[#f + 1] = ARGV[i + 2] end
      if ARGV[i + 9] ~= '' then f[#f + 1] = 'mr'; f[#f + 1] = ARGV[i + 9] end
      if ARGV[i + 10] ~= '' then f[#f + 1] = 'rtu'; f[#f + 1] = ARGV[i + 10] end
      if ARGV[i + 11] ~= '' then f[#f + 1] = 'uk'; f[#f + 1] = ARGV[i + 11] end
      if ra == '' then
        m = ARGV[i + 5] .. nowR .. tail
        st = '2'
      else
        f[#f + 1] = 'ra'; f[#f + 1] = ra
        local nra = tonumber(ra)
        m = ARGV[i + 5] .. R17(nra) .. tail
        if nra > NOW then
          st = '1'
          delayed[#delayed + 1] = ra
          delayed[#delayed + 1] = id
        else
          st = '2'
        end
      end
      if st == '2' then
        stage_ready(ready, readyKeys, types, q, ty, m)
      end
      f[#f + 1] = 'm'; f[#f + 1] = m
      f[#f + 1] = 'st'; f[#f + 1] = st
      redis.call('HSET', key, unpack(f))
      all[#all + 1] = seq
      all[#all + 1] = id
      count(st, q, 1)
      ev('E', st, id, q, ty)
      res[j + 1] = st
    end
  end
end
zadd_all(T .. ':all', all)
if #delayed > 0 then
  -- A new earliest due time wakes the waiting leasers: they wait less.
  local first = redis.call('ZRANGE', T .. ':d', 0, 0, 'WITHSCORES')
  local least = nil
  for k = 1, #delayed, 2 do
    local v = tonumber(delayed[k])
    if not least or v < least then least = v end
  end
  if #first == 0 or least < tonumber(first[2]) then woke = true end
end
zadd_all(T .. ':d', delayed)
add_ready(ready, readyKeys, types)
flush()
return {table.concat(res), dups}
`)

// TestLegacyEnqueuedTasks: tasks that the previous release's enqueue script
// wrote are read, listed, leased and reported by this release as before.
func TestLegacyEnqueuedTasks(t *testing.T) {
	t.Parallel()
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	const ns = "ns"
	if err := s.register(ctx, ns); err != nil {
		t.Fatal(err)
	}
	inputs := []store.TaskInput{
		{ID: "plain", Type: "t"},
		{ID: "full", Type: "u", Queue: "q2", Payload: []byte("payload"), Priority: 7, MaxRetries: 3,
			Timeout: time.Minute, Retention: time.Hour, UniqueKey: "k", UniqueTTL: time.Hour, UniqueUntilSuccess: true},
		{ID: "past", Type: "t", RunAt: time.Now().Add(-time.Hour).Truncate(time.Microsecond)},
		{ID: "later", Type: "t", RunAt: time.Now().Add(time.Hour).Truncate(time.Microsecond)},
	}
	args := []any{s.nowArg(), s.wakeChannel(ns)}
	for i := range inputs {
		in := &inputs[i]
		q := in.Queue
		if q == "" {
			q = store.DefaultQueue
		}
		var ra, ttl, mr, rtu, uk any = "", "", "", "", ""
		if !in.RunAt.IsZero() {
			ra = itoa(microCeil(in.RunAt))
		}
		if in.UniqueKey != "" {
			ttl = in.UniqueTTL.Microseconds()
			if in.UniqueUntilSuccess {
				uk = in.UniqueKey
			}
		}
		if in.MaxRetries != 0 {
			mr = in.MaxRetries
		}
		if in.Retention != 0 {
			rtu = in.Retention.Microseconds()
		}
		args = append(args, in.ID, encodeRecord(nil, in, q), in.Payload, q, in.Type,
			priorityDigits[store.MaxPriority-in.Priority], ra, in.UniqueKey, ttl, mr, rtu, uk)
	}
	if err := legacyEnqueueScript.Load(ctx, s.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	v, err := s.run(ctx, "legacy enqueue", legacyEnqueueScript, ns, true, args)
	if err != nil {
		t.Fatal(err)
	}
	if codes, _, err := enqueueReply(v, len(inputs)); err != nil || codes != "2221" {
		t.Fatalf("legacy enqueue: codes %q, %v; want 2221", codes, err)
	}

	// A new enqueue with the same id or unique key sees them.
	res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{
		{ID: "plain", Type: "t"}, {ID: "other", Type: "t", UniqueKey: "k", UniqueTTL: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Items[0].Err, store.ErrTaskExists) || !errors.Is(res.Items[1].Err, store.ErrDuplicate) || res.Items[1].ID != "full" {
		t.Fatalf("Enqueue over legacy tasks: %+v; want ErrTaskExists, then ErrDuplicate held by full", res.Items)
	}

	got, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"plain", "full", "past", "later"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range got.Tasks {
		in := inputs[i]
		if tk == nil {
			t.Fatalf("Get(%s): missing", in.ID)
		}
		want := store.StatePending
		if in.ID == "later" {
			want = store.StateScheduled
		}
		if tk.ID != in.ID || tk.Type != in.Type || tk.State != want || string(tk.Payload) != string(in.Payload) ||
			tk.Priority != in.Priority || tk.MaxRetries != in.MaxRetries || tk.Retention != in.Retention ||
			tk.UniqueKey != in.UniqueKey || tk.CreatedAt.IsZero() {
			t.Errorf("Get(%s) = %+v; want the input %+v in state %v", in.ID, tk, in, want)
		}
		if !in.RunAt.IsZero() && !tk.RunAt.Equal(in.RunAt) {
			t.Errorf("Get(%s).RunAt = %v; want %v", in.ID, tk.RunAt, in.RunAt)
		}
	}
	list, err := s.List(ctx, store.ListParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range list.Tasks {
		ids = append(ids, tk.ID)
	}
	if !slices.Equal(ids, []string{"plain", "full", "past", "later"}) {
		t.Errorf("List = %v; want plain, full, past, later in enqueue order", ids)
	}

	// Lease the pending ones (q2's first: priority 7), report them.
	lr, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"q2", store.DefaultQueue}, Max: 10, Duration: time.Minute, WorkerID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	var leased []string
	var outs []store.Outcome
	for _, tk := range lr.Tasks {
		leased = append(leased, tk.ID)
		outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		if tk.Attempt != 1 || tk.State != store.StateActive {
			t.Errorf("leased %s: attempt %d, state %v; want 1, active", tk.ID, tk.Attempt, tk.State)
		}
	}
	if !slices.Equal(leased, []string{"full", "past", "plain"}) {
		t.Fatalf("Lease = %v; want full, past, plain (past's RunAt is the earliest of the default queue)", leased)
	}
	rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range rep.Errs {
		if e != nil {
			t.Errorf("Report(%s): %v", outs[i].ID, e)
		}
	}
	got, err = s.Get(ctx, store.GetParams{Namespace: ns, IDs: leased})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range got.Tasks {
		if tk.State != store.StateSucceeded {
			t.Errorf("after Report, %s is %v; want succeeded", tk.ID, tk.State)
		}
	}
	// full released its unique key on success: the key is free again.
	res, err = s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "other", Type: "t", UniqueKey: "k", UniqueTTL: time.Hour}}})
	if err != nil || res.Items[0].Err != nil {
		t.Fatalf("Enqueue with full's released unique key: %+v, %v; want it enqueued", res.Items, err)
	}
}

// TestCreatedAtKept: a task enqueued to run at once has no field ca (its
// creation time is the RunAt in its member); a retry at a later time, a
// retry now, and an admin retry of a dead task change its RunAt but not
// its CreatedAt, and Get, List and Lease all report it.
func TestCreatedAtKept(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	clock := storetest.NewFakeClock(created)
	s := mustOpen(t, testenv.RedisURL(t), &Config{Prefix: newPrefix(), Clock: clock})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	const ns = "ns"
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "a", Type: "t", MaxRetries: 5}}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.rdb.HExists(ctx, s.tag(ns)+":t:a", "ca").Result(); err != nil || n {
		t.Fatalf("field ca of a task to run at once: exists %v, %v; want none", n, err)
	}
	check := func(what string, runAt time.Time) {
		t.Helper()
		got, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		if tk := got.Tasks[0]; !tk.CreatedAt.Equal(created) || !tk.RunAt.Equal(runAt) {
			t.Errorf("%s: Get: created %v, run at %v; want %v, %v", what, tk.CreatedAt, tk.RunAt, created, runAt)
		}
		list, err := s.List(ctx, store.ListParams{Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		if tk := list.Tasks[0]; !tk.CreatedAt.Equal(created) || !tk.RunAt.Equal(runAt) {
			t.Errorf("%s: List: created %v, run at %v; want %v, %v", what, tk.CreatedAt, tk.RunAt, created, runAt)
		}
	}
	lease := func(what string) *store.Task {
		t.Helper()
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Minute, WorkerID: "w"})
		if err != nil || len(res.Tasks) != 1 {
			t.Fatalf("%s: Lease = %+v, %v; want task a", what, res.Tasks, err)
		}
		if tk := res.Tasks[0]; !tk.CreatedAt.Equal(created) {
			t.Errorf("%s: leased with CreatedAt %v; want %v", what, tk.CreatedAt, created)
		}
		return res.Tasks[0]
	}
	report := func(o store.Outcome) {
		t.Helper()
		res, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{o}})
		if err != nil || res.Errs[0] != nil {
			t.Fatalf("Report(%+v): %+v, %v", o, res.Errs, err)
		}
	}
	check("enqueued", created)

	clock.Advance(time.Second)
	tk := lease("first")
	later := clock.Now().Add(time.Minute)
	report(store.Outcome{ID: "a", LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "x", RetryAt: later})
	check("retry later", later)

	clock.Set(later.Add(time.Second))
	tk = lease("second")
	report(store.Outcome{ID: "a", LeaseID: tk.LeaseID, Kind: store.OutcomeRetry, Error: "x"})
	check("retry now", clock.Now())

	tk = lease("third")
	report(store.Outcome{ID: "a", LeaseID: tk.LeaseID, Kind: store.OutcomeDead, Error: "x"})
	clock.Advance(time.Second)
	if _, err := s.Retry(ctx, store.IDsParams{Namespace: ns, IDs: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	check("admin retry", clock.Now())
	lease("after the admin retry")
}
