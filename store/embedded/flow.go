package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/store"
)

var _ store.Flows = (*Store)(nil)

// Keys of flows (see store.Flows):
//
//	f ns 0 flow id           -> JSON flowRecord (immutable)
//	h ns 0 held id           -> JSON heldRecord, while the task is held
//	e ns 0 after id 0 held id -> empty: the held task still waits for after
//	g ns 0 flow id           -> the flow's expiry (unix ns, varint), once
//	                            its last open task ended
//
// The waiting count of a held task is the number of its edge keys; an edge
// is deleted in the same batch as the terminal record of its task, and the
// held record with the released task's first records: each change is one
// write, so a crash leaves either both or neither.
//
// The flow record lists all its tasks (ready and held). A flow is deleted
// with the last of them: the write that deletes a task's id key (Delete,
// or Sweep past its retention) also deletes the record of its flow when no
// other task of the flow is stored (see flowGone). Records written before
// the list existed are kept.
//
// When the last open task of a flow that lists its tasks ends, one g key
// records the flow's expiry (that task's end plus its retention), instead
// of a rewrite of every finished member's record: Sweep keeps a member
// until the later of its own ExpiresAt and its flow's, and Get and List
// report that later time as its ExpiresAt. The g key goes with the flow
// record.
const (
	kFlow    = 'f'
	kHeld    = 'h'
	kEdge    = 'e'
	kFlowEnd = 'g'
)

type flowRecord struct {
	Spec      []byte    `json:"spec"`
	CreatedAt time.Time `json:"created_at"`
	Held      []string  `json:"held"`
	// Tasks lists every task of the flow, ready and held.
	Tasks []string `json:"tasks,omitempty"`
}

type heldRecord struct {
	Flow string          `json:"flow"`
	Task store.TaskInput `json:"task"`
}

// heldTask is a held task in memory.
type heldTask struct {
	in      store.TaskInput
	waiting int
}

// flowIndex holds the flow state of one namespace in memory.
type flowIndex struct {
	held   map[string]*heldTask // held id -> task
	deps   map[string][]string  // task id -> held ids waiting for it
	member map[string]string    // task id -> its flow, while stored
	live   map[string]int       // flow id -> its tasks still stored
	// open counts, per flow that lists its tasks, the tasks not yet in a
	// terminal state (held ones included); tasks lists its tasks. A
	// finished member of a flow with open > 0 is not deleted by Sweep.
	open  map[string]int
	tasks map[string][]string
	// ended is the expiry of each flow whose tasks all ended (kFlowEnd).
	ended map[string]time.Time
	// kept lists, per open flow, its finished members kept in memory
	// after their records were durable (flowKeep), and keptBytes their
	// estimated size.
	kept      map[string][]string
	keptBytes map[string]int64
}

// flowKeepBytes bounds the memory of the finished members of open flows
// that the store keeps (flowKeep), across all flows.
const flowKeepBytes = 64 << 20

// flowKeep keeps e, a finished task whose record is durable, in memory
// while its flow is open (and the memory bound allows), instead of
// evicting it: the steps that wait for it read it (a chord's callback
// reads every member) from memory rather than from the engine. The flow's
// end evicts them (flowEnded). It reports whether it kept e. The caller
// holds s.mu.
func (s *Store) flowKeep(ns *namespace, e *entry) bool {
	fi := s.flows[ns.name]
	if fi == nil {
		return false
	}
	fid, ok := fi.member[e.t.ID]
	if !ok || fi.open[fid] <= 0 {
		return false
	}
	size := int64(256 + len(e.t.ID) + len(e.t.Type) + len(e.t.Queue) + len(e.t.Payload) + len(e.t.Result) + len(e.t.LastError) + len(e.t.ProgressMessage))
	if s.flowKept+size > flowKeepBytes {
		return false
	}
	s.flowKept += size
	fi.keptBytes[fid] += size
	fi.kept[fid] = append(fi.kept[fid], e.t.ID)
	return true
}

// flowUnkeep forgets the members of flow fid of ns kept in memory and
// returns their ids. The caller holds s.mu.
func (s *Store) flowUnkeep(fi *flowIndex, fid string) []string {
	ids := fi.kept[fid]
	s.flowKept -= fi.keptBytes[fid]
	delete(fi.kept, fid)
	delete(fi.keptBytes, fid)
	return ids
}

func (s *Store) flowsOf(ns string) *flowIndex {
	if s.flows == nil {
		s.flows = make(map[string]*flowIndex)
	}
	f := s.flows[ns]
	if f == nil {
		f = &flowIndex{held: make(map[string]*heldTask), deps: make(map[string][]string),
			member: make(map[string]string), live: make(map[string]int),
			open: make(map[string]int), tasks: make(map[string][]string),
			ended: make(map[string]time.Time),
			kept:  make(map[string][]string), keptBytes: make(map[string]int64)}
		s.flows[ns] = f
	}
	return f
}

func edgeKey(ns, after, held string) []byte {
	k := nameKey(kEdge, ns, after)
	k = append(k, 0)
	return append(k, held...)
}

// EnqueueFlow implements store.Flows. It returns once the flow is on disk.
func (s *Store) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	now := s.now()
	if err := p.Validate(s.limits, now); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	need := int64(len(p.Spec))
	for i := range p.Tasks {
		need += int64(len(p.Tasks[i].Payload)) + 256
	}
	for i := range p.Held {
		need += int64(len(p.Held[i].Task.Payload)) + 256
	}
	if err := s.canWrite(ctx, need); err != nil {
		s.mu.Unlock()
		return err
	}
	ns := s.namespace(p.Namespace)
	exists := func(key []byte) (bool, error) {
		v, err := s.d.get(key)
		return v != nil, err
	}
	fi := s.flowsOf(ns.name)
	if ok, err := exists(nameKey(kFlow, ns.name, p.ID)); err != nil || ok {
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("embedded: enqueue flow: %w", err)
		}
		return fmt.Errorf("embedded: enqueue flow %q: %w", p.ID, store.ErrTaskExists)
	}
	ids := make([]string, 0, len(p.Tasks)+len(p.Held))
	for i := range p.Tasks {
		ids = append(ids, p.Tasks[i].ID)
	}
	for i := range p.Held {
		ids = append(ids, p.Held[i].Task.ID)
	}
	// The ids are checked in one batched read: a chord has many.
	idKeys := make([][]byte, len(ids))
	for i, id := range ids {
		idKeys[i] = nameKey(kID, ns.name, id)
	}
	s.d.mu.RLock()
	stored, err := s.d.eng.getMany(idKeys)
	s.d.mu.RUnlock()
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	for i, id := range ids {
		if stored[i] != nil || ns.tasks[id] != nil || fi.held[id] != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow %q: task %q: %w", p.ID, id, store.ErrTaskExists)
		}
	}
	rec := flowRecord{Spec: p.Spec, CreatedAt: now, Held: make([]string, len(p.Held)), Tasks: ids}
	for _, id := range ids {
		fi.member[id] = p.ID
	}
	fi.live[p.ID] = len(ids)
	fi.open[p.ID] = len(ids)
	fi.tasks[p.ID] = ids
	nops := 1 + 3*len(p.Tasks)
	for i := range p.Held {
		nops += 1 + len(p.Held[i].After)
	}
	ops := make([]op, 0, nops)
	for i := range p.Held {
		h := &p.Held[i]
		rec.Held[i] = h.Task.ID
		after := h.UniqueAfter()
		in := h.Task
		in.Payload = cloneBytes(in.Payload)
		fi.held[in.ID] = &heldTask{in: in, waiting: len(after)}
		v, err := json.Marshal(heldRecord{Flow: p.ID, Task: in})
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow: %w", err)
		}
		ops = append(ops, op{key: nameKey(kHeld, ns.name, in.ID), val: v})
		for _, a := range after {
			fi.deps[a] = append(fi.deps[a], in.ID)
			ops = append(ops, op{key: edgeKey(ns.name, a, in.ID), val: []byte{}})
		}
	}
	v, err := json.Marshal(rec)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	ops = append(ops, op{key: nameKey(kFlow, ns.name, p.ID), val: v})
	for i := range p.Tasks {
		ops = s.addTaskLocked(ops, ns, &p.Tasks[i], now)
	}
	b := s.write(ops...)
	s.mu.Unlock()
	if err := b.wait(); err != nil {
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	return nil
}

// addTaskLocked creates the task in (already validated, without a unique
// key) in memory and returns ops with the records to write appended. The
// caller holds s.mu.
func (s *Store) addTaskLocked(ops []op, ns *namespace, in *store.TaskInput, now time.Time) []op {
	s.seq++
	e := &entry{seq: s.seq, idx: -1, t: store.Task{
		Namespace: ns.name, ID: in.ID, Type: in.Type, Queue: in.Queue,
		Payload: cloneBytes(in.Payload), Priority: in.Priority, MaxRetries: in.MaxRetries,
		Timeout: in.Timeout, Deadline: norm(in.Deadline),
		Retention: in.Retention, TraceParent: in.TraceParent, CreatedAt: now, RunAt: norm(in.RunAt),
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
		s.unassigned = append(s.unassigned, e) // its gen, for promote
	} else {
		if e.t.RunAt.IsZero() {
			e.t.RunAt = now
		}
		e.t.State = store.StatePending
		s.stage(e) // leasable once the caller's write is durable
	}
	q.counts[e.t.State]++
	ns.tasks[e.t.ID] = e
	s.changed(ns, e, store.ChangeEnqueued, e.t.State, now, "")
	ops = append(ops,
		op{key: seqKey(kPayload, ns.name, e.seq), val: e.t.Payload},
		op{key: nameKey(kID, ns.name, e.t.ID), val: binary.BigEndian.AppendUint64(nil, e.seq)},
	)
	return taskOps(ops, e)
}

// flowDone counts task id of ns as finished for the held tasks that wait
// for it and releases those that wait for nothing more. It queues the
// records to write in s.flowOps, which the caller's next write takes (in
// the same batch as the task's own record). The caller holds s.mu.
func (s *Store) flowDone(ns *namespace, id string, now time.Time) {
	fi := s.flows[ns.name]
	if fi == nil {
		return
	}
	hs, ok := fi.deps[id]
	if !ok {
		return
	}
	delete(fi.deps, id)
	for _, hid := range hs {
		s.flowOps = append(s.flowOps, op{key: edgeKey(ns.name, id, hid)})
		h := fi.held[hid]
		if h == nil {
			continue
		}
		h.waiting--
		if h.waiting > 0 {
			continue
		}
		delete(fi.held, hid)
		s.flowOps = append(s.flowOps, op{key: nameKey(kHeld, ns.name, hid)})
		s.flowOps = s.addTaskLocked(s.flowOps, ns, &h.in, now)
	}
}

// flowEnded notes that task id of ns reached a terminal state, or was
// deleted before it did. When it was the last open task of its flow, the
// flow's expiry becomes at least now+ret: one kFlowEnd write in s.flowOps
// (the caller's batch), which Sweep, Get and List apply to every member
// (see flowExpiry): Sweep moves a member's expiry index key there. The
// caller holds s.mu.
func (s *Store) flowEnded(ns *namespace, id string, ret time.Duration, now time.Time) {
	fi := s.flows[ns.name]
	if fi == nil {
		return
	}
	fid, ok := fi.member[id]
	if !ok {
		return
	}
	n, ok := fi.open[fid]
	if !ok {
		return
	}
	if n > 1 {
		fi.open[fid] = n - 1
		return
	}
	delete(fi.open, fid)
	exp := norm(now.Add(ret))
	if old, ok := fi.ended[fid]; ok && old.After(exp) {
		exp = old // a retried member ended earlier runs raised it already
	}
	fi.ended[fid] = exp
	s.flowOps = append(s.flowOps, op{key: nameKey(kFlowEnd, ns.name, fid), val: binary.AppendVarint(nil, exp.UnixNano())})
	// The members kept in memory go once their latest records are
	// durable: those written since they were kept (a retried member)
	// may be in the current batch.
	kept := s.flowUnkeep(fi, fid)
	if len(kept) == 0 {
		return
	}
	s.c.mu.Lock()
	gen := s.c.cur.gen + 1
	s.c.mu.Unlock()
	for _, m := range kept {
		if e := ns.tasks[m]; e != nil && e.t.State.Terminal() {
			e.gen = max(e.gen, gen)
			s.evict = append(s.evict, timedItem{ns: ns.name, id: m, seq: e.gen, e: e})
		}
	}
}

// flowExpiry returns the expiry of the flow of task id of ns once all its
// tasks ended (zero otherwise): a finished member is kept until the later
// of it and its own ExpiresAt. The caller holds s.mu.
func (s *Store) flowExpiry(ns, id string) time.Time {
	fi := s.flows[ns]
	if fi == nil || len(fi.ended) == 0 {
		return time.Time{}
	}
	fid, ok := fi.member[id]
	if !ok {
		return time.Time{}
	}
	if _, open := fi.open[fid]; open {
		return time.Time{}
	}
	return fi.ended[fid]
}

// raiseExpiry sets the ExpiresAt of each finished task of ts (of namespace
// ns) to its flow's expiry when that is later (see flowExpiry). It takes
// s.mu.
func (s *Store) raiseExpiry(ns string, ts []*store.Task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi := s.flows[ns]; fi == nil || len(fi.ended) == 0 {
		return
	}
	for _, t := range ts {
		if t == nil || !t.State.Terminal() {
			continue
		}
		if fe := s.flowExpiry(ns, t.ID); fe.After(t.ExpiresAt) {
			t.ExpiresAt = fe
		}
	}
}

// flowOpen reports whether task id of ns is a member of a flow not
// finished: Sweep keeps it. The caller holds s.mu.
func (s *Store) flowOpen(ns, id string) bool {
	fi := s.flows[ns]
	if fi == nil {
		return false
	}
	fid, ok := fi.member[id]
	return ok && fi.open[fid] > 0
}

// flowReopened notes that finished task id of ns runs again (Retry).
func (s *Store) flowReopened(ns string, id string) {
	fi := s.flows[ns]
	if fi == nil {
		return
	}
	if fid, ok := fi.member[id]; ok && fi.tasks[fid] != nil {
		fi.open[fid]++
	}
}

// flowGone returns the writes that delete the flows whose last stored task
// ops delete (a delete of its id key), and forgets those tasks. writeTask
// adds them to the same batch. The caller holds s.mu.
func (s *Store) flowGone(ops []op) []op {
	var out []op
	for _, o := range ops {
		if o.val != nil || len(o.key) == 0 || o.key[0] != kID {
			continue
		}
		nsName, rest, ok := splitKey(o.key)
		if !ok {
			continue
		}
		fi := s.flows[nsName]
		if fi == nil {
			continue
		}
		fid, ok := fi.member[string(rest)]
		if !ok {
			continue
		}
		delete(fi.member, string(rest))
		if fi.live[fid]--; fi.live[fid] <= 0 {
			delete(fi.live, fid)
			delete(fi.open, fid)
			delete(fi.tasks, fid)
			delete(fi.ended, fid)
			s.flowUnkeep(fi, fid)
			out = append(out, op{key: nameKey(kFlow, nsName, fid)}, op{key: nameKey(kFlowEnd, nsName, fid)})
		}
	}
	return out
}

// GetFlow implements store.Flows.
func (s *Store) GetFlow(ctx context.Context, p store.FlowGetParams) (*store.Flow, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return nil, fmt.Errorf("embedded: get flow: %w", err)
	}
	if err := store.CheckName("flow id", p.ID); err != nil {
		return nil, fmt.Errorf("embedded: get flow: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	v, err := s.d.get(nameKey(kFlow, p.Namespace, p.ID))
	if err != nil {
		return nil, fmt.Errorf("embedded: get flow: %w", err)
	}
	if v == nil {
		return nil, fmt.Errorf("embedded: flow %q: %w", p.ID, store.ErrNotFound)
	}
	var rec flowRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("embedded: flow %q: %w: %w", p.ID, errCorrupt, err)
	}
	f := &store.Flow{ID: p.ID, Spec: rec.Spec, CreatedAt: rec.CreatedAt.UTC(), Held: []string{}}
	if p.WithoutSpec {
		f.Spec = nil
	}
	fi := s.flows[p.Namespace]
	for _, h := range rec.Held {
		if fi != nil && fi.held[h] != nil {
			f.Held = append(f.Held, h)
		}
	}
	return f, nil
}

// ListFlows implements store.Flows: a scan of the flow records.
func (s *Store) ListFlows(ctx context.Context, p store.FlowListParams) (store.FlowListResult, error) {
	limit, err := store.CheckFlowList(p)
	if err != nil {
		return store.FlowListResult{}, fmt.Errorf("embedded: list flows: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return store.FlowListResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(ctx); err != nil {
		return store.FlowListResult{}, err
	}
	prefix := nsPrefix(kFlow, p.Namespace)
	var start []byte
	if p.After != "" {
		start = append(nameKey(kFlow, p.Namespace, p.After), 0)
	}
	fi := s.flows[p.Namespace]
	out := store.FlowListResult{Flows: []*store.Flow{}}
	var derr error
	s.d.mu.RLock()
	err = s.d.eng.scan(prefix, start, false, func(k, v []byte) bool {
		if len(out.Flows) == limit {
			out.NextCursor = out.Flows[limit-1].ID
			return false
		}
		var rec flowRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			derr = fmt.Errorf("%w: flow record %q: %w", errCorrupt, k, err)
			return false
		}
		f := &store.Flow{ID: string(k[len(prefix):]), Spec: rec.Spec, CreatedAt: rec.CreatedAt.UTC(), Held: []string{}}
		for _, h := range rec.Held {
			if fi != nil && fi.held[h] != nil {
				f.Held = append(f.Held, h)
			}
		}
		out.Flows = append(out.Flows, f)
		return true
	})
	s.d.mu.RUnlock()
	if err = errors.Join(err, derr); err != nil {
		return store.FlowListResult{}, fmt.Errorf("embedded: list flows: %w", err)
	}
	return out, nil
}

// loadFlows rebuilds the flow indexes from the engine (load's last step).
func (s *Store) loadFlows(eng engine) error {
	s.flows, s.flowKept = nil, 0
	var derr error
	err := eng.scan([]byte{kHeld}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		var rec heldRecord
		if !ok {
			derr = fmt.Errorf("%w: bad held key %q", errCorrupt, k)
			return false
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			derr = fmt.Errorf("%w: held task %q of namespace %q: %w", errCorrupt, rest, nsName, err)
			return false
		}
		s.flowsOf(nsName).held[string(rest)] = &heldTask{in: rec.Task}
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return err
	}
	err = eng.scan([]byte{kEdge}, nil, false, func(k, _ []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok {
			return true
		}
		for i := range rest {
			if rest[i] == 0 {
				after, hid := string(rest[:i]), string(rest[i+1:])
				fi := s.flowsOf(nsName)
				if h := fi.held[hid]; h != nil {
					h.waiting++
					fi.deps[after] = append(fi.deps[after], hid)
				}
				break
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	return s.loadFlowMembers(eng)
}

// loadFlowMembers counts the stored tasks of every flow record that lists
// its tasks.
func (s *Store) loadFlowMembers(eng engine) error {
	type flowTasks struct {
		ns, id string
		tasks  []string
	}
	var fs []flowTasks
	var derr error
	err := eng.scan([]byte{kFlow}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		if !ok {
			derr = fmt.Errorf("%w: bad flow key %q", errCorrupt, k)
			return false
		}
		var rec struct {
			Tasks []string `json:"tasks"`
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			derr = fmt.Errorf("%w: flow %q of namespace %q: %w", errCorrupt, rest, nsName, err)
			return false
		}
		if len(rec.Tasks) > 0 {
			fs = append(fs, flowTasks{ns: nsName, id: string(rest), tasks: rec.Tasks})
		}
		return true
	})
	if err = errors.Join(err, derr); err != nil {
		return err
	}
	for _, f := range fs {
		fi := s.flowsOf(f.ns)
		fi.tasks[f.id] = f.tasks
		open := 0
		for _, id := range f.tasks {
			stored := fi.held[id] != nil
			live := stored
			if !stored {
				var err error
				if stored, live, err = storedLive(eng, f.ns, id); err != nil {
					return err
				}
			}
			if live {
				open++ // held, or stored and not terminal
			}
			if stored {
				fi.member[id] = f.id
				fi.live[f.id]++
			}
		}
		if open > 0 {
			fi.open[f.id] = open
		}
	}
	var derr2 error
	err = eng.scan([]byte{kFlowEnd}, nil, false, func(k, v []byte) bool {
		nsName, rest, ok := splitKey(k)
		n, w := binary.Varint(v)
		if !ok || w <= 0 {
			derr2 = fmt.Errorf("%w: bad flow end key %q", errCorrupt, k)
			return false
		}
		s.flowsOf(nsName).ended[string(rest)] = time.Unix(0, n).UTC()
		return true
	})
	return errors.Join(err, derr2)
}

// flowKinds lists the key kinds of flows, for Check.
var flowKinds = []byte{kFlow, kHeld, kEdge, kFlowEnd}
