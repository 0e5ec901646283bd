package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/store"
)

var _ store.Flows = (*Store)(nil)

// Keys of flows (see store.Flows):
//
//	f ns 0 flow id           -> JSON flowRecord (immutable)
//	h ns 0 held id           -> JSON heldRecord, while the task is held
//	c ns 0 task id           -> empty: the task, a flow member retried
//	                            after it ended, was counted already
//	g ns 0 flow id           -> the flow's expiry (unix ns, varint), once
//	                            its last open task ended
//	e ns 0 after id 0 held id -> empty: the held task still waits for after
//	                            (held records written before they listed
//	                            the tasks they wait for)
//	w ns 0 flow id 0 first     -> JSON partRecord: ready tasks of the flow
//	                            not written yet (a flow written in parts;
//	                            first: the index of the part's first task
//	                            among them, in decimal)
//
// A flow with more than flowPartTasks ready tasks is written in parts, so
// that its first tasks run while the rest are written. The first batch is
// the commit point: the flow record, its held records, its first
// flowPartTasks ready tasks, and one w record per further part holding
// that part's task inputs. Each later batch writes one part's tasks and
// deletes its w record. The tasks of all parts are in memory from the
// start (a part's become leasable when its batch is durable), and every
// later write of one of them is queued after its part's, so on disk a
// task's records never precede its creation. After a crash between the
// batches, Open writes the tasks of the w records left (recoverParts)
// before it reads anything else.
//
// A held record lists the tasks it waits for (After). How many it still
// waits for is not written: it is the number of those tasks that are held
// or stored and not in a terminal state, which the store counts down in
// memory as they end (flowDone) and counts again when it opens (loadFlows).
// The held record is deleted with the released task's first records, in
// the batch of the terminal record of the last task it waited for, so a
// crash leaves either both or neither. A member that an admin Retry runs
// again after it ended (and was counted) is not waited for again: the
// retry's batch writes its c key, which the count at open skips. Held
// records written before After existed keep their edge keys, one per task
// waited for, each deleted in the batch of that task's terminal record.
//
// The flow record lists all its tasks (ready and held). A flow is deleted
// with the last of them: the write that deletes a task's id key (Delete,
// or Sweep past its retention) also deletes the record of its flow when no
// other task of the flow is stored (see flowGone). Records written before
// the list existed are kept. The lists of ids (the flow's tasks, its held
// tasks, a held task's After) are packed (packIDs): each id written as
// what it adds to the one before it.
//
// When the last open task of a flow that lists its tasks ends, one g key
// records the flow's expiry (that task's end plus its retention), instead
// of a rewrite of every finished member's record: Sweep keeps a member
// until the later of its own ExpiresAt and its flow's, and Get and List
// report that later time as its ExpiresAt. The g key goes with the flow
// record.
const (
	kFlowPart = 'w'
	kFlow     = 'f'
	kHeld     = 'h'
	kEdge     = 'e'
	kFlowEnd  = 'g'
	kCounted  = 'c'
)

type flowRecord struct {
	Spec      []byte    `json:"spec"`
	CreatedAt time.Time `json:"created_at"`
	// Held lists the held tasks, Tasks every task of the flow, ready and
	// held; records written before the lists were packed. HeldP and TasksP
	// are the same lists, packed (packIDs).
	Held   []string `json:"held,omitempty"`
	Tasks  []string `json:"tasks,omitempty"`
	HeldP  string   `json:"hp,omitempty"`
	TasksP string   `json:"tp,omitempty"`
}

// held returns the held ids of r, in either form.
func (r *flowRecord) held() ([]string, error) {
	if r.HeldP != "" {
		return unpackIDs(r.HeldP)
	}
	return r.Held, nil
}

type heldRecord struct {
	Flow string          `json:"flow"`
	Task store.TaskInput `json:"task"`
	// After is the packed list of the tasks it waits for (packIDs);
	// empty in records written before, whose waits are edge keys.
	After string `json:"after,omitempty"`
}

// heldTask is a held task in memory.
type heldTask struct {
	in      store.TaskInput
	waiting int
	// counted is set on a held task enqueued by this process: ok and
	// noResult then count the tasks it waited for that succeeded, and
	// succeeded without a result (store.Task.Upstream of its lease). One
	// loaded by Open has no such counts.
	counted      bool
	ok, noResult int
	// edges marks a task held by a record written before After: each
	// task it waits for has an edge key, deleted when that task ends.
	edges bool
}

// packIDs returns ids as one string: each id is the number of leading
// bytes it shares with the one before it, a slash, and the rest of it,
// the ids separated by spaces (neither character is allowed in an id). A
// chord's member ids (the flow's id, a dot and a number) take a few bytes
// each.
func packIDs(ids []string) string {
	var b []byte
	prev := ""
	for i, id := range ids {
		if i > 0 {
			b = append(b, ' ')
		}
		n := 0
		for n < len(prev) && n < len(id) && prev[n] == id[n] {
			n++
		}
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, '/')
		b = append(b, id[n:]...)
		prev = id
	}
	return string(b)
}

// unpackIDs reverses packIDs.
func unpackIDs(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	out := make([]string, 0, strings.Count(p, " ")+1)
	prev := ""
	for len(p) > 0 {
		e, rest, _ := strings.Cut(p, " ")
		p = rest
		ns, suffix, ok := strings.Cut(e, "/")
		n, err := strconv.Atoi(ns)
		if !ok || err != nil || n < 0 || n > len(prev) {
			return nil, fmt.Errorf("%w: packed id list: bad entry %q", errCorrupt, e)
		}
		id := prev[:n] + suffix
		out = append(out, id)
		prev = id
	}
	return out, nil
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
	// counted holds the flow members with a c key: retried after they
	// ended, they are not waited for again.
	counted map[string]bool
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
	if e.flowKnown && e.flow == "" {
		return false
	}
	fi := s.flows[ns.name]
	if fi == nil {
		return false
	}
	fid, ok := fi.memberOf(e)
	if !ok || fi.open[fid] <= 0 {
		return false
	}
	size := int64(256 + len(e.t.ID) + len(e.t.Type) + len(e.t.Queue) + len(e.t.Payload) + len(e.t.Result) + len(e.t.LastError) + len(e.t.ProgressMessage))
	if s.flowKept+size > flowKeepBytes {
		return false
	}
	s.flowKept += size
	fi.keptBytes[fid] += size
	kept := fi.kept[fid]
	if kept == nil {
		kept = make([]string, 0, len(fi.tasks[fid]))
	}
	fi.kept[fid] = append(kept, e.t.ID)
	return true
}

// memberOf returns the flow of entry e, if it is a flow's member, and
// caches it in e. The caller holds s.mu.
func (fi *flowIndex) memberOf(e *entry) (string, bool) {
	if !e.flowKnown {
		e.flow, e.flowKnown = fi.member[e.t.ID], true
	}
	return e.flow, e.flow != ""
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
			kept:  make(map[string][]string), keptBytes: make(map[string]int64),
			counted: make(map[string]bool)}
		s.flows[ns] = f
	}
	return f
}

func edgeKey(ns, after, held string) []byte {
	k := nameKey(kEdge, ns, after)
	k = append(k, 0)
	return append(k, held...)
}

// EnqueueFlow implements store.Flows. It returns once the flow is on disk:
// for a flow written in parts (see kFlowPart), once its commit point is,
// the batches of its later parts queued behind it.
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
	// The ids are checked in one batched read (a chord has many), but for
	// those made for this call (store.TaskInput.NewID): no stored task
	// can have them.
	var idKeys [][]byte
	var checked []int
	for i, id := range ids {
		if !flowInput(&p, i).NewID {
			idKeys = append(idKeys, nameKey(kID, ns.name, id))
			checked = append(checked, i)
		}
	}
	stored := make([][]byte, len(ids))
	if len(idKeys) > 0 {
		s.d.mu.RLock()
		got, err := s.d.eng.getMany(idKeys)
		s.d.mu.RUnlock()
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow: %w", err)
		}
		for j, i := range checked {
			stored[i] = got[j]
		}
	}
	for i, id := range ids {
		if stored[i] != nil || ns.tasks[id] != nil || fi.held[id] != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow %q: task %q: %w", p.ID, id, store.ErrTaskExists)
		}
	}
	heldIDs := make([]string, len(p.Held))
	rec := flowRecord{Spec: p.Spec, CreatedAt: now, TasksP: packIDs(ids)}
	for _, id := range ids {
		fi.member[id] = p.ID
	}
	fi.live[p.ID] = len(ids)
	fi.open[p.ID] = len(ids)
	fi.tasks[p.ID] = ids
	first := min(len(p.Tasks), flowPartTasks)
	ops := make([]op, 0, 4*first+len(p.Held)+2+(len(p.Tasks)-first+flowPartTasks-1)/flowPartTasks)
	for i := range p.Held {
		h := &p.Held[i]
		heldIDs[i] = h.Task.ID
		after := h.UniqueAfter()
		in := h.Task
		in.Payload = cloneBytes(in.Payload)
		fi.held[in.ID] = &heldTask{in: in, waiting: len(after), counted: true}
		v, err := json.Marshal(heldRecord{Flow: p.ID, Task: in, After: packIDs(after)})
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow: %w", err)
		}
		ops = append(ops, op{key: nameKey(kHeld, ns.name, in.ID), val: v})
		// The tasks waited for by this task alone (a chord's members)
		// share one array.
		one := make([]string, len(after))
		for j, a := range after {
			if d := fi.deps[a]; d != nil {
				fi.deps[a] = append(d, in.ID)
			} else {
				one[j] = in.ID
				fi.deps[a] = one[j : j+1 : j+1]
			}
		}
	}
	rec.HeldP = packIDs(heldIDs)
	v, err := json.Marshal(rec)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	ops = append(ops, op{key: nameKey(kFlow, ns.name, p.ID), val: v})
	for from := first; from < len(p.Tasks); from += flowPartTasks {
		v, err := encodePart(p.Tasks[from:min(from+flowPartTasks, len(p.Tasks))], now)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("embedded: enqueue flow: %w", err)
		}
		ops = append(ops, op{key: partKey(ns.name, p.ID, from), val: v})
	}
	for i := range first {
		ops = s.addTaskLocked(ops, ns, &p.Tasks[i], now, p.ID)
	}
	var b *batch
	if first == len(p.Tasks) {
		b = s.write(ops...)
	} else {
		// The commit point is durable with b, sealed so that it commits
		// while the parts are queued; each part is a batch of its own,
		// after it (see kFlowPart).
		b = s.writeSealed(ops)
		for from := first; from < len(p.Tasks); from += flowPartTasks {
			to := min(from+flowPartTasks, len(p.Tasks))
			ops := make([]op, 0, 4*(to-from)+8) // room for the counts (seal)
			for i := from; i < to; i++ {
				ops = s.addTaskLocked(ops, ns, &p.Tasks[i], now, p.ID)
			}
			ops = append(ops, op{key: partKey(ns.name, p.ID, from)})
			s.writeSealed(ops)
		}
	}
	s.mu.Unlock()
	if err := b.wait(); err != nil {
		return fmt.Errorf("embedded: enqueue flow: %w", err)
	}
	return nil
}

// flowPartTasks is the number of ready tasks of each part of a flow
// written in parts (see kFlowPart).
const flowPartTasks = 1000

// partRecord holds the inputs of the tasks of one part of a flow not yet
// written (see kFlowPart): IDs (packed, packIDs), the distinct inputs
// without their ids (Inputs), and which input each task has, as runs
// (Runs: input index, number of tasks; each run follows the one before).
type partRecord struct {
	At     time.Time         `json:"at"`
	IDs    string            `json:"ids"`
	Inputs []store.TaskInput `json:"in"`
	Runs   []int             `json:"runs"`
}

// flowInput returns task i of p, its ready tasks first, then its held ones.
func flowInput(p *store.FlowParams, i int) *store.TaskInput {
	if i < len(p.Tasks) {
		return &p.Tasks[i]
	}
	return &p.Held[i-len(p.Tasks)].Task
}

// partKey is the key of the part of flow fid whose first task is task
// from of the flow's ready tasks.
func partKey(ns, fid string, from int) []byte {
	k := append(nameKey(kFlowPart, ns, fid), 0)
	return strconv.AppendInt(k, int64(from), 10)
}

// sameInput reports whether a and b are equal but for their ids.
func sameInput(a, b *store.TaskInput) bool {
	return a.Type == b.Type && a.Queue == b.Queue && bytes.Equal(a.Payload, b.Payload) && a.Priority == b.Priority &&
		a.MaxRetries == b.MaxRetries && a.Timeout == b.Timeout && a.Deadline.Equal(b.Deadline) && a.RunAt.Equal(b.RunAt) &&
		a.UniqueKey == b.UniqueKey && a.UniqueTTL == b.UniqueTTL && a.UniqueUntilSuccess == b.UniqueUntilSuccess &&
		a.Retention == b.Retention && a.TraceParent == b.TraceParent && a.NewID == b.NewID
}

// encodePart returns the partRecord of tasks, created at now.
func encodePart(tasks []store.TaskInput, now time.Time) ([]byte, error) {
	r := partRecord{At: now}
	ids := make([]string, len(tasks))
	for i := range tasks {
		t := &tasks[i]
		ids[i] = t.ID
		in := -1
		for j := len(r.Inputs) - 1; j >= 0 && j >= len(r.Inputs)-4; j-- {
			if sameInput(&r.Inputs[j], t) {
				in = j
				break
			}
		}
		if in < 0 {
			c := *t
			c.ID = ""
			r.Inputs = append(r.Inputs, c)
			in = len(r.Inputs) - 1
		}
		if n := len(r.Runs); n > 0 && r.Runs[n-2] == in {
			r.Runs[n-1]++
		} else {
			r.Runs = append(r.Runs, in, 1)
		}
	}
	r.IDs = packIDs(ids)
	return json.Marshal(&r)
}

// decodePart returns the task inputs of a partRecord, and its time.
func decodePart(v []byte) ([]store.TaskInput, time.Time, error) {
	var r partRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: flow part: %w", errCorrupt, err)
	}
	ids, err := unpackIDs(r.IDs)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]store.TaskInput, 0, len(ids))
	for i := 0; i+1 < len(r.Runs); i += 2 {
		in, n := r.Runs[i], r.Runs[i+1]
		if in < 0 || in >= len(r.Inputs) || n < 0 || n > len(ids)-len(out) {
			return nil, time.Time{}, fmt.Errorf("%w: flow part: bad run %d×%d", errCorrupt, in, n)
		}
		for range n {
			t := r.Inputs[in]
			t.ID = ids[len(out)]
			out = append(out, t)
		}
	}
	if len(out) != len(ids) {
		return nil, time.Time{}, fmt.Errorf("%w: flow part: %d ids, %d inputs", errCorrupt, len(ids), len(out))
	}
	return out, r.At.UTC(), nil
}

// recoverParts writes the tasks of the parts of flows left unwritten by a
// crash (see kFlowPart), with their queues' counts, in one batch that
// deletes the parts, and returns how many it wrote. It runs at load,
// before anything is read, on a writable engine.
func (s *Store) recoverParts(eng engine) (int, error) {
	type part struct {
		key []byte
		ns  string
		in  []store.TaskInput
		at  time.Time
	}
	var parts []part
	var derr error
	err := eng.scan([]byte{kFlowPart}, nil, false, func(k, v []byte) bool {
		nsName, _, ok := splitKey(k)
		if !ok {
			derr = fmt.Errorf("%w: bad flow part key %q", errCorrupt, k)
			return false
		}
		in, at, err := decodePart(v)
		if err != nil {
			derr = fmt.Errorf("flow part %q: %w", k, err)
			return false
		}
		parts = append(parts, part{key: bytes.Clone(k), ns: nsName, in: in, at: at})
		return true
	})
	if err = errors.Join(err, derr); err != nil || len(parts) == 0 {
		return 0, err
	}
	// The highest sequence number of each namespace involved.
	seqs := make(map[string]uint64)
	for _, p := range parts {
		if _, ok := seqs[p.ns]; ok {
			continue
		}
		var last uint64
		if err := eng.scan(nsPrefix(kTask, p.ns), nil, true, func(k, _ []byte) bool {
			last = keySeq(k)
			return false
		}); err != nil {
			return 0, err
		}
		seqs[p.ns] = last
	}
	counts := make(map[[2]string]*[store.NumStates + 1]int64)
	var ops []op
	n := 0
	for _, p := range parts {
		for i := range p.in {
			in := &p.in[i]
			if v, err := eng.get(nameKey(kID, p.ns, in.ID)); err != nil {
				return 0, err
			} else if v != nil {
				continue // written already (cannot be: the part goes with them)
			}
			seqs[p.ns]++
			e := newEntry(p.ns, in, seqs[p.ns], p.at)
			ops = createOps(ops, e)
			qk := [2]string{p.ns, e.t.Queue}
			c := counts[qk]
			if c == nil {
				c = new([store.NumStates + 1]int64)
				v, err := eng.get(nameKey(kCounts, p.ns, e.t.Queue))
				if err != nil {
					return 0, err
				}
				for j := range c {
					x, w := binary.Varint(v)
					if w <= 0 {
						break // no counts yet
					}
					c[j], v = x, v[w:]
				}
				counts[qk] = c
			}
			c[e.t.State]++
			n++
		}
		ops = append(ops, op{key: p.key})
	}
	for k, c := range counts {
		v := make([]byte, 0, 2*len(c))
		for _, x := range c {
			v = binary.AppendVarint(v, x)
		}
		ops = append(ops, op{key: nameKey(kCounts, k[0], k[1]), val: v})
	}
	if err := eng.apply(ops, true); err != nil {
		return 0, writeError{err}
	}
	return n, nil
}

// addTaskLocked creates the task in (already validated, without a unique
// key) in memory and returns ops with the records to write appended; flow,
// when not empty, is the flow it is a member of. The caller holds s.mu.
func (s *Store) addTaskLocked(ops []op, ns *namespace, in *store.TaskInput, now time.Time, flow string) []op {
	s.seq++
	e := newEntry(ns.name, in, s.seq, now)
	e.flow, e.flowKnown = flow, flow != ""
	q := ns.queue(e.t.Queue)
	if e.t.State == store.StateScheduled {
		s.pushDelayed(ns, e)
		s.unassigned = append(s.unassigned, e) // its gen, for promote
	} else {
		s.stage(e) // leasable once the caller's write is durable
	}
	q.counts[e.t.State]++
	ns.tasks[e.t.ID] = e
	s.changed(ns, e, store.ChangeEnqueued, e.t.State, now, "")
	return createOps(ops, e)
}

// newEntry returns the entry of task in (validated, without a unique key)
// of namespace ns created at now with sequence number seq: scheduled when
// it runs later, else pending.
func newEntry(ns string, in *store.TaskInput, seq uint64, now time.Time) *entry {
	e := &entry{seq: seq, idx: -1, t: store.Task{
		Namespace: ns, ID: in.ID, Type: in.Type, Queue: in.Queue,
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
	if e.t.RunAt.After(now) {
		e.t.State = store.StateScheduled
	} else {
		if e.t.RunAt.IsZero() {
			e.t.RunAt = now
		}
		e.t.State = store.StatePending
	}
	return e
}

// createOps appends to ops the records of new entry e: its payload (when
// too large for its record), its id and its task record with its index
// key.
func createOps(ops []op, e *entry) []op {
	ns := e.t.Namespace
	if e.payKey = payKeyFor(e.t.Payload); e.payKey {
		ops = append(ops, op{key: seqKey(kPayload, ns, e.seq), val: e.t.Payload})
	}
	ops = append(ops, op{key: nameKey(kID, ns, e.t.ID), val: binary.BigEndian.AppendUint64(nil, e.seq)})
	return taskOps(ops, e)
}

// flowDone counts task id of ns as finished for the held tasks that wait
// for it and releases those that wait for nothing more. It queues the
// records to write in s.flowOps, which the caller's next write takes (in
// the same batch as the task's own record). ok is 'r' when the task
// succeeded with a result, 'n' when it succeeded without one, else 0. The
// caller holds s.mu.
func (s *Store) flowDone(ns *namespace, id string, now time.Time, ok byte) {
	fi := s.flows[ns.name]
	if fi == nil {
		return
	}
	hs, waited := fi.deps[id]
	if !waited {
		return
	}
	delete(fi.deps, id)
	for _, hid := range hs {
		h := fi.held[hid]
		if h == nil {
			continue
		}
		if h.edges {
			s.flowOps = append(s.flowOps, op{key: edgeKey(ns.name, id, hid)})
		}
		h.waiting--
		if ok != 0 {
			h.ok++
			if ok == 'n' {
				h.noResult++
			}
		}
		if h.waiting > 0 {
			continue
		}
		delete(fi.held, hid)
		s.flowOps = append(s.flowOps, op{key: nameKey(kHeld, ns.name, hid)})
		s.flowOps = s.addTaskLocked(s.flowOps, ns, &h.in, now, "")
		if e := ns.tasks[hid]; e != nil && h.counted {
			e.upstream = &store.Upstream{OK: h.ok, NoResult: h.noResult}
		}
	}
}

// flowEnded notes that task e of ns reached a terminal state, or was
// deleted before it did. When it was the last open task of its flow, the
// flow's expiry becomes at least now+ret: one kFlowEnd write in s.flowOps
// (the caller's batch), which Sweep, Get and List apply to every member
// (see flowExpiry): Sweep moves a member's expiry index key there. The
// caller holds s.mu.
func (s *Store) flowEnded(ns *namespace, e *entry, ret time.Duration, now time.Time) {
	if e.flowKnown && e.flow == "" {
		return
	}
	fi := s.flows[ns.name]
	if fi == nil {
		return
	}
	fid, ok := fi.memberOf(e)
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
	s.evict = slices.Grow(s.evict, len(kept))
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

// flowReopened notes that finished task id of ns runs again (Retry). It
// was counted for the held tasks that waited for it, and is not waited for
// again: its c key (in s.flowOps, the caller's batch) tells loadFlows.
// The caller holds s.mu.
func (s *Store) flowReopened(ns string, id string) {
	fi := s.flows[ns]
	if fi == nil {
		return
	}
	fid, ok := fi.member[id]
	if !ok {
		return
	}
	if fi.tasks[fid] != nil {
		fi.open[fid]++
	}
	if !fi.counted[id] {
		fi.counted[id] = true
		s.flowOps = append(s.flowOps, op{key: nameKey(kCounted, ns, id), val: []byte{}})
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
		if fi.counted[string(rest)] {
			delete(fi.counted, string(rest))
			out = append(out, op{key: nameKey(kCounted, nsName, string(rest))})
		}
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
	held, err := rec.held()
	if err != nil {
		return nil, fmt.Errorf("embedded: flow %q: %w", p.ID, err)
	}
	fi := s.flows[p.Namespace]
	for _, h := range held {
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
		held, err := rec.held()
		if err != nil {
			derr = fmt.Errorf("flow record %q: %w", k, err)
			return false
		}
		for _, h := range held {
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

// loadFlows rebuilds the flow indexes from the engine (load's last step,
// once the tasks not in a terminal state are in memory).
func (s *Store) loadFlows(eng engine) error {
	s.flows, s.flowKept = nil, 0
	type heldAfter struct {
		ns, id string
		after  []string
	}
	var counts []heldAfter
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
		h := &heldTask{in: rec.Task, edges: rec.After == ""}
		if !h.edges {
			after, err := unpackIDs(rec.After)
			if err != nil {
				derr = fmt.Errorf("held task %q of namespace %q: %w", rest, nsName, err)
				return false
			}
			counts = append(counts, heldAfter{ns: nsName, id: string(rest), after: after})
		}
		s.flowsOf(nsName).held[string(rest)] = h
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
				if h := fi.held[hid]; h != nil && h.edges {
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
	err = eng.scan([]byte{kCounted}, nil, false, func(k, _ []byte) bool {
		if nsName, rest, ok := splitKey(k); ok {
			s.flowsOf(nsName).counted[string(rest)] = true
		}
		return true
	})
	if err != nil {
		return err
	}
	// A held task still waits for each task of its After that is held, or
	// stored and not in a terminal state (read from the disk: a pending
	// task may be on disk only, beyond its queue's window), and not
	// counted already (its c key).
	for _, c := range counts {
		fi := s.flowsOf(c.ns)
		h := fi.held[c.id]
		for _, a := range c.after {
			if fi.counted[a] {
				continue
			}
			live := fi.held[a] != nil
			if !live {
				var err error
				if _, live, err = storedLive(eng, c.ns, a); err != nil {
					return err
				}
			}
			if live {
				h.waiting++
				fi.deps[a] = append(fi.deps[a], c.id)
			}
		}
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
			Tasks  []string `json:"tasks"`
			TasksP string   `json:"tp"`
		}
		if err := json.Unmarshal(v, &rec); err != nil {
			derr = fmt.Errorf("%w: flow %q of namespace %q: %w", errCorrupt, rest, nsName, err)
			return false
		}
		if rec.TasksP != "" {
			ids, err := unpackIDs(rec.TasksP)
			if err != nil {
				derr = fmt.Errorf("flow %q of namespace %q: %w", rest, nsName, err)
				return false
			}
			rec.Tasks = ids
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
var flowKinds = []byte{kFlow, kHeld, kEdge, kFlowEnd, kCounted, kFlowPart}
