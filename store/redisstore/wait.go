package redisstore

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// waker turns the wake-up messages the scripts publish into wake-ups of the
// Leases of this process that wait on the namespace. One pattern
// subscription serves every namespace of the store's prefix.
type waker struct {
	ps     *redis.PubSub
	prefix string
	done   chan struct{}

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
	w := &waker{ps: ps, prefix: prefix, done: make(chan struct{}), chans: make(map[string]chan struct{})}
	go w.loop(ps.Channel())
	return w, nil
}

func (w *waker) loop(msgs <-chan *redis.Message) {
	defer close(w.done)
	for m := range msgs {
		ns, ok := strings.CutPrefix(m.Channel, w.prefix)
		if !ok {
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

// close ends the subscription and waits for the loop to stop.
func (w *waker) close() error {
	if w == nil {
		return nil
	}
	err := w.ps.Close()
	<-w.done
	return err
}
