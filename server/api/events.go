package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// hub fans events out to the hook and to subscribers. Publishing never
// blocks: a subscriber whose buffer is full misses the event, which is
// counted. Every subscriber shares the one copy of each event, and the
// event streams (not the result waits) are capped per project and in all.
type hub struct {
	fn func(wire.Event)
	// fromStore is set when the store has a change feed (store.Feed): the
	// event streams then read the task changes from it, and the events of
	// those changes that the server publishes itself go only to the hook
	// and to the result waits.
	fromStore  bool
	buf        int
	maxAll     int
	maxProject int
	dropped    atomic.Int64

	mu      sync.RWMutex
	closed  bool
	subs    map[string]map[*subscriber]struct{} // project -> subscribers
	streams int                                 // event streams of every project
	perProj map[string]int                      // project -> event streams
}

// subscriber receives the events of one project (of one task when taskID
// is set) on ch, which the hub closes when it closes. A task's subscriber
// (a result wait) only needs to wake up: its buffer is one event, and what
// it misses is not counted as dropped.
type subscriber struct {
	project string
	taskID  string
	ch      chan *wire.Event
	dropped atomic.Int64
}

// errTooManyStreams is the answer to an event stream beyond a cap.
func errTooManyStreams(project string, perProject bool, limit int) error {
	if perProject {
		return wire.Errorf(wire.CodeTooManyStreams, "project %q has %d event streams open, the most the server allows per project", project, limit)
	}
	return wire.Errorf(wire.CodeTooManyStreams, "the server has %d event streams open, the most it allows", limit)
}

func newHub(buf, maxAll, maxProject int, fn func(wire.Event)) *hub {
	return &hub{fn: fn, buf: buf, maxAll: maxAll, maxProject: maxProject,
		subs: make(map[string]map[*subscriber]struct{}), perProj: make(map[string]int)}
}

func (h *hub) publish(ev wire.Event) {
	if h.fn != nil {
		h.fn(ev)
	}
	p := &ev // shared by every subscriber, which only reads it
	h.mu.RLock()
	defer h.mu.RUnlock()
	skip := h.fromStore && storeKinds[ev.Kind]
	for s := range h.subs[ev.Project] {
		if s.taskID == "" && skip {
			continue
		}
		if s.taskID != "" {
			if s.taskID == ev.TaskID {
				select {
				case s.ch <- p:
				default: // a wake-up is already pending
				}
			}
			continue
		}
		select {
		case s.ch <- p:
		default:
			s.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// subscribe adds a subscriber: an event stream of project when taskID is
// empty (too_many_streams beyond a cap), else a result wait for the task.
// After close it returns one whose channel is closed.
func (h *hub) subscribe(project, taskID string) (*subscriber, error) {
	buf := h.buf
	if taskID != "" {
		buf = 1
	}
	s := &subscriber{project: project, taskID: taskID, ch: make(chan *wire.Event, buf)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s, nil
	}
	if taskID == "" {
		if h.perProj[project] >= h.maxProject {
			return nil, errTooManyStreams(project, true, h.maxProject)
		}
		if h.streams >= h.maxAll {
			return nil, errTooManyStreams(project, false, h.maxAll)
		}
		h.perProj[project]++
		h.streams++
	}
	m := h.subs[project]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[project] = m
	}
	m[s] = struct{}{}
	return s, nil
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[s.project]; m != nil {
		if _, ok := m[s]; ok {
			delete(m, s)
			close(s.ch)
			if len(m) == 0 {
				delete(h.subs, s.project)
			}
			if s.taskID == "" {
				h.streams--
				if h.perProj[s.project]--; h.perProj[s.project] <= 0 {
					delete(h.perProj, s.project)
				}
			}
		}
	}
}

// streamCount returns the number of open event streams.
func (h *hub) streamCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.streams
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, m := range h.subs {
		for s := range m {
			close(s.ch)
		}
	}
	h.subs = map[string]map[*subscriber]struct{}{}
	h.streams = 0
	h.perProj = map[string]int{}
}

// storeKinds are the event kinds of the changes of a store.Feed.
var storeKinds = func() map[string]bool {
	m := map[string]bool{}
	for k := store.ChangeEnqueued; k <= store.ChangeDeleted; k++ {
		m["task."+k.String()] = true
	}
	return m
}()

// changeEvent turns a change of the store's feed into its event.
func changeEvent(ns string, c *store.Change) *wire.Event {
	ev := &wire.Event{Kind: "task." + c.Kind.String(), Time: c.Time, Project: ns, TaskID: c.ID, Type: c.Type,
		Queue: c.Queue, Attempt: c.Attempt, WorkerID: c.WorkerID, Error: c.Error, Seq: c.Seq}
	if c.State != 0 {
		ev.State = c.State.String()
	}
	return ev
}

// feedBatch is what a stream's feed reader hands to the stream: changes,
// or that some were missed, or the error that ended the reader.
type feedBatch struct {
	changes []store.Change
	missed  bool
	err     error
}

// readFeed reads the project's change feed after cursor and sends what it
// finds to out until ctx ends.
func (a *API) readFeed(ctx context.Context, ns, cursor string, out chan<- feedBatch) {
	for {
		res, err := a.feed.Changes(ctx, store.ChangesParams{Namespace: ns, Cursor: cursor, Wait: feedWait})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			select {
			case out <- feedBatch{err: err}:
			case <-ctx.Done():
			}
			return
		}
		if len(res.Changes) == 0 && !res.Missed {
			continue
		}
		cursor = res.Cursor
		select {
		case out <- feedBatch{changes: res.Changes, missed: res.Missed}:
		case <-ctx.Done():
			return
		}
	}
}

// feedWait is how long one read of the change feed waits for a change.
const feedWait = 10 * time.Second

// events serves the project's event stream (Server-Sent Events). Every
// write has a deadline (Config.StreamWriteTimeout): a client that stops
// reading is dropped when its socket stays full that long, which frees its
// slot; until then the events it cannot take are dropped and counted.
//
// With a store that has a change feed, the task changes come from it, in
// the order the store applied them (the same on every server sharing the
// store), each with an "id:" line: a client that reconnects with the
// Last-Event-ID header continues after that change.
func (a *API) events(c *call) error {
	if _, err := query(c.r); err != nil {
		return err
	}
	var feed chan feedBatch
	if a.feed != nil {
		cursor := c.r.Header.Get("Last-Event-ID")
		if cursor != "" {
			if _, err := strconv.ParseUint(cursor, 10, 64); err != nil {
				return wire.Errorf(wire.CodeInvalidOption, "Last-Event-ID %q is not an event id of this stream", cursor)
			}
		} else {
			res, err := a.feed.Changes(c.ctx(), store.ChangesParams{Namespace: c.ns()})
			if err != nil {
				return err
			}
			cursor = res.Cursor
		}
		feed = make(chan feedBatch)
		ctx, cancel := context.WithCancel(c.ctx())
		defer cancel()
		go a.readFeed(ctx, c.ns(), cursor, feed)
	}
	sub, err := a.hub.subscribe(c.ns(), "")
	if err != nil {
		return err
	}
	defer a.hub.unsubscribe(sub)
	rc := http.NewResponseController(c.w)
	timeout := a.cfg.StreamWriteTimeout
	// Each write gets its own deadline; so does the end of the answer.
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(timeout)) } // without support, writes just have no deadline
	defer deadline()
	h := c.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	deadline()
	c.w.WriteHeader(http.StatusOK)
	// The first comment tells the client the stream is open.
	if _, err := fmt.Fprint(c.w, ": kiln events\n\n"); err != nil {
		return nil //nolint:nilerr // the client left; there is nobody to answer
	}
	if err := rc.Flush(); err != nil {
		return nil //nolint:nilerr // the client left
	}
	beat := time.NewTicker(a.cfg.HeartbeatInterval)
	defer beat.Stop()
	var reported int64
	write := func(ev *wire.Event) error {
		b, jerr := json.Marshal(ev)
		if jerr != nil {
			return nil //nolint:nilerr // an event always encodes; the stream has started, so no error answer is possible
		}
		deadline()
		var err error
		if d := sub.dropped.Load(); d != reported {
			_, err = fmt.Fprintf(c.w, ": dropped %d events\n\n", d-reported)
			reported = d
		}
		if err == nil && ev.Seq != 0 {
			_, err = fmt.Fprintf(c.w, "id: %d\n", ev.Seq)
		}
		if err == nil {
			_, err = fmt.Fprintf(c.w, "event: %s\ndata: %s\n\n", ev.Kind, b)
		}
		return err
	}
	for {
		var err error
		select {
		case <-c.ctx().Done():
			return nil
		case ev, ok := <-sub.ch:
			if !ok {
				return nil // shutting down
			}
			err = write(ev)
		case fb := <-feed:
			if fb.err != nil {
				if !errors.Is(fb.err, store.ErrClosed) {
					a.log.Warn("event stream: reading the change feed", "project", c.ns(), "err", fb.err)
				}
				return nil // the client reconnects with Last-Event-ID
			}
			deadline()
			if fb.missed {
				_, err = fmt.Fprint(c.w, ": missed events (the store no longer holds them)\n\n")
			}
			for i := 0; err == nil && i < len(fb.changes); i++ {
				err = write(changeEvent(c.ns(), &fb.changes[i]))
			}
		case <-beat.C:
			deadline()
			_, err = fmt.Fprint(c.w, ": heartbeat\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return nil //nolint:nilerr // the client left, or stopped reading for StreamWriteTimeout
		}
	}
}

// waitChanges answers the task changes of the project after the request's
// cursor, waiting up to wait_ms (at most MaxLeaseWait) for one: the change
// feed of the store, for store/remote.
func (a *API) waitChanges(c *call) error {
	var req wire.ChangesRequest
	if err := c.decode(&req, false); err != nil {
		return err
	}
	if a.feed == nil {
		return wire.Errorf(wire.CodeNotFound, "the server's store keeps no change feed")
	}
	if req.WaitMS < 0 {
		return errf(wire.CodeInvalidOption, "wait_ms", "%d is negative", req.WaitMS)
	}
	if req.Max < 0 || req.Max > store.MaxBatch {
		return errf(wire.CodeInvalidOption, "max", "%d is outside 0..%d", req.Max, store.MaxBatch)
	}
	wait, err := wire.DurField("wait_ms", req.WaitMS)
	if err != nil {
		return err
	}
	p := store.ChangesParams{Namespace: c.ns(), Cursor: req.Cursor, Wait: min(wait, MaxLeaseWait), Max: req.Max}
	// A shutdown ends the wait early, like a lease's.
	ctx, cancel := a.untilStopping(c)
	defer cancel()
	res, err := a.feed.Changes(ctx, p)
	if err != nil {
		if !stoppedEarly(ctx, c) {
			return err
		}
		res = store.ChangesResult{Cursor: req.Cursor} // stopping: nothing new
	}
	out := wire.ChangesResponse{Events: make([]wire.Event, len(res.Changes)), Cursor: res.Cursor, Missed: res.Missed}
	for i := range res.Changes {
		out.Events[i] = *changeEvent(c.ns(), &res.Changes[i])
	}
	return c.json(http.StatusOK, out)
}
