package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

var _ store.Flows = (*Store)(nil)

// Keys of flows (see store.Flows), after the namespace's tag T:
//
//	T:f:<flow>   hash  the flow record: s (spec), ca (created, µs)
//	T:fl         zset  every flow id, all scores 0 (ListFlows' order)
//	T:fh:<flow>  zset  its held tasks not yet released, scored by position
//	T:h:<id>     hash  a held task: d, p, q, ty, pd (9-priority digit), mr,
//	                   rtu, dp (its dependents), fl (its flow), w (the
//	                   number of tasks it still waits for)
//
// Flows written before this format may also have T:fm:<flow> (set: all its
// tasks, deleted with the flow) and T:dp:<id> (set: the held tasks waiting
// for task id, whose record then has dp = "1").
//
// The flow record also has the field n: the number of its tasks (ready or
// held) still stored, and u: the number not yet in a terminal state. When
// u reaches 0 (flow_ended, in the script that finishes or deletes the last
// open task) the record's field xe (µs) becomes at least that task's ea:
// one write, not one per member. Sweep keeps a finished member until the
// later of its own ea and its flow's xe (moving its T:x score there), and
// Get and List report that later time as its ExpiresAt. While u > 0, Sweep
// moves finished members from T:x to the set T:fx:<flow> without deleting
// them (flow_holds), and flow_ended puts them back in T:x at xe. An admin
// Retry of a member adds 1 to u again. Every task of a flow has the field
// fl (its flow) in its record, copied when a held task is released. The
// scripts that delete a task record (Delete, and Sweep's retention) call
// flow_gone on its fl in the same script: it decrements n, and when it
// reaches 0 deletes T:f:<flow>, T:fh:<flow> and the id from T:fl. A flow is
// therefore deleted in the step that deletes the last of its tasks, never
// earlier.
//
// A task with dependents lists them in its field dp, each id after a
// space (a chord's member: the callback). Every script that moves a task
// to a terminal state, or deletes one that had not finished, calls
// flow_done on it in the same script: it empties or deletes dp (so a later
// terminal transition counts nothing; Report empties it in the write of
// the outcome) and counts the task for each held task in it. The counts of the script are written at its end (flow_apply, called
// by flush, still in the script): w of each such held task drops by the
// number counted, and those that reach 0 are enqueued; u of each flow
// drops by its tasks that ended. A report of 50 members of a chord is then
// one write of the callback's w and one of the flow's u.
var flowLua = `
-- The counts of a script are gathered and written once, by flow_apply
-- (which flush calls first): fd_w[h] is the number of tasks finished here
-- that held task h waited for, fe_n[fl] the number of tasks of flow fl
-- that ended here and fe_ea[fl] the latest of their expiries.
local fd_w, fd_order, fe_n, fe_ea, fe_order = {}, {}, {}, {}, {}

-- flow_done counts task id (whose field dp is dp; nil: read it) as
-- finished for each held task that waits for it, once: its dependents are
-- then forgotten (new records: dp, which lists them each after a space,
-- is deleted, or emptied by the caller's own write of the record when
-- cleared is set; records written before: dp is "1" and the set
-- T:dp:<id> lists them, deleted). flow_apply releases those that wait for
-- nothing more.
local function flow_done(id, dp, cleared)
  if dp == nil then dp = redis.call('HGET', tkey(id), 'dp') end
  if not dp or dp == '' then return end
  local hs
  if dp == '1' then
    local dk = T .. ':dp:' .. id
    hs = redis.call('SMEMBERS', dk)
    if #hs == 0 then return end
    redis.call('DEL', dk)
  else
    if not cleared then redis.call('HDEL', tkey(id), 'dp') end
    hs = {}
    for h in string.gmatch(dp, '%S+') do hs[#hs + 1] = h end
  end
  for _, h in ipairs(hs) do
    local c = fd_w[h]
    if not c then
      c = 0
      fd_order[#fd_order + 1] = h
    end
    fd_w[h] = c + 1
  end
end

local function flow_release(h, n)
  local hk = T .. ':h:' .. h
  if redis.call('EXISTS', hk) == 0 then return end
  if redis.call('HINCRBY', hk, 'w', -n) > 0 then return end
  local f = redis.call('HMGET', hk, 'd', 'p', 'q', 'ty', 'pd', 'mr', 'rtu', 'fl', 'dp')
  if not f[1] then return end
  local seq = redis.call('INCR', T .. ':seq')
  local m = f[5] .. R17(NOW) .. struct.pack('>I8', seq) .. h
  local tf = {'d', f[1], 'q', f[3], 'ty', f[4], 'ca', S(NOW), 'm', m, 'st', '2'}
  if f[8] then tf[#tf + 1] = 'fl'; tf[#tf + 1] = f[8] end
  if f[2] then tf[#tf + 1] = 'p'; tf[#tf + 1] = f[2] end
  if f[6] then tf[#tf + 1] = 'mr'; tf[#tf + 1] = f[6] end
  if f[7] then tf[#tf + 1] = 'rtu'; tf[#tf + 1] = f[7] end
  if f[9] then tf[#tf + 1] = 'dp'; tf[#tf + 1] = f[9] end
  redis.call('HSET', tkey(h), unpack(tf))
  redis.call('ZADD', T .. ':all', seq, h)
  push_ready(f[3], f[4], m)
  count('2', f[3], 1)
  ev('E', '2', h, f[3], f[4])
  redis.call('DEL', hk)
  if f[8] then redis.call('ZREM', T .. ':fh:' .. f[8], h) end
end

local function flow_gone(fl)
  if not fl then return end
  local fk = T .. ':f:' .. fl
  if not redis.call('HGET', fk, 'n') then return end
  if redis.call('HINCRBY', fk, 'n', -1) <= 0 then
    redis.call('DEL', fk, T .. ':fh:' .. fl, T .. ':fm:' .. fl, T .. ':fx:' .. fl)
    redis.call('ZREM', T .. ':fl', fl)
  end
end

-- flow_ended notes that a task of flow fl reached a terminal state (or was
-- deleted before it did), whose expiry would be ea (µs). flow_apply
-- subtracts them from the flow's open count u; when that reaches 0, the
-- flow's expiry xe becomes at least the latest such ea (Sweep keeps every
-- finished member until then), and the members Sweep parked in
-- T:fx:<flow> while the flow was open go back in T:x at xe.
local function flow_ended(fl, ea)
  if not fl then return end
  local n = fe_n[fl]
  if not n then
    n = 0
    fe_order[#fe_order + 1] = fl
    fe_ea[fl] = ea
  elseif tonumber(ea) > tonumber(fe_ea[fl]) then
    fe_ea[fl] = ea
  end
  fe_n[fl] = n + 1
end

local function flow_end_apply(fl, n, ea)
  local fk = T .. ':f:' .. fl
  if not redis.call('HGET', fk, 'u') then return end
  if redis.call('HINCRBY', fk, 'u', -n) > 0 then return end
  local old = redis.call('HGET', fk, 'xe')
  if old and tonumber(old) > tonumber(ea) then ea = old end
  redis.call('HSET', fk, 'xe', ea)
  local pk = T .. ':fx:' .. fl
  local l = {}
  for _, m in ipairs(redis.call('SMEMBERS', pk)) do
    l[#l + 1] = ea
    l[#l + 1] = m
  end
  zadd_all(T .. ':x', l)
  redis.call('DEL', pk)
end

flow_apply = function()
  for _, h in ipairs(fd_order) do flow_release(h, fd_w[h]) end
  fd_w, fd_order = {}, {}
  for _, fl in ipairs(fe_order) do flow_end_apply(fl, fe_n[fl], fe_ea[fl]) end
  fe_n, fe_ea, fe_order = {}, {}, {}
end

-- flow_expiry returns the expiry xe of flow fl once all its tasks ended
-- (a number, µs), or nil.
local function flow_expiry(fl)
  if not fl then return nil end
  return tonumber(redis.call('HGET', T .. ':f:' .. fl, 'xe'))
end

-- flow_reopened notes that a finished task of flow fl runs again.
local function flow_reopened(fl)
  if fl and redis.call('HEXISTS', T .. ':f:' .. fl, 'u') == 1 then
    redis.call('HINCRBY', T .. ':f:' .. fl, 'u', 1)
  end
end

-- flow_holds reports whether flow fl has a task not finished: its finished
-- members are then not deleted (Sweep parks them in T:fx:<flow>, and
-- flow_ended adds them to T:x again).
local function flow_holds(fl)
  if not fl then return false end
  return (tonumber(redis.call('HGET', T .. ':f:' .. fl, 'u')) or 0) > 0
end
`

// flowTaskArgs is the number of ARGV values per task of flowScript (held
// tasks add the count of the tasks they wait for).
const flowTaskArgs = 10

// flowScript adds a flow. ARGV[3] is the flow id, ARGV[4] the spec,
// ARGV[5] and ARGV[6] the numbers of ready and held tasks, then per task:
// id, record (field d), payload, queue, type, 9-priority digit, max
// retries, retention µs, its dependents (the held tasks that wait for it,
// each after a space; "" for none), RunAt µs ("" for now); a held task
// follows with the number of tasks it waits for.
// It returns "F" when the flow exists, "E<id>" when a task id is taken, or
// "O".
var flowScript = redis.NewScript(prelude + `
local fid = ARGV[3]
local nt, nh = tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('EXISTS', T .. ':f:' .. fid) == 1 then return 'F' end
local i = 7
local starts = {}
local TK, TH = T .. ':t:', T .. ':h:'
-- Every id must be free (no task record, no held task): one EXISTS per
-- 500 ids, and only a chunk that has a taken id is looked at id by id,
-- so the first taken id in order is the one reported. The task keys
-- built here (ek[2j - 1] of member j) serve its HSET below.
local ek = {}
for j = 1, nt + nh do
  starts[j] = i
  local id = ARGV[i]
  ek[#ek + 1] = TK .. id
  ek[#ek + 1] = TH .. id
  i = i + ` + strconv.Itoa(flowTaskArgs) + `
  if j > nt then i = i + 1 end
end
for c = 1, #ek, 1000 do
  local e = math.min(c + 999, #ek)
  if redis.call('EXISTS', unpack(ek, c, e)) > 0 then
    for k = c, e, 2 do
      if redis.call('EXISTS', ek[k], ek[k + 1]) > 0 then return 'E' .. ARGV[starts[(k + 1) / 2]] end
    end
  end
end
redis.call('HSET', T .. ':f:' .. fid, 's', ARGV[4], 'ca', S(NOW), 'n', nt + nh, 'u', nt + nh)
redis.call('ZADD', T .. ':fl', 0, fid)
local sNOW = S(NOW)
local nowR = R17(NOW)
local base = redis.call('INCRBY', T .. ':seq', nt) - nt
local all, delayed, ready, readyKeys, types = {}, {}, {}, {}, {}
local na = 0
-- The strings shared by members of the same queue and type (the change
-- feed's tail of their entries, their ready set) are built once per run
-- of such members.
local lq, lty, evq, rl, rn
for j = 1, nt do
  local i = starts[j]
  local id, q, ty, ra = ARGV[i], ARGV[i + 3], ARGV[i + 4], ARGV[i + 9]
  local seq = base + j
  local key = ek[j + j - 1]
  if q ~= lq or ty ~= lty then
    lq, lty = q, ty
    evq = '\31' .. q .. '\31' .. ty .. '\31' .. '0' .. '\31'
    rl = nil
  end
  local p, mr, rtu, dp = ARGV[i + 2], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local st, m
  if ra == '' then
    m = ARGV[i + 5] .. nowR .. struct.pack('>I8', seq) .. id
    st = '2'
  else
    local nra = tonumber(ra)
    m = ARGV[i + 5] .. R17(nra) .. struct.pack('>I8', seq) .. id
    if nra > NOW then
      st = '1'
      delayed[#delayed + 1] = ra
      delayed[#delayed + 1] = id
    else
      st = '2'
    end
  end
  if ra == '' and mr == '' and rtu == '' then
    -- The common member: its fields without a table.
    if p == '' then
      if dp == '' then
        redis.call('HSET', key, 'd', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW, 'fl', fid, 'm', m, 'st', st)
      else
        redis.call('HSET', key, 'd', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW, 'fl', fid, 'dp', dp, 'm', m, 'st', st)
      end
    elseif dp == '' then
      redis.call('HSET', key, 'd', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW, 'fl', fid, 'p', p, 'm', m, 'st', st)
    else
      redis.call('HSET', key, 'd', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW, 'fl', fid, 'p', p, 'dp', dp, 'm', m, 'st', st)
    end
  else
    local f = {'d', ARGV[i + 1], 'q', q, 'ty', ty, 'ca', sNOW, 'fl', fid}
    if p ~= '' then f[#f + 1] = 'p'; f[#f + 1] = p end
    if mr ~= '' then f[#f + 1] = 'mr'; f[#f + 1] = mr end
    if rtu ~= '' then f[#f + 1] = 'rtu'; f[#f + 1] = rtu end
    if dp ~= '' then f[#f + 1] = 'dp'; f[#f + 1] = dp end
    if ra ~= '' then f[#f + 1] = 'ra'; f[#f + 1] = ra end
    f[#f + 1] = 'm'; f[#f + 1] = m
    f[#f + 1] = 'st'; f[#f + 1] = st
    redis.call('HSET', key, unpack(f))
  end
  if st == '2' then
    if not rl then
      stage_ready(ready, readyKeys, types, q, ty, m)
      rl = ready[T .. ':r:' .. q .. '/' .. ty]
      rn = #rl
    else
      rl[rn + 1] = '0'
      rl[rn + 2] = m
      rn = rn + 2
    end
  end
  all[na + 1] = I(seq)
  all[na + 2] = id
  na = na + 2
  count(st, q, 1)
  evs[#evs + 1] = 'E' .. st .. '\31' .. id .. evq
end
ek = nil
zadd_all(T .. ':all', all)
zadd_all(T .. ':d', delayed)
add_ready(ready, readyKeys, types)
local fh = {}
for j = nt + 1, nt + nh do
  local i = starts[j]
  local id = ARGV[i]
  local na = tonumber(ARGV[i + ` + strconv.Itoa(flowTaskArgs) + `])
  local f = {'d', ARGV[i + 1], 'q', ARGV[i + 3], 'ty', ARGV[i + 4], 'pd', ARGV[i + 5], 'fl', fid, 'w', na}
  if ARGV[i + 2] ~= '' then f[#f + 1] = 'p'; f[#f + 1] = ARGV[i + 2] end
  if ARGV[i + 6] ~= '' then f[#f + 1] = 'mr'; f[#f + 1] = ARGV[i + 6] end
  if ARGV[i + 7] ~= '' then f[#f + 1] = 'rtu'; f[#f + 1] = ARGV[i + 7] end
  if ARGV[i + 8] ~= '' then f[#f + 1] = 'dp'; f[#f + 1] = ARGV[i + 8] end
  redis.call('HSET', T .. ':h:' .. id, unpack(f))
  fh[#fh + 1] = j - nt
  fh[#fh + 1] = id
end
zadd_all(T .. ':fh:' .. fid, fh)
flush()
return 'O'
`)

// EnqueueFlow implements store.Flows: one script writes the whole flow.
func (s *Store) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return fmt.Errorf("redisstore: enqueue flow: %w", err)
	}
	if err := s.usable(ctx); err != nil {
		return err
	}
	if err := p.Validate(s.limits, s.localNow()); err != nil {
		return fmt.Errorf("redisstore: enqueue flow: %w", err)
	}
	// Each task's dependents go in its record (field dp), each after a
	// space: a chord's members name the callback, with no key of their own.
	afters := make([][]string, len(p.Held))
	deps := make(map[string][]byte)
	for i := range p.Held {
		afters[i] = p.Held[i].UniqueAfter()
		for _, a := range afters[i] {
			deps[a] = append(append(deps[a], ' '), p.Held[i].Task.ID...)
		}
	}
	args := make([]any, 0, 6+len(p.Tasks)*flowTaskArgs+len(p.Held)*(flowTaskArgs+1))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace), p.ID, p.Spec, len(p.Tasks), len(p.Held))
	add := func(in *store.TaskInput) {
		q := in.Queue
		if q == "" {
			q = store.DefaultQueue
		}
		var mr, rtu, ra any = "", "", ""
		var dp any = ""
		if in.MaxRetries != 0 {
			mr = in.MaxRetries
		}
		if in.Retention != 0 {
			rtu = in.Retention.Microseconds()
		}
		if d := deps[in.ID]; d != nil {
			dp = d
		}
		if !in.RunAt.IsZero() {
			ra = itoa(microCeil(in.RunAt))
		}
		args = append(args, in.ID, encodeRecord(nil, in, q), in.Payload, q, in.Type,
			priorityDigits[store.MaxPriority-in.Priority], mr, rtu, dp, ra)
	}
	for i := range p.Tasks {
		add(&p.Tasks[i])
	}
	for i := range p.Held {
		add(&p.Held[i].Task)
		args = append(args, len(afters[i]))
	}
	if err := s.register(ctx, p.Namespace); err != nil {
		return err
	}
	v, err := s.run(ctx, "enqueue flow", flowScript, p.Namespace, true, args)
	if err != nil {
		return err
	}
	r, _ := v.(string)
	switch {
	case r == "O":
		return nil
	case r == "F":
		return fmt.Errorf("redisstore: enqueue flow %q: %w", p.ID, store.ErrTaskExists)
	case len(r) > 0 && r[0] == 'E':
		return fmt.Errorf("redisstore: enqueue flow %q: task %q: %w", p.ID, r[1:], store.ErrTaskExists)
	}
	return fmt.Errorf("redisstore: enqueue flow: unexpected script result %v", v)
}

// GetFlow implements store.Flows.
func (s *Store) GetFlow(ctx context.Context, p store.FlowGetParams) (*store.Flow, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return nil, fmt.Errorf("redisstore: get flow: %w", err)
	}
	if err := store.CheckName("flow id", p.ID); err != nil {
		return nil, fmt.Errorf("redisstore: get flow: %w", err)
	}
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	tag := s.tag(p.Namespace)
	var rec *redis.SliceCmd
	var held *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		spec := "s"
		if p.WithoutSpec {
			spec = "-" // no such field: nil
		}
		rec = pl.HMGet(ctx, tag+":f:"+p.ID, spec, "ca")
		held = pl.ZRange(ctx, tag+":fh:"+p.ID, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.wrap("get flow", err)
	}
	vals := rec.Val()
	if len(vals) != 2 || vals[1] == nil {
		return nil, fmt.Errorf("redisstore: flow %q: %w", p.ID, store.ErrNotFound)
	}
	spec, _ := vals[0].(string)
	ca, _ := vals[1].(string)
	h := held.Val()
	if h == nil {
		h = []string{}
	}
	f := &store.Flow{ID: p.ID, Spec: []byte(spec), CreatedAt: microTime(ca), Held: h}
	if p.WithoutSpec {
		f.Spec = nil
	}
	return f, nil
}

// ListFlows implements store.Flows.
func (s *Store) ListFlows(ctx context.Context, p store.FlowListParams) (store.FlowListResult, error) {
	limit, err := store.CheckFlowList(p)
	if err != nil {
		return store.FlowListResult{}, fmt.Errorf("redisstore: list flows: %w", err)
	}
	if err := s.usable(ctx); err != nil {
		return store.FlowListResult{}, err
	}
	tag := s.tag(p.Namespace)
	lo := "-"
	if p.After != "" {
		lo = "(" + p.After
	}
	ids, err := s.rdb.ZRangeByLex(ctx, tag+":fl", &redis.ZRangeBy{Min: lo, Max: "+", Count: int64(limit + 1)}).Result()
	if err != nil {
		return store.FlowListResult{}, s.wrap("list flows", err)
	}
	out := store.FlowListResult{Flows: []*store.Flow{}}
	if len(ids) > limit {
		ids = ids[:limit]
		out.NextCursor = ids[limit-1]
	}
	for _, id := range ids {
		f, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: p.Namespace, ID: id})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return store.FlowListResult{}, err
		}
		out.Flows = append(out.Flows, f)
	}
	return out, nil
}
