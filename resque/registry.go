package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Time formats of the registry, as Ruby Resque writes them.
const (
	// startedLayout is Ruby's Time#to_s (worker:<id>:started).
	startedLayout = "2006-01-02 15:04:05 -0700"
	// heartbeatLayout is Ruby's Time#iso8601 (workers:heartbeat).
	heartbeatLayout = "2006-01-02T15:04:05-07:00"
	// runAtLayout is Ruby's Time.now.utc.iso8601 (worker:<id> run_at).
	runAtLayout = "2006-01-02T15:04:05Z"
)

// ids are the registry names of one worker process.
type ids struct {
	ns    string
	base  string            // host:pid:queues
	slots []string          // one Resque worker id per slot
	proc  map[string]string // queue -> processing list (reliable mode)
}

func newIDs(ns, host string, pid int, qs queueSpec, concurrency int, plain bool) *ids {
	base := host + ":" + strconv.Itoa(pid) + ":" + qs.idString()
	d := &ids{ns: ns, base: base, proc: map[string]string{}}
	if concurrency == 1 {
		d.slots = []string{base}
	} else {
		for i := range concurrency {
			d.slots = append(d.slots, base+":"+strconv.Itoa(i))
		}
	}
	if !plain {
		for _, q := range qs.names {
			d.proc[q] = ns + "kiln:processing:" + base + ":" + q
		}
	}
	return d
}

func (d *ids) queueKey(q string) string   { return d.ns + "queue:" + q }
func (d *ids) workerKey(id string) string { return d.ns + "worker:" + id }

// beatScript writes a process's heartbeats: kiln's own (a sorted set scored
// by Redis' clock, which the janitors read) and Ruby's workers:heartbeat
// entry of every slot. It also writes the process's record again and puts
// its slots back into <ns>workers, so a live process that was taken for
// dead (its jobs returned to their queues) or pruned by a Ruby worker is
// registered again.
//
// ARGV: ns, base, heartbeat time, started time, n, n slot ids, then pairs
// of queue and processing list.
var beatScript = redis.NewScript(`
local ns, base, hbt, started = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', ns .. 'kiln:heartbeats', now, base)
local rec = ns .. 'kiln:worker:' .. base
for i = 1, n do
  local id = ARGV[5 + i]
  redis.call('HSET', ns .. 'workers:heartbeat', id, hbt)
  redis.call('SADD', ns .. 'workers', id)
  redis.call('SET', ns .. 'worker:' .. id .. ':started', started, 'NX')
  redis.call('HSET', rec, 'slot:' .. id, '1')
end
local i = 6 + n
while i < #ARGV do
  redis.call('HSET', rec, 'queue:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
return now
`)

// register enters the process into the registry: its queues into
// <ns>queues, its slots' :started times and counters (0), then its first
// heartbeat.
func (w *worker) register(ctx context.Context) error {
	now := time.Now()
	_, err := w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range w.qs.names {
			p.SAdd(ctx, w.ids.ns+"queues", q)
		}
		for _, id := range w.ids.slots {
			p.Set(ctx, w.ids.workerKey(id)+":started", now.Format(startedLayout), 0)
			p.Set(ctx, w.ids.ns+"stat:processed:"+id, 0, 0)
			p.Set(ctx, w.ids.ns+"stat:failed:"+id, 0, 0)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return w.beat(ctx)
}

// beat writes the heartbeat.
func (w *worker) beat(ctx context.Context) error {
	now := time.Now()
	args := []any{w.ids.ns, w.ids.base, now.Format(heartbeatLayout), now.Format(startedLayout), len(w.ids.slots)}
	for _, id := range w.ids.slots {
		args = append(args, id)
	}
	for _, q := range w.qs.names {
		if pk := w.ids.proc[q]; pk != "" {
			args = append(args, q, pk)
		}
	}
	return beatScript.Run(ctx, w.rdb, nil, args...).Err()
}

// workingOn is <ns>worker:<id> while a job runs: Ruby's {queue, run_at,
// payload}.
func workingOn(queue string, payload []byte, now time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(`{"queue":`)
	b.WriteString(quote(queue))
	b.WriteString(`,"run_at":"`)
	b.WriteString(now.UTC().Format(runAtLayout))
	b.WriteString(`","payload":`)
	if err := json.Compact(&b, payload); err != nil {
		b.WriteString(quote(string(payload)))
	}
	b.WriteString("}")
	return b.Bytes()
}

// cmdlineHasResque reports whether this process's command line contains
// "resque" (any case), which is how a Ruby worker's prune_dead_workers
// recognises a live worker process on its host; unknown (not Linux) counts
// as yes.
func cmdlineHasResque() bool {
	b, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return true
	}
	return bytes.Contains(bytes.ToLower(b), []byte("resque"))
}
