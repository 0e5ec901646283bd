package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

var _ store.Store = (*Store)(nil)

func checkBatch(op string, n int) error {
	if n > store.MaxBatch {
		return fmt.Errorf("redisstore: %s: batch of %d is more than %d: %w", op, n, store.MaxBatch, store.ErrInvalidOption)
	}
	return nil
}

// begin checks what every call checks: the namespace, the batch size, the
// context and the store.
func (s *Store) begin(ctx context.Context, op, ns string, n int) error {
	if err := store.CheckNamespace(ns); err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	if err := checkBatch(op, n); err != nil {
		return err
	}
	return s.usable(ctx)
}

// strs turns a script's array reply into strings.
func strs(v any, n int) ([]string, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != n {
		return nil, fmt.Errorf("unexpected script reply %T (want %d items)", v, n)
	}
	out := make([]string, n)
	for i, x := range arr {
		out[i], _ = x.(string)
	}
	return out, nil
}

// enqueueReply checks the enqueue script's reply {codes, duplicates}.
func enqueueReply(v any, n int) (string, []string, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return "", nil, fmt.Errorf("unexpected script reply %T", v)
	}
	codes, _ := arr[0].(string)
	raw, _ := arr[1].([]any)
	dups := make([]string, len(raw))
	for i, x := range raw {
		dups[i], _ = x.(string)
	}
	if len(codes) != n || strings.Count(codes, "D") != len(dups) {
		return "", nil, fmt.Errorf("unexpected script reply of %d codes and %d duplicates for %d tasks", len(codes), len(dups), n)
	}
	return codes, dups, nil
}

// Enqueue implements store.Enqueuer. One script call adds the whole batch;
// each task is checked for an existing id and a held unique key inside it.
// Concurrent calls of a namespace may share one script call (batch.go).
func (s *Store) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	if err := s.begin(ctx, "enqueue", p.Namespace, len(p.Tasks)); err != nil {
		return store.EnqueueResult{}, err
	}
	items := make([]store.EnqueueItem, len(p.Tasks))
	now := s.localNow()
	tasks := make([]enqueueTask, 0, len(p.Tasks))
	var idx []int
	var buf []byte
	size := 0
	for i := range p.Tasks {
		in := &p.Tasks[i]
		if err := in.Validate(s.limits, now); err != nil {
			items[i].Err = err
			continue
		}
		q := in.Queue
		if q == "" {
			q = store.DefaultQueue
		}
		start := len(buf)
		buf = encodeRecord(buf, in, q)
		t := enqueueTask{id: in.ID, d: buf[start:len(buf):len(buf)], p: in.Payload, q: q, ty: in.Type,
			prio: priorityDigits[store.MaxPriority-in.Priority][0], dflt: isDefaultRecord(in)}
		if in.MaxRetries != 0 {
			t.mr = strconv.Itoa(in.MaxRetries)
		}
		if !in.RunAt.IsZero() || in.UniqueKey != "" || in.Retention != 0 {
			var ra, ttl, rtu, uk any = "", "", "", ""
			if !in.RunAt.IsZero() {
				ra = itoa(microCeil(in.RunAt))
			}
			if in.UniqueKey != "" {
				ttl = in.UniqueTTL.Microseconds()
				if in.UniqueUntilSuccess {
					uk = in.UniqueKey
				}
			}
			if in.Retention != 0 {
				rtu = in.Retention.Microseconds()
			}
			t.opts = []any{ra, in.UniqueKey, ttl, rtu, uk}
		}
		tasks = append(tasks, t)
		size += len(buf) - start + len(in.Payload)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return store.EnqueueResult{Items: items}, nil
	}
	if err := s.register(ctx, p.Namespace); err != nil {
		return store.EnqueueResult{}, err
	}
	codes, dups, err := s.enqueueShared(ctx, p.Namespace, tasks, size)
	if err != nil {
		return store.EnqueueResult{}, err
	}
	for j := range len(idx) {
		i := idx[j]
		switch c := codes[j]; c {
		case '1', '2':
			items[i] = store.EnqueueItem{ID: p.Tasks[i].ID, State: store.State(c - '0')}
		case 'E':
			items[i] = store.EnqueueItem{ID: p.Tasks[i].ID, Err: store.ErrTaskExists}
		case 'D':
			items[i] = store.EnqueueItem{ID: dups[0], Err: store.ErrDuplicate}
			dups = dups[1:]
		default:
			return store.EnqueueResult{}, fmt.Errorf("redisstore: enqueue: unexpected script result %q", c)
		}
	}
	return store.EnqueueResult{Items: items}, nil
}

// Lease implements store.Leaser. One script call per attempt promotes due
// tasks and leases up to Max tasks from the queues in order. With Wait, an
// idle Lease waits for a wake-up published by the scripts that make tasks
// ready (enqueue, retry, release, recovery, resume), for the next due task,
// or for the end of the wait.
//
// The lease script runs detached from ctx's end (within leaseCallTimeout):
// a client whose context ends mid-call may give up reading a reply that
// Redis has already acted on, and the tasks the script leased would then be
// active, their attempt counted, with nobody holding them until their lease
// expired. They are returned instead, even when ctx ended meanwhile.
func (s *Store) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	if err := p.Validate(); err != nil {
		return store.LeaseResult{}, fmt.Errorf("redisstore: lease: %w", err)
	}
	var deadline time.Time
	if p.Wait > 0 {
		deadline = time.Now().Add(p.Wait)
	}
	var timer *time.Timer
	for {
		if err := s.usable(ctx); err != nil {
			return store.LeaseResult{}, err
		}
		var wake <-chan struct{}
		if p.Wait > 0 {
			wake = s.wk.channel(p.Namespace)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseCallTimeout)
		tasks, nowUS, nextDue, err := s.leaseOnce(sctx, p)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("redisstore: lease: no answer from Redis within %s: %w", leaseCallTimeout, err)
			}
			return store.LeaseResult{}, err
		}
		if len(tasks) > 0 || p.Wait <= 0 {
			return store.LeaseResult{Tasks: tasks}, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return store.LeaseResult{}, nil
		}
		wait = min(wait, s.wakeCheck)
		if nextDue >= 0 {
			wait = min(wait, max(time.Duration(nextDue-nowUS)*time.Microsecond, time.Millisecond))
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			return store.LeaseResult{}, ctx.Err()
		case <-s.closed:
			return store.LeaseResult{}, store.ErrClosed
		}
	}
}

// leaseCallTimeout bounds one lease script call, which runs detached from
// the caller's context.
const leaseCallTimeout = 10 * time.Second

func (s *Store) leaseOnce(ctx context.Context, p store.LeaseParams) ([]*store.Task, int64, int64, error) {
	queues := store.OrderQueues(p.Queues, p.Weights, nil)
	args := make([]any, 0, 8+len(queues)+len(p.Types))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace), p.Max, p.Duration.Microseconds(), p.WorkerID, len(queues))
	for _, q := range queues {
		args = append(args, q)
	}
	if p.Types != nil {
		args = append(args, "1")
		for _, t := range p.Types {
			args = append(args, t)
		}
	} else {
		args = append(args, "0")
	}
	var sc scriptConn = s.rdb
	var conn *redis.Conn
	if s.cfg.WaitReplicas > 0 {
		// WAIT counts the replicas that have every write made on its
		// connection, the lease script's and so every enqueue before it.
		c, err := s.master(ctx, p.Namespace)
		if err != nil {
			return nil, 0, 0, s.wrap("lease", err)
		}
		conn = c.Conn()
		defer func() { _ = conn.Close() }()
		sc = conn
	}
	v, err := runOnce(ctx, sc, leaseScript, []string{s.tag(p.Namespace)}, args).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, 0, s.wrap("lease", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 5 {
		return nil, 0, 0, fmt.Errorf("redisstore: lease: unexpected script reply %T", v)
	}
	nowS, _ := arr[0].(string)
	now := atoi(nowS)
	next := int64(-1)
	switch x := arr[1].(type) {
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		next = int64(f)
	case int64:
		next = x
	}
	raw, _ := arr[2].([]any)
	kinds, _ := arr[4].(string)
	lid0, _ := arr[3].(string)
	lid, _ := strconv.ParseUint(lid0, 10, 64)
	start := microTime(nowS)
	exp := microTime(itoa(now + p.Duration.Microseconds()))
	tasks := make([]*store.Task, 0, len(kinds))
	notes := make([]leaseHint, 0, len(kinds))
	noted := make([]string, 0, len(kinds))
	i := 0
	var cq, cty string // the queue and type of the last default record
	for k := range len(kinds) {
		// Values of the task: r 1, a 2, b 3, c 4; t 1, u 2, T 3, U 4.
		n := strings.IndexByte("-rabctuTU", kinds[k])
		if n > 4 {
			n -= 4
		}
		if n <= 0 || i+n > len(raw) {
			return nil, 0, 0, fmt.Errorf("redisstore: lease: unexpected script reply (task %d of kind %q, %d values in all)", k, kinds[k], len(raw))
		}
		var t *store.Task
		var nf noteFields
		var err error
		switch c := kinds[k]; c {
		case 't', 'u', 'T', 'U':
			v := raw[i : i+n]
			if c == 'T' || c == 'U' {
				cq, _ = v[0].(string)
				cty, _ = v[1].(string)
				v = v[2:]
			}
			m, _ := v[0].(string)
			var pay string
			if len(v) > 1 {
				pay, _ = v[1].(string)
			}
			t, err = decodeDefault(p.Namespace, m, cq, cty, pay, len(v) > 1)
		default:
			var vals [leaseStride]any
			copy(vals[:], raw[i:i+n])
			t, nf, err = decodeLeased(p.Namespace, vals[:])
		}
		i += n
		if err != nil {
			return nil, 0, 0, fmt.Errorf("redisstore: lease: %w", err)
		}
		t.State = store.StateActive
		t.Attempt++ // the record is read before the script counted the attempt
		t.LeaseID = lid
		lid++
		t.LeaseExpiresAt = exp
		t.StartedAt = start
		t.WorkerID = p.WorkerID
		tasks = append(tasks, t)
		notes = append(notes, hintOf(t.Queue, t.Type, t.Attempt, t.LeaseID, nf))
		noted = append(noted, t.ID)
	}
	if i != len(raw) {
		return nil, 0, 0, fmt.Errorf("redisstore: lease: unexpected script reply (%d values for %d tasks)", len(raw), len(kinds))
	}
	s.hints.put(p.Namespace, noted, notes)
	if conn != nil && len(tasks) > 0 {
		if err := s.waitReplicas(ctx, conn, "lease"); err != nil {
			// The replicas may not have the tasks' enqueues: a failover
			// could lose them after their handlers ran. Hand nothing over;
			// give the tasks back unstarted (their attempt restored).
			s.releaseUnstarted(ctx, p.Namespace, tasks)
			return nil, 0, 0, fmt.Errorf("%w (the leased tasks were given back unstarted): %w", err, store.ErrUnavailable)
		}
	}
	return tasks, now, next, nil
}

// releaseUnstarted gives leased tasks back, pending with their attempt
// restored, as a worker that did not start them does.
func (s *Store) releaseUnstarted(ctx context.Context, ns string, tasks []*store.Task) {
	outs := make([]store.Outcome, len(tasks))
	for i, t := range tasks {
		outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeRelease, NotStarted: true}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseCallTimeout)
	defer cancel()
	// The release is made on the master whatever its WAIT says; if it
	// fails, the leases expire and the tasks run later (one attempt more).
	_, _ = s.Report(rctx, store.ReportParams{Namespace: ns, Outcomes: outs})
}

// Extend implements store.Leaser, the whole batch in one script call.
func (s *Store) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	if err := s.begin(ctx, "extend", p.Namespace, len(p.Leases)); err != nil {
		return store.ExtendResult{}, err
	}
	if p.Duration <= 0 {
		return store.ExtendResult{}, fmt.Errorf("redisstore: extend: duration %s: %w", p.Duration, store.ErrInvalidOption)
	}
	items := make([]store.ExtendItem, len(p.Leases))
	args := make([]any, 0, 3+5*len(p.Leases))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace), p.Duration.Microseconds())
	var idx []int
	for i, l := range p.Leases {
		if l.Progress != nil {
			if l.Progress.Percent < 0 || l.Progress.Percent > 100 {
				items[i].Err = &store.ValidationError{Field: "progress", Reason: "percent outside 0..100", Err: store.ErrInvalidOption}
				continue
			}
			args = append(args, l.ID, l.LeaseID, "1", l.Progress.Percent, l.Progress.Message)
		} else {
			args = append(args, l.ID, l.LeaseID, "0", "", "")
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return store.ExtendResult{Items: items}, nil
	}
	v, err := s.run(ctx, "extend", extendScript, p.Namespace, false, args)
	if err != nil {
		return store.ExtendResult{}, err
	}
	res, err := strs(v, len(idx))
	if err != nil {
		return store.ExtendResult{}, fmt.Errorf("redisstore: extend: %w", err)
	}
	for j, r := range res {
		i := idx[j]
		switch {
		case r == "N":
			items[i].Err = store.ErrNotFound
		case r == "L":
			items[i].Err = store.ErrLeaseLost
		case strings.HasPrefix(r, "O"):
			exp, c, _ := strings.Cut(r[1:], ":")
			items[i] = store.ExtendItem{ExpiresAt: microTime(exp), CancelRequested: c == "1"}
		default:
			return store.ExtendResult{}, fmt.Errorf("redisstore: extend: unexpected script result %q", r)
		}
	}
	return store.ExtendResult{Items: items}, nil
}

// Report implements store.Leaser, the whole batch in one script call.
func (s *Store) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	if err := s.begin(ctx, "report", p.Namespace, len(p.Outcomes)); err != nil {
		return store.ReportResult{}, err
	}
	errs := make([]error, len(p.Outcomes))
	args := make([]any, 0, 2+5*len(p.Outcomes))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace))
	var idx []int
	var prev leaseHint // the last note sent in this call, if havePrev
	havePrev := false
	for i := range p.Outcomes {
		o := &p.Outcomes[i]
		if err := o.Validate(s.limits); err != nil {
			errs[i] = err
			continue
		}
		var kind string
		switch o.Kind {
		case store.OutcomeSucceeded:
			kind = "0"
			if o.Result != nil {
				kind = "1"
			}
		case store.OutcomeRetry:
			kind = "2"
		case store.OutcomeDead, store.OutcomeCancelled:
			kind = strconv.Itoa(int(o.Kind))
		case store.OutcomeRelease:
			kind = "5"
		}
		// The lease note, when this Store leased the task (see hints.go):
		// kind, then "h" (the queue, type, workflow fields and retention
		// of the note before), "H" (the queue and type follow; no workflow
		// fields or retention) or "G" (the queue, type, dp, fl and rtu
		// follow, each of the last three "-" when absent or "+" and its
		// value), then the attempt.
		if h, ok := s.hints.take(p.Namespace, o.ID, o.LeaseID); ok {
			switch {
			case havePrev && h.sameNote(&prev):
				args = append(args, o.ID, o.LeaseID, kind+"h"+h.a)
			case !h.hasDP && !h.hasFL && !h.hasRTU:
				args = append(args, o.ID, o.LeaseID, kind+"H"+h.a, h.q, h.ty)
			default:
				args = append(args, o.ID, o.LeaseID, kind+"G"+h.a, h.q, h.ty, optField(h.dp, h.hasDP), optField(h.fl, h.hasFL), optField(h.rtu, h.hasRTU))
			}
			prev, havePrev = h, true
		} else {
			args = append(args, o.ID, o.LeaseID, kind)
		}
		switch o.Kind {
		case store.OutcomeSucceeded:
			if o.Result != nil {
				args = append(args, o.Result)
			}
		case store.OutcomeRetry:
			args = append(args, o.Error, microCeil(o.RetryAt))
		case store.OutcomeDead, store.OutcomeCancelled:
			args = append(args, o.Error)
		case store.OutcomeRelease:
			notStarted := "0"
			if o.NotStarted {
				notStarted = "1"
			}
			args = append(args, notStarted)
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return store.ReportResult{Errs: errs}, nil
	}
	v, err := s.run(ctx, "report", reportScript, p.Namespace, true, args)
	if err != nil {
		return store.ReportResult{}, err
	}
	res, _ := v.(string)
	if len(res) != len(idx) {
		return store.ReportResult{}, fmt.Errorf("redisstore: report: unexpected script reply %T of %d results for %d outcomes", v, len(res), len(idx))
	}
	for j := range len(idx) {
		switch c := res[j]; c {
		case 'O':
		case 'N':
			errs[idx[j]] = store.ErrNotFound
		case 'L':
			errs[idx[j]] = store.ErrLeaseLost
		default:
			return store.ReportResult{}, fmt.Errorf("redisstore: report: unexpected script result %q", c)
		}
	}
	return store.ReportResult{Errs: errs}, nil
}

// Get implements store.Reader with one pipelined HMGET per id.
func (s *Store) Get(ctx context.Context, p store.GetParams) (store.GetResult, error) {
	if err := s.begin(ctx, "get", p.Namespace, len(p.IDs)); err != nil {
		return store.GetResult{}, err
	}
	out := make([]*store.Task, len(p.IDs))
	var idx []int
	var ids []string
	for i, id := range p.IDs {
		if store.ValidName(id) {
			idx = append(idx, i)
			ids = append(ids, id)
		}
	}
	fields := allFields
	if p.Outcomes {
		fields = outcomeFields
	}
	tasks, err := s.read(ctx, p.Namespace, ids, fields)
	if err != nil {
		return store.GetResult{}, s.wrap("get", err)
	}
	for j, t := range tasks {
		out[idx[j]] = t
	}
	return store.GetResult{Tasks: out}, nil
}

// read fetches the records of ids (nil where missing) in one pipeline.
func (s *Store) read(ctx context.Context, ns string, ids []string, fields []string) ([]*store.Task, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	tag := s.tag(ns)
	// A chord's callback reads thousands of records: the commands' keys
	// are one string, their arguments one slice, and the field names are
	// boxed once (HMGet allocates each for every command).
	var kb strings.Builder
	kb.Grow(len(ids) * (len(tag) + len(":t:") + 26))
	for _, id := range ids {
		kb.WriteString(tag)
		kb.WriteString(":t:")
		kb.WriteString(id)
	}
	keys := kb.String()
	boxed := make([]any, len(fields))
	for j, f := range fields {
		boxed[j] = f
	}
	per := 2 + len(fields)
	args := make([]any, per*len(ids))
	cmds := make([]*redis.Cmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		off := 0
		for i, id := range ids {
			a := args[i*per : (i+1)*per : (i+1)*per]
			n := len(tag) + len(":t:") + len(id)
			a[0], a[1] = "hmget", keys[off:off+n]
			off += n
			copy(a[2:], boxed)
			c := redis.NewCmd(ctx, a...)
			c.SetFirstKeyPos(1) // a cluster client routes by it without asking COMMAND
			cmds[i] = c
			if err := p.Process(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*store.Task, len(ids))
	fl := slices.Index(fields, "fl")
	var members map[string][]*store.Task // flow -> its finished tasks read
	for i, c := range cmds {
		vals, _ := c.Val().([]any)
		t, err := decodeFields(ns, fields, vals)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", ids[i], err)
		}
		if t != nil && slices.Contains(fields, "p") && t.Payload == nil {
			t.Payload = []byte{}
		}
		out[i] = t
		if t != nil && fl >= 0 && t.State.Terminal() {
			if f, ok := vals[fl].(string); ok && f != "" {
				if members == nil {
					members = make(map[string][]*store.Task)
				}
				members[f] = append(members[f], t)
			}
		}
	}
	if len(members) > 0 {
		if err := s.raiseExpiry(ctx, tag, members); err != nil {
			return nil, err
		}
	}
	if err := s.leaseExpiry(ctx, tag, out); err != nil {
		return nil, err
	}
	return out, nil
}

// leaseExpiry sets the LeaseExpiresAt of the active tasks among ts whose
// record has none (field le: only records leased by earlier releases have
// it) from their score in the lease set T:l, the one place a lease's expiry
// is kept. A Redis user not granted ZSCORE (a grant made for an earlier
// release) gets the tasks without it rather than an error.
func (s *Store) leaseExpiry(ctx context.Context, tag string, ts []*store.Task) error {
	var active []*store.Task
	for _, t := range ts {
		if t != nil && t.State == store.StateActive && t.LeaseExpiresAt.IsZero() {
			active = append(active, t)
		}
	}
	if len(active) == 0 {
		return nil
	}
	cmds := make([]*redis.FloatCmd, len(active))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, t := range active {
			cmds[i] = p.ZScore(ctx, tag+":l", t.ID)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !redis.HasErrorPrefix(err, "NOPERM") {
		return err
	}
	for i, t := range active {
		if us, err := cmds[i].Result(); err == nil && us > 0 {
			t.LeaseExpiresAt = time.UnixMicro(int64(us)).UTC()
		}
	}
	return nil
}

// raiseExpiry sets the ExpiresAt of finished flow members to their flow's
// expiry (field xe of the flow record, once all its tasks ended) when that
// is later: Sweep keeps them until then.
func (s *Store) raiseExpiry(ctx context.Context, tag string, members map[string][]*store.Task) error {
	flows := make([]string, 0, len(members))
	for f := range members {
		flows = append(flows, f)
	}
	cmds := make([]*redis.StringCmd, len(flows))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, f := range flows {
			cmds[i] = p.HGet(ctx, tag+":f:"+f, "xe")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	for i, f := range flows {
		xe, err := cmds[i].Result()
		if err != nil || xe == "" {
			continue
		}
		at := microTime(xe)
		for _, t := range members[f] {
			if at.After(t.ExpiresAt) {
				t.ExpiresAt = at
			}
		}
	}
	return nil
}

// List implements store.Reader. It walks the namespace's tasks in enqueue
// order (a sorted set by sequence) a chunk at a time and filters them,
// examining at most store.MaxListScan; the cursor is the sequence of the
// next task to examine.
func (s *Store) List(ctx context.Context, p store.ListParams) (store.ListResult, error) {
	if err := s.begin(ctx, "list", p.Namespace, 0); err != nil {
		return store.ListResult{}, err
	}
	if p.Limit < 0 || p.Limit > store.MaxListLimit {
		return store.ListResult{}, fmt.Errorf("redisstore: list: limit %d outside 0..%d: %w", p.Limit, store.MaxListLimit, store.ErrInvalidOption)
	}
	for _, st := range p.States {
		if !st.Valid() {
			return store.ListResult{}, fmt.Errorf("redisstore: list: state %d: %w", st, store.ErrInvalidOption)
		}
	}
	limit := p.Limit
	if limit == 0 {
		limit = 100
	}
	var cursor int64 = -1
	if p.Cursor != "" {
		c, err := strconv.ParseInt(p.Cursor, 10, 64)
		if err != nil || c < 0 {
			return store.ListResult{}, fmt.Errorf("redisstore: list: bad cursor %q: %w", p.Cursor, store.ErrInvalidOption)
		}
		cursor = c
	}
	fields := listFields
	if p.WithPayload {
		fields = allFields
	}
	key := s.tag(p.Namespace) + ":all"
	chunk := int64(max(limit+1, 200))
	var out []*store.Task
	examined := 0
	for {
		r := &redis.ZRangeBy{Min: "-inf", Max: "+inf", Count: chunk}
		var zs []redis.Z
		var err error
		if p.Newest {
			if cursor >= 0 {
				r.Max = itoa(cursor)
			}
			zs, err = s.rdb.ZRevRangeByScoreWithScores(ctx, key, r).Result()
		} else {
			if cursor >= 0 {
				r.Min = itoa(cursor)
			}
			zs, err = s.rdb.ZRangeByScoreWithScores(ctx, key, r).Result()
		}
		if err != nil {
			return store.ListResult{}, s.wrap("list", err)
		}
		ids := make([]string, len(zs))
		for i, z := range zs {
			ids[i], _ = z.Member.(string)
		}
		tasks, err := s.read(ctx, p.Namespace, ids, fields)
		if err != nil {
			return store.ListResult{}, s.wrap("list", err)
		}
		for i, t := range tasks {
			seq := int64(zs[i].Score)
			if examined == store.MaxListScan {
				// The scan's bound: continue from this task next time.
				return store.ListResult{Tasks: out, NextCursor: itoa(seq)}, nil
			}
			examined++
			if t == nil || !matches(t, &p) {
				continue
			}
			if len(out) == limit {
				return store.ListResult{Tasks: out, NextCursor: itoa(seq)}, nil
			}
			out = append(out, t)
		}
		if int64(len(zs)) < chunk {
			return store.ListResult{Tasks: out}, nil
		}
		last := int64(zs[len(zs)-1].Score)
		if p.Newest {
			cursor = last - 1
			if cursor < 0 {
				return store.ListResult{Tasks: out}, nil
			}
		} else {
			cursor = last + 1
		}
		if err := ctx.Err(); err != nil {
			return store.ListResult{}, err
		}
	}
}

func matches(t *store.Task, p *store.ListParams) bool {
	if p.Queue != "" && t.Queue != p.Queue {
		return false
	}
	if p.Type != "" && t.Type != p.Type {
		return false
	}
	if len(p.States) > 0 && !slices.Contains(p.States, t.State) {
		return false
	}
	if !p.CreatedAfter.IsZero() && !t.CreatedAt.After(p.CreatedAfter) {
		return false
	}
	if !p.CreatedBefore.IsZero() && !t.CreatedAt.Before(p.CreatedBefore) {
		return false
	}
	return true
}

// Stats implements store.Reader from the counts the scripts keep.
func (s *Store) Stats(ctx context.Context, p store.StatsParams) (store.StatsResult, error) {
	if err := s.begin(ctx, "stats", p.Namespace, 0); err != nil {
		return store.StatsResult{}, err
	}
	tag := s.tag(p.Namespace)
	var counts *redis.MapStringStringCmd
	var paused *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		counts = pl.HGetAll(ctx, tag+":c")
		paused = pl.SMembers(ctx, tag+":pz")
		return nil
	})
	if err != nil {
		return store.StatsResult{}, s.wrap("stats", err)
	}
	byQueue := make(map[string]*store.QueueStats)
	get := func(q string) *store.QueueStats {
		qs := byQueue[q]
		if qs == nil {
			qs = &store.QueueStats{Queue: q}
			byQueue[q] = qs
		}
		return qs
	}
	for f, v := range counts.Val() {
		st, q, ok := strings.Cut(f, "/")
		n := atoi(v)
		state := parseState(st)
		if !ok || !state.Valid() || n == 0 {
			continue
		}
		get(q).Counts[state] = n
	}
	for _, q := range paused.Val() {
		get(q).Paused = true
	}
	var out []store.QueueStats
	if p.Queues != nil {
		for _, q := range p.Queues {
			if qs := byQueue[q]; qs != nil {
				out = append(out, *qs)
			} else {
				out = append(out, store.QueueStats{Queue: q})
			}
		}
	} else {
		for _, qs := range byQueue {
			if qs.Paused || qs.Total() > 0 {
				out = append(out, *qs)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	return store.StatsResult{Queues: out}, nil
}

// admin runs an admin script over ids and maps its per-id answers.
func (s *Store) admin(ctx context.Context, op string, sc *redis.Script, p store.IDsParams) (store.AdminResult, error) {
	if err := s.begin(ctx, op, p.Namespace, len(p.IDs)); err != nil {
		return store.AdminResult{}, err
	}
	items := make([]store.AdminItem, len(p.IDs))
	args := make([]any, 0, 2+len(p.IDs))
	args = append(args, s.nowArg(), s.wakeChannel(p.Namespace))
	var idx []int
	for i, id := range p.IDs {
		if !store.ValidName(id) {
			items[i].Err = store.ErrNotFound
			continue
		}
		args = append(args, id)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return store.AdminResult{Items: items}, nil
	}
	v, err := s.run(ctx, op, sc, p.Namespace, true, args)
	if err != nil {
		return store.AdminResult{}, err
	}
	res, err := strs(v, len(idx))
	if err != nil {
		return store.AdminResult{}, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	for j, r := range res {
		i := idx[j]
		switch {
		case r == "N":
			items[i].Err = store.ErrNotFound
		case strings.HasPrefix(r, "O"):
			items[i].State = parseState(r[1:])
		case strings.HasPrefix(r, "I"):
			items[i] = store.AdminItem{State: parseState(r[1:]), Err: store.ErrInvalidState}
			if op == "cancel" && (items[i].State == store.StateSucceeded || items[i].State == store.StateDead) {
				items[i].Err = store.ErrTaskFinished
			}
		default:
			return store.AdminResult{}, fmt.Errorf("redisstore: %s: unexpected script result %q", op, r)
		}
	}
	return store.AdminResult{Items: items}, nil
}

// Cancel implements store.Admin.
func (s *Store) Cancel(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "cancel", cancelScript, p)
}

// WaitCancels implements store.Leaser. The cancel script publishes the
// leases it marks on the namespace's wake-up channel; every store of the
// prefix, in any process, records them in its feed.
func (s *Store) WaitCancels(ctx context.Context, p store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.WaitCancelsResult{}, fmt.Errorf("redisstore: wait cancels: %w", err)
	}
	if p.Wait < 0 {
		return store.WaitCancelsResult{}, fmt.Errorf("redisstore: wait cancels: wait %s: %w", p.Wait, store.ErrInvalidOption)
	}
	if err := s.usable(ctx); err != nil {
		return store.WaitCancelsResult{}, err
	}
	return s.wk.cancels.Wait(ctx, p, s.closed)
}

// Retry implements store.Admin.
func (s *Store) Retry(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "retry", retryScript, p)
}

// Delete implements store.Admin.
func (s *Store) Delete(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.admin(ctx, "delete", deleteScript, p)
}

// SetQueuePaused implements store.Admin.
func (s *Store) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	if err := s.begin(ctx, "pause", p.Namespace, 0); err != nil {
		return err
	}
	if err := store.CheckName("queue", p.Queue); err != nil {
		return fmt.Errorf("redisstore: pause: %w", err)
	}
	if err := s.register(ctx, p.Namespace); err != nil {
		return err
	}
	paused := "0"
	if p.Paused {
		paused = "1"
	}
	_, err := s.run(ctx, "pause", pauseScript, p.Namespace, true, []any{s.nowArg(), s.wakeChannel(p.Namespace), p.Queue, paused})
	return err
}

// Sweep implements store.Maintainer: one script call per namespace of the
// prefix. Each change is made by exactly one script run, so concurrent
// sweeps in many processes are safe.
func (s *Store) Sweep(ctx context.Context, p store.SweepParams) (store.SweepResult, error) {
	var r store.SweepResult
	if err := s.usable(ctx); err != nil {
		return r, err
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 10000
	}
	nss, err := s.rdb.SMembers(ctx, s.nsSetKey()).Result()
	if err != nil {
		return r, s.wrap("sweep", err)
	}
	sort.Strings(nss)
	var errs []error
	for _, ns := range nss {
		v, err := s.run(ctx, "sweep", sweepScript, ns, true, []any{s.nowArg(), s.wakeChannel(ns), limit})
		if err != nil {
			if errors.Is(err, store.ErrClosed) || ctx.Err() != nil {
				return r, err
			}
			errs = append(errs, fmt.Errorf("namespace %s: %w", ns, err))
			continue
		}
		arr, ok := v.([]any)
		if !ok || len(arr) != 5 {
			errs = append(errs, fmt.Errorf("redisstore: sweep: namespace %s: unexpected script reply %T", ns, v))
			continue
		}
		n := make([]int, 5)
		for i, x := range arr {
			c, _ := x.(int64)
			n[i] = int(c)
		}
		r.Promoted += n[0]
		r.Recovered += n[1]
		r.Dead += n[2]
		r.Cancelled += n[3]
		r.Deleted += n[4]
	}
	return r, errors.Join(errs...)
}
