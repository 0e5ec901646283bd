package resque

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// reapScript returns the jobs of dead worker processes to the head of the
// queues they came from, in their order, and removes the processes from
// the registry: their slots from <ns>workers and <ns>workers:heartbeat,
// their worker:<id>, :started and counter keys, their record and
// heartbeat. A process is dead when its heartbeat (Redis' clock) is older
// than ARGV[2] ms; with ARGV[4] set, only that process is reaped, whatever
// its heartbeat (a worker's own unregistration). It returns pairs of
// process and number of jobs returned.
//
// ARGV: ns, dead after (ms), most processes per call, [process].
var reapScript = redis.NewScript(`
local ns = ARGV[1]
local hb = ns .. 'kiln:heartbeats'
local bases
if ARGV[4] and ARGV[4] ~= '' then
  bases = {ARGV[4]}
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  bases = redis.call('ZRANGEBYSCORE', hb, '-inf', '(' .. (now - tonumber(ARGV[2])), 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {}
for _, base in ipairs(bases) do
  local rec = ns .. 'kiln:worker:' .. base
  local fields = redis.call('HGETALL', rec)
  local moved = 0
  for i = 1, #fields, 2 do
    local f, v = fields[i], fields[i + 1]
    if string.sub(f, 1, 6) == 'queue:' then
      local q = string.sub(f, 7)
      local n = 0
      while redis.call('LMOVE', v, ns .. 'queue:' .. q, 'LEFT', 'LEFT') do
        n = n + 1
      end
      if n > 0 then
        redis.call('SADD', ns .. 'queues', q)
      end
      moved = moved + n
    elseif string.sub(f, 1, 5) == 'slot:' then
      local id = string.sub(f, 6)
      redis.call('SREM', ns .. 'workers', id)
      redis.call('HDEL', ns .. 'workers:heartbeat', id)
      redis.call('DEL', ns .. 'worker:' .. id, ns .. 'worker:' .. id .. ':started',
        ns .. 'stat:processed:' .. id, ns .. 'stat:failed:' .. id)
    end
  end
  redis.call('DEL', rec)
  redis.call('ZREM', hb, base)
  table.insert(out, base)
  table.insert(out, moved)
end
return out
`)

// reaped is one process a reap removed.
type reaped struct {
	base  string
	moved int64
}

// reap runs reapScript: on the dead processes (only == "") or on one.
func reap(ctx context.Context, rdb redis.UniversalClient, ns string, deadAfter time.Duration, only string) ([]reaped, error) {
	res, err := reapScript.Run(ctx, rdb, nil, ns, deadAfter.Milliseconds(), 20, only).Slice()
	if err != nil {
		return nil, err
	}
	out := make([]reaped, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		b, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		out = append(out, reaped{base: b, moved: n})
	}
	return out, nil
}

// heartbeat writes the process's heartbeat every HeartbeatInterval and
// reaps dead processes, until ctx is done.
func (w *worker) heartbeat(ctx context.Context) {
	t := time.NewTicker(w.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.beat(ctx); err != nil {
			if ctx.Err() == nil {
				w.log.Warn("resque: heartbeat failed", "err", err)
			}
			continue
		}
		w.readPause(ctx)
		rs, err := reap(ctx, w.rdb, w.ids.ns, w.cfg.DeadAfter, "")
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("resque: looking for dead workers failed", "err", err)
			}
			continue
		}
		for _, r := range rs {
			w.log.Info("resque: removed a dead worker process; its jobs are back at the head of their queues", "worker", r.base, "jobs", r.moved)
		}
	}
}

// readPause reads Ruby Resque's pause switch, <ns>pause-all-workers: while
// it is "true" (any case, spaces around), the worker takes no job; running
// jobs go on.
func (w *worker) readPause(ctx context.Context) {
	v, err := w.rdb.Get(ctx, w.ids.ns+"pause-all-workers").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return // keep the last state
	}
	paused := strings.EqualFold(strings.TrimSpace(v), "true")
	if w.paused.Swap(paused) != paused {
		w.log.Info("resque: pause-all-workers changed", "paused", paused)
	}
}
