package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of SchedulerConfig.
const (
	// SchedulerIntervalDefault is how long a Scheduler waits between passes
	// when SchedulerConfig.Interval is zero. Delayed jobs are due at whole
	// seconds, so a job is moved at most this long after it is due.
	SchedulerIntervalDefault = time.Second
	// SchedulerBatchDefault is how many jobs one atomic step moves at most
	// when SchedulerConfig.Batch is zero.
	SchedulerBatchDefault = 100
)

// SchedulerConfig configures a Scheduler. The zero value (or nil) means all
// defaults.
type SchedulerConfig struct {
	// Namespace is the prefix of every key; default "resque:", and a ':' is
	// added when it has none (see ClientConfig.Namespace).
	Namespace string
	// Interval is the wait between two passes over the due timestamps;
	// default SchedulerIntervalDefault (1 s). A failed pass is retried after
	// the same wait.
	Interval time.Duration
	// Batch is the most jobs one atomic step moves; default
	// SchedulerBatchDefault (100).
	Batch int
	// NowFunc is the clock that decides what is due. Default: the Redis
	// server's clock (TIME), so that schedulers on hosts with skewed clocks
	// agree. Tests set it.
	NowFunc func() time.Time
	// ID names the scheduler in the failed-job records it writes for delayed
	// items it cannot read; default "<hostname>:<pid>:scheduler".
	ID string
	// Logger receives a line for each failed pass and each unreadable item;
	// default discards.
	Logger *slog.Logger
}

// Scheduler moves delayed jobs (resque-scheduler's layout, written by
// Client.EnqueueAt, Ruby's Resque.enqueue_at or node-resque's
// queue.enqueueAt) to their queues when they are due.
//
// Any number of Schedulers, on any number of hosts, may run on one Redis at
// once, beside resque-scheduler and node-resque's scheduler: each job is
// removed from its delayed list and appended to its queue in one atomic
// script, and a script that no longer finds the job moves nothing, so every
// job reaches its queue exactly once. A job is appended as Resque.enqueue_to
// writes it ({"class":..,"args":[..]}, its args byte for byte as they were
// delayed), and its queue is added to <ns>queues.
//
// An item that is not a JSON object with a non-empty string "class" and
// "queue" cannot be moved; it is removed from the schedule and appended to
// <ns>failed as a Resque failure record (exception ExceptionInvalidDelayedJob) so
// that it is neither lost nor left blocking its timestamp.
//
// A Scheduler is safe for concurrent use.
type Scheduler struct {
	rdb      redis.UniversalClient
	ns       string
	interval time.Duration
	batch    int
	now      func() time.Time
	id       string
	log      *slog.Logger
}

// NewScheduler returns a Scheduler that works through rdb. cfg may be nil.
func NewScheduler(rdb redis.UniversalClient, cfg *SchedulerConfig) (*Scheduler, error) {
	var c SchedulerConfig
	if cfg != nil {
		c = *cfg
	}
	var errs []error
	if rdb == nil {
		errs = append(errs, errors.New("the Redis client is nil"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("the interval %s is negative", c.Interval))
	}
	if c.Batch < 0 {
		errs = append(errs, fmt.Errorf("the batch size %d is negative", c.Batch))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("resque: NewScheduler: %w", err)
	}
	s := &Scheduler{
		rdb: rdb, ns: namespaceOf(c.Namespace), interval: c.Interval, batch: c.Batch,
		now: c.NowFunc, id: c.ID, log: c.Logger,
	}
	if s.interval == 0 {
		s.interval = SchedulerIntervalDefault
	}
	if s.batch == 0 {
		s.batch = SchedulerBatchDefault
	}
	if s.id == "" {
		host, _ := os.Hostname()
		s.id = fmt.Sprintf("%s:%d:scheduler", host, os.Getpid())
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// RunScheduler is NewScheduler(rdb, cfg) and its Run.
func RunScheduler(ctx context.Context, rdb redis.UniversalClient, cfg *SchedulerConfig) error {
	s, err := NewScheduler(rdb, cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run moves due jobs (MoveDue) every Interval until ctx is done, and then
// returns nil. A pass that fails (Redis unreachable) is logged and retried
// after Interval; Run never gives up on its own.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := s.MoveDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("resque scheduler: pass failed; retrying", "after", s.interval, "err", err)
		}
		t.Reset(s.interval)
	}
}

// MoveDue moves every job that is due now (its timestamp is at or before the
// current second) to its queue, oldest timestamp first, and returns how many
// it moved (unreadable items moved to <ns>failed included). Jobs another
// scheduler moved meanwhile are not counted.
func (s *Scheduler) MoveDue(ctx context.Context) (int, error) {
	now, err := s.clock(ctx)
	if err != nil {
		return 0, err
	}
	moved := 0
	for {
		tss, err := s.rdb.ZRangeByScore(ctx, s.ns+"delayed_queue_schedule", &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now, 10), Count: 1,
		}).Result()
		if err != nil {
			return moved, fmt.Errorf("resque: scheduler: read the schedule: %w", err)
		}
		if len(tss) == 0 {
			return moved, nil
		}
		n, err := s.moveTimestamp(ctx, tss[0])
		moved += n
		if err != nil {
			return moved, err
		}
	}
}

// clock returns the current unix second by NowFunc or the Redis server.
func (s *Scheduler) clock(ctx context.Context) (int64, error) {
	if s.now != nil {
		return s.now().Unix(), nil
	}
	t, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("resque: scheduler: read the Redis clock: %w", err)
	}
	return t.Unix(), nil
}

// moveTimestamp moves every job of <ns>delayed:<ts>, Batch at a time, and
// removes the timestamp from the schedule when its list is empty.
func (s *Scheduler) moveTimestamp(ctx context.Context, ts string) (int, error) {
	moved := 0
	list := s.ns + "delayed:" + ts
	for {
		items, err := s.rdb.LRange(ctx, list, 0, int64(s.batch)-1).Result()
		if err != nil {
			return moved, fmt.Errorf("resque: scheduler: read %s: %w", list, err)
		}
		args := make([]any, 0, 2+3*len(items))
		args = append(args, s.ns, ts)
		for _, item := range items {
			queue, job, err := jobOfDelayedItem([]byte(item))
			if err != nil {
				s.log.Warn("resque scheduler: unreadable delayed job; it goes to the failed list", "key", list, "item", item, "err", err)
				job = s.invalidRecord([]byte(item), err)
				queue = ""
			}
			args = append(args, item, queue, job)
		}
		n, err := moveScript.Run(ctx, s.rdb, []string{list, s.ns + "delayed_queue_schedule", s.ns + "queues", s.ns + "failed"}, args...).Int()
		if err != nil {
			return moved, fmt.Errorf("resque: scheduler: move %s: %w", list, err)
		}
		moved += n
		if len(items) < s.batch {
			return moved, nil
		}
	}
}

// moveScript moves delayed items to their queues atomically. KEYS: the
// delayed list, the schedule, <ns>queues, <ns>failed. ARGV: the namespace,
// the timestamp, then (item, queue, job) for each item; an empty queue sends
// job (a failure record) to <ns>failed. An item is moved only if it is still
// in the list (LREM removed it), so two schedulers never both move it. When
// the list is empty, it and its timestamp in the schedule are removed.
var moveScript = redis.NewScript(`
local ns, ts = ARGV[1], ARGV[2]
local moved = 0
for i = 3, #ARGV, 3 do
  local item, queue, job = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('LREM', KEYS[1], 1, item) == 1 then
    redis.call('SREM', ns .. 'timestamps:' .. item, 'delayed:' .. ts)
    if queue == '' then
      redis.call('RPUSH', KEYS[4], job)
    else
      redis.call('SADD', KEYS[3], queue)
      redis.call('RPUSH', ns .. 'queue:' .. queue, job)
    end
    moved = moved + 1
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ts)
end
return moved
`)

// jobOfDelayedItem reads a delayed item ({"class":..,"args":..,"queue":..}
// in any key order, with any other fields) and returns its queue and the job
// to append to it, {"class":..,"args":..}, with class and args copied byte
// for byte (numbers keep their digits). A missing or null args becomes [].
func jobOfDelayedItem(item []byte) (queue string, job []byte, err error) {
	var d struct {
		Class json.RawMessage `json:"class"`
		Args  json.RawMessage `json:"args"`
		Queue *string         `json:"queue"`
	}
	if err := json.Unmarshal(item, &d); err != nil {
		return "", nil, fmt.Errorf("not a JSON object: %w", err)
	}
	var class string
	if len(d.Class) == 0 || json.Unmarshal(d.Class, &class) != nil || class == "" {
		return "", nil, errors.New(`"class" is missing or not a non-empty string`)
	}
	if d.Queue == nil || *d.Queue == "" {
		return "", nil, errors.New(`"queue" is missing or not a non-empty string`)
	}
	args := bytes.TrimSpace(d.Args)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("[]")
	}
	if args[0] != '[' {
		return "", nil, errors.New(`"args" is not an array`)
	}
	job = make([]byte, 0, len(d.Class)+len(args)+20)
	job = append(job, `{"class":`...)
	job = append(job, bytes.TrimSpace(d.Class)...)
	job = append(job, `,"args":`...)
	job = append(job, args...)
	job = append(job, '}')
	return *d.Queue, job, nil
}

// ExceptionInvalidDelayedJob is the "exception" of the failed records a
// Scheduler writes for delayed items it cannot move to a queue.
const ExceptionInvalidDelayedJob = "InvalidDelayedJob"

// invalidRecord is the Resque failure record of a delayed item the scheduler
// cannot move: the worker's record format, the item as its payload.
func (s *Scheduler) invalidRecord(item []byte, cause error) []byte {
	f := failure{exception: ExceptionInvalidDelayedJob, msg: "resque: scheduler: cannot move this delayed job to a queue: " + cause.Error()}
	return jsLineSeparators(encodeFailure(time.Now(), item, f, s.id, ""))
}
