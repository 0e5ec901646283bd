package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/metrics"
)

// namespaceOf is the key prefix of a namespace option: DefaultNamespace
// when it is empty, with a ':' added when it has none (as Config.Namespace).
func namespaceOf(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	if !strings.HasSuffix(ns, ":") {
		ns += ":"
	}
	return ns
}

// ClientConfig configures a Client. The zero value (or nil) means all
// defaults.
type ClientConfig struct {
	// Namespace is the prefix of every key, colon included; default
	// "resque:". A namespace that does not end with ':' gets one, so Ruby
	// Resque's namespace "app", node-resque's namespace option "app" and
	// goworker's -namespace "app:" are all "app" or "app:" here.
	Namespace string
	// NowFunc is the clock EnqueueIn counts from and EnqueueAt compares with;
	// default time.Now. It exists for tests.
	NowFunc func() time.Time
	// Metrics, when set, counts the jobs that Enqueue and EnqueueMany
	// push onto a queue in kiln_tasks_enqueued_total, with the queue as
	// queue and the class as type (docs/metrics.md). Delayed jobs count
	// nowhere until a Scheduler moves them.
	Metrics *kiln.Metrics
}

// Client writes Resque jobs to Redis: to a queue (Enqueue), where Ruby
// Resque, node-resque, goworker and kiln's own worker run them, and to
// resque-scheduler's delayed schedule (EnqueueAt, EnqueueIn), from which a
// Scheduler, resque-scheduler or node-resque's scheduler moves them to their
// queue when they are due.
//
// A Client needs a single Redis server (or a Sentinel-managed primary):
// Resque's keys do not share a Redis Cluster hash slot. It is safe for
// concurrent use and holds no connection of its own; closing the Redis client
// is the caller's business.
type Client struct {
	rdb redis.UniversalClient
	ns  string
	now func() time.Time
	met *metrics.Set // nil without ClientConfig.Metrics
}

// NewClient returns a Client that writes through rdb. cfg may be nil.
func NewClient(rdb redis.UniversalClient, cfg *ClientConfig) (*Client, error) {
	if rdb == nil {
		return nil, errors.New("resque: NewClient: the Redis client is nil")
	}
	c := &Client{rdb: rdb, ns: DefaultNamespace, now: time.Now}
	if cfg != nil {
		c.ns = namespaceOf(cfg.Namespace)
		if cfg.NowFunc != nil {
			c.now = cfg.NowFunc
		}
		c.met = hook.MetricsSet(cfg.Metrics)
	}
	return c, nil
}

// Namespace returns the key prefix the Client writes under, e.g. "resque:".
func (c *Client) Namespace() string { return c.ns }

// Enqueue appends one job of class with args to the tail of queue, as Ruby
// Resque's Resque.enqueue_to does: in one MULTI, it adds queue to
// <ns>queues and RPUSHes {"class":class,"args":[args...]} onto
// <ns>queue:<queue>. args must encode to JSON (see EncodeJob).
func (c *Client) Enqueue(ctx context.Context, queue, class string, args ...any) error {
	job, err := EncodeJob(class, args)
	if err != nil {
		return fmt.Errorf("resque: enqueue to %q: %w", queue, err)
	}
	return c.push(ctx, queue, class, job)
}

// EnqueueMany appends one job of class per element of argLists to the tail
// of queue, in order, in one MULTI (one round trip). It writes the same as
// len(argLists) calls of Enqueue, and nothing if one of them does not encode.
func (c *Client) EnqueueMany(ctx context.Context, queue, class string, argLists ...[]any) error {
	if len(argLists) == 0 {
		return nil
	}
	jobs := make([]any, len(argLists))
	for i, args := range argLists {
		job, err := EncodeJob(class, args)
		if err != nil {
			return fmt.Errorf("resque: enqueue to %q: job %d: %w", queue, i, err)
		}
		jobs[i] = job
	}
	return c.push(ctx, queue, class, jobs...)
}

// push appends jobs of class to queue, and counts them.
func (c *Client) push(ctx context.Context, queue, class string, jobs ...any) error {
	if err := checkQueueName(queue); err != nil {
		return fmt.Errorf("resque: enqueue: %w", err)
	}
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, c.ns+"queues", queue)
		p.RPush(ctx, c.ns+"queue:"+queue, jobs...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("resque: enqueue to %q: %w", queue, err)
	}
	if c.met != nil {
		c.met.Series(queue, class).Enqueued.Add(float64(len(jobs)))
	}
	return nil
}

// EnqueueAt schedules one job of class with args to be appended to queue at
// time at, in resque-scheduler's layout, as its Resque.enqueue_at_with_queue
// does: in one MULTI, RPUSH of {"class":..,"args":[..],"queue":..} onto
// <ns>delayed:<unix seconds>, SADD of "delayed:<unix seconds>" to
// <ns>timestamps:<that JSON>, and ZADD of the unix seconds (as score and
// member) to <ns>delayed_queue_schedule. at is cut to whole seconds. A time
// before the current second (by the Client's clock) enqueues the job at once,
// as resque-scheduler does.
//
// A Scheduler (RunScheduler), resque-scheduler or node-resque's scheduler
// moves the job to queue when it is due; without one it waits forever.
func (c *Client) EnqueueAt(ctx context.Context, at time.Time, queue, class string, args ...any) error {
	if err := checkQueueName(queue); err != nil {
		return fmt.Errorf("resque: enqueue at: %w", err)
	}
	ts := at.Unix()
	if ts < c.now().Unix() {
		return c.Enqueue(ctx, queue, class, args...)
	}
	item, err := EncodeDelayedJob(queue, class, args)
	if err != nil {
		return fmt.Errorf("resque: enqueue at %d to %q: %w", ts, queue, err)
	}
	sts := strconv.FormatInt(ts, 10)
	_, err = c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, c.ns+"delayed:"+sts, item)
		p.SAdd(ctx, c.ns+"timestamps:"+string(item), "delayed:"+sts)
		p.ZAdd(ctx, c.ns+"delayed_queue_schedule", redis.Z{Score: float64(ts), Member: sts})
		return nil
	})
	if err != nil {
		return fmt.Errorf("resque: enqueue at %d to %q: %w", ts, queue, err)
	}
	return nil
}

// EnqueueIn is EnqueueAt at the Client's current time plus d.
func (c *Client) EnqueueIn(ctx context.Context, d time.Duration, queue, class string, args ...any) error {
	return c.EnqueueAt(ctx, c.now().Add(d), queue, class, args...)
}

// Enqueue is Client.Enqueue on rdb with the default namespace "resque:".
func Enqueue(ctx context.Context, rdb redis.UniversalClient, queue, class string, args ...any) error {
	c, err := NewClient(rdb, nil)
	if err != nil {
		return err
	}
	return c.Enqueue(ctx, queue, class, args...)
}

// EnqueueAt is Client.EnqueueAt on rdb with the default namespace "resque:".
func EnqueueAt(ctx context.Context, rdb redis.UniversalClient, at time.Time, queue, class string, args ...any) error {
	c, err := NewClient(rdb, nil)
	if err != nil {
		return err
	}
	return c.EnqueueAt(ctx, at, queue, class, args...)
}

// EnqueueIn is Client.EnqueueIn on rdb with the default namespace "resque:".
func EnqueueIn(ctx context.Context, rdb redis.UniversalClient, d time.Duration, queue, class string, args ...any) error {
	c, err := NewClient(rdb, nil)
	if err != nil {
		return err
	}
	return c.EnqueueIn(ctx, d, queue, class, args...)
}

// checkQueueName rejects the queue names no Resque implementation could
// serve: empty, or not UTF-8 (Ruby and node-resque hold names as strings).
func checkQueueName(queue string) error {
	if queue == "" {
		return errors.New("the queue name is empty")
	}
	if !utf8.ValidString(queue) {
		return fmt.Errorf("the queue name %q is not valid UTF-8", queue)
	}
	return nil
}

// EncodeJob returns the JSON of a Resque job as Ruby Resque writes it onto a
// queue: {"class":class,"args":[args...]}, compact, with nil args as []. The
// encoding is the one of JavaScript's JSON.stringify and Ruby's JSON.generate
// ('<', '>', '&', U+2028 and U+2029 are not escaped), so that tools which find
// a job by its exact bytes (Resque's Job.destroy, node-resque's queue.del)
// find what kiln wrote. class must be non-empty UTF-8; args must encode with
// encoding/json (a json.RawMessage is copied as it is).
func EncodeJob(class string, args []any) ([]byte, error) {
	return encodeJob(class, args, "", false)
}

// EncodeDelayedJob returns the JSON of a delayed job as resque-scheduler
// writes it into <ns>delayed:<ts>: {"class":class,"args":[args...],"queue":queue},
// encoded as EncodeJob does. The same bytes name its <ns>timestamps: key.
func EncodeDelayedJob(queue, class string, args []any) ([]byte, error) {
	if err := checkQueueName(queue); err != nil {
		return nil, err
	}
	return encodeJob(class, args, queue, true)
}

func encodeJob(class string, args []any, queue string, withQueue bool) ([]byte, error) {
	if class == "" {
		return nil, errors.New("the job class is empty")
	}
	if !utf8.ValidString(class) {
		return nil, fmt.Errorf("the job class %q is not valid UTF-8", class)
	}
	if args == nil {
		args = []any{}
	}
	var buf bytes.Buffer
	buf.WriteString(`{"class":`)
	if err := writeJSON(&buf, class); err != nil {
		return nil, err
	}
	buf.WriteString(`,"args":`)
	if err := writeJSON(&buf, args); err != nil {
		return nil, fmt.Errorf("the args of a %s job do not encode to JSON: %w", class, err)
	}
	if withQueue {
		buf.WriteString(`,"queue":`)
		if err := writeJSON(&buf, queue); err != nil {
			return nil, err
		}
	}
	buf.WriteByte('}')
	return jsLineSeparators(buf.Bytes()), nil
}

// writeJSON appends the compact JSON of v without HTML escaping and without
// the encoder's trailing newline.
func writeJSON(buf *bytes.Buffer, v any) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // the newline Encode adds
	return nil
}

// jsLineSeparators replaces encoding/json's escapes \u2028 and \u2029 (which
// it writes even without HTML escaping) by the characters themselves, as
// JSON.stringify and Ruby's JSON.generate write them. Only real escapes are
// replaced: in the encoder's output a backslash inside a string is always
// written as \\, so a backslash read at an even position of a run starts an
// escape.
func jsLineSeparators(b []byte) []byte {
	if !bytes.Contains(b, []byte(`\u202`)) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			out = append(out, b[i])
			continue
		}
		if b[i+1] == 'u' && i+5 < len(b) && string(b[i+2:i+5]) == "202" && (b[i+5] == '8' || b[i+5] == '9') {
			out = utf8.AppendRune(out, rune(0x2020+int(b[i+5]-'0')))
			i += 5
			continue
		}
		out = append(out, b[i], b[i+1]) // any other escape, \\ included
		i++
	}
	return out
}
