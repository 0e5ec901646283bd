package embedded

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

var _ store.Store = (*Store)(nil)

func checkBatch(n int) error {
	if n > store.MaxBatch {
		return fmt.Errorf("embedded: batch of %d is more than %d: %w", n, store.MaxBatch, store.ErrInvalidOption)
	}
	return nil
}

// Enqueue implements store.Enqueuer. It returns once every added task is on
// disk; concurrent enqueues share one sync. No task of the call is leasable
// before then, and none ever is when the call fails.
//
// An id is checked against the tasks in memory and, unless the input says
// it was made for this call (store.TaskInput.NewID), against those on disk.
func (s *Store) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.EnqueueResult{}, fmt.Errorf("embedded: enqueue: %w", err)
	}
	if err := checkBatch(len(p.Tasks)); err != nil {
		return store.EnqueueResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.EnqueueResult{}, err
	}
	items := make([]store.EnqueueItem, len(p.Tasks))
	need := int64(0)
	for i := range p.Tasks {
		need += int64(len(p.Tasks[i].Payload)) + 256
	}
	pre := s.readIDs(p.Namespace, p.Tasks)
	s.mu.Lock()
	if err := s.canWrite(ctx, need); err != nil {
		s.mu.Unlock()
		return store.EnqueueResult{}, err
	}
	return s.enqueueLocked(p, items, pre)
}

// enqueueLocked is Enqueue once it holds s.mu (which it releases); pre is
// the read of the ids made before the lock.
func (s *Store) enqueueLocked(p store.EnqueueParams, items []store.EnqueueItem, pre idRead) (store.EnqueueResult, error) {
	now := s.now()
	ns := s.namespace(p.Namespace)
	for i := range p.Tasks {
		if err := p.Tasks[i].Validate(s.limits, now); err != nil {
			items[i].Err = err //nolint:gosec // G602: items has one entry per task
		}
	}
	// Every disk read comes before the first change, so that a failed read
	// changes nothing. The read made before the lock stands while no task
	// has reached the disk alone since; else the ids are read again here.
	onDisk := pre.onDisk
	if !pre.ok || s.diskEpoch.Load() != pre.epoch {
		var err error
		if onDisk, err = s.storedIDs(ns, p.Tasks, items); err != nil {
			s.mu.Unlock()
			return store.EnqueueResult{}, fmt.Errorf("embedded: enqueue: %w", err)
		}
	}
	var last *batch
	woke := false
	fi := s.flows[ns.name] // a flow's held task has its id taken too
	// A task's writes: its unique key, payload, id, record and index key.
	var buf [5]op
	for i := range p.Tasks {
		in := &p.Tasks[i]
		if items[i].Err != nil { //nolint:gosec // G602: items has one entry per task
			continue
		}
		if ns.tasks[in.ID] != nil || (onDisk != nil && onDisk[i]) || (fi != nil && fi.held[in.ID] != nil) {
			items[i] = store.EnqueueItem{ID: in.ID, Err: store.ErrTaskExists} //nolint:gosec // G602: items has one entry per task
			continue
		}
		ops := buf[:0]
		if in.UniqueKey != "" {
			if h, ok := ns.unique[in.UniqueKey]; ok && h.until.After(now) {
				items[i] = store.EnqueueItem{ID: h.id, Err: store.ErrDuplicate} //nolint:gosec // G602: items has one entry per task
				continue
			}
			until := now.Add(in.UniqueTTL)
			ns.unique[in.UniqueKey] = uniqueHold{id: in.ID, until: until}
			heap.Push(&s.uniqueExp, timedItem{at: until, ns: ns.name, id: in.UniqueKey})
			ops = append(ops, op{key: nameKey(kUnique, ns.name, in.UniqueKey), val: append(binary.AppendVarint(nil, until.UnixNano()), in.ID...)})
		}
		s.seq++
		e := &entry{seq: s.seq, idx: -1, t: store.Task{
			Namespace: ns.name, ID: in.ID, Type: in.Type, Queue: in.Queue,
			Payload: cloneBytes(in.Payload), Priority: in.Priority, MaxRetries: in.MaxRetries,
			Timeout: in.Timeout, Deadline: norm(in.Deadline), UniqueKey: in.UniqueKey,
			UniqueTTL: in.UniqueTTL, UniqueUntilSuccess: in.UniqueUntilSuccess, Retention: in.Retention,
			TraceParent: in.TraceParent, CreatedAt: now, RunAt: norm(in.RunAt),
		}}
		if e.t.Queue == "" {
			e.t.Queue = store.DefaultQueue
		}
		if e.t.Payload == nil {
			e.t.Payload = []byte{}
		}
		q := ns.queue(e.t.Queue)
		if e.t.RunAt.After(now) {
			e.t.State = store.StateScheduled
			s.pushDelayed(ns, e)
			// A new earliest due time: waiting leasers wait less.
			woke = woke || ns.delayed.peek() == e
		} else {
			if e.t.RunAt.IsZero() {
				e.t.RunAt = now
			}
			e.t.State = store.StatePending
			s.stage(e) // leasable once durable
		}
		q.counts[e.t.State]++
		ns.tasks[e.t.ID] = e
		s.changed(ns, e, store.ChangeEnqueued, e.t.State, now, "")
		// The payload's key (for a payload too large for the record), the
		// id's key and its value in one buffer.
		e.payKey = payKeyFor(e.t.Payload)
		n := 2 + len(ns.name) + len(e.t.ID) + 8
		if e.payKey {
			n += 2 + len(ns.name) + 8
		}
		kb := s.opBuf(n)
		if e.payKey {
			pk := binary.BigEndian.AppendUint64(append(append(append(kb, kPayload), ns.name...), 0), e.seq)
			ops = append(ops, op{key: pk[:len(pk):len(pk)], val: e.t.Payload})
			kb = pk[len(pk):]
		}
		ik := append(append(append(kb, kID), ns.name...), 0)
		ik = append(ik, e.t.ID...)
		iv := binary.BigEndian.AppendUint64(ik[len(ik):], e.seq)
		ops = append(ops, op{key: ik[:len(ik):len(ik)], val: iv})
		ops = taskOpsIn(ops, e, s.opBuf)
		last = s.writeTask(&created{ns: ns.name, id: e.t.ID, unique: e.t.UniqueKey, seq: e.seq}, ops...)
		e.gen = last.gen
		items[i] = store.EnqueueItem{ID: e.t.ID, State: e.t.State} //nolint:gosec // G602: items has one entry per task
	}
	if woke {
		ns.notify()
	}
	s.mu.Unlock()
	if err := last.wait(); err != nil {
		return store.EnqueueResult{}, fmt.Errorf("embedded: enqueue: %w", err)
	}
	return store.EnqueueResult{Items: items}, nil
}

// idRead is a read of the ids of an enqueue made before the store's lock.
// It stands if no task went from memory to the disk alone (an eviction, a
// rebuild of memory) between the read and the lock: a task the read missed
// was then created since, and is in memory, where Enqueue looks too. A task
// the read found and that was deleted since is refused as it was then.
type idRead struct {
	ok     bool   // the read was made, without error
	epoch  uint64 // s.diskEpoch before the read
	onDisk []bool // at each index of the inputs; nil: none is stored
}

// readIDs reads, without s.mu, whether the engine holds the ids of ins
// that need the check (valid names, not NewID): one lookup, or one batched
// read for many.
func (s *Store) readIDs(ns string, ins []store.TaskInput) idRead {
	r := idRead{epoch: s.diskEpoch.Load()}
	var idx []int
	for i := range ins {
		if !ins[i].NewID && store.ValidName(ins[i].ID) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		r.ok = true
		return r
	}
	keys := make([][]byte, len(idx))
	for j, i := range idx {
		keys[j] = nameKey(kID, ns, ins[i].ID)
	}
	var vals [][]byte
	var err error
	if len(keys) == 1 {
		var v []byte
		v, err = s.d.get(keys[0])
		vals = [][]byte{v}
	} else {
		s.d.mu.RLock()
		vals, err = s.d.eng.getMany(keys)
		s.d.mu.RUnlock()
	}
	if err != nil {
		return r // read again under the lock, which reports the error
	}
	for j, i := range idx {
		if vals[j] != nil {
			if r.onDisk == nil {
				r.onDisk = make([]bool, len(ins))
			}
			r.onDisk[i] = true
		}
	}
	r.ok = true
	return r
}

// storedIDs reports, at each index of ins, whether the engine holds a task
// with that id (nil: none of them), for the inputs that need the check: valid ones (items[i].Err
// nil) whose id is not in memory (a live task: the caller sees that one)
// and was not made for this call (NewID). The reads are one lookup, or one
// batched read for many. The caller holds s.mu, so no task can reach the
// engine unseen between the check and the enqueue.
func (s *Store) storedIDs(ns *namespace, ins []store.TaskInput, items []store.EnqueueItem) ([]bool, error) {
	var idx []int
	for i := range ins {
		if items[i].Err == nil && !ins[i].NewID && ns.tasks[ins[i].ID] == nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, nil
	}
	out := make([]bool, len(ins))
	if len(idx) == 1 {
		v, err := s.d.get(nameKey(kID, ns.name, ins[idx[0]].ID))
		out[idx[0]] = v != nil
		return out, err
	}
	keys := make([][]byte, len(idx))
	for j, i := range idx {
		keys[j] = nameKey(kID, ns.name, ins[i].ID)
	}
	s.d.mu.RLock()
	vals, err := s.d.eng.getMany(keys)
	s.d.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	for j, i := range idx {
		out[i] = vals[j] != nil
	}
	return out, nil
}

// Lease implements store.Leaser. The lease record is written without waiting
// for the disk: if the process dies before the next sync (about a
// millisecond), the lease is forgotten and the task is pending again, which
// at-least-once delivery allows.
func (s *Store) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	if err := p.Validate(); err != nil {
		return store.LeaseResult{}, fmt.Errorf("embedded: lease: %w", err)
	}
	var deadline time.Time
	var timer *time.Timer
	if p.Wait > 0 {
		deadline = time.Now().Add(p.Wait)
	}
	var types map[string]bool
	if p.Types != nil {
		types = make(map[string]bool, len(p.Types))
		for _, t := range p.Types {
			types[t] = true
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return store.LeaseResult{}, err
		}
		s.mu.Lock()
		if err := s.canWrite(ctx, 0); err != nil {
			s.mu.Unlock()
			return store.LeaseResult{}, err
		}
		now := s.now()
		ns := s.namespace(p.Namespace)
		s.promote(ns, now, s.windowSize)
		var stack [64]*entry
		leased := stack[:0]
		for _, qname := range store.OrderQueues(p.Queues, p.Weights, nil) {
			q := ns.queues[qname]
			if q == nil || q.paused {
				continue
			}
			for len(leased) < p.Max {
				e, err := s.best(ns, q, p.Types, types)
				if err != nil {
					s.mu.Unlock()
					return store.LeaseResult{}, fmt.Errorf("embedded: lease: %w", err)
				}
				if e == nil {
					break
				}
				q.ready[e.t.Type].pop()
				q.counts[e.t.State]--
				e.t.State = store.StateActive
				q.counts[store.StateActive]++
				e.t.Attempt++
				e.t.LeaseID = s.nextLeaseID()
				e.t.LeaseExpiresAt = now.Add(p.Duration)
				e.t.StartedAt = now
				e.t.WorkerID = p.WorkerID
				s.changed(ns, e, store.ChangeStarted, store.StateActive, now, "")
				s.putTask(e)
				s.leases.push(e)
				leased = append(leased, e)
			}
			if len(leased) == p.Max {
				break
			}
		}
		if len(leased) > 0 || p.Wait <= 0 || !time.Now().Before(deadline) {
			// The copies handed out, in one allocation.
			var out []*store.Task
			if len(leased) > 0 {
				copies := make([]store.Task, len(leased))
				out = make([]*store.Task, len(leased))
				for i, e := range leased {
					copies[i] = e.t
					copies[i].Upstream = e.upstream
					out[i] = &copies[i]
				}
			}
			s.mu.Unlock()
			return store.LeaseResult{Tasks: out}, nil
		}
		// Nothing ready: wait for a wake-up, the next due task, the end of
		// the wait, or the context.
		wait := time.Until(deadline)
		if next := s.nextDelayed(ns); next != nil {
			if d := next.t.RunAt.Sub(now); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		if ns.wake == nil {
			ns.wake = make(chan struct{})
		}
		wake := ns.wake
		ns.waiting++
		s.mu.Unlock()
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
		}
		s.mu.Lock()
		ns.waiting--
		s.mu.Unlock()
	}
}

// best returns the pending task to lease next from q of ns among the
// allowed types (all when list is nil), or nil. It refills the windows
// that need it from the disk. The caller holds s.mu.
func (s *Store) best(ns *namespace, q *queue, list []string, allowed map[string]bool) (*entry, error) {
	var best *entry
	consider := func(typ string, w *window) error {
		e, err := s.ready(ns, q, typ, w)
		if err == nil && e != nil && (best == nil || readyLess(e, best)) {
			best = e
		}
		return err
	}
	if list == nil {
		for _, t := range q.types {
			if err := consider(t, q.ready[t]); err != nil {
				return nil, err
			}
		}
		return best, nil
	}
	if len(list) < len(q.types) {
		for _, t := range list {
			if w := q.ready[t]; w != nil {
				if err := consider(t, w); err != nil {
					return nil, err
				}
			}
		}
		return best, nil
	}
	for _, t := range q.types {
		if allowed[t] {
			if err := consider(t, q.ready[t]); err != nil {
				return nil, err
			}
		}
	}
	return best, nil
}

// promote makes due scheduled and retry tasks of ns pending; limit 0 means
// no limit. It returns how many it moved.
func (s *Store) promote(ns *namespace, now time.Time, limit int) int {
	n := 0
	woke := false
	for limit <= 0 || n < limit {
		e := s.nextDelayed(ns)
		if e == nil || e.t.RunAt.After(now) {
			break
		}
		ns.delayed.pop()
		q := ns.queue(e.t.Queue)
		q.counts[e.t.State]--
		e.t.State = store.StatePending
		q.counts[store.StatePending]++
		// Due, it is leasable once the write that scheduled it is durable.
		scheduled := e.gen
		s.putTask(e)
		if s.readyAfter(q, e, scheduled) {
			woke = true
		}
		n++
	}
	if woke {
		ns.notify()
	}
	return n
}

// lookup finds the live entry of id. When the task is not in memory it
// reports whether the engine has it.
func (s *Store) lookup(ns *namespace, id string) (*entry, bool, error) {
	if e := ns.tasks[id]; e != nil {
		return e, true, nil
	}
	v, err := s.d.get(nameKey(kID, ns.name, id))
	return nil, v != nil, err
}

// Extend implements store.Leaser. Like Lease, it does not wait for the disk.
func (s *Store) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.ExtendResult{}, fmt.Errorf("embedded: extend: %w", err)
	}
	if p.Duration <= 0 {
		return store.ExtendResult{}, fmt.Errorf("embedded: extend: duration %s: %w", p.Duration, store.ErrInvalidOption)
	}
	if err := checkBatch(len(p.Leases)); err != nil {
		return store.ExtendResult{}, err
	}
	items := make([]store.ExtendItem, len(p.Leases))
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.canWrite(ctx, 0); err != nil {
		return store.ExtendResult{}, err
	}
	now := s.now()
	ns := s.namespace(p.Namespace)
	for i, l := range p.Leases {
		e, exists, err := s.lookup(ns, l.ID)
		if err != nil {
			return store.ExtendResult{}, fmt.Errorf("embedded: extend: %w", err)
		}
		if e == nil || e.t.State != store.StateActive || e.t.LeaseID != l.LeaseID {
			items[i].Err = store.ErrLeaseLost
			if e == nil && !exists {
				items[i].Err = store.ErrNotFound
			}
			continue
		}
		if l.Progress != nil {
			if l.Progress.Percent < 0 || l.Progress.Percent > 100 {
				items[i].Err = &store.ValidationError{Field: "progress", Reason: "percent outside 0..100", Err: store.ErrInvalidOption}
				continue
			}
			e.t.ProgressPercent = l.Progress.Percent
			e.t.ProgressMessage = l.Progress.Message
		}
		e.t.LeaseExpiresAt = now.Add(p.Duration)
		s.leases.fix(e)
		s.putTask(e)
		items[i] = store.ExtendItem{ExpiresAt: e.t.LeaseExpiresAt, CancelRequested: e.t.CancelRequested}
	}
	return store.ExtendResult{Items: items}, nil
}

// Report implements store.Leaser. It returns once the outcomes are on disk.
func (s *Store) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.ReportResult{}, fmt.Errorf("embedded: report: %w", err)
	}
	if err := checkBatch(len(p.Outcomes)); err != nil {
		return store.ReportResult{}, err
	}
	errs := make([]error, len(p.Outcomes))
	s.mu.Lock()
	if err := s.canWrite(ctx, 0); err != nil {
		s.mu.Unlock()
		return store.ReportResult{}, err
	}
	now := s.now()
	ns := s.namespace(p.Namespace)
	var last *batch
	woke := false
	for i := range p.Outcomes {
		o := &p.Outcomes[i]
		if err := o.Validate(s.limits); err != nil {
			errs[i] = err
			continue
		}
		e, exists, err := s.lookup(ns, o.ID)
		if err != nil {
			s.mu.Unlock()
			return store.ReportResult{}, fmt.Errorf("embedded: report: %w", err)
		}
		if e == nil || e.t.State != store.StateActive || e.t.LeaseID != o.LeaseID {
			errs[i] = store.ErrLeaseLost
			if e == nil && !exists {
				errs[i] = store.ErrNotFound
			}
			continue
		}
		s.leases.remove(e)
		q := ns.queue(e.t.Queue)
		q.counts[store.StateActive]--
		e.t.LeaseID = 0
		e.t.LeaseExpiresAt = time.Time{}
		switch o.Kind {
		case store.OutcomeSucceeded:
			e.t.Result = cloneBytes(o.Result)
			if e.t.Result == nil {
				e.t.Result = []byte{}
			}
			s.changed(ns, e, store.ChangeSucceeded, store.StateSucceeded, now, "")
			s.finish(ns, e, store.StateSucceeded, now)
			s.releaseUnique(ns, e)
		case store.OutcomeDead:
			e.t.LastError = o.Error
			e.t.AddError(now, o.Error)
			s.changed(ns, e, store.ChangeFailed, store.StateActive, now, o.Error)
			s.changed(ns, e, store.ChangeDead, store.StateDead, now, "")
			s.finish(ns, e, store.StateDead, now)
		case store.OutcomeCancelled:
			e.t.LastError = o.Error
			if o.Error != "" {
				e.t.AddError(now, o.Error)
			}
			s.changed(ns, e, store.ChangeCancelled, store.StateCancelled, now, "")
			s.finish(ns, e, store.StateCancelled, now)
		case store.OutcomeRetry:
			e.t.LastError = o.Error
			e.t.AddError(now, o.Error)
			e.t.RunAt = now
			if at := norm(o.RetryAt); at.After(now) {
				e.t.RunAt = at
				e.t.State = store.StateRetry
				s.pushDelayed(ns, e)
				woke = woke || ns.delayed.peek() == e
			} else {
				e.t.State = store.StatePending
				s.stage(e)
			}
			q.counts[e.t.State]++
			s.changed(ns, e, store.ChangeFailed, store.StateActive, now, o.Error)
			s.changed(ns, e, store.ChangeRetrying, e.t.State, now, "")
		case store.OutcomeRelease:
			if o.NotStarted && e.t.Attempt > 0 {
				e.t.Attempt--
			}
			e.t.State = store.StatePending
			s.stage(e)
			q.counts[store.StatePending]++
			s.changed(ns, e, store.ChangeReleased, store.StatePending, now, "")
		}
		last = s.putTask(e)
		if e.t.State.Terminal() {
			s.evict = append(s.evict, timedItem{ns: ns.name, id: e.t.ID, seq: e.gen, e: e})
		}
	}
	if woke {
		ns.notify()
	}
	s.mu.Unlock()
	if err := last.wait(); err != nil {
		return store.ReportResult{}, fmt.Errorf("embedded: report: %w", err)
	}
	return store.ReportResult{Errs: errs}, nil
}

// finish moves e (already out of every index and uncounted) to a terminal
// state. The caller writes the record and queues the eviction.
func (s *Store) finish(ns *namespace, e *entry, st store.State, now time.Time) {
	e.t.State = st
	e.t.FinishedAt = now
	ret := retentionOf(&e.t)
	e.t.ExpiresAt = now.Add(ret)
	ns.queue(e.t.Queue).counts[st]++
	var ok byte
	if st == store.StateSucceeded {
		ok = 'r'
		if len(e.t.Result) == 0 { // a callback renders it as null
			ok = 'n'
		}
	}
	s.flowDone(ns, e.t.ID, now, ok)
	s.flowEnded(ns, e, ret, now)
}

// retentionOf returns t's retention, or the default when it has none.
func retentionOf(t *store.Task) time.Duration {
	if t.Retention == 0 {
		return store.RetentionDefault
	}
	return t.Retention
}

// Get implements store.Reader.
func (s *Store) Get(ctx context.Context, p store.GetParams) (store.GetResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.GetResult{}, fmt.Errorf("embedded: get: %w", err)
	}
	if err := checkBatch(len(p.IDs)); err != nil {
		return store.GetResult{}, err
	}
	out := make([]*store.Task, len(p.IDs))
	var missing []int
	s.mu.Lock()
	if err := s.usable(ctx); err != nil {
		s.mu.Unlock()
		return store.GetResult{}, err
	}
	if ns := s.nss[p.Namespace]; ns != nil && p.Outcomes {
		// Only the outcome fields, in one allocation for the whole call:
		// a chord's callback reads every member, most of them kept in
		// memory (flowKeep).
		slab := make([]store.Task, len(p.IDs))
		for i, id := range p.IDs {
			if e := ns.tasks[id]; e != nil {
				outcomeOf(&slab[i], &e.t)
				out[i] = &slab[i]
			} else {
				missing = append(missing, i)
			}
		}
	} else if ns != nil {
		for i, id := range p.IDs {
			if e := ns.tasks[id]; e != nil {
				out[i] = e.t.Clone()
			} else {
				missing = append(missing, i)
			}
		}
	} else {
		for i := range p.IDs {
			missing = append(missing, i)
		}
	}
	s.mu.Unlock()
	// Tasks not in memory are finished and durable: read them from disk.
	valid := missing[:0]
	for _, i := range missing {
		if store.ValidName(p.IDs[i]) {
			valid = append(valid, i)
		}
	}
	switch len(valid) {
	case 0:
	case 1:
		d, err := s.readTask(p.Namespace, p.IDs[valid[0]], true)
		if err != nil {
			return store.GetResult{}, fmt.Errorf("embedded: get: %w", err)
		}
		out[valid[0]] = d.t
	default:
		ids := make([]string, len(valid))
		for j, i := range valid {
			ids[j] = p.IDs[i]
		}
		// With Outcomes (a chord's callback reading its members), the
		// payloads are not read: one engine read per task instead of two.
		ts, _, err := s.readTasksSeq(p.Namespace, ids, !p.Outcomes)
		if err != nil {
			return store.GetResult{}, fmt.Errorf("embedded: get: %w", err)
		}
		for j, i := range valid {
			out[i] = ts[j]
		}
	}
	if !p.Outcomes { // ExpiresAt is no outcome field
		s.raiseExpiry(p.Namespace, out)
	}
	return store.GetResult{Tasks: out}, nil
}

// outcomeOf sets in dst the fields of src that GetParams.Outcomes names
// (and its namespace), the result copied.
func outcomeOf(dst, src *store.Task) {
	dst.Namespace, dst.ID, dst.Type, dst.Queue = src.Namespace, src.ID, src.Type, src.Queue
	dst.Priority, dst.State, dst.LastError = src.Priority, src.State, src.LastError
	if src.Result != nil {
		dst.Result = append([]byte(nil), src.Result...)
	}
}

// readTasksSeq reads tasks from the engine, as readTask does for each id,
// in batched reads: the sequence numbers of all ids, the records of all of
// them, then, when payload is set, the payloads stored apart from their
// records. The answer has a task or nil (absent) at each index of ids, and
// each task's sequence number (0 for an absent one).
func (s *Store) readTasksSeq(ns string, ids []string, payload bool) ([]*store.Task, []uint64, error) {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	eng := s.d.eng
	keys := make([][]byte, len(ids))
	for i, id := range ids {
		keys[i] = nameKey(kID, ns, id)
	}
	seqVals, err := eng.getMany(keys)
	if err != nil {
		return nil, nil, err
	}
	// found[j] is the index in ids of the task whose record is keys[j].
	found := make([]int, 0, len(ids))
	seqs := make([]uint64, len(ids))
	keys = keys[:0]
	for i, v := range seqVals {
		if len(v) != 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(v)
		if s.d.isHidden(ns, ids[i], seq) {
			continue
		}
		found = append(found, i)
		keys = append(keys, seqKey(kTask, ns, seq))
	}
	vals, err := eng.getMany(keys)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*store.Task, len(ids))
	var apart []int // indexes in ids of the tasks whose payload is apart
	for j, i := range found {
		rec := vals[j]
		if rec == nil {
			continue
		}
		seq := binary.BigEndian.Uint64(seqVals[i])
		t := &store.Task{Namespace: ns}
		if _, err := record.Decode(rec, t); err != nil {
			return nil, nil, fmt.Errorf("task %q (record %d of namespace %q): %w", ids[i], seq, ns, err)
		}
		if !payload {
			t.Payload = nil
		} else if t.Payload == nil {
			apart = append(apart, i)
		}
		out[i], seqs[i] = t, seq
	}
	ts := make([]*store.Task, len(apart))
	aseqs := make([]uint64, len(apart))
	for j, i := range apart {
		ts[j], aseqs[j] = out[i], seqs[i]
	}
	if err := readApart(eng, ns, ts, aseqs); err != nil {
		return nil, nil, err
	}
	return out, seqs, nil
}

// stored is a task read from the engine, where it is alone (not in memory).
type stored struct {
	t      *store.Task // nil: absent
	seq    uint64
	payKey bool // its payload is in a key of its own (entry.payKey)
}

// entry returns an entry of the task for memory, with ikey its index key.
func (d stored) entry(ns string) *entry {
	return &entry{t: *d.t, seq: d.seq, idx: -1, ikey: indexKey(ns, d.t, d.seq), payKey: d.payKey}
}

// readTask reads a task from the engine; its t is nil when absent. Without
// payload, the task has none (nil).
func (s *Store) readTask(ns, id string, payload bool) (stored, error) {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	eng := s.d.eng
	v, err := eng.get(nameKey(kID, ns, id))
	if err != nil || len(v) != 8 {
		return stored{}, err
	}
	seq := binary.BigEndian.Uint64(v)
	if s.d.isHidden(ns, id, seq) {
		return stored{}, nil
	}
	rec, err := eng.get(seqKey(kTask, ns, seq))
	if err != nil || rec == nil {
		return stored{}, err
	}
	t := &store.Task{Namespace: ns}
	if _, err := record.Decode(rec, t); err != nil {
		return stored{}, fmt.Errorf("task %q (record %d of namespace %q): %w", id, seq, ns, err)
	}
	d := stored{t: t, seq: seq, payKey: t.Payload == nil}
	switch {
	case !payload:
		t.Payload = nil
	case d.payKey:
		if t.Payload, err = eng.get(seqKey(kPayload, ns, seq)); err != nil {
			return stored{}, err
		}
		if t.Payload == nil {
			t.Payload = []byte{}
		}
	}
	return d, nil
}

// List implements store.Reader. It first waits for every earlier write to be
// durable, then reads the engine in enqueue order, examining at most
// store.MaxListScan tasks; the cursor is the sequence of the next task to
// examine.
func (s *Store) List(ctx context.Context, p store.ListParams) (store.ListResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.ListResult{}, fmt.Errorf("embedded: list: %w", err)
	}
	if p.Limit < 0 || p.Limit > store.MaxListLimit {
		return store.ListResult{}, fmt.Errorf("embedded: list: limit %d outside 0..%d: %w", p.Limit, store.MaxListLimit, store.ErrInvalidOption)
	}
	limit := p.Limit
	if limit == 0 {
		limit = 100
	}
	var start []byte
	if p.Cursor != "" {
		c, err := strconv.ParseUint(p.Cursor, 10, 64)
		if err != nil {
			return store.ListResult{}, fmt.Errorf("embedded: list: bad cursor %q: %w", p.Cursor, store.ErrInvalidOption)
		}
		start = seqKey(kTask, p.Namespace, c)
	}
	for _, st := range p.States {
		if !st.Valid() {
			return store.ListResult{}, fmt.Errorf("embedded: list: state %d: %w", st, store.ErrInvalidOption)
		}
	}
	s.mu.Lock()
	if err := s.usable(ctx); err != nil {
		s.mu.Unlock()
		return store.ListResult{}, err
	}
	b := s.barrier()
	s.mu.Unlock()
	// A failed write was reported to its writer, and memory and engine
	// were rebuilt from the disk before b ended: read what is there.
	_ = b.wait()
	res, err := s.listScan(ctx, p, start, limit)
	if err != nil {
		return store.ListResult{}, err
	}
	s.raiseExpiry(p.Namespace, res.Tasks)
	return res, nil
}

// listScan is List's scan of the task records from start.
func (s *Store) listScan(ctx context.Context, p store.ListParams, start []byte, limit int) (store.ListResult, error) {
	var out []*store.Task
	var seqs []uint64
	var derr error
	next := ""
	examined := 0
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	err := s.d.eng.scan(nsPrefix(kTask, p.Namespace), start, p.Newest, func(k, v []byte) bool {
		if err := ctx.Err(); err != nil {
			derr = err
			return false
		}
		if examined == store.MaxListScan {
			// The scan's bound: continue from this task next time.
			next = strconv.FormatUint(keySeq(k), 10)
			return false
		}
		examined++
		t := &store.Task{Namespace: p.Namespace}
		seq, err := record.Decode(v, t)
		if err != nil {
			derr = fmt.Errorf("task record %d of namespace %q: %w", binary.BigEndian.Uint64(k[len(k)-8:]), p.Namespace, err)
			return false
		}
		if s.d.isHidden(p.Namespace, t.ID, seq) || !matches(t, &p) {
			return true
		}
		if len(out) == limit {
			next = strconv.FormatUint(seq, 10)
			return false
		}
		out = append(out, t)
		seqs = append(seqs, seq)
		return true
	})
	if err != nil || derr != nil {
		return store.ListResult{}, fmt.Errorf("embedded: list: %w", errorsJoin(err, derr))
	}
	if p.WithPayload {
		for i, t := range out {
			if t.Payload != nil {
				continue // in its record
			}
			if t.Payload, err = s.d.eng.get(seqKey(kPayload, p.Namespace, seqs[i])); err != nil {
				return store.ListResult{}, fmt.Errorf("embedded: list: %w", err)
			}
		}
	} else {
		for _, t := range out {
			t.Result, t.Payload = nil, nil
		}
	}
	return store.ListResult{Tasks: out, NextCursor: next}, nil
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

// Stats implements store.Reader.
func (s *Store) Stats(ctx context.Context, p store.StatsParams) (store.StatsResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.StatsResult{}, fmt.Errorf("embedded: stats: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.StatsResult{}, err
	}
	var out []store.QueueStats
	ns := s.nss[p.Namespace]
	if p.Queues != nil {
		for _, name := range p.Queues {
			qs := store.QueueStats{Queue: name}
			if ns != nil {
				if q := ns.queues[name]; q != nil {
					qs.Paused, qs.Counts = q.paused, q.counts
				}
			}
			out = append(out, qs)
		}
	} else if ns != nil {
		for _, q := range ns.queues {
			qs := store.QueueStats{Queue: q.name, Paused: q.paused, Counts: q.counts}
			if qs.Paused || qs.Total() > 0 {
				out = append(out, qs)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	return store.StatsResult{Queues: out}, nil
}

// adminEach runs fn on every id under the lock, loading finished tasks from
// disk when fn asks for them, and waits for the writes to be durable.
func (s *Store) adminEach(ctx context.Context, what string, p store.IDsParams, fn func(ns *namespace, id string, e *entry, onDisk stored, now time.Time) (store.AdminItem, *batch)) (store.AdminResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.AdminResult{}, fmt.Errorf("embedded: %s: %w", what, err)
	}
	if err := checkBatch(len(p.IDs)); err != nil {
		return store.AdminResult{}, err
	}
	items := make([]store.AdminItem, len(p.IDs))
	s.mu.Lock()
	if err := s.canWrite(ctx, 0); err != nil {
		s.mu.Unlock()
		return store.AdminResult{}, err
	}
	now := s.now()
	ns := s.namespace(p.Namespace)
	var last *batch
	for i, id := range p.IDs {
		e := ns.tasks[id]
		var disk stored
		if e == nil && store.ValidName(id) {
			var err error
			if disk, err = s.readTask(ns.name, id, true); err != nil {
				s.mu.Unlock()
				return store.AdminResult{}, fmt.Errorf("embedded: %s: %w", what, err)
			}
		}
		if disk.t != nil && s.gone[goneKey{ns: ns.name, seq: disk.seq}] != 0 {
			disk = stored{} // deleted, not yet durably
		}
		if e == nil && disk.t == nil {
			items[i].Err = store.ErrNotFound
			continue
		}
		// A live task on disk alone (after the window of its queue or
		// of the delayed tasks) is handled as one in memory, and leaves
		// memory again if it stays where it was.
		loaded := false
		if e == nil && !disk.t.State.Terminal() {
			e = disk.entry(ns.name)
			ns.tasks[id] = e
			loaded = true
		}
		var b *batch
		items[i], b = fn(ns, id, e, disk, now)
		if b != nil {
			last = b
		}
		if loaded && ns.tasks[id] == e && !e.t.State.Terminal() && e.t.State != store.StateActive && !e.staged && e.idx < 0 {
			delete(ns.tasks, id)
		}
	}
	s.mu.Unlock()
	if err := last.wait(); err != nil {
		return store.AdminResult{}, fmt.Errorf("embedded: %s: %w", what, err)
	}
	return store.AdminResult{Items: items}, nil
}

// unindex removes a non-active live entry from its heap and its count.
func (ns *namespace) unindex(e *entry) {
	q := ns.queue(e.t.Queue)
	switch e.t.State {
	case store.StatePending:
		q.removeReady(e)
	case store.StateScheduled, store.StateRetry:
		ns.delayed.remove(e)
	case store.StateActive, store.StateSucceeded, store.StateDead, store.StateCancelled:
		// In no heap.
	}
	q.counts[e.t.State]--
}

// Cancel implements store.Admin.
func (s *Store) Cancel(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.adminEach(ctx, "cancel", p, func(ns *namespace, id string, e *entry, disk stored, now time.Time) (store.AdminItem, *batch) {
		if e == nil {
			return store.AdminItem{State: disk.t.State, Err: cancelRefused(disk.t.State)}, nil
		}
		switch e.t.State {
		case store.StateActive:
			// Pushed to the workers waiting in WaitCancels (again when the
			// mark was already there: a push may have been missed).
			s.cancels.Publish(ns.name, store.LeaseRef{ID: id, LeaseID: e.t.LeaseID})
			if !e.t.CancelRequested {
				e.t.CancelRequested = true
				return store.AdminItem{State: store.StateActive}, s.putTask(e)
			}
			return store.AdminItem{State: store.StateActive}, nil
		case store.StatePending, store.StateScheduled, store.StateRetry:
			ns.unindex(e)
			e.t.LastError = "cancelled"
			s.changed(ns, e, store.ChangeCancelled, store.StateCancelled, now, "")
			s.finish(ns, e, store.StateCancelled, now)
			b := s.putTask(e)
			s.evict = append(s.evict, timedItem{ns: ns.name, id: id, seq: e.gen, e: e})
			return store.AdminItem{State: store.StateCancelled}, b
		case store.StateSucceeded, store.StateDead, store.StateCancelled:
			return store.AdminItem{State: e.t.State, Err: cancelRefused(e.t.State)}, nil
		}
		return store.AdminItem{State: e.t.State, Err: store.ErrInvalidState}, nil
	})
}

// cancelRefused is the error of a cancel of a task in state st, which
// cannot be cancelled.
func cancelRefused(st store.State) error {
	if st == store.StateSucceeded || st == store.StateDead {
		return store.ErrTaskFinished
	}
	return store.ErrInvalidState
}

// WaitCancels implements store.Leaser.
func (s *Store) WaitCancels(ctx context.Context, p store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.WaitCancelsResult{}, fmt.Errorf("embedded: wait cancels: %w", err)
	}
	if p.Wait < 0 {
		return store.WaitCancelsResult{}, fmt.Errorf("embedded: wait cancels: wait %s: %w", p.Wait, store.ErrInvalidOption)
	}
	return s.cancels.Wait(ctx, p, nil)
}

// Retry implements store.Admin.
func (s *Store) Retry(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.adminEach(ctx, "retry", p, func(ns *namespace, id string, e *entry, disk stored, now time.Time) (store.AdminItem, *batch) {
		if e == nil {
			e = disk.entry(ns.name)
		}
		if e.t.State != store.StateDead && e.t.State != store.StateCancelled {
			return store.AdminItem{State: e.t.State, Err: store.ErrInvalidState}, nil
		}
		q := ns.queue(e.t.Queue)
		q.counts[e.t.State]--
		e.t.State = store.StatePending
		e.t.Attempt = 0
		e.t.CancelRequested = false
		e.t.FinishedAt, e.t.ExpiresAt = time.Time{}, time.Time{}
		e.t.RunAt = now
		e.t.ProgressPercent, e.t.ProgressMessage = 0, ""
		q.counts[store.StatePending]++
		s.stage(e)
		ns.tasks[id] = e
		s.changed(ns, e, store.ChangeRetried, store.StatePending, now, "")
		s.flowReopened(ns.name, id)
		return store.AdminItem{State: store.StatePending}, s.putTask(e)
	})
}

// Delete implements store.Admin.
func (s *Store) Delete(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return s.adminEach(ctx, "delete", p, func(ns *namespace, id string, e *entry, disk stored, now time.Time) (store.AdminItem, *batch) {
		if e != nil {
			if e.t.State == store.StateActive {
				return store.AdminItem{State: store.StateActive, Err: store.ErrInvalidState}, nil
			}
			s.changed(ns, e, store.ChangeDeleted, 0, now, "")
			s.flowDone(ns, id, now, 0) // a task deleted before it finished never will
			if !e.t.State.Terminal() {
				s.flowEnded(ns, e, retentionOf(&e.t), now)
			}
			ns.unindex(e)
			delete(ns.tasks, id)
			return store.AdminItem{}, s.deleteKeys(ns.name, id, e.seq, e.ikey, e.payKey)
		}
		ns.queue(disk.t.Queue).counts[disk.t.State]--
		s.changed(ns, &entry{t: *disk.t}, store.ChangeDeleted, 0, now, "")
		return store.AdminItem{}, s.deleteKeys(ns.name, id, disk.seq, indexKey(ns.name, disk.t, disk.seq), disk.payKey)
	})
}

// deleteKeys deletes the keys of the task id of ns stored at seq, whose
// index key is ikey, and its payload's key when payKey.
func (s *Store) deleteKeys(ns, id string, seq uint64, ikey []byte, payKey bool) *batch {
	ops := []op{
		{key: seqKey(kTask, ns, seq)},
		{key: nameKey(kID, ns, id)},
	}
	if payKey {
		ops = append(ops, op{key: seqKey(kPayload, ns, seq)})
	}
	if ikey != nil {
		ops = append(ops, op{key: ikey})
	}
	b := s.write(ops...)
	if len(ikey) > 0 && (ikey[0] == kReady || ikey[0] == kDelayed) {
		s.markGone(ns, seq, b.gen)
	}
	return b
}

// SetQueuePaused implements store.Admin.
func (s *Store) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return fmt.Errorf("embedded: pause: %w", err)
	}
	if err := store.CheckName("queue", p.Queue); err != nil {
		return fmt.Errorf("embedded: pause: %w", err)
	}
	s.mu.Lock()
	if err := s.canWrite(ctx, 0); err != nil {
		s.mu.Unlock()
		return err
	}
	ns := s.namespace(p.Namespace)
	q := ns.queue(p.Queue)
	q.paused = p.Paused
	var b *batch
	if p.Paused {
		b = s.write(op{key: nameKey(kQueue, ns.name, q.name), val: []byte{1}})
	} else {
		b = s.write(op{key: nameKey(kQueue, ns.name, q.name)})
		ns.notify()
	}
	s.mu.Unlock()
	return b.wait()
}

// releaseUnique frees the unique key of e, which just succeeded, when the
// task asked for that (UniqueUntilSuccess) and still holds the key.
func (s *Store) releaseUnique(ns *namespace, e *entry) {
	if !e.t.UniqueUntilSuccess || e.t.UniqueKey == "" {
		return
	}
	if h, ok := ns.unique[e.t.UniqueKey]; ok && h.id == e.t.ID {
		delete(ns.unique, e.t.UniqueKey)
		s.write(op{key: nameKey(kUnique, ns.name, e.t.UniqueKey)})
	}
}

// Sweep implements store.Maintainer.
func (s *Store) Sweep(ctx context.Context, p store.SweepParams) (store.SweepResult, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = 10000
	}
	s.mu.Lock()
	r, err := s.sweepLocked(ctx, limit)
	b := s.barrier()
	s.mu.Unlock()
	if err != nil {
		return r, err
	}
	// Wait for the changes, so that a reader that goes to disk for a task
	// no longer in memory does not find it there after Sweep returned.
	if r.Total() > 0 {
		if err := b.wait(); err != nil {
			return r, fmt.Errorf("embedded: sweep: %w", err)
		}
	}
	return r, nil
}

func (s *Store) sweepLocked(ctx context.Context, limit int) (store.SweepResult, error) {
	var r store.SweepResult
	if err := s.canWrite(ctx, 0); err != nil {
		return r, err
	}
	now := s.now()
	for _, ns := range s.nss {
		r.Promoted += s.promote(ns, now, limit)
	}
	// Expired unique keys, from the index by expiry: nothing to expire
	// costs nothing, however many keys are held.
	for n := 0; len(s.uniqueExp) > 0 && s.uniqueExp[0].at.Compare(now) <= 0 && n < limit; {
		it := heap.Pop(&s.uniqueExp).(timedItem)
		ns := s.nss[it.ns]
		if ns == nil {
			continue
		}
		if h, ok := ns.unique[it.id]; !ok || !h.until.Equal(it.at) {
			continue // stale: released on success, or taken again since
		}
		n++
		delete(ns.unique, it.id)
		s.write(op{key: nameKey(kUnique, ns.name, it.id)})
	}
	// Expired leases.
	for n := 0; n < limit; n++ {
		e := s.leases.peek()
		if e == nil || e.t.LeaseExpiresAt.After(now) {
			break
		}
		s.leases.pop()
		ns := s.nss[e.t.Namespace]
		q := ns.queue(e.t.Queue)
		q.counts[store.StateActive]--
		e.t.LeaseID = 0
		e.t.LeaseExpiresAt = time.Time{}
		switch {
		case e.t.CancelRequested:
			e.t.LastError = "cancelled (lease expired)"
			e.t.AddError(now, e.t.LastError)
			s.changed(ns, e, store.ChangeLeaseLost, store.StateCancelled, now, "")
			s.finish(ns, e, store.StateCancelled, now)
			r.Cancelled++
		case e.t.Attempt > e.t.MaxRetries:
			e.t.LastError = fmt.Sprintf("lease expired on attempt %d of %d (worker lost)", e.t.Attempt, e.t.MaxRetries+1)
			e.t.AddError(now, e.t.LastError)
			s.changed(ns, e, store.ChangeLeaseLost, store.StateDead, now, "")
			s.finish(ns, e, store.StateDead, now)
			r.Dead++
		default:
			e.t.LastError = fmt.Sprintf("lease expired on attempt %d (worker lost)", e.t.Attempt)
			e.t.AddError(now, e.t.LastError)
			e.t.State = store.StatePending
			q.counts[store.StatePending]++
			s.stage(e)
			s.changed(ns, e, store.ChangeLeaseLost, store.StatePending, now, "")
			r.Recovered++
		}
		s.putTask(e)
		if e.t.State.Terminal() {
			s.evict = append(s.evict, timedItem{ns: ns.name, id: e.t.ID, seq: e.gen, e: e})
		}
	}
	// Retention, from the expiry index by time.
	for _, ns := range s.nss {
		if r.Deleted >= limit {
			break
		}
		if err := s.sweepExpired(ns, now, limit, &r); err != nil {
			return r, fmt.Errorf("embedded: sweep: %w", err)
		}
	}
	return r, nil
}

// sweepExpired deletes the finished tasks of ns whose retention ended,
// reading the expiry index from its start, until r.Deleted reaches limit.
// A finished member of a flow is kept until the later of its own expiry
// and its flow's (flowExpiry): its index key moves to that time; a member
// of a flow still open is kept, and looked at again by the next sweep.
// The caller holds s.mu.
func (s *Store) sweepExpired(ns *namespace, now time.Time, limit int, r *store.SweepResult) error {
	type due struct {
		key []byte
		id  string
	}
	var ds []due
	var recs [][]byte
	s.d.mu.RLock()
	err := s.d.eng.scan(nsPrefix(kExpiry, ns.name), nil, false, func(k, v []byte) bool {
		if keyTime(k).After(now) {
			return false
		}
		ds = append(ds, due{key: bytes.Clone(k), id: string(v)})
		return len(ds) < 2*limit
	})
	if err == nil && len(ds) > 0 {
		keys := make([][]byte, len(ds))
		for i, d := range ds {
			keys[i] = seqKey(kTask, ns.name, keySeq(d.key))
		}
		recs, err = s.d.eng.getMany(keys)
	}
	s.d.mu.RUnlock()
	if err != nil {
		return err
	}
	for i, d := range ds {
		if r.Deleted >= limit {
			break
		}
		seq := keySeq(d.key)
		if s.gone[goneKey{ns: ns.name, seq: seq}] != 0 {
			continue
		}
		var t *store.Task
		var payKey bool
		e := ns.tasks[d.id]
		if e != nil && e.seq == seq {
			t, payKey = &e.t, e.payKey
		} else {
			e = nil
			if recs[i] != nil {
				t = &store.Task{Namespace: ns.name}
				if _, err := record.Decode(recs[i], t); err != nil {
					return fmt.Errorf("task record %d of namespace %q: %w", seq, ns.name, err)
				}
				payKey = t.Payload == nil
			}
		}
		if e != nil && !t.State.Terminal() {
			continue // its write, queued, deletes the key
		}
		at := keyTime(d.key)
		fe := s.flowExpiry(ns.name, d.id)
		valid := t != nil && t.State.Terminal() && t.ID == d.id &&
			(bytes.Equal(d.key, expiryKey(ns.name, t.ExpiresAt, seq)) || at.Equal(fe) || (e != nil && bytes.Equal(d.key, e.ikey)))
		if !valid {
			s.write(op{key: d.key}) // left by a change made since
			continue
		}
		if s.flowOpen(ns.name, d.id) {
			continue
		}
		exp := t.ExpiresAt
		if fe.After(exp) {
			exp = fe
		}
		if exp.After(now) {
			nk := expiryKey(ns.name, exp, seq)
			s.write(op{key: d.key}, op{key: nk, val: []byte(d.id)})
			if e != nil {
				e.ikey = nk
			}
			continue
		}
		if e != nil {
			delete(ns.tasks, d.id)
		}
		ns.queue(t.Queue).counts[t.State]--
		s.deleteKeys(ns.name, d.id, seq, d.key, payKey)
		r.Deleted++
	}
	return nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// norm strips the monotonic reading and location, so that a time compares
// equal to itself after a round trip through the disk.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Round(0).UTC()
}

func errorsJoin(a, b error) error {
	if a == nil {
		return b
	}
	return a
}

var _ store.Meta = (*Store)(nil)

// MetaGet implements store.Meta.
func (s *Store) MetaGet(ctx context.Context, p store.MetaGetParams) (store.MetaGetResult, error) {
	if err := store.CheckMetaKey(p.Namespace, p.Key); err != nil {
		return store.MetaGetResult{}, fmt.Errorf("embedded: meta get: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.MetaGetResult{}, err
	}
	v, err := s.metaGetLocked(p.Namespace, p.Key)
	if err != nil {
		return store.MetaGetResult{}, fmt.Errorf("embedded: meta get: %w", err)
	}
	return store.MetaGetResult{Value: v, Found: v != nil}, nil
}

// metaGetLocked reads a meta record; writes not yet committed are seen
// because the store waits for every meta write before returning (and holds
// the lock while it reads), so the engine is current.
func (s *Store) metaGetLocked(ns, key string) ([]byte, error) {
	if v, ok := s.metaPending[metaKey(ns, key)]; ok {
		return v, nil
	}
	return s.d.get(nameKey(kMeta, ns, key))
}

func metaKey(ns, key string) string { return ns + "\x00" + key }

// MetaPut implements store.Meta.
func (s *Store) MetaPut(ctx context.Context, p store.MetaPutParams) (store.MetaPutResult, error) {
	if err := store.CheckMetaPut(p); err != nil {
		return store.MetaPutResult{}, fmt.Errorf("embedded: meta put: %w", err)
	}
	val := p.Value
	if val == nil {
		val = []byte{}
	}
	s.mu.Lock()
	if err := s.canWrite(ctx, 0); err != nil {
		s.mu.Unlock()
		return store.MetaPutResult{}, err
	}
	// The condition is checked and the write queued under one hold of the
	// lock, and reads under the lock see queued writes: the check and the
	// write are one step for every other caller.
	if p.IfAbsent || p.IfValue != nil {
		v, err := s.metaGetLocked(p.Namespace, p.Key)
		if err != nil {
			s.mu.Unlock()
			return store.MetaPutResult{}, fmt.Errorf("embedded: meta put: %w", err)
		}
		if (p.IfAbsent && v != nil) || (p.IfValue != nil && (v == nil || !bytes.Equal(v, p.IfValue))) {
			s.mu.Unlock()
			return store.MetaPutResult{}, nil
		}
	}
	b, gen := s.metaWrite(p.Namespace, p.Key, bytes.Clone(val)) // non-nil: nil would delete
	s.mu.Unlock()
	if err := s.metaWait(b, gen, p.Namespace, p.Key); err != nil {
		return store.MetaPutResult{}, fmt.Errorf("embedded: meta put: %w", err)
	}
	return store.MetaPutResult{Stored: true}, nil
}

// MetaDelete implements store.Meta.
func (s *Store) MetaDelete(ctx context.Context, p store.MetaDeleteParams) (store.MetaDeleteResult, error) {
	if err := store.CheckMetaKey(p.Namespace, p.Key); err != nil {
		return store.MetaDeleteResult{}, fmt.Errorf("embedded: meta delete: %w", err)
	}
	s.mu.Lock()
	if err := s.canWrite(ctx, 0); err != nil {
		s.mu.Unlock()
		return store.MetaDeleteResult{}, err
	}
	v, err := s.metaGetLocked(p.Namespace, p.Key)
	if err != nil {
		s.mu.Unlock()
		return store.MetaDeleteResult{}, fmt.Errorf("embedded: meta delete: %w", err)
	}
	if v == nil || (p.IfValue != nil && !bytes.Equal(v, p.IfValue)) {
		s.mu.Unlock()
		return store.MetaDeleteResult{}, nil
	}
	b, gen := s.metaWrite(p.Namespace, p.Key, nil)
	s.mu.Unlock()
	if err := s.metaWait(b, gen, p.Namespace, p.Key); err != nil {
		return store.MetaDeleteResult{}, fmt.Errorf("embedded: meta delete: %w", err)
	}
	return store.MetaDeleteResult{Deleted: true}, nil
}

// metaWrite queues a meta write (nil deletes) and remembers it until it is
// committed, so that reads under the lock see it at once.
func (s *Store) metaWrite(ns, key string, val []byte) (*batch, uint64) {
	k := metaKey(ns, key)
	s.metaPending[k] = val
	// Generations come from one counter that never goes back, not from
	// a per-key count: metaWait forgets a key's count, and a count that
	// restarted at 1 would let the waiter of an older write drop a newer
	// pending one, and a read or compare-and-set see a stale value.
	s.metaSeq++
	s.metaGen[k] = s.metaSeq
	return s.write(op{key: nameKey(kMeta, ns, key), val: val}), s.metaSeq
}

// metaWait waits for a meta write and forgets the pending copy once the
// engine has it (unless a later write replaced it meanwhile).
func (s *Store) metaWait(b *batch, gen uint64, ns, key string) error {
	k := metaKey(ns, key)
	err := b.wait()
	s.mu.Lock()
	if s.metaGen[k] == gen && err == nil {
		delete(s.metaPending, k)
		delete(s.metaGen, k)
	}
	s.mu.Unlock()
	return err
}

// MetaList implements store.Meta.
func (s *Store) MetaList(ctx context.Context, p store.MetaListParams) (store.MetaListResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.MetaListResult{}, fmt.Errorf("embedded: meta list: %w", err)
	}
	s.mu.Lock()
	if err := s.usable(ctx); err != nil {
		s.mu.Unlock()
		return store.MetaListResult{}, err
	}
	// MetaPut and MetaDelete return once their write is committed, and
	// until then it is in metaPending: with none pending, the engine has
	// every meta write made before this call. Waiting then would wait for
	// the commit in flight, its sync included, for writes that are not
	// meta records (a hosted task's log is opened with a MetaList, and
	// that wait held its slot idle for a sync).
	var b *batch
	if len(s.metaPending) > 0 {
		b = s.barrier()
	}
	s.mu.Unlock()
	if b != nil {
		_ = b.wait() // as in List
	}
	var items []store.MetaItem
	prefix := nameKey(kMeta, p.Namespace, p.Prefix)
	skip := len(nsPrefix(kMeta, p.Namespace))
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	err := s.d.eng.scan(prefix, nil, false, func(k, v []byte) bool {
		items = append(items, store.MetaItem{Key: string(k[skip:]), Value: append([]byte(nil), v...)})
		return true
	})
	if err != nil {
		return store.MetaListResult{}, fmt.Errorf("embedded: meta list: %w", err)
	}
	return store.MetaListResult{Items: items}, nil
}

// changed records a change of task e in the namespace's change feed, in
// the order the store applies the changes. The caller holds s.mu.
func (s *Store) changed(ns *namespace, e *entry, k store.ChangeKind, st store.State, now time.Time, errMsg string) {
	c := store.Change{Kind: k, Time: now, ID: e.t.ID, Queue: e.t.Queue, Type: e.t.Type, State: st, Attempt: e.t.Attempt, Error: errMsg}
	if k == store.ChangeStarted {
		c.WorkerID = e.t.WorkerID
	}
	s.changes.Add(ns.name, c)
}

// Changes implements store.Feed. The feed lives in memory: it holds the
// last store.ChangeFeedDefault changes of each namespace made since Open,
// and a change is visible there as soon as it is applied (before it is
// on disk).
func (s *Store) Changes(ctx context.Context, p store.ChangesParams) (store.ChangesResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.ChangesResult{}, fmt.Errorf("embedded: changes: %w", err)
	}
	if p.Wait < 0 {
		return store.ChangesResult{}, fmt.Errorf("embedded: changes: wait %s: %w", p.Wait, store.ErrInvalidOption)
	}
	res, err := s.changes.Wait(ctx, p)
	if err != nil {
		return res, fmt.Errorf("embedded: %w", err)
	}
	return res, nil
}
