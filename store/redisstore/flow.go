package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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
//	                   number of tasks it still waits for), ws and wn (of
//	                   those that finished, the number that succeeded, and
//	                   succeeded without a result; absent = 0)
//
// A flow of more than flowPart ready tasks is written in parts (see
// flowScript): until its last part is written, the tasks not yet written
// are, in the compact format (ids <flow>.<index>, consecutive), in
//
//	T:rb         hash  "<flow> <part>" -> the values of the part's tasks,
//	                   packed (flowMember.appendReserved)
//
// with the fields rb ("<first index> <count>": those ids are taken) and
// rbn (the parts left) in the flow record; otherwise in
//
//	T:rv         hash  task id -> its values, packed; its ids are taken
//
// with the field rv (their ids, separated by spaces) in the flow record;
// and either way the flow is in
//
//	T:rvq        zset  the flows being written, scored by creation (µs)
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
-- that held task h waited for, fd_s[h] and fd_n[h] those of them that
-- succeeded, and succeeded without a result; fe_n[fl] the number of tasks
-- of flow fl that ended here and fe_ea[fl] the latest of their expiries.
-- The tables are made when first needed: most calls count nothing.
local fd_w, fd_s, fd_n, fd_order, fe_n, fe_ea, fe_order

-- flow_done counts task id (whose field dp is dp; nil: read it) as
-- finished for each held task that waits for it, once: its dependents are
-- then forgotten (new records: dp, which lists them each after a space,
-- is deleted, or emptied by the caller's own write of the record when
-- cleared is set; records written before: dp is "1" and the set
-- T:dp:<id> lists them, deleted). ok is 'r' when the task succeeded with
-- a result, 'n' when it succeeded without one, else nil. flow_apply
-- releases those that wait for nothing more.
local function flow_done(id, dp, cleared, ok)
  if dp == nil then dp = rcall('HGET', tkey(id), 'dp') end
  if not dp or dp == '' then return end
  local hs
  if dp == '1' then
    local dk = T .. ':dp:' .. id
    hs = rcall('SMEMBERS', dk)
    if #hs == 0 then return end
    rcall('DEL', dk)
  else
    if not cleared then rcall('HDEL', tkey(id), 'dp') end
    if sbyte(dp, 1) == 32 and not string.find(dp, ' ', 2, true) then
      -- One dependent (a chord's member: its callback).
      hs = {ssub(dp, 2)}
    else
      hs = {}
      for h in string.gmatch(dp, '%S+') do hs[#hs + 1] = h end
    end
  end
  if not fd_w then fd_w, fd_s, fd_n, fd_order = {}, {}, {}, {} end
  for _, h in ipairs(hs) do
    local c = fd_w[h]
    if not c then
      c = 0
      fd_order[#fd_order + 1] = h
      fd_s[h], fd_n[h] = 0, 0
    end
    fd_w[h] = c + 1
    if ok then
      fd_s[h] = fd_s[h] + 1
      if ok == 'n' then fd_n[h] = fd_n[h] + 1 end
    end
  end
end

-- flow_release counts n more finished tasks (s of them succeeded, sn of
-- those without a result) for held task h, and enqueues it when it waits
-- for nothing more. The counts of successes (fields ws and wn of the held
-- record) go with the released task as its field fo ("<ws> <wn>",
-- store.Task.Upstream); a record released by an older script has none.
local function flow_release(h, n, s, sn)
  local hk = T .. ':h:' .. h
  if rcall('EXISTS', hk) == 0 then return end
  if s > 0 then rcall('HINCRBY', hk, 'ws', s) end
  if sn > 0 then rcall('HINCRBY', hk, 'wn', sn) end
  if rcall('HINCRBY', hk, 'w', -n) > 0 then return end
  local f = rcall('HMGET', hk, 'd', 'p', 'q', 'ty', 'pd', 'mr', 'rtu', 'fl', 'dp', 'ws', 'wn')
  if not f[1] then return end
  local seq = rcall('INCR', T .. ':seq')
  local m = f[5] .. R17(NOW) .. struct.pack('>I8', seq) .. h
  local tf = {'d', f[1], 'q', f[3], 'ty', f[4], 'ca', S(NOW), 'm', m, 'st', '2'}
  if f[8] then tf[#tf + 1] = 'fl'; tf[#tf + 1] = f[8] end
  if f[2] then tf[#tf + 1] = 'p'; tf[#tf + 1] = f[2] end
  if f[6] then tf[#tf + 1] = 'mr'; tf[#tf + 1] = f[6] end
  if f[7] then tf[#tf + 1] = 'rtu'; tf[#tf + 1] = f[7] end
  if f[9] then tf[#tf + 1] = 'dp'; tf[#tf + 1] = f[9] end
  if f[10] or f[11] then tf[#tf + 1] = 'fo'; tf[#tf + 1] = (f[10] or '0') .. ' ' .. (f[11] or '0') end
  rcall('HSET', tkey(h), unpack(tf))
  rcall('ZADD', T .. ':all', seq, h)
  push_ready(f[3], f[4], m)
  count('2', f[3], 1)
  ev('E', '2', h, f[3], f[4])
  rcall('DEL', hk)
  if f[8] then rcall('ZREM', T .. ':fh:' .. f[8], h) end
end

local function flow_gone(fl)
  if not fl then return end
  local fk = T .. ':f:' .. fl
  if not rcall('HGET', fk, 'n') then return end
  if rcall('HINCRBY', fk, 'n', -1) <= 0 then
    rcall('DEL', fk, T .. ':fh:' .. fl, T .. ':fm:' .. fl, T .. ':fx:' .. fl)
    rcall('ZREM', T .. ':fl', fl)
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
  if not fe_n then fe_n, fe_ea, fe_order = {}, {}, {} end
  local n = fe_n[fl]
  if not n then
    n = 0
    fe_order[#fe_order + 1] = fl
    fe_ea[fl] = ea
  elseif ea ~= fe_ea[fl] and tonumber(ea) > tonumber(fe_ea[fl]) then
    -- (The tasks of one script mostly share their expiry.)
    fe_ea[fl] = ea
  end
  fe_n[fl] = n + 1
end

local function flow_end_apply(fl, n, ea)
  local fk = T .. ':f:' .. fl
  if not rcall('HGET', fk, 'u') then return end
  if rcall('HINCRBY', fk, 'u', -n) > 0 then return end
  local old = rcall('HGET', fk, 'xe')
  if old and tonumber(old) > tonumber(ea) then ea = old end
  rcall('HSET', fk, 'xe', ea)
  local pk = T .. ':fx:' .. fl
  local l = {}
  for _, m in ipairs(rcall('SMEMBERS', pk)) do
    l[#l + 1] = ea
    l[#l + 1] = m
  end
  zadd_all(T .. ':x', l)
  rcall('DEL', pk)
end

flow_apply = function()
  if fd_order then
    for _, h in ipairs(fd_order) do flow_release(h, fd_w[h], fd_s[h], fd_n[h]) end
    fd_w, fd_s, fd_n, fd_order = nil, nil, nil, nil
  end
  if fe_order then
    for _, fl in ipairs(fe_order) do flow_end_apply(fl, fe_n[fl], fe_ea[fl]) end
    fe_n, fe_ea, fe_order = nil, nil, nil
  end
end

-- flow_expiry returns the expiry xe of flow fl once all its tasks ended
-- (a number, µs), or nil.
local function flow_expiry(fl)
  if not fl then return nil end
  return tonumber(rcall('HGET', T .. ':f:' .. fl, 'xe'))
end

-- flow_reopened notes that a finished task of flow fl runs again.
local function flow_reopened(fl)
  if fl and rcall('HEXISTS', T .. ':f:' .. fl, 'u') == 1 then
    rcall('HINCRBY', T .. ':f:' .. fl, 'u', 1)
  end
end

-- flow_holds reports whether flow fl has a task not finished: its finished
-- members are then not deleted (Sweep parks them in T:fx:<flow>, and
-- flow_ended adds them to T:x again).
local function flow_holds(fl)
  if not fl then return false end
  return (tonumber(rcall('HGET', T .. ':f:' .. fl, 'u')) or 0) > 0
end
`

// flowWriteLua writes the ready tasks of a flow: the flow script writes
// its first part, the part script (and Sweep's recovery) the others.
var flowWriteLua = `
-- flow_write writes n ready tasks of flow fid, member j's ten values
-- (id, record, payload, queue, type, 9-priority digit, max retries,
-- retention µs, dependents, RunAt µs or "") from a[starts[j]] on. sca is
-- their creation time (µs, a string): the flow's, whichever part of the
-- flow writes them.
local function flow_write(fid, a, starts, n, sca)
  if n == 0 then return end
  local caR = R17(tonumber(sca))
  local base = rcall('INCRBY', T .. ':seq', I(n)) - n
  local TK = T .. ':t:'
  local all, delayed, ready, readyKeys, types = {}, {}, {}, {}, {}
  local na = 0
  -- The strings shared by members of the same queue and type (the change
  -- feed's tail of their entries, their ready set) are built once per run
  -- of such members.
  local lq, lty, evq, rl, rn
  local n1, n2, ne = 0, 0, #evs
  for j = 1, n do
    local i = starts[j]
    local id, q, ty, ra = a[i], a[i + 3], a[i + 4], a[i + 9]
    local seq = base + j
    local key = TK .. id
    if q ~= lq or ty ~= lty then
      -- The counts of the run of the queue before.
      if lq and q ~= lq then
        count('1', lq, n1); count('2', lq, n2)
        n1, n2 = 0, 0
      end
      lq, lty = q, ty
      evq = '\31' .. q .. '\31' .. ty .. '\31' .. '0' .. '\31'
      rl = nil
    end
    local p, mr, rtu, dp = a[i + 2], a[i + 6], a[i + 7], a[i + 8]
    local st, m
    if ra == '' then
      m = a[i + 5] .. caR .. struct.pack('>I8', seq) .. id
      st = '2'
    else
      local nra = tonumber(ra)
      m = a[i + 5] .. R17(nra) .. struct.pack('>I8', seq) .. id
      if nra > NOW then
        st = '1'
        delayed[#delayed + 1] = ra
        delayed[#delayed + 1] = id
      else
        st = '2'
      end
    end
    if ra == '' and mr == '' and rtu == '' then
      -- The common member: its fields without a table, and no field ca
      -- (its creation time is the RunAt in m, as for an enqueued task:
      -- see decode.go).
      if p == '' then
        if dp == '' then
          rcall('HSET', key, 'd', a[i + 1], 'q', q, 'ty', ty, 'fl', fid, 'm', m, 'st', st)
        else
          rcall('HSET', key, 'd', a[i + 1], 'q', q, 'ty', ty, 'fl', fid, 'dp', dp, 'm', m, 'st', st)
        end
      elseif dp == '' then
        rcall('HSET', key, 'd', a[i + 1], 'q', q, 'ty', ty, 'fl', fid, 'p', p, 'm', m, 'st', st)
      else
        rcall('HSET', key, 'd', a[i + 1], 'q', q, 'ty', ty, 'fl', fid, 'p', p, 'dp', dp, 'm', m, 'st', st)
      end
    else
      -- No field ca either while m's RunAt is the creation time.
      local f = {'d', a[i + 1], 'q', q, 'ty', ty, 'fl', fid}
      if ra ~= '' then f[#f + 1] = 'ca'; f[#f + 1] = sca end
      if p ~= '' then f[#f + 1] = 'p'; f[#f + 1] = p end
      if mr ~= '' then f[#f + 1] = 'mr'; f[#f + 1] = mr end
      if rtu ~= '' then f[#f + 1] = 'rtu'; f[#f + 1] = rtu end
      if dp ~= '' then f[#f + 1] = 'dp'; f[#f + 1] = dp end
      if ra ~= '' then f[#f + 1] = 'ra'; f[#f + 1] = ra end
      f[#f + 1] = 'm'; f[#f + 1] = m
      f[#f + 1] = 'st'; f[#f + 1] = st
      rcall('HSET', key, unpack(f))
    end
    if st == '2' then
      n2 = n2 + 1
      if not rl then
        stage_ready(ready, readyKeys, types, q, ty, m)
        rl = ready[T .. ':r:' .. q .. '/' .. ty]
        rn = #rl
      else
        rl[rn + 1] = '0'
        rl[rn + 2] = m
        rn = rn + 2
      end
    else
      n1 = n1 + 1
    end
    all[na + 1] = I(seq)
    all[na + 2] = id
    na = na + 2
    if REC == nil then rec() end
    if REC then
      ne = ne + 1
      evs[ne] = 'E' .. st .. '\31' .. id .. evq
    else
      unrec = true
    end
  end
  if lq then count('1', lq, n1); count('2', lq, n2) end
  zadd_all(T .. ':all', all)
  zadd_all(T .. ':d', delayed)
  add_ready(ready, readyKeys, types)
end

-- flow_materialize writes the reserved members ids of flow fid (created
-- at sca) that are still in T:rv, and deletes them from it: a member is
-- written once, by whichever script takes its entry first. It returns the
-- number written.
local function flow_materialize(fid, sca, ids)
  local rk = T .. ':rv'
  local done = 0
  for c = 1, #ids, 1000 do
    local e = math.min(c + 999, #ids)
    local bs = rcall('HMGET', rk, unpack(ids, c, e))
    local a, starts, got = {}, {}, {}
    local k = 0
    for x = 1, #bs do
      local b = bs[x]
      if b then
        local id = ids[c + x - 1]
        got[#got + 1] = id
        starts[#starts + 1] = k + 1
        a[k + 1] = id
        a[k + 2], a[k + 3], a[k + 4], a[k + 5], a[k + 6], a[k + 7], a[k + 8], a[k + 9], a[k + 10] =
          struct.unpack('>I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0', b)
        k = k + 10
      end
    end
    if #got > 0 then
      rcall('HDEL', rk, unpack(got))
      flow_write(fid, a, starts, #got, sca)
      done = done + #got
    end
  end
  return done
end

-- flow_write_blob writes part p of the reserved tasks of flow fid (created
-- at sca) stored in the compact format (see flowScript) if it is still in
-- T:rb, deletes it, and once no part is left deletes the flow's
-- bookkeeping of its parts. rb is the flow record's field rb. It returns
-- the number of tasks written: a part is written once, by whichever
-- script takes it first.
local function flow_write_blob(fid, sca, rb, p)
  local bk = fid .. ' ' .. p
  local b = rcall('HGET', T .. ':rb', bk)
  if not b then return 0 end
  rcall('HDEL', T .. ':rb', bk)
  local sp = string.find(rb, ' ', 1, true)
  local lo, cnt = tonumber(ssub(rb, 1, sp - 1)), tonumber(ssub(rb, sp + 1))
  local first = lo + p * ` + strconv.Itoa(flowPart) + `
  local n = math.min(` + strconv.Itoa(flowPart) + `, lo + cnt - first)
  local a, starts = {}, {}
  local pos, k = 1, 0
  local pre = fid .. '.'
  for x = 1, n do
    starts[x] = k + 1
    a[k + 1] = pre .. I(first + x - 1)
    a[k + 2], a[k + 3], a[k + 4], a[k + 5], a[k + 6], a[k + 7], a[k + 8], a[k + 9], a[k + 10], pos =
      struct.unpack('>I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0I4c0', b, pos)
    k = k + 10
  end
  flow_write(fid, a, starts, n, sca)
  local fk = T .. ':f:' .. fid
  if rcall('HINCRBY', fk, 'rbn', -1) <= 0 then
    rcall('HDEL', fk, 'rb', 'rbn')
    rcall('ZREM', T .. ':rvq', fid)
  end
  return n
end
`

// rbTakenLua defines rb_taken, which Enqueue and flowScript use to find
// the ids of tasks reserved in the compact format by flows being written
// (see flowScript).
var rbTakenLua = `
-- rb_taken reports whether id is <flow>.<index> with an index among the
-- reserved tasks of a flow written in parts in the compact format (its
-- record's field rb, "<first index> <count>"): such a task is either not
-- written yet or written, taken either way. The flow records looked at
-- are kept in rbc for the rest of the script.
local rbc = {}
local function rb_taken(id)
  local fl, k = string.match(id, '^(.+)%.(%d+)$')
  if not fl or (#k > 1 and sbyte(k, 1) == 48) then return false end
  local r = rbc[fl]
  if r == nil then
    r = false
    local v = rcall('HGET', T .. ':f:' .. fl, 'rb')
    if v then
      local sp = string.find(v, ' ', 1, true)
      r = {tonumber(ssub(v, 1, sp - 1)), tonumber(ssub(v, sp + 1))}
    end
    rbc[fl] = r
  end
  if not r then return false end
  local n = tonumber(k)
  return n >= r[1] and n < r[1] + r[2]
end
`

// flowTaskArgs is the number of ARGV values per task of flowScript that
// it writes (held tasks add the count of the tasks they wait for).
const flowTaskArgs = 10

// A flow of more than flowPart ready tasks is written in parts, so that
// its first tasks can start while the others are written: flowScript
// stores the whole flow (the commit point) but writes only the first
// flowFirstPart ready tasks, and reserves the others; flowPartScript then
// writes flowPart of them per call. Sweep writes the reserved tasks of a
// flow whose parts were not all written flowRecoverAfter after it was
// stored (the client that enqueued it stopped, or lost its connection).
const (
	flowFirstPart    = 500
	flowPart         = 1000
	flowRecoverAfter = 10 * time.Second
)

// flowScript adds a flow. ARGV[3] is the flow id, ARGV[4] the spec,
// ARGV[5] and ARGV[6] the numbers of ready and held tasks, ARGV[7] the
// number np of ready tasks written now, ARGV[8] the format of the others
// (reserved): "" or the first index lo of the compact format (below);
// ("" for now); ARGV[9] is "1" when every task's id was made for this
// call (store.TaskInput.NewID: then no id is looked up, none can be
// taken), else ""; then per ready task written now: id, record (field
// d), payload, queue, type, 9-priority digit, max retries, retention µs,
// its dependents (the held tasks that wait for it, each after a space; ""
// for none), RunAt µs ("" for now); the reserved tasks; per held task the
// ten values of a ready one and the number of tasks it waits for.
//
// Reserved tasks of the compact format are those whose ids are
// <flow>.<lo>, <flow>.<lo+1>... in order (a kiln Client's group or chord):
// they come as one string per part of flowPart tasks, each task's nine
// values after its id packed (flowMember.reserved). The parts go in the
// hash T:rb (field "<flow> <part>"), the flow record gets the fields rb
// ("<lo> <count>") and rbn (the parts not written yet), and an id
// <flow>.<index> in that range is taken (rb_taken: Enqueue and this
// script check it).
//
// Other reserved tasks come as id and packed values each, and go in the
// hash T:rv (id -> packed values), their ids in the flow record's field rv
// (each after a space, the first without); an id in T:rv is taken. Either
// way the flow is in the set T:rvq, scored by its creation time (µs),
// until its reserved tasks are written; flowPartScript and Sweep write
// them.
//
// It returns "F" when the flow exists, "E<id>" when a task id is taken, or
// "O".
var flowScript = redis.NewScript(prelude + flowWriteLua + rbTakenLua + `
local fid = ARGV[3]
local nt, nh, np = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lo = tonumber(ARGV[8])
local fresh = ARGV[9] == '1'
if rcall('EXISTS', T .. ':f:' .. fid) == 1 then return 'F' end
local i = 10
local starts, ids = {}, {}
local TK, TH = T .. ':t:', T .. ':h:'
-- Every id must be free (no task record, no held task, not reserved by
-- a flow being written): one EXISTS (and, while some flow has reserved
-- tasks, one HMGET of T:rv) per 500 ids, and only a chunk that has a
-- taken id is looked at id by id, so the first taken id in order is the
-- one reported. The ids of this flow's compact reserved tasks are
-- <fid>.<index>: no other flow reserves those in the compact format.
-- Ids made for this call (fresh) are not looked up at all.
local ek = {}
local blobs, nb = 0, 0
local pre = fid .. '.'
for j = 1, nt + nh do
  local id
  if j > np and j <= nt and lo then
    if j == np + 1 then
      nb = math.ceil((nt - np) / ` + strconv.Itoa(flowPart) + `)
      blobs = i
      i = i + nb
    end
    if not fresh then id = pre .. I(lo + j - np - 1) end
  else
    starts[j] = i
    id = ARGV[i]
    if j <= np then
      i = i + ` + strconv.Itoa(flowTaskArgs) + `
    elseif j <= nt then
      i = i + 2
    else
      i = i + ` + strconv.Itoa(flowTaskArgs+1) + `
    end
  end
  ids[j] = id
  if not fresh then
    ek[#ek + 1] = TK .. id
    ek[#ek + 1] = TH .. id
  end
end
local rk = T .. ':rv'
local rvq = not fresh and rcall('EXISTS', T .. ':rvq') == 1
local rv = rvq and rcall('EXISTS', rk) == 1
local function rbt(j)
  return rvq and not (lo and j > np and j <= nt) and rb_taken(ids[j])
end
for c = 1, fresh and 0 or nt + nh, 500 do
  local e = math.min(c + 499, #ids)
  local taken = rcall('EXISTS', unpack(ek, c + c - 1, e + e)) > 0
  if not taken and rv then
    for _, b in ipairs(rcall('HMGET', rk, unpack(ids, c, e))) do
      if b then taken = true; break end
    end
  end
  if not taken and rvq then
    for j = c, e do
      if rbt(j) then taken = true; break end
    end
  end
  if taken then
    for j = c, e do
      if rcall('EXISTS', ek[j + j - 1], ek[j + j]) > 0 or (rv and rcall('HEXISTS', rk, ids[j]) == 1) or rbt(j) then
        return 'E' .. ids[j]
      end
    end
  end
end
ek = nil
local sNOW = S(NOW)
local fk = T .. ':f:' .. fid
rcall('HSET', fk, 's', ARGV[4], 'ca', sNOW, 'n', nt + nh, 'u', nt + nh)
rcall('ZADD', T .. ':fl', 0, fid)
flow_write(fid, ARGV, starts, np, sNOW)
if nt > np and lo then
  local l = {}
  for p = 0, nb - 1 do
    l[#l + 1] = fid .. ' ' .. p
    l[#l + 1] = ARGV[blobs + p]
  end
  rcall('HSET', T .. ':rb', unpack(l))
  rcall('HSET', fk, 'rb', ARGV[8] .. ' ' .. (nt - np), 'rbn', nb)
  rcall('ZADD', T .. ':rvq', sNOW, fid)
elseif nt > np then
  local l = {}
  for j = np + 1, nt do
    local s = starts[j]
    l[#l + 1] = ARGV[s]
    l[#l + 1] = ARGV[s + 1]
  end
  for c = 1, #l, 2000 do
    rcall('HSET', rk, unpack(l, c, math.min(c + 1999, #l)))
  end
  rcall('HSET', fk, 'rv', table.concat(ids, ' ', np + 1, nt))
  rcall('ZADD', T .. ':rvq', sNOW, fid)
end
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
  rcall('HSET', T .. ':h:' .. id, unpack(f))
  fh[#fh + 1] = j - nt
  fh[#fh + 1] = id
end
zadd_all(T .. ':fh:' .. fid, fh)
flush()
return 'O'
`)

// flowPartScript writes reserved tasks of flow ARGV[3] (see flowScript).
// With ARGV[4] == "P" (the compact format) it writes the parts numbered
// ARGV[5..] still in T:rb. Otherwise it writes those of ids ARGV[5..]
// still reserved in T:rv, and with ARGV[4] == "1" (the last part) deletes
// the flow's list of reserved tasks (field rv, and its entry in T:rvq).
// It returns the number of tasks written.
var flowPartScript = redis.NewScript(prelude + flowWriteLua + `
local fid = ARGV[3]
local fk = T .. ':f:' .. fid
local n = 0
if ARGV[4] == 'P' then
  local g = rcall('HMGET', fk, 'ca', 'rb')
  if g[1] and g[2] then
    for x = 5, #ARGV do n = n + flow_write_blob(fid, g[1], g[2], tonumber(ARGV[x])) end
  end
  flush()
  return n
end
local ca = rcall('HGET', fk, 'ca')
if ca then
  local ids = {}
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
  n = flow_materialize(fid, ca, ids)
end
if ARGV[4] == '1' then
  rcall('HDEL', fk, 'rv')
  rcall('ZREM', T .. ':rvq', fid)
end
flush()
return n
`)

// flowRecoverLua is the part of the sweep script that writes the reserved
// tasks of one flow stored flowRecoverAfter ago or more whose parts were
// not all written: at most the sweep's limit (ARGV[3]) of them per call,
// so that a large flow does not block Redis for long; the flow stays in
// T:rvq, with the ids left in its field rv, until the last is written.
var flowRecoverLua = `
for _, fid in ipairs(rcall('ZRANGEBYSCORE', T .. ':rvq', '-inf', S(NOW - ` +
	strconv.FormatInt(flowRecoverAfter.Microseconds(), 10) + `), 'LIMIT', '0', '1')) do
  local fk = T .. ':f:' .. fid
  local g = rcall('HMGET', fk, 'ca', 'rv', 'rb')
  local left = false
  if g[1] and g[3] then
    -- The compact format: whole parts, until the limit is reached (at
    -- least one part per call); flow_write_blob removes the flow from
    -- T:rvq with its last part.
    local sp = string.find(g[3], ' ', 1, true)
    local nb = math.ceil(tonumber(ssub(g[3], sp + 1)) / ` + strconv.Itoa(flowPart) + `)
    local most, done = tonumber(ARGV[3]), 0
    for p = 0, nb - 1 do
      if done >= most then break end
      done = done + flow_write_blob(fid, g[1], g[3], p)
    end
    left = rcall('HEXISTS', fk, 'rb') == 1
  elseif g[1] and g[2] then
    local ids = {}
    for id in string.gmatch(g[2], '%S+') do ids[#ids + 1] = id end
    local most = tonumber(ARGV[3])
    if #ids > most then
      local part = {}
      for k = 1, most do part[k] = ids[k] end
      flow_materialize(fid, g[1], part)
      rcall('HSET', fk, 'rv', table.concat(ids, ' ', most + 1))
      left = true
    else
      flow_materialize(fid, g[1], ids)
    end
  end
  if not left then
    rcall('HDEL', fk, 'rv')
    rcall('ZREM', T .. ':rvq', fid)
  end
end
`

// allNewIDs reports whether every task of p has an id made for the call
// (store.TaskInput.NewID).
func allNewIDs(p *store.FlowParams) bool {
	for i := range p.Tasks {
		if !p.Tasks[i].NewID {
			return false
		}
	}
	for i := range p.Held {
		if !p.Held[i].Task.NewID {
			return false
		}
	}
	return true
}

// flowMember is a ready task of a flow as flowScript and flowPartScript
// take it.
type flowMember struct {
	id, q, ty, pd, mr, rtu, ra string
	d, p, dp                   []byte
}

func newFlowMember(in *store.TaskInput, dp []byte) flowMember {
	m := flowMember{id: in.ID, q: in.Queue, ty: in.Type, pd: priorityDigits[store.MaxPriority-in.Priority], p: in.Payload, dp: dp}
	if m.q == "" {
		m.q = store.DefaultQueue
	}
	if in.MaxRetries != 0 {
		m.mr = strconv.Itoa(in.MaxRetries)
	}
	if in.Retention != 0 {
		m.rtu = itoa(in.Retention.Microseconds())
	}
	if !in.RunAt.IsZero() {
		m.ra = itoa(microCeil(in.RunAt))
	}
	m.d = encodeRecord(nil, in, m.q)
	return m
}

// appendArgs appends m's ten values.
func (m *flowMember) appendArgs(args []any) []any {
	return append(args, m.id, m.d, m.p, m.q, m.ty, m.pd, m.mr, m.rtu, m.dp, m.ra)
}

// appendReserved appends to b m's values after its id packed, each as its
// length (4 bytes, big-endian) and its bytes, as flow_materialize and
// flow_write_blob unpack them.
func (m *flowMember) appendReserved(b []byte) []byte {
	b = slices.Grow(b, m.reservedLen())
	b = appendPacked(appendPacked(b, m.d), m.p)
	for _, v := range [...]string{m.q, m.ty, m.pd, m.mr, m.rtu} {
		b = appendPacked(b, v)
	}
	return appendPacked(appendPacked(b, m.dp), m.ra)
}

// reservedLen is the length of what appendReserved appends.
func (m *flowMember) reservedLen() int {
	return 36 + len(m.d) + len(m.p) + len(m.q) + len(m.ty) + len(m.pd) + len(m.mr) + len(m.rtu) + len(m.dp) + len(m.ra)
}

// appendPacked appends v's length (4 bytes, big-endian) and v.
func appendPacked[S ~string | ~[]byte](b []byte, v S) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v))) //nolint:gosec // G115: Validate keeps payloads far below 4 GiB
	return append(b, v...)
}

// compactReserved reports whether the reserved tasks of p (those after its
// first np) have the ids <flow>.<lo>, <flow>.<lo+1>... in order, and lo:
// flowScript then stores them in the compact format.
func compactReserved(p store.FlowParams, np int) (lo int, ok bool) {
	if np >= len(p.Tasks) {
		return 0, false
	}
	pre := p.ID + "."
	for i, t := range p.Tasks[np:] {
		k, found := strings.CutPrefix(t.ID, pre)
		if !found {
			return 0, false
		}
		if i == 0 {
			n, err := strconv.Atoi(k)
			if err != nil || n < 0 || strconv.Itoa(n) != k {
				return 0, false
			}
			lo = n
			continue
		}
		if k != strconv.Itoa(lo+i) {
			return 0, false
		}
	}
	return lo, true
}

// blobParts is the number of parts of n reserved tasks.
func blobParts(n int) int { return (n + flowPart - 1) / flowPart }

// writeFlowBlobs writes the parts 0 to n-1 of flow id's reserved tasks
// stored in the compact format, one per script call, skipping those
// another call wrote. It stops at the first error, or when hook (if set)
// says so before a part, which it is given as the offset of its first
// task (as writeFlowParts): Sweep or the next GetFlow writes what is left.
func (s *Store) writeFlowBlobs(ctx context.Context, ns, id string, n int, hook func(off int) bool) error {
	for p := range n {
		if hook != nil && !hook(p*flowPart) {
			return nil
		}
		if _, err := s.run(ctx, "enqueue flow", flowPartScript, ns, true, []any{s.nowArg(), s.wakeChannel(ns), id, "P", p}); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueFlow implements store.Flows. One script stores the whole flow
// and writes its first ready tasks; a flow of more than flowPart ready
// tasks has the others written flowPart at a time after it (see
// flowScript), before EnqueueFlow returns. The flow is stored whole once
// the first script ran: if a later part fails, EnqueueFlow still returns
// nil and Sweep writes the tasks left.
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
	// A task with one dependent (a chord's member) shares the held task's
	// " <id>"; a second one makes it a list of its own.
	afters := make([][]string, len(p.Held))
	deps := make(map[string][]byte)
	for i := range p.Held {
		afters[i] = p.Held[i].UniqueAfter()
		one := []byte(" " + p.Held[i].Task.ID)
		for _, a := range afters[i] {
			if d, ok := deps[a]; ok {
				deps[a] = append(slices.Clip(d), one...)
			} else {
				deps[a] = one
			}
		}
	}
	np := len(p.Tasks)
	if np > flowPart {
		np = flowFirstPart
	}
	lo, compact := compactReserved(p, np)
	args := make([]any, 0, 9+np*flowTaskArgs+(len(p.Tasks)-np)*2+len(p.Held)*(flowTaskArgs+1))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace), p.ID, p.Spec, len(p.Tasks), len(p.Held), np, "", "")
	if compact {
		args[7] = strconv.Itoa(lo)
	}
	if allNewIDs(&p) {
		args[8] = "1"
	}
	var blob []byte
	for i := range p.Tasks {
		m := newFlowMember(&p.Tasks[i], deps[p.Tasks[i].ID])
		switch {
		case i < np:
			args = m.appendArgs(args)
		case compact:
			if blob == nil {
				// A part's tasks are mostly alike: room for as many as m.
				blob = make([]byte, 0, min(flowPart, len(p.Tasks)-i)*m.reservedLen()+64)
			}
			blob = m.appendReserved(blob)
			if (i-np+1)%flowPart == 0 || i == len(p.Tasks)-1 {
				args = append(args, blob)
				blob = nil
			}
		default:
			args = append(args, m.id, m.appendReserved(nil))
		}
	}
	for i := range p.Held {
		m := newFlowMember(&p.Held[i].Task, deps[p.Held[i].Task.ID])
		args = append(m.appendArgs(args), len(afters[i]))
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
		var err error
		if compact {
			err = s.writeFlowBlobs(ctx, p.Namespace, p.ID, blobParts(len(p.Tasks)-np), s.flowPartsHook)
		} else {
			rest := make([]string, len(p.Tasks)-np)
			for i := range rest {
				rest[i] = p.Tasks[np+i].ID
			}
			err = s.writeFlowParts(ctx, p.Namespace, p.ID, rest, s.flowPartsHook)
		}
		if err != nil {
			s.log.Warn("redisstore: enqueue flow: a part of the flow's tasks was not written; Sweep or the next GetFlow will write it", "flow", p.ID, "err", err)
		}
		return nil
	case r == "F":
		return fmt.Errorf("redisstore: enqueue flow %q: %w", p.ID, store.ErrTaskExists)
	case len(r) > 0 && r[0] == 'E':
		return fmt.Errorf("redisstore: enqueue flow %q: task %q: %w", p.ID, r[1:], store.ErrTaskExists)
	}
	return fmt.Errorf("redisstore: enqueue flow: unexpected script result %v", v)
}

// writeFlowParts writes the reserved tasks ids of flow id, flowPart at a
// time, the last part deleting the flow's list of reserved tasks. It stops
// at the first error (or when hook, if set, says so before a part): the
// flow is stored whole, and Sweep or the next GetFlow writes what is left.
// A task already written by another call is skipped.
func (s *Store) writeFlowParts(ctx context.Context, ns, id string, ids []string, hook func(off int) bool) error {
	for off := 0; off < len(ids); off += flowPart {
		if hook != nil && !hook(off) {
			return nil
		}
		part := ids[off:min(off+flowPart, len(ids))]
		last := "0"
		if off+flowPart >= len(ids) {
			last = "1"
		}
		args := make([]any, 0, 4+len(part))
		args = append(args, s.nowArg(), s.wakeChannel(ns), id, last)
		for _, x := range part {
			args = append(args, x)
		}
		if _, err := s.run(ctx, "enqueue flow", flowPartScript, ns, true, args); err != nil {
			return err
		}
	}
	return nil
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
		rec = pl.HMGet(ctx, tag+":f:"+p.ID, spec, "ca", "rv", "rb")
		held = pl.ZRange(ctx, tag+":fh:"+p.ID, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.wrap("get flow", err)
	}
	vals := rec.Val()
	if len(vals) != 4 || vals[1] == nil {
		return nil, fmt.Errorf("redisstore: flow %q: %w", p.ID, store.ErrNotFound)
	}
	spec, _ := vals[0].(string)
	ca, _ := vals[1].(string)
	h := held.Val()
	if h == nil {
		h = []string{}
	}
	if rv, _ := vals[2].(string); rv != "" {
		// Being written in parts, by a client still writing them or one
		// that stopped: the reader writes what is left (each task once,
		// whoever takes it first), so that what it reads next — a Cancel
		// of the pending members, a State — finds every ready task. If
		// that fails, the tasks not written yet are listed as held.
		ids := strings.Fields(rv)
		if werr := s.writeFlowParts(ctx, p.Namespace, p.ID, ids, nil); werr != nil {
			if h, err = s.reservedOf(ctx, tag, h, ids); err != nil {
				return nil, s.wrap("get flow", err)
			}
		}
	}
	if rb, _ := vals[3].(string); rb != "" {
		// The same in the compact format.
		lo, n, ok := parseRB(rb)
		if !ok {
			return nil, fmt.Errorf("redisstore: flow %q: bad field rb %q", p.ID, rb)
		}
		if werr := s.writeFlowBlobs(ctx, p.Namespace, p.ID, blobParts(n), nil); werr != nil {
			if h, err = s.blobsLeft(ctx, tag, p.ID, h, lo, n); err != nil {
				return nil, s.wrap("get flow", err)
			}
		}
	}
	f := &store.Flow{ID: p.ID, Spec: []byte(spec), CreatedAt: microTime(ca), Held: h}
	if p.WithoutSpec {
		f.Spec = nil
	}
	return f, nil
}

// parseRB parses field rb of a flow record: "<first index> <count>".
func parseRB(rb string) (lo, n int, ok bool) {
	a, b, found := strings.Cut(rb, " ")
	lo, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	return lo, n, found && err1 == nil && err2 == nil && lo >= 0 && n > 0
}

// blobsLeft appends to dst the ids of flow id's reserved tasks in the
// compact format (n of them from index lo) whose part is still in T:rb
// (not written yet).
func (s *Store) blobsLeft(ctx context.Context, tag, id string, dst []string, lo, n int) ([]string, error) {
	for p := range blobParts(n) {
		left, err := s.rdb.HExists(ctx, tag+":rb", id+" "+strconv.Itoa(p)).Result()
		if err != nil {
			return nil, err
		}
		if left {
			for k := lo + p*flowPart; k < min(lo+(p+1)*flowPart, lo+n); k++ {
				dst = append(dst, id+"."+strconv.Itoa(k))
			}
		}
	}
	return dst, nil
}

// reservedOf appends to dst those of ids that are still reserved (in
// T:rv: not written yet).
func (s *Store) reservedOf(ctx context.Context, tag string, dst, ids []string) ([]string, error) {
	for len(ids) > 0 {
		n := min(len(ids), 1000)
		v, err := s.rdb.HMGet(ctx, tag+":rv", ids[:n]...).Result()
		if err != nil {
			return nil, err
		}
		for i, x := range v {
			if x != nil {
				dst = append(dst, ids[i])
			}
		}
		ids = ids[n:]
	}
	return dst, nil
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
