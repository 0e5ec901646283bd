package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/kilnhq/kiln/store"
)

// Concurrent Enqueue calls of one namespace share script calls. Most of an
// enqueue script's cost in Redis is paid once per call, not per task (the
// script's setup, TIME, the sequence, the counts, the change feed entry,
// the wake-up), and Redis runs one script at a time: a single-task call
// costs Redis several times what one task of a batch does. So while
// enqueueInflight calls of a namespace are on their way, the next callers
// do not send their own: they join one pending call, which the first of
// them sends as soon as one of those returns. A caller that finds a free
// slot sends at once, so a lone caller waits for nobody; the batch forms
// only when callers queue anyway.
//
// Nothing a task is promised changes: the script checks each task on its
// own (existing id, held unique key, in the order they joined) and records
// a change per task in the call's feed entry, exactly as for a batch a
// caller sends itself; each caller gets the results of its own tasks, or
// the call's error.

// enqueueInflight is the number of enqueue script calls of one namespace a
// Store has on their way before further callers share one. Two keep Redis
// busy (it runs one while the reply of the other travels) and let the
// pending call grow while they run.
const enqueueInflight = 2

// sharedBatchBytes bounds the payload and record bytes of a pending shared
// call: a caller whose tasks would exceed it starts a new one.
const sharedBatchBytes = 1 << 20

// enqueueGroup coalesces the Enqueue calls of one namespace.
type enqueueGroup struct {
	slots   chan struct{} // one per enqueue script call on its way
	pending *sharedCall   // the call callers may still join; under Store.groupMu
}

// sharedCall is one enqueue script call that several callers share.
type sharedCall struct {
	enqueueCall      // every caller's tasks in turn
	bytes       int  // payload and record bytes
	multi       bool // a second caller joined

	done  chan struct{} // closed when the results are in
	codes string
	dups  []string // per 'D' code in order: the id of the task holding the key
	err   error
}

// group returns the enqueue group of namespace ns.
func (s *Store) group(ns string) *enqueueGroup {
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g := s.groups[ns]
	if g == nil {
		g = &enqueueGroup{slots: make(chan struct{}, enqueueInflight)}
		s.groups[ns] = g
	}
	return g
}

// enqueueShared runs the enqueue script for tasks (bytes: their size),
// alone when a slot is free, otherwise in a call shared with other
// callers. It returns one code per task and, per 'D' code in order, the id
// of the task holding the key. A caller whose context ends while its call
// waits for a slot withdraws its tasks when nobody joined it.
func (s *Store) enqueueShared(ctx context.Context, ns string, tasks []enqueueTask, bytes int) (string, []string, error) {
	n := len(tasks)
	g := s.group(ns)
	s.groupMu.Lock()
	if c := g.pending; c != nil && c.n+n <= store.MaxBatch && c.bytes+bytes <= sharedBatchBytes {
		off := c.n
		c.addAll(tasks)
		c.bytes += bytes
		c.multi = true
		s.groupMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			// The call may still enqueue the tasks, as a call whose
			// context ends after it was sent may.
			return "", nil, ctx.Err()
		case <-s.closed:
			return "", nil, store.ErrClosed
		}
		if c.err != nil {
			return "", nil, c.err
		}
		return c.codes[off : off+n], c.dupsOf(off, n), nil
	}
	select {
	case g.slots <- struct{}{}:
		s.groupMu.Unlock()
		defer func() { <-g.slots }()
		var call enqueueCall
		call.addAll(tasks)
		return s.runEnqueue(ctx, ns, &call)
	default:
	}
	// Every slot is taken: start a pending call that later callers join,
	// and send it when a slot frees.
	c := &sharedCall{bytes: bytes, done: make(chan struct{})}
	c.addAll(tasks)
	g.pending = c
	s.groupMu.Unlock()
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		s.groupMu.Lock()
		if g.pending == c {
			g.pending = nil // nobody joins it from now on
		}
		alone := !c.multi
		s.groupMu.Unlock()
		if !alone {
			// Others joined: send the call for them. This caller's tasks
			// go too: they may be enqueued, as those of a call whose
			// context ends after it was sent may.
			go func() {
				select {
				case g.slots <- struct{}{}:
					s.sendShared(context.WithoutCancel(ctx), g, ns, c)
				case <-s.closed:
					s.endShared(g, c, store.ErrClosed)
				}
			}()
		}
		return "", nil, ctx.Err()
	case <-s.closed:
		s.endShared(g, c, store.ErrClosed)
		return "", nil, store.ErrClosed
	}
	s.sendShared(ctx, g, ns, c)
	if c.err != nil {
		return "", nil, c.err
	}
	return c.codes[:n], c.dupsOf(0, n), nil
}

// sendShared sends the pending call c, for which the caller holds a slot
// of g, and frees the slot.
func (s *Store) sendShared(ctx context.Context, g *enqueueGroup, ns string, c *sharedCall) {
	s.groupMu.Lock()
	if g.pending == c {
		g.pending = nil
	}
	multi := c.multi
	s.groupMu.Unlock()
	callCtx := ctx
	if multi {
		// Other callers wait for this call: the first caller's context
		// ending must not fail theirs.
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), leaseCallTimeout)
		defer cancel()
	}
	codes, dups, err := s.runEnqueue(callCtx, ns, &c.enqueueCall)
	<-g.slots
	c.codes, c.dups, c.err = codes, dups, err
	close(c.done)
}

// endShared ends the pending call c unsent, with err.
func (s *Store) endShared(g *enqueueGroup, c *sharedCall, err error) {
	s.groupMu.Lock()
	if g.pending == c {
		g.pending = nil
	}
	s.groupMu.Unlock()
	c.err = err
	close(c.done)
}

// dupsOf returns the duplicate holders of tasks [off, off+n) of the call.
func (c *sharedCall) dupsOf(off, n int) []string {
	before := strings.Count(c.codes[:off], "D")
	return c.dups[before : before+strings.Count(c.codes[off:off+n], "D")]
}

// enqueueTask is one task of an enqueue script call, as Enqueue prepared
// it.
type enqueueTask struct {
	id, q, ty string
	d, p      []byte
	prio      byte   // the 9-priority digit
	mr        string // max retries; "" for 0
	dflt      bool   // d is the default record (isDefaultRecord)
	opts      []any  // nil, or RunAt, unique key, unique TTL, retention, released unique key
}

// enqueueCall is the arguments of one enqueue script call.
type enqueueCall struct {
	args  []any  // three common values (runEnqueue fills them in), then per task
	n     int    // tasks
	q, ty string // the last task's queue and type
}

// addAll appends tasks to the call: id, record, x and the arguments x
// names (see enqueueScript). A task of the same queue and type as the one
// before it, in the same caller's batch or another's, leaves them out.
func (c *enqueueCall) addAll(tasks []enqueueTask) {
	if c.args == nil {
		c.args = make([]any, 3, 3+len(tasks)*4)
	}
	for i := range tasks {
		t := &tasks[i]
		flags := byte('@')
		if len(t.p) > 0 {
			flags += enqueueHasPayload
		}
		if c.n == 0 || t.q != c.q || t.ty != c.ty {
			flags += enqueueHasQueue
		}
		if t.opts != nil {
			flags += enqueueHasOptions
		} else if t.dflt {
			flags += enqueueDefaultRecord
		}
		x := string([]byte{t.prio, flags}) + t.mr
		c.args = append(c.args, t.id, t.d, x)
		if len(t.p) > 0 {
			c.args = append(c.args, t.p)
		}
		if flags&enqueueHasQueue != 0 {
			c.args = append(c.args, t.q, t.ty)
			c.q, c.ty = t.q, t.ty
		}
		c.args = append(c.args, t.opts...)
		c.n++
	}
}

// runEnqueue runs the enqueue script once for the call's tasks.
func (s *Store) runEnqueue(ctx context.Context, ns string, c *enqueueCall) (string, []string, error) {
	c.args[0], c.args[1], c.args[2] = s.nowArg(), s.wakeChannel(ns), c.n
	v, err := s.run(ctx, "enqueue", enqueueScript, ns, true, c.args)
	if err != nil {
		return "", nil, err
	}
	codes, dups, err := enqueueReply(v, c.n)
	if err != nil {
		return "", nil, fmt.Errorf("redisstore: enqueue: %w", err)
	}
	return codes, dups, nil
}
