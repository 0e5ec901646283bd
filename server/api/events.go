package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
)

// hub fans events out to the hook and to subscribers. Publishing never
// blocks: a subscriber whose buffer is full misses the event, which is
// counted.
type hub struct {
	fn      func(wire.Event)
	buf     int
	dropped atomic.Int64

	mu     sync.RWMutex
	closed bool
	subs   map[string]map[*subscriber]struct{} // project -> subscribers
}

// subscriber receives the events of one project (of one task when taskID
// is set) on ch, which the hub closes when it closes.
type subscriber struct {
	project string
	taskID  string
	ch      chan wire.Event
	dropped atomic.Int64
}

func newHub(buf int, fn func(wire.Event)) *hub {
	return &hub{fn: fn, buf: buf, subs: make(map[string]map[*subscriber]struct{})}
}

func (h *hub) publish(ev wire.Event) {
	if h.fn != nil {
		h.fn(ev)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs[ev.Project] {
		if s.taskID != "" && s.taskID != ev.TaskID {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			h.dropped.Add(1)
		}
	}
}

// subscribe adds a subscriber; after close it returns one whose channel
// is closed.
func (h *hub) subscribe(project, taskID string) *subscriber {
	s := &subscriber{project: project, taskID: taskID, ch: make(chan wire.Event, h.buf)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(s.ch)
		return s
	}
	m := h.subs[project]
	if m == nil {
		m = make(map[*subscriber]struct{})
		h.subs[project] = m
	}
	m[s] = struct{}{}
	return s
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
		}
	}
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
}

// events serves the project's event stream (Server-Sent Events).
func (a *API) events(c *call) error {
	if _, err := query(c.r); err != nil {
		return err
	}
	rc := http.NewResponseController(c.w)
	sub := a.hub.subscribe(c.ns(), "")
	defer a.hub.unsubscribe(sub)
	h := c.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
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
	for {
		var err error
		select {
		case <-c.ctx().Done():
			return nil
		case ev, ok := <-sub.ch:
			if !ok {
				return nil // shutting down
			}
			b, jerr := json.Marshal(ev)
			if jerr != nil {
				return nil //nolint:nilerr // an event always encodes; the stream has started, so no error answer is possible
			}
			if d := sub.dropped.Load(); d != reported {
				_, err = fmt.Fprintf(c.w, ": dropped %d events\n\n", d-reported)
				reported = d
			}
			if err == nil {
				_, err = fmt.Fprintf(c.w, "event: %s\ndata: %s\n\n", ev.Kind, b)
			}
		case <-beat.C:
			_, err = fmt.Fprint(c.w, ": heartbeat\n\n")
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			return nil //nolint:nilerr // the client left
		}
	}
}
