package redisstore

import (
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// Every state change is one of the scripts below: it runs atomically inside
// Redis, checks the task's state and lease before it writes, and keeps the
// indexes and the per-queue counts in step with the task records.
//
// Calling convention: KEYS[1] is the namespace's key tag ("{prefix:ns}"),
// which every key the script touches starts with, so that all of them live in
// one hash slot of a Redis Cluster. ARGV[1] is the store's time in
// microseconds, or empty to use Redis' own clock (TIME); ARGV[2] is the
// namespace's wake-up channel. The rest is script specific.
//
// Keys of a namespace, after the tag T:
//
//	T:t:<id>          hash   the task record (fields: see decode.go)
//	T:r:<queue>/<type> zset  pending tasks, all scores 0, ordered by member
//	                         (field m of the record):
//	                         (9-priority)(RunAt µs, 17 digits)(seq, 8 bytes)<id>
//	                         where seq is the enqueue's sequence (big-endian),
//	                         or, from the enqueue script: byte 2 then
//	                         seq*8+mark (7 bytes); mark is 1 for a task whose
//	                         record holds only what an enqueue without
//	                         options writes (the lease then reads two or
//	                         three fields of it), 3 for one of those with a
//	                         payload, 0 for any other, and 4 more when such
//	                         a record's field d is the default record
//	                         (decode.go: the lease reads none of it but the
//	                         payload); or byte 1 then seq*4+mark, as earlier
//	                         kilns wrote (mark 1 or 3, as above, or 0), whose
//	                         lease reads a member of byte 2 whole and whose
//	                         release leaves its mark (the lease finds the
//	                         record changed, see leaseScript)
//	T:ty:<queue>      set    types that have pending tasks in the queue
//	T:d               zset   scheduled and retry tasks by RunAt (µs)
//	T:l               zset   active tasks by lease expiry (µs); the records
//	                         do not repeat it (see decode.go); and one
//	                         member more, leaseSetSentinel, scored +inf
//	T:x               zset   terminal tasks by ExpiresAt (µs), or later
//	                         while their flow keeps them; the records do
//	                         not repeat it
//	T:xg              zset   groups of terminal tasks of one ExpiresAt (the
//	                         tasks of the default retention a report call
//	                         ended) by that time: member n, the lease id
//	                         of the group's first task
//	T:xgi             hash   group n -> its task ids, separated by spaces;
//	                         an id may have left the group (Retry, Delete):
//	                         Sweep looks at the task itself
//	T:all             zset   every task by enqueue sequence (List's order)
//	T:c               hash   "<state>/<queue>" -> number of tasks
//	T:pz              set    paused queues
//	T:uq              hash   unique key -> "<until µs>|<id>"
//	T:uz              zset   unique keys by the end of their window (µs)
//	T:seq, T:lseq     string enqueue sequence and lease id counters
//	T:mv, T:mk        hash, zset  meta records (see meta.go)
//	T:ev              stream      the change feed (see changes.go)
//	T:evw             string      present while the feed is read
//
// The hot paths (enqueue, lease, report) turn no number into a string
// through Lua's own conversions (tostring, concatenation, or a number
// passed to redis.call: each formats a double with sprintf, which costs
// Redis more than a hash write): numbers become strings with digits()
// (consecutive numbers, such as sequences and lease ids, nearly for free),
// the sequence in a member is packed with struct.pack, and the strings
// shared by a batch are built once.
// preludeCore is what every script starts with; the enqueue script needs
// nothing else. Every definition costs each call of a script that has it
// (a closure made, and later collected), so the enqueue script, the most
// frequent call, leaves out the helpers it does not use.
var preludeCore = preludeClock + preludeRest

// preludeClock is the start of preludeCore: the namespace's tag and the
// time. The lease script looks for work between it and preludeRest.
var preludeClock = `
local T = KEYS[1]
-- Locals for the globals the hot loops use: a global is a table look-up.
local ARGV, rcall, sbyte, ssub = ARGV, redis.call, string.byte, string.sub
local NOW
if ARGV[1] ~= '' then
  NOW = tonumber(ARGV[1])
else
  local t = rcall('TIME')
  NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
`

// preludeRest is preludeCore after preludeClock.
var preludeRest = `
local WAKE = ARGV[2]
local woke = false
local cnt = {}
-- flow_apply (flow.go) writes the flow counts the script gathered; flush
-- calls it first.
local flow_apply
-- evs collects the task changes of the script, written by flush() as one
-- entry of the change feed T:ev (see changes.go for the format).
local evs = {}
-- REC says whether the feed records changes: only while someone reads it
-- (a reader keeps T:evw, see changes.go); nil until the call's first
-- change asks. A call whose changes go unrecorded takes one entry id of
-- T:ev and deletes that entry in flush, so that a reader after it sees a
-- gap in the ids (Missed) instead of nothing. The hot loops ask without
-- a call: if REC == nil then rec() end, then REC or unrec = true.
local REC
local unrec = false
local function rec()
  if REC == nil then REC = rcall('EXISTS', T .. ':evw') == 1 end
  if not REC then unrec = true end
  return REC
end
local function ev(k, st, id, q, ty, a, x)
  if not rec() then return end
  if x then x = (string.gsub(x, '[\30\31]', ' ')) end
  evs[#evs + 1] = k .. st .. '\31' .. id .. '\31' .. q .. '\31' .. (ty or '') .. '\31' .. (a or '0') .. '\31' .. (x or '')
end
-- digits returns a function that turns a non-negative integer below 2^53
-- into its decimal string. Lua's own conversions (tostring, concatenation,
-- a number passed to redis.call) format a double through sprintf("%.14g")
-- or ("%.17g"), which costs Redis more than a hash write; this one keeps
-- the decimal string of n / 10 of its last call, so numbers that follow
-- each other (sequences, lease ids) cost one table look-up and one
-- concatenation, and others one integer string.format.
local DIG = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'}
local function digits()
  local hi, hs = 0, ''
  return function(n)
    local lo = n % 10
    local h = (n - lo) / 10
    if h ~= hi then
      hi = h
      if h == 0 then hs = '' else hs = string.format('%d', h) end
    end
    return hs .. DIG[lo]
  end
end
local I = digits()
local function S(n)
  -- Integers below 2^53 (times in µs are above 1e15) through I.
  if n % 1 == 0 and n < 9007199254740992 and n > -9007199254740992 then
    if n >= 0 then return I(n) end
    return '-' .. I(-n)
  end
  if n < 1e14 and n > -1e14 then return tostring(n) end
  return string.format('%.0f', n)
end
local function R17(ra)
  if ra <= 0 then return '00000000000000000' end
  if ra < 1e17 and ra % 1 == 0 then return string.format('%017d', ra) end
  return string.format('%017.0f', ra)
end
local function tkey(id) return T .. ':t:' .. id end
local function count(st, q, d)
  local c = cnt[st]
  if not c then c = {}; cnt[st] = c end
  c[q] = (c[q] or 0) + d
end
local function flush()
  if flow_apply then flow_apply() end
  for st, c in pairs(cnt) do
    for q, d in pairs(c) do
      if d > 0 then
        rcall('HINCRBY', T .. ':c', st .. '/' .. q, I(d))
      elseif d < 0 then
        rcall('HINCRBY', T .. ':c', st .. '/' .. q, '-' .. I(-d))
      end
    end
  end
  if #evs > 0 then
    -- One entry per ` + changeEntryBytesArg + ` bytes of changes at most
    -- (see changes.go): a big batch is several entries, a small one one.
    local ek, et, from, size = T .. ':ev', S(NOW), 1, 0
    for k = 1, #evs do
      size = size + #evs[k] + 1
      if size >= ` + changeEntryBytesArg + ` or k == #evs then
        rcall('XADD', ek, 'MAXLEN', '~', '` + changeFeedLenArg + `', '0-*', 't', et, 'e', table.concat(evs, '\30', from, k))
        from, size = k + 1, 0
      end
    end
    evs = {}
  elseif unrec then
    -- pcall: a user granted what an older kiln needed may not run XDEL;
    -- the empty entry then stays, and readers take it for the gap too.
    local ek = T .. ':ev'
    redis.pcall('XDEL', ek, rcall('XADD', ek, 'MAXLEN', '~', '` + changeFeedLenArg + `', '0-*', 'e', ''))
  end
  unrec = false
  if woke then rcall('PUBLISH', WAKE, '1') end
end
local function zrem_all(key, list)
  for i = 1, #list, 1000 do
    rcall('ZREM', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
local function zadd_all(key, l)
  for i = 1, #l, 2000 do
    rcall('ZADD', key, unpack(l, i, math.min(i + 1999, #l)))
  end
end
-- stage_ready adds m to the batch of ready members for queue q and type
-- ty (ready: list key -> {score, member, ...}; readyKeys: the keys in
-- order; types: queue -> set of types), written later by the caller.
local function stage_ready(ready, readyKeys, types, q, ty, m, rk)
  rk = rk or T .. ':r:' .. q .. '/' .. ty
  local l = ready[rk]
  if not l then
    l = {}
    ready[rk] = l
    readyKeys[#readyKeys + 1] = rk
    local tq = types[q]
    if not tq then tq = {}; types[q] = tq end
    tq[ty] = true
  end
  l[#l + 1] = '0'
  l[#l + 1] = m
end
-- add_ready writes what stage_ready staged.
local function add_ready(ready, readyKeys, types)
  for _, rk in ipairs(readyKeys) do zadd_all(rk, ready[rk]) end
  for q, tys in pairs(types) do
    for ty in pairs(tys) do
      if rcall('SADD', T .. ':ty:' .. q, ty) == 1 then woke = true end
    end
  end
end
`

// prelude is preludeCore and the helpers of the scripts other than enqueue.
var prelude = preludeCore + `
-- add_err appends the failure of attempt a, with error text msg, to the
-- error history of the task at key (fields eh, en, ed: see decode.go),
-- dropping the oldest entry past MAXERR. Only failures call it.
local function add_err(key, a, msg)
  if #msg > ` + strconv.Itoa(store.MaxAttemptErrorBytes) + ` then
    -- Cut on a UTF-8 character boundary, as store.TruncateAttemptError.
    local n = ` + strconv.Itoa(store.MaxAttemptErrorBytes) + `
    while n > 0 and bit.band(sbyte(msg, n + 1), 192) == 128 do n = n - 1 end
    msg = ssub(msg, 1, n)
  end
  local g = rcall('HMGET', key, 'sw', 'en', 'eh')
  local w = ''
  if g[1] then
    local bar = string.find(g[1], '|', 1, true)
    if bar then w = ssub(g[1], bar + 1) end
  end
  local body = tostring(a or 0) .. ' ' .. S(NOW) .. ' ' .. #w .. ' ' .. w .. msg
  local h = (g[3] or '') .. #body .. ':' .. body
  local n = (tonumber(g[2]) or 0) + 1
  if n > ` + strconv.Itoa(store.MaxAttemptErrors) + ` then
    local colon = string.find(h, ':', 1, true)
    h = ssub(h, colon + 1 + tonumber(ssub(h, 1, colon - 1)))
    n = n - 1
    rcall('HINCRBY', key, 'ed', 1)
  end
  rcall('HSET', key, 'eh', h, 'en', n)
end
-- keep_ca writes the creation time of the task at key (field ca, given as
-- ca) from its member m when it has no field ca, before m's RunAt
-- changes: a task enqueued to run at once has none, its creation time is
-- the RunAt in its member (see decode.go).
local function keep_ca(key, ca, m)
  if not ca then rcall('HSET', key, 'ca', S(tonumber(ssub(m, 2, 18)))) end
end
-- unmark returns member m without the mark of a common record (see the
-- key list at the top), for a task whose record has changed since its
-- enqueue: made ready again, it is read whole by the lease.
local function unmark(m)
  local b, b19 = sbyte(m, 26), sbyte(m, 19)
  if b % 2 == 1 and (b19 == 2 or b19 == 1) then
    return ssub(m, 1, 25) .. string.char(b - 1) .. ssub(m, 27)
  end
  return m
end
-- rerun returns member m with its RunAt replaced by ra, unmarked.
local function rerun(m, ra)
  return ssub(m, 1, 1) .. R17(ra) .. ssub(unmark(m), 19)
end
` + pushReadyLua + `
local function unready(q, ty, m)
  local k = T .. ':r:' .. q .. '/' .. ty
  rcall('ZREM', k, m)
  if rcall('EXISTS', k) == 0 then rcall('SREM', T .. ':ty:' .. q, ty) end
end
` + flowLua + `
-- finish ends task id in terminal state st. Its expiry (ExpiresAt) is not
-- written to the record: it is fa plus the retention (rtu, or the default
-- when the task has none; see decode.go), and the score of T:x.
local function finish(id, st, q, rtu, fl)
  local ret = tonumber(rtu) or ` + retentionDefaultUS + `
  local ea = S(NOW + ret)
  rcall('HSET', tkey(id), 'st', st, 'fa', S(NOW))
  rcall('ZADD', T .. ':x', ea, id)
  count(st, q, 1)
  flow_done(id)
  flow_ended(fl, ea)
end
` + promoteLua

// pushReadyLua and promoteLua are parts of prelude that the lease script
// takes too (it starts with preludeCore and them only).
var pushReadyLua = `
-- Ready tasks wake the waiting leasers only when their type's ready set was
-- empty (the type joins T:ty:<queue>): a leaser waits only after it found
-- every ready set it may take from empty, so a set that already had tasks
-- either woke it when it got its first one or is not one it waits for.
local function push_ready(q, ty, m)
  rcall('ZADD', T .. ':r:' .. q .. '/' .. ty, '0', m)
  if rcall('SADD', T .. ':ty:' .. q, ty) == 1 then woke = true end
end
`

var promoteLua = `
local function promote(limit)
  local ids = rcall('ZRANGEBYSCORE', T .. ':d', '-inf', S(NOW), 'LIMIT', '0', limit)
  for _, id in ipairs(ids) do
    local key = tkey(id)
    local f = rcall('HMGET', key, 'st', 'q', 'ty', 'm')
    if f[1] then
      push_ready(f[2], f[3], f[4])
      rcall('HSET', key, 'st', '2')
      count(f[1], f[2], -1)
      count('2', f[2], 1)
    end
  end
  zrem_all(T .. ':d', ids)
  return #ids
end
`

// leaseSetSentinel is a member the lease script adds to the lease set T:l
// with every batch it leases, scored +inf (never due: Sweep recovers only
// leases whose score has passed; no task has it as its id, which has no
// '~' or space). It is longer than Redis' zset-max-listpack-value (64 bytes
// unless configured otherwise), so T:l is made, or turned into, the skiplist
// encoding of a sorted set, and it never empties, so Redis never makes it
// again as a listpack. A listpack is what Redis uses for a sorted set of at
// most zset-max-listpack-entries (128) members: adding or removing a member
// walks the whole list, comparing each member, which for the lease set of a
// busy worker (its active tasks, tens to a hundred) cost more than all the
// rest of a lease's writes (docs/benchmarks.md, "The lease set kept a
// skiplist"). Redis 7.0 turns a skiplist back into a listpack only in
// commands kiln does not use on T:l (ZRANGESTORE, ZUNIONSTORE and the like).
var leaseSetSentinel = "~ kiln: this member keeps the lease set a skiplist; it is no task " + strings.Repeat("~", 64)

var retentionDefaultUS = strconv.FormatInt(store.RetentionDefault.Microseconds(), 10)

// priorityDigits are the first characters of ready-set members, by
// 9 - priority.
var priorityDigits = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

// enqueueScript adds ARGV[3] tasks. ARGV[4..] holds per task (see
// enqueueCall.add): id, record (field d), x, then the arguments x names.
// x is the 9-priority digit, a flags character ('@' plus 1: the payload
// follows, 2: the queue and the type follow, else they are the previous
// task's; 4: the options follow) and the max retries ("" when 0); the
// options are RunAt µs ("" for now), unique key, unique TTL µs, retention
// µs ("" when zero) and the unique key to release on success ("" for
// none). Most tasks need three arguments: every argument costs Redis
// its parsing, its Lua string and its release.
// It returns {codes, duplicates}: codes has one character per task, its
// state ("1" scheduled, "2" pending), "E" (the id is that of a task or of
// a held task of a flow) or "D" (unique key
// held); duplicates lists, per "D" in order, the id of the task holding the
// key.
var enqueueScript = redis.NewScript(preludeCore + rbTakenLua + `
local nt = tonumber(ARGV[3])
local base = rcall('INCRBY', T .. ':seq', ARGV[3]) - nt
local res, dups = {}, {}
local all, delayed = {}, {}
local na = 0
local ready, readyKeys = {}, {}
local types = {}
local sNOW = S(NOW)
local nowR = R17(NOW)
local TK, TH = T .. ':t:', T .. ':h:'
-- While flows are being written in parts (T:rvq), their tasks not
-- written yet are reserved: in T:rv, or in the compact format (rb_taken).
local RVQ = rcall('EXISTS', T .. ':rvq') == 1
local RV = RVQ and rcall('EXISTS', T .. ':rv') == 1
local q, ty, evq, rkq
-- The current queue's pending and scheduled tasks (written to the counts
-- when the queue changes and at the end), and the ready list of its type
-- (rl, rn members so far): a call per task costs more.
local n1, n2 = 0, 0
local rl, rn
-- A member's parts, made once per call: its start (the priority and the
-- enqueue's time) by priority byte, max retries by x, and the member's
-- sequence bytes (see below) but the last, once per 64 tasks, the last
-- byte by its value; for a call of one task, made for it (a table's first
-- key costs more than the part).
local PRE, MR, CH
if nt > 1 then PRE, MR, CH = {}, {}, {} end
local shi, shs = -1, ''
local i = 4
for j = 1, nt do
  local id, x = ARGV[i], ARGV[i + 2]
  local d = ARGV[i + 1]
  i = i + 3
  local fb = sbyte(x, 2) - 64
  -- fo: the options follow (flag 4); fb >= 8: the record is the common
  -- one (flag 8, see commonRecord in decode.go).
  local fo = fb % 8 >= 4
  local p = ''
  if fb % 2 == 1 then p = ARGV[i]; i = i + 1 end
  if fb % 4 >= 2 then
    if n1 > 0 then count('1', q, n1); n1 = 0 end
    if n2 > 0 then count('2', q, n2); n2 = 0 end
    q, ty = ARGV[i], ARGV[i + 1]
    i = i + 2
    evq = '\31' .. q .. '\31' .. ty .. '\31' .. '0' .. '\31'
    rkq = T .. ':r:' .. q .. '/' .. ty
    rl = nil
  end
  local ra, uk = '', ''
  local ttl, rtu, ukr
  if fo then
    ra, uk, ttl, rtu, ukr = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    i = i + 5
  end
  local key = TK .. id
  -- The id is taken by a task record or by a held task of a flow (T:h:<id>,
  -- see flow.go): one EXISTS looks at both; or, while a flow is being
  -- written in parts, by one of its tasks not yet written.
  if rcall('EXISTS', key, TH .. id) > 0 or (RV and rcall('HEXISTS', T .. ':rv', id) == 1) or (RVQ and rb_taken(id)) then
    res[j] = 'E'
  else
    local dup = nil
    if uk ~= '' then
      local h = rcall('HGET', T .. ':uq', uk)
      if h then
        local sep = string.find(h, '|', 1, true)
        if tonumber(ssub(h, 1, sep - 1)) > NOW then dup = ssub(h, sep + 1) end
      end
      if not dup then
        local untl = S(NOW + tonumber(ttl))
        rcall('HSET', T .. ':uq', uk, untl .. '|' .. id)
        rcall('ZADD', T .. ':uz', untl, uk)
      end
    end
    if dup then
      res[j] = 'D'
      dups[#dups + 1] = dup
    else
      local seq = base + j
      -- The member's mark (see the key list at the top): a task without
      -- options, whose record is the common one until its first lease.
      -- The member is made by one concatenation: each makes a string.
      local mk = 8 * seq
      if not fo then
        if p == '' then mk = mk + 1 else mk = mk + 3 end
        if fb >= 8 then mk = mk + 4 end
      end
      -- struct.pack('>BI7', 2, mk), made of the first seven bytes (they
      -- change every 32 tasks) and the last.
      local lo = mk % 256
      local hi = (mk - lo) / 256
      if hi ~= shi then shi, shs = hi, struct.pack('>BI6', 2, hi) end
      local sb, mr, pre
      if CH then
        sb, mr = CH[lo], MR[x]
        if not sb then sb = string.char(lo); CH[lo] = sb end
        if not mr then mr = ssub(x, 3); MR[x] = mr end
      else
        sb, mr = string.char(lo), ssub(x, 3)
      end
      local st, m
      if ra == '' then
        if PRE then
          local pb = sbyte(x, 1)
          pre = PRE[pb]
          if not pre then pre = ssub(x, 1, 1) .. nowR; PRE[pb] = pre end
        else
          pre = ssub(x, 1, 1) .. nowR
        end
        m = pre .. shs .. sb .. id
        st = '2'
      else
        local nra = tonumber(ra)
        m = ssub(x, 1, 1) .. R17(nra) .. shs .. sb .. id
        if nra > NOW then
          st = '1'
          delayed[#delayed + 1] = ra
          delayed[#delayed + 1] = id
        else
          st = '2'
        end
      end
      if not fo then
        -- The common task: no options. Its creation time is the RunAt in
        -- its member (no field ca: see decode.go). st first: Redis finds
        -- a small hash's fields by walking them in order, and every
        -- transition reads or writes st. A call per shape: a table to
        -- unpack costs more.
        if p == '' then
          if mr ~= '' then
            rcall('HSET', key, 'st', st, 'd', d, 'q', q, 'ty', ty, 'mr', mr, 'm', m)
          else
            rcall('HSET', key, 'st', st, 'd', d, 'q', q, 'ty', ty, 'm', m)
          end
        elseif mr ~= '' then
          rcall('HSET', key, 'st', st, 'd', d, 'q', q, 'ty', ty, 'mr', mr, 'm', m, 'p', p)
        else
          rcall('HSET', key, 'st', st, 'd', d, 'q', q, 'ty', ty, 'm', m, 'p', p)
        end
      else
        local f = {'d', d, 'q', q, 'ty', ty}
        if p ~= '' then f[#f + 1] = 'p'; f[#f + 1] = p end
        if mr ~= '' then f[#f + 1] = 'mr'; f[#f + 1] = mr end
        if ra ~= '' then f[#f + 1] = 'ca'; f[#f + 1] = sNOW; f[#f + 1] = 'ra'; f[#f + 1] = ra end
        if rtu and rtu ~= '' then f[#f + 1] = 'rtu'; f[#f + 1] = rtu end
        if ukr and ukr ~= '' then f[#f + 1] = 'uk'; f[#f + 1] = ukr end
        f[#f + 1] = 'm'; f[#f + 1] = m
        f[#f + 1] = 'st'; f[#f + 1] = st
        rcall('HSET', key, unpack(f))
      end
      if st == '2' then
        if not rl then
          stage_ready(ready, readyKeys, types, q, ty, m, rkq)
          rl = ready[rkq]
          rn = #rl
        else
          rl[rn + 1] = '0'
          rl[rn + 2] = m
          rn = rn + 2
        end
        n2 = n2 + 1
      else
        n1 = n1 + 1
      end
      all[na + 1] = I(seq)
      all[na + 2] = id
      na = na + 2
      if REC == nil then rec() end
      if REC then evs[#evs + 1] = 'E' .. st .. '\31' .. id .. evq else unrec = true end
      res[j] = st
    end
  end
end
if n1 > 0 then count('1', q, n1) end
if n2 > 0 then count('2', q, n2) end
zadd_all(T .. ':all', all)
if #delayed > 0 then
  -- A new earliest due time wakes the waiting leasers: they wait less.
  local first = rcall('ZRANGE', T .. ':d', '0', '0', 'WITHSCORES')
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

// Flags of an enqueued task's x argument (see enqueueScript), added to '@'.
const (
	enqueueHasPayload = 1
	enqueueHasQueue   = 2
	enqueueHasOptions = 4
	// enqueueDefaultRecord: the task's field d is the default record
	// (isDefaultRecord); only without options.
	enqueueDefaultRecord = 8
)

// leaseScript leases up to ARGV[3] tasks for ARGV[4] µs to worker ARGV[5].
// ARGV[6] is the number of queues, then the queues in the order to try them,
// then "1" when a type filter follows (the types), or "0". It returns
// {now, next due time or -1, tasks, first lease id, kinds}. The leased
// tasks have consecutive lease ids (the script runs alone, so its INCRBYs
// of T:lseq follow each other), the first one given, in the order of
// tasks, which holds per task the values kinds says (a character each:
// "t" m, "u" m and p, "T" and "U" the queue and the type, then those of
// "t" and "u": a default record's first lease, read from its member, the
// queue and type given when they differ from the last "T" or "U" task's;
// "a" d and m, "b" d, m and p, "c" all four, "r" the record alone), of
// these four, as the record was before the lease fields
// (state, attempt, lease id, start and worker) were written, which the
// caller sets itself: the fields d, m, p and a (nil when absent) of a
// record that has no others but q, ty, mr, st, l, le (which records leased
// by earlier releases have) and sw (the
// common task: what else the caller needs is in d, and it sets the lease
// fields itself); of any other record, the record as HGETALL gives it.
// Every value a script returns, a nil too, costs Redis its conversion and
// its reply.
var leaseScript = redis.NewScript(preludeClock + leaseIdleLua + preludeRest + pushReadyLua + promoteLua + `
local maxn = tonumber(ARGV[3])
local dur = tonumber(ARGV[4])
local IA = digits() -- attempts: I keeps the lease ids
local nq = tonumber(ARGV[6])
local filtered = ARGV[7 + nq] == '1'
local types = {}
for i = 8 + nq, #ARGV do types[#types + 1] = ARGV[i] end
promote('1000')
local out, no, lid1 = {}, 0, nil
local kinds, nk = {}, 0
-- The queue and the type of the last task of kind T or t (see below).
local cq, cty
local TK = T .. ':t:'
local PLAIN = {d = 1, m = 2, p = 3, a = 4, rtu = 5, dp = 6, fl = 7, q = 0, ty = 0, mr = 0, st = 0, l = 0, le = 0, sw = 0}
local taken = 0
local exp = S(NOW + dur)
local sw = S(NOW) .. '|' .. ARGV[5]
-- The change record of a start ends with the attempt and the worker (see
-- ev), the same worker for the whole call: escaped once.
local evw = '\31' .. string.gsub(ARGV[5], '[\30\31]', ' ')
for qi = 1, nq do
  if taken >= maxn then break end
  local q = ARGV[6 + qi]
  if rcall('SISMEMBER', T .. ':pz', q) == 0 then
    local tys = types
    if not filtered then tys = rcall('SMEMBERS', T .. ':ty:' .. q) end
    local need = maxn - taken
    -- picked: the members taken; their type is pty1 when there is one
    -- type, else pty[j].
    local picked, pty, pty1 = {}, {}, nil
    if #tys == 1 then
      local k = T .. ':r:' .. q .. '/' .. tys[1]
      -- ZRANGE and ZREM, not ZPOPMIN: its reply has each member's score,
      -- which Redis formats with sprintf and the script converts.
      local r = rcall('ZRANGE', k, '0', I(need - 1))
      if #r > 0 then zrem_all(k, r) end
      picked, pty1 = r, tys[1]
      -- Also when nothing was taken: T:ty:<queue> holds exactly the types
      -- with ready tasks (push_ready relies on it). Fewer than asked for
      -- is all there was.
      if #r < need or rcall('EXISTS', k) == 0 then rcall('SREM', T .. ':ty:' .. q, tys[1]) end
    elseif #tys > 1 then
      local cands = {}
      for _, ty in ipairs(tys) do
        local k = T .. ':r:' .. q .. '/' .. ty
        local ms = rcall('ZRANGE', k, '0', I(need - 1))
        if #ms == 0 then rcall('SREM', T .. ':ty:' .. q, ty) end
        for _, m in ipairs(ms) do
          cands[#cands + 1] = {m, k, ty}
        end
      end
      table.sort(cands, function(a, b) return a[1] < b[1] end)
      local bykey = {}
      local keys = {}
      for i = 1, math.min(need, #cands) do
        local c = cands[i]
        picked[#picked + 1] = c[1]
        pty[#pty + 1] = c[3]
        if not bykey[c[2]] then
          bykey[c[2]] = {}
          keys[#keys + 1] = {c[2], c[3]}
        end
        local l = bykey[c[2]]
        l[#l + 1] = c[1]
      end
      for _, kt in ipairs(keys) do
        zrem_all(kt[1], bykey[kt[1]])
        if rcall('EXISTS', kt[1]) == 0 then rcall('SREM', T .. ':ty:' .. q, kt[2]) end
      end
    end
    if #picked > 0 then
      local lid = rcall('INCRBY', T .. ':lseq', I(#picked)) - #picked
      if not lid1 then lid1 = lid + 1 end
      -- The sentinel first: it keeps T:l a skiplist (see
      -- leaseSetSentinel); a member already there costs a look-up.
      local lz = {'inf', '` + leaseSetSentinel + `'}
      for j = 1, #picked do
        local m = picked[j]
        local id = ssub(m, 27)
        local key = TK .. id
        local ty = pty1 or pty[j]
        lid = lid + 1
        taken = taken + 1
        local sl = I(lid)
        local sa = '1'
        nk = nk + 1
        -- The common task's first lease: its member carries the enqueue's
        -- mark (see the key list at the top) and its record has no field
        -- a (every lease writes it, and every change that makes a task
        -- ready again follows one and drops the mark), so it holds what
        -- its enqueue wrote, st d q ty [mr] m [p]. m is the member just
        -- taken (a ready task's member is its record's m).
        local mb, m19 = sbyte(m, 26), sbyte(m, 19)
        local marked = mb % 2 == 1 and (m19 == 2 or m19 == 1)
        local dflt = marked and m19 == 2 and mb % 8 >= 4
        local first = false
        if dflt then
          -- Its field d is the default one (commonRecord in decode.go),
          -- which Lease makes from the member, the queue and the type:
          -- nothing to read but the payload. The lease's write tells
          -- that the record is the enqueue's: it adds the three fields
          -- a, l and sw, which every lease writes.
          first = rcall('HSET', key, 'st', '3', 'a', '1', 'l', sl, 'sw', sw) == 3
        end
        if first then
          -- Kind t, or T when the queue and the type precede the member
          -- (they changed since the last one); u and U with the payload.
          local kd = 't'
          if q ~= cq or ty ~= cty then
            cq, cty = q, ty
            out[no + 1] = q
            out[no + 2] = ty
            no = no + 2
            kd = 'T'
          end
          out[no + 1] = m
          no = no + 1
          if mb % 4 == 3 then
            out[no + 1] = rcall('HGET', key, 'p') or ''
            no = no + 1
            if kd == 't' then kd = 'u' else kd = 'U' end
          end
          kinds[nk] = kd
        else
          -- A record of no fields but d, m, p, a, those the caller ignores
          -- (in d, or the lease fields it sets) and a workflow member's rtu,
          -- dp and fl is returned as d, m, p, a, or as d, m, p, {a, rtu, dp,
          -- fl} when it has one of the last three; any other record whole.
          local d, mm, p, a, rtu, dp, fl = false, false, false, false, false, false, false
          local plain = true
          -- A common record other than the default: two or three values
          -- instead of HGETALL's twelve to sixteen names and values, each
          -- made a Lua string. Any other record is read whole at once.
          local g = false
          if marked and not dflt then
            -- A field HMGET does not find costs a walk of the record: p is
            -- asked for only when the mark says there is one.
            if mb % 4 == 3 then g = rcall('HMGET', key, 'd', 'a', 'p') else g = rcall('HMGET', key, 'd', 'a') end
          end
          local r
          if g and g[1] and not g[2] then
            d, mm, p = g[1], m, g[3] or false
          else
            r = rcall('HGETALL', key)
            local nr = #r
            -- ai: the index of a's value; en, ed: the error history's counts.
            local ai, en, ed = nil, 0, 0
            for i = 1, nr, 2 do
              local f = r[i]
              local k = PLAIN[f]
              if not k then
                plain = false
                if f == 'en' then en = tonumber(r[i + 1]) or 0 elseif f == 'ed' then ed = tonumber(r[i + 1]) or 0 end
              elseif k == 1 then d = r[i + 1]
              elseif k == 2 then mm = r[i + 1]
              elseif k == 3 then p = r[i + 1]
              elseif k == 4 then a = r[i + 1]; ai = i + 1
              elseif k == 5 then rtu = r[i + 1]
              elseif k == 6 then dp = r[i + 1]
              elseif k == 7 then fl = r[i + 1]
              end
            end
            if dflt then
              -- The default mark on a record leased before (no kiln since
              -- the mark drops it; the write above found a, l or sw): that
              -- write set the attempt to 1, over what it was. The attempts
              -- it failed are the history's; the record is returned with
              -- them, and the attempt after them is written below.
              a = I(en + ed)
              if ai then r[ai] = a else r[nr + 1] = 'a'; r[nr + 2] = a end
            end
          end
          -- Only the values the task needs (a nil costs its reply too).
          if plain and d then
            out[no + 1] = d
            out[no + 2] = mm
            if rtu or dp or fl then
              out[no + 3] = p
              out[no + 4] = {a, rtu, dp, fl}
              no = no + 4
              kinds[nk] = 'c'
            elseif a then
              out[no + 3] = p
              out[no + 4] = a
              no = no + 4
              kinds[nk] = 'c'
            elseif p then
              out[no + 3] = p
              no = no + 3
              kinds[nk] = 'b'
            else
              no = no + 2
              kinds[nk] = 'a'
            end
          else
            out[no + 1] = r
            no = no + 1
            kinds[nk] = 'r'
          end
          if a then a = tonumber(a) else a = 0 end
          if a > 0 then sa = IA(a + 1) end
          rcall('HSET', key, 'st', '3', 'a', sa, 'l', sl, 'sw', sw)
        end
        if REC == nil then rec() end
        if REC then evs[#evs + 1] = 'S3\31' .. id .. '\31' .. q .. '\31' .. ty .. '\31' .. sa .. evw else unrec = true end
        lz[2 * j + 1] = exp
        lz[2 * j + 2] = id
      end
      zadd_all(T .. ':l', lz)
      count('2', q, -#picked)
      count('3', q, #picked)
    end
  end
end
woke = false
flush()
local nextDue = -1
local d = rcall('ZRANGE', T .. ':d', '0', '0', 'WITHSCORES')
if #d > 0 then nextDue = d[2] end
return {S(NOW), nextDue, out, lid1 and I(lid1) or '0', table.concat(kinds)}
`)

// leaseIdleLua ends a lease that can find nothing before the rest of the
// script makes its helpers (each a closure made per call, then collected:
// most of what a call costs when it leases nothing, as an idle worker's
// does). There is nothing to lease when no queue asked for has a type with
// ready tasks (T:ty:<queue> exists exactly while one has) and no scheduled
// or retry task is due; the script would then change nothing and return
// the same reply: the time, the next due time or -1, no tasks.
var leaseIdleLua = `
do
  local idle = true
  for qi = 1, tonumber(ARGV[6]) do
    if rcall('EXISTS', T .. ':ty:' .. ARGV[6 + qi]) == 1 then
      idle = false
      break
    end
  end
  if idle then
    local d = rcall('ZRANGE', T .. ':d', '0', '0', 'WITHSCORES')
    if #d == 0 then return {string.format('%.0f', NOW), -1, {}, '0', ''} end
    if tonumber(d[2]) > NOW then return {string.format('%.0f', NOW), d[2], {}, '0', ''} end
  end
end
`

// extendScript renews leases for ARGV[3] µs. ARGV[4..] holds 5 values per
// lease: id, lease id, "1" when progress follows, percent, message. It
// returns per lease "N", "L" or "O<expiry µs>:<cancel requested 0/1>".
var extendScript = redis.NewScript(prelude + `
local dur = tonumber(ARGV[3])
local exp = S(NOW + dur)
local res = {}
for i = 4, #ARGV, 5 do
  local id = ARGV[i]
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'l', 'c')
  if not f[1] then
    res[#res + 1] = 'N'
  elseif f[1] ~= '3' or f[2] ~= ARGV[i + 1] then
    res[#res + 1] = 'L'
  else
    if ARGV[i + 2] == '1' then
      rcall('HSET', key, 'pp', ARGV[i + 3], 'pm', ARGV[i + 4])
    end
    rcall('ZADD', T .. ':l', exp, id)
    res[#res + 1] = 'O' .. exp .. ':' .. (f[3] or '0')
  end
end
return res
`)

// reportScript records outcomes. ARGV[3..] holds per outcome: id, lease id,
// kind, then by kind: "0" (succeeded, nil result): nothing; "1" (succeeded):
// result; "2" (retry): error, retry at (µs, 0 for now); "3" (dead), "4"
// (cancelled): error; "5" (release): not started ("1"). The kind may carry
// the lease note of the Store that leased the task (see hints.go): the kind,
// "H" (the queue and the type follow the kind), "G" (the queue, the type,
// the workflow fields dp and fl and the retention rtu follow, each of the
// last three "-" when absent or "+" and its value) or "h" (those of the
// note before in the call), then the attempt; the script then reads only
// the state and the lease id. It returns one string with a character per
// outcome: "O", "N" or "L". The lease fields are left as they are: they
// count only while the task is active.
var reportScript = redis.NewScript(prelude + `
local res = {}
local TK = T .. ':t:'
local sNOW = S(NOW)
local gone, expz = {}, {}
local eaDefault = S(NOW + ` + retentionDefaultUS + `)
local extra = {['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 1, ['4'] = 1, ['5'] = 1}
local i = 3
local hq, hty, hdp, hfl, hrtu
local function opt(x)
  if x == '-' then return false end
  return ssub(x, 2)
end
-- Counters of res, gone and expz (a # is a look-up), and the successes of
-- queue tq not yet counted (active to succeeded: one count per queue run,
-- not two per task).
local nres, ngone, nexpz = 0, 0, 0
-- The tasks of the default retention this call ends expire together: one
-- group (T:xg, see the key list) instead of an entry of T:x each.
local grp, ngrp, gname = {}, 0, nil
local tq, tn = nil, 0
local nA = #ARGV
while i <= nA do
  local id, kind = ARGV[i], ARGV[i + 2]
  local key = TK .. id
  local j = i + 3
  -- f1..f9: state, lease id, queue, retention, unique key, dependents,
  -- workflow, type and attempt (locals: a table's writes cost more).
  local f1, f2, f3, f4, f5, f6, f7, f8, f9
  if #kind > 1 then
    local c = sbyte(kind, 2)
    if c == 72 then
      hq, hty, hdp, hfl, hrtu = ARGV[j], ARGV[j + 1], false, false, false
      j = j + 2
    elseif c == 71 then
      hq, hty, hdp, hfl, hrtu = ARGV[j], ARGV[j + 1], opt(ARGV[j + 2]), opt(ARGV[j + 3]), opt(ARGV[j + 4])
      j = j + 5
    end
    local g = rcall('HMGET', key, 'st', 'l')
    f1, f2, f3, f4, f5, f6, f7, f8, f9 = g[1], g[2], hq, hrtu, false, hdp, hfl, hty, ssub(kind, 3)
    kind = ssub(kind, 1, 1)
  else
    local g = rcall('HMGET', key, 'st', 'l', 'q', 'rtu', 'uk', 'dp', 'fl', 'ty', 'a')
    f1, f2, f3, f4, f5, f6, f7, f8, f9 = g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
  end
  nres = nres + 1
  if not f1 then
    res[nres] = 'N'
  elseif f1 ~= '3' or f2 ~= ARGV[i + 1] then
    res[nres] = 'L'
  else
    local q = f3
    ngone = ngone + 1
    gone[ngone] = id
    if f5 and (kind == '0' or kind == '1') then
      -- Release the unique key on success, if this task still holds it.
      local h = rcall('HGET', T .. ':uq', f5)
      if h and ssub(h, -(#id + 1)) == '|' .. id then
        rcall('HDEL', T .. ':uq', f5)
        rcall('ZREM', T .. ':uz', f5)
      end
    end
    if kind == '0' or kind == '1' or kind == '3' or kind == '4' then
      local ea = eaDefault
      if f4 then ea = S(NOW + tonumber(f4)) end
      local st
      -- The dependents listed in dp are counted once: the record's write
      -- empties dp (else it sets st twice).
      local dk, dv = 'st', nil
      if f6 and f6 ~= '1' then dk, dv = 'dp', '' end
      if kind == '0' then
        st = '5'
        if dv then
          rcall('HSET', key, 'st', st, 'fa', sNOW, dk, dv)
        else
          rcall('HSET', key, 'st', st, 'fa', sNOW)
        end
        -- ev('K', st, id, q, f8, f9), inline.
        if REC == nil then rec() end
        if REC then evs[#evs + 1] = 'K5\31' .. id .. '\31' .. q .. '\31' .. (f8 or '') .. '\31' .. (f9 or '0') .. '\31' else unrec = true end
      elseif kind == '1' then
        st = '5'
        rcall('HSET', key, 'st', st, 'fa', sNOW, 'r', ARGV[j], dk, dv or st)
        ev('K', st, id, q, f8, f9)
      else
        if kind == '3' then
          st = '6'
          ev('F', '3', id, q, f8, f9, ARGV[j])
          ev('D', st, id, q, f8, f9)
        else
          st = '7'
          ev('C', st, id, q, f8, f9)
        end
        rcall('HSET', key, 'st', st, 'fa', sNOW, 'e', ARGV[j], dk, dv or st)
        if kind == '3' or ARGV[j] ~= '' then add_err(key, f9, ARGV[j]) end
      end
      if ea == eaDefault then
        ngrp = ngrp + 1
        grp[ngrp] = id
        if not gname then gname = ARGV[i + 1] end
      else
        expz[nexpz + 1] = ea
        expz[nexpz + 2] = id
        nexpz = nexpz + 2
      end
      if st == '5' then
        if q ~= tq then
          if tn > 0 then count('3', tq, -tn); count('5', tq, tn) end
          tq, tn = q, 0
        end
        tn = tn + 1
      else
        count('3', q, -1)
        count(st, q, 1)
      end
      if f6 then
        local ok = nil
        if kind == '0' then ok = 'n' elseif kind == '1' then ok = 'r' end
        flow_done(id, f6, true, ok)
      end
      if f7 then flow_ended(f7, ea) end
    else
      count('3', q, -1)
      local g = rcall('HMGET', key, 'ty', 'm', 'a', 'ca')
      if kind == '2' then
        keep_ca(key, g[4], g[2])
        add_err(key, g[3], ARGV[j])
        local at = tonumber(ARGV[j + 1])
        if at > NOW then
          local m = rerun(g[2], at)
          rcall('HSET', key, 'e', ARGV[j], 'st', '4', 'ra', S(at), 'm', m)
          ev('F', '3', id, q, g[1], g[3], ARGV[j])
          ev('R', '4', id, q, g[1], g[3])
          rcall('ZADD', T .. ':d', S(at), id)
          count('4', q, 1)
          if rcall('ZRANGE', T .. ':d', '0', '0')[1] == id then woke = true end
        else
          local m = rerun(g[2], NOW)
          push_ready(q, g[1], m)
          rcall('HSET', key, 'e', ARGV[j], 'st', '2', 'ra', sNOW, 'm', m)
          ev('F', '3', id, q, g[1], g[3], ARGV[j])
          ev('R', '2', id, q, g[1], g[3])
          count('2', q, 1)
        end
      else
        local a = tonumber(g[3]) or 0
        if ARGV[j] == '1' and a > 0 then a = a - 1 end
        local m = unmark(g[2])
        push_ready(q, g[1], m)
        if m ~= g[2] then
          rcall('HSET', key, 'st', '2', 'a', S(a), 'm', m)
        else
          rcall('HSET', key, 'st', '2', 'a', S(a))
        end
        count('2', q, 1)
        ev('Z', '2', id, q, g[1], S(a))
      end
    end
    res[nres] = 'O'
  end
  i = j + (extra[kind] or 0)
end
if tn > 0 then count('3', tq, -tn); count('5', tq, tn) end
zrem_all(T .. ':l', gone)
zadd_all(T .. ':x', expz)
if ngrp > 0 then
  rcall('HSET', T .. ':xgi', gname, table.concat(grp, ' '))
  rcall('ZADD', T .. ':xg', eaDefault, gname)
end
flush()
return table.concat(res)
`)

// cancelScript cancels tasks ARGV[3..]; per id "N", "O<state>" or
// "I<state>" (invalid state).
var cancelScript = redis.NewScript(prelude + `
local res = {}
local marked = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'q', 'ty', 'm', 'rtu', 'l', 'fl', 'a')
  local st = f[1]
  if not st then
    res[#res + 1] = 'N'
  elseif st == '3' then
    rcall('HSET', key, 'c', '1')
    marked[#marked + 1] = id .. ' ' .. (f[6] or '0')
    res[#res + 1] = 'O3'
  elseif st == '1' or st == '2' or st == '4' then
    if st == '2' then
      unready(f[2], f[3], f[4])
    else
      rcall('ZREM', T .. ':d', id)
    end
    count(st, f[2], -1)
    rcall('HSET', key, 'e', 'cancelled')
    ev('C', '7', id, f[2], f[3], f[8])
    finish(id, '7', f[2], f[5], f[7])
    res[#res + 1] = 'O7'
  else
    res[#res + 1] = 'I' .. st
  end
end
flush()
if #marked > 0 then rcall('PUBLISH', WAKE, 'c ' .. table.concat(marked, ' ')) end
return res
`)

// retryScript makes dead and cancelled tasks ARGV[3..] pending again; per id
// "N", "O2" or "I<state>".
var retryScript = redis.NewScript(prelude + `
local res = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'q', 'ty', 'm', 'fl', 'ca')
  local st = f[1]
  if not st then
    res[#res + 1] = 'N'
  elseif st == '6' or st == '7' then
    keep_ca(key, f[6], f[4])
    flow_reopened(f[5])
    count(st, f[2], -1)
    rcall('ZREM', T .. ':x', id)
    rcall('HDEL', key, 'c', 'fa', 'ea', 'pp', 'pm')
    local m = rerun(f[4], NOW)
    push_ready(f[2], f[3], m)
    rcall('HSET', key, 'st', '2', 'a', '0', 'ra', S(NOW), 'm', m)
    count('2', f[2], 1)
    ev('T', '2', id, f[2], f[3])
    res[#res + 1] = 'O2'
  else
    res[#res + 1] = 'I' .. st
  end
end
flush()
return res
`)

// deleteScript deletes tasks ARGV[3..] that are not active; per id "N", "O"
// or "I<state>".
var deleteScript = redis.NewScript(prelude + `
local res = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'q', 'ty', 'm', 'fl', 'rtu', 'a')
  local st = f[1]
  if not st then
    res[#res + 1] = 'N'
  elseif st == '3' then
    res[#res + 1] = 'I3'
  else
    ev('X', '0', id, f[2], f[3], f[7])
    if st == '1' or st == '2' or st == '4' then
      if st == '2' then
        unready(f[2], f[3], f[4])
      else
        rcall('ZREM', T .. ':d', id)
      end
      flow_done(id)
      local ret = tonumber(f[6]) or 0
      if ret <= 0 then ret = ` + retentionDefaultUS + ` end
      flow_ended(f[5], S(NOW + ret))
    else
      rcall('ZREM', T .. ':x', id)
    end
    count(st, f[2], -1)
    rcall('DEL', key)
    rcall('ZREM', T .. ':all', id)
    flow_gone(f[5])
    res[#res + 1] = 'O'
  end
end
flush()
return res
`)

// pauseScript pauses (ARGV[4] == "1") or resumes queue ARGV[3].
var pauseScript = redis.NewScript(prelude + `
if ARGV[4] == '1' then
  rcall('SADD', T .. ':pz', ARGV[3])
else
  if rcall('SREM', T .. ':pz', ARGV[3]) == 1 then woke = true end
end
flush()
return 1
`)

// sweepScript does a namespace's share of Sweep with at most ARGV[3] changes
// of each kind. It returns {promoted, recovered, dead, cancelled, deleted}.
var sweepScript = redis.NewScript(prelude + flowWriteLua + flowRecoverLua + `
local limit = ARGV[3]
local promoted = promote(limit)
local us = rcall('ZRANGEBYSCORE', T .. ':uz', '-inf', S(NOW), 'LIMIT', '0', limit)
for i = 1, #us, 1000 do
  rcall('HDEL', T .. ':uq', unpack(us, i, math.min(i + 999, #us)))
end
zrem_all(T .. ':uz', us)
local recovered, dead, cancelled, deleted = 0, 0, 0, 0
local ls = rcall('ZRANGEBYSCORE', T .. ':l', '-inf', S(NOW), 'LIMIT', '0', limit)
for _, id in ipairs(ls) do
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'q', 'ty', 'm', 'a', 'mr', 'c', 'rtu', 'fl')
  if f[1] == '3' then
    local q = f[2]
    local a, mr = tonumber(f[5]) or 0, tonumber(f[6]) or 0
    count('3', q, -1)
    rcall('HDEL', key, 'l', 'le')
    if f[7] == '1' then
      rcall('HSET', key, 'e', 'cancelled (lease expired)')
      add_err(key, f[5], 'cancelled (lease expired)')
      ev('L', '7', id, q, f[3], f[5])
      finish(id, '7', q, f[8], f[9])
      cancelled = cancelled + 1
    elseif a > mr then
      local msg = string.format('lease expired on attempt %d of %d (worker lost)', a, mr + 1)
      rcall('HSET', key, 'e', msg)
      add_err(key, f[5], msg)
      ev('L', '6', id, q, f[3], f[5])
      finish(id, '6', q, f[8], f[9])
      dead = dead + 1
    else
      local m = unmark(f[4])
      push_ready(q, f[3], m)
      local msg = string.format('lease expired on attempt %d (worker lost)', a)
      if m ~= f[4] then
        rcall('HSET', key, 'st', '2', 'e', msg, 'm', m)
      else
        rcall('HSET', key, 'st', '2', 'e', msg)
      end
      add_err(key, f[5], msg)
      count('2', q, 1)
      ev('L', '2', id, q, f[3], f[5])
      recovered = recovered + 1
    end
  end
end
zrem_all(T .. ':l', ls)
local later = {}
-- expire deletes terminal task id, whose own expiry has come, unless its
-- flow keeps it: then later, or once the flow lets it go (T:fx).
local function expire(id, key, st, q, fl)
  local xe = flow_expiry(fl)
  if flow_holds(fl) then
    rcall('SADD', T .. ':fx:' .. fl, id)
  elseif xe and xe > NOW then
    later[#later + 1] = S(xe)
    later[#later + 1] = id
  else
    count(st, q, -1)
    rcall('DEL', key)
    rcall('ZREM', T .. ':all', id)
    flow_gone(fl)
    deleted = deleted + 1
  end
end
local xs = rcall('ZRANGEBYSCORE', T .. ':x', '-inf', S(NOW), 'LIMIT', '0', limit)
for _, id in ipairs(xs) do
  local key = tkey(id)
  local f = rcall('HMGET', key, 'st', 'q', 'fl')
  -- The task's own expiry has come: an entry's score is never before it.
  if f[1] == '5' or f[1] == '6' or f[1] == '7' then expire(id, key, f[1], f[2], f[3]) end
end
zrem_all(T .. ':x', xs)
-- The groups (T:xg) that are due, up to limit tasks in all: a task still
-- terminal whose own expiry (fa plus its retention) has come is expired;
-- any other left the group (made pending again, maybe ended again since,
-- with an entry of its own; or deleted).
local budget = tonumber(limit) - #xs
if budget > 0 then
  local old = NOW - ` + retentionDefaultUS + ` -- finished then or before: expired
  local gs = rcall('ZRANGEBYSCORE', T .. ':xg', '-inf', S(NOW), 'LIMIT', '0', limit)
  local done = {}
  local gk = T .. ':xgi'
  for _, g in ipairs(gs) do
    if budget <= 0 then break end
    local ids = rcall('HGET', gk, g) or ''
    local from, n, rest = 1, #ids, nil
    while from <= n do
      if budget <= 0 then rest = ssub(ids, from); break end
      budget = budget - 1
      local sp = string.find(ids, ' ', from, true) or n + 1
      local id = ssub(ids, from, sp - 1)
      from = sp + 1
      local key = tkey(id)
      -- A task of a group has the default retention (its report grouped
      -- it by its expiry).
      local f = rcall('HMGET', key, 'st', 'q', 'fl', 'fa')
      if (f[1] == '5' or f[1] == '6' or f[1] == '7') and (tonumber(f[4]) or 0) <= old then
        expire(id, key, f[1], f[2], f[3])
      end
    end
    if rest then
      rcall('HSET', gk, g, rest)
    else
      done[#done + 1] = g
    end
  end
  for i = 1, #done, 1000 do
    rcall('HDEL', gk, unpack(done, i, math.min(i + 999, #done)))
  end
  zrem_all(T .. ':xg', done)
end
zadd_all(T .. ':x', later)
flush()
return {promoted, recovered, dead, cancelled, deleted}
`)

// allScripts lists the scripts to load at Open.
var allScripts = []*redis.Script{enqueueScript, leaseScript, extendScript, reportScript, cancelScript, retryScript, deleteScript, pauseScript, sweepScript, flowScript, flowPartScript}
