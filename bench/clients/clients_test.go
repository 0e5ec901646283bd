// Package clients compares the Go Redis clients kiln could use on the shape
// of the Redis store's hot path (docs/decisions/002-redis-client.md):
// EVALSHA of a batch script with many arguments, a lease script returning
// many hashes, a report script, and many goroutines issuing small scripts at
// once (where rueidis' auto-pipelining helps). Run it with
//
//	cd bench && go test -run '^$' -bench . -benchtime 3s ./clients/
package clients

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// The scripts have the shape of the store's: one hash and two sorted set
// entries per task on enqueue; pop, update and read back on lease; check and
// update on report.
const enqueueSrc = `
local T = KEYS[1]
local n = (#ARGV) / 4
local base = redis.call('INCRBY', T .. ':seq', n) - n
for j = 0, n - 1 do
  local i = 1 + j * 4
  local id = ARGV[i]
  local seq = base + j + 1
  redis.call('HSET', T .. ':t:' .. id, 'id', id, 'ty', ARGV[i + 1], 'q', ARGV[i + 2], 'p', ARGV[i + 3], 'st', '2', 'sq', seq)
  redis.call('ZADD', T .. ':r', 0, string.format('%016.0f', seq) .. id)
  redis.call('ZADD', T .. ':all', seq, id)
end
return n`

const leaseSrc = `
local T = KEYS[1]
local r = redis.call('ZPOPMIN', T .. ':r', tonumber(ARGV[1]))
local out = {}
for i = 1, #r, 2 do
  local id = string.sub(r[i], 17)
  local key = T .. ':t:' .. id
  redis.call('HINCRBY', key, 'a', 1)
  out[#out + 1] = redis.call('HGETALL', key)
  redis.call('HSET', key, 'st', '3', 'l', '7')
end
return out`

const reportSrc = `
local T = KEYS[1]
for i = 1, #ARGV do
  local key = T .. ':t:' .. ARGV[i]
  if redis.call('HGET', key, 'st') == '3' then redis.call('HSET', key, 'st', '5', 'r', '') end
end
return #ARGV`

// scripter is what the benchmark needs from a client.
type scripter interface {
	eval(ctx context.Context, sha string, key string, args []string) (any, error)
	load(ctx context.Context, src string) (string, error)
	close()
}

type goRedis struct{ c *redis.Client }

func (g goRedis) eval(ctx context.Context, sha, key string, args []string) (any, error) {
	a := make([]any, len(args))
	for i, s := range args {
		a[i] = s
	}
	return g.c.EvalSha(ctx, sha, []string{key}, a...).Result()
}
func (g goRedis) load(ctx context.Context, src string) (string, error) {
	return g.c.ScriptLoad(ctx, src).Result()
}
func (g goRedis) close() { _ = g.c.Close() }

type rueidisClient struct{ c rueidis.Client }

func (r rueidisClient) eval(ctx context.Context, sha, key string, args []string) (any, error) {
	res := r.c.Do(ctx, r.c.B().Evalsha().Sha1(sha).Numkeys(1).Key(key).Arg(args...).Build())
	if err := res.Error(); err != nil {
		return nil, err
	}
	return res.ToAny()
}
func (r rueidisClient) load(ctx context.Context, src string) (string, error) {
	return r.c.Do(ctx, r.c.B().ScriptLoad().Script(src).Build()).ToString()
}
func (r rueidisClient) close() { r.c.Close() }

func addr(b *testing.B) string {
	b.Helper()
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		u = "redis://127.0.0.1:6379/0"
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		b.Fatal(err)
	}
	return o.Addr
}

var clients = []struct {
	name string
	open func(b *testing.B) scripter
}{
	{"go-redis", func(b *testing.B) scripter {
		b.Helper()
		return goRedis{redis.NewClient(&redis.Options{Addr: addr(b), PoolSize: 64})}
	}},
	{"rueidis", func(b *testing.B) scripter {
		b.Helper()
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr(b)}, DisableCache: true})
		if err != nil {
			b.Fatal(err)
		}
		return rueidisClient{c}
	}},
}

func tag() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "{kclients-" + hex.EncodeToString(b[:]) + "}"
}

var idSeq atomic.Int64

func tasks(n int) []string {
	args := make([]string, 0, 4*n)
	for range n {
		args = append(args, "t"+strconv.FormatInt(idSeq.Add(1), 10), "noop", "default", `{"to":"someone@example.com","n":12345}`)
	}
	return args
}

func BenchmarkClients(b *testing.B) {
	ctx := context.Background()
	for _, cl := range clients {
		b.Run(cl.name, func(b *testing.B) {
			c := cl.open(b)
			defer c.close()
			var enq, lease, report string
			for _, p := range []struct {
				sha *string
				src string
			}{{&enq, enqueueSrc}, {&lease, leaseSrc}, {&report, reportSrc}} {
				sha, err := c.load(ctx, p.src)
				if err != nil {
					b.Fatal(err)
				}
				*p.sha = sha
			}
			defer cleanup(b)

			b.Run("EnqueueBatch1000", func(b *testing.B) {
				key := tag()
				for b.Loop() {
					if _, err := c.eval(ctx, enq, key, tasks(1000)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "tasks/s")
			})

			b.Run("LeaseReport50", func(b *testing.B) {
				key := tag()
				b.StopTimer()
				for left := b.N * 50; left > 0; left -= 1000 {
					if _, err := c.eval(ctx, enq, key, tasks(1000)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				for range b.N {
					v, err := c.eval(ctx, lease, key, []string{"50"})
					if err != nil {
						b.Fatal(err)
					}
					arr, _ := v.([]any)
					ids := make([]string, 0, len(arr))
					for _, t := range arr {
						ids = append(ids, fieldOf(t, "id"))
					}
					if _, err := c.eval(ctx, report, key, ids); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*50)/b.Elapsed().Seconds(), "tasks/s")
			})

			// Many goroutines, one task per call: the Client's single
			// enqueues and heartbeats from many handlers look like this.
			b.Run("Parallel64Enqueue1", func(b *testing.B) {
				key := tag()
				b.SetParallelism(32) // x GOMAXPROCS (2) = 64 goroutines
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.eval(ctx, enq, key, tasks(1)); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			})
		})
	}
}

// fieldOf reads a field of an HGETALL reply as either client returns it.
func fieldOf(v any, name string) string {
	switch t := v.(type) {
	case []any:
		for i := 0; i+1 < len(t); i += 2 {
			if fmt.Sprint(t[i]) == name {
				return fmt.Sprint(t[i+1])
			}
		}
	case map[string]any:
		return fmt.Sprint(t[name])
	}
	return ""
}

func cleanup(b *testing.B) {
	b.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr(b)})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, "{kclients-*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			c.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Unlink(ctx, keys...)
	}
}
