package redisstore

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/cancelfeed"
	"github.com/kilnhq/kiln/store"
)

// waker turns the wake-up messages the scripts publish into wake-ups of the
// Leases of this process that wait on the namespace. One pattern
// subscription serves every namespace of the store's prefix. The same
// channel carries the cancel requests of active tasks ("c id lease id
// lease..."), which go to the cancel feed.
type waker struct {
	ps      *redis.PubSub
	prefix  string
	done    chan struct{}
	cancels *cancelfeed.Feed

	mu    sync.Mutex
	chans map[string]chan struct{} // per namespace; closed by the next message
}

// startWaker subscribes to prefix* and waits for the subscription to be
// active, so that no message published after it returns is missed.
func startWaker(ctx context.Context, rdb redis.UniversalClient, prefix string) (*waker, error) {
	ps := rdb.PSubscribe(ctx, prefix+"*")
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, err
	}
	w := &waker{ps: ps, prefix: prefix, done: make(chan struct{}), chans: make(map[string]chan struct{}), cancels: cancelfeed.New()}
	go w.loop(ps.Channel())
	return w, nil
}

// wakeHook, when set (by a benchmark, before the store opens), is called
// with the namespace of every wake-up message the waker receives.
var wakeHook func(ns string)

func (w *waker) loop(msgs <-chan *redis.Message) {
	defer close(w.done)
	for m := range msgs {
		ns, ok := strings.CutPrefix(m.Channel, w.prefix)
		if !ok {
			continue
		}
		if wakeHook != nil {
			wakeHook(ns)
		}
		if rest, ok := strings.CutPrefix(m.Payload, "c "); ok {
			w.cancels.Publish(ns, parseCancels(rest)...)
			continue
		}
		w.mu.Lock()
		if ch := w.chans[ns]; ch != nil {
			close(ch)
			delete(w.chans, ns)
		}
		w.mu.Unlock()
	}
}

// channel returns a channel that is closed by the next wake-up of ns. Take it
// before looking for tasks, so that a wake-up between the look and the wait
// is not missed.
func (w *waker) channel(ns string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.chans[ns]
	if ch == nil {
		ch = make(chan struct{})
		w.chans[ns] = ch
	}
	return ch
}

// parseCancels reads "id lease id lease..." of a cancel notification.
func parseCancels(s string) []store.LeaseRef {
	f := strings.Fields(s)
	out := make([]store.LeaseRef, 0, len(f)/2)
	for i := 0; i+1 < len(f); i += 2 {
		lid, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, store.LeaseRef{ID: f[i], LeaseID: lid})
	}
	return out
}

// close ends the subscription and waits for the loop to stop.
func (w *waker) close() error {
	if w == nil {
		return nil
	}
	err := w.ps.Close()
	<-w.done
	w.cancels.Close()
	return err
}
