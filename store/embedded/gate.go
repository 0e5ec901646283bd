package embedded

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// compactionGate is the store's Pebble compaction scheduler. It grants
// compactions as Pebble's default scheduler does (as many at once as the
// database allows, granted again when one ends, when Pebble says the
// allowance grew, and every 100 ms), except that it grants none until
// open is called, once pebble.Open has returned.
//
// Pebble's Open flushes the log it replays; when that flush takes L0 over
// its compaction threshold, the compaction it starts would run inside
// Open, which waits for every running compaction before it lists the
// obsolete files: a restart after a backlog was enqueued was ready only
// once an L0 compaction of tens of megabytes had run (0.39 s instead of
// 0.10 s for 1,000,000 queued tasks, docs/benchmarks.md; more with a
// larger L0). With the gate, that compaction runs after Open, beside the
// store's first leases.
type compactionGate struct {
	db   pebble.DBForCompaction
	stop chan struct{} // closed by Unregister
	poke chan struct{} // the allowance may have grown
	done chan struct{} // the granting goroutine has ended

	mu         sync.Mutex
	cond       *sync.Cond // signalled when granting ends
	registered bool
	opened     bool
	closed     bool
	granting   bool // a goroutine is in grant's loop
	running    int  // compactions granted and not done
}

var _ pebble.CompactionScheduler = (*compactionGate)(nil)

func newCompactionGate() *compactionGate {
	g := &compactionGate{stop: make(chan struct{}), poke: make(chan struct{}, 1), done: make(chan struct{})}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// Register implements pebble.CompactionScheduler.
func (g *compactionGate) Register(_ int, db pebble.DBForCompaction) {
	g.mu.Lock()
	g.db, g.registered = db, true
	g.mu.Unlock()
	go g.loop()
}

// open lets compactions run, and grants those waiting.
func (g *compactionGate) open() {
	g.mu.Lock()
	g.opened = true
	g.mu.Unlock()
	g.signal()
}

// Unregister implements pebble.CompactionScheduler: no grant follows its
// return. It may be called again, and without a Register (the store calls
// it when pebble.Open fails, which may have registered or not).
func (g *compactionGate) Unregister() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	for g.granting {
		g.cond.Wait()
	}
	registered := g.registered
	g.mu.Unlock()
	if registered {
		close(g.stop)
		<-g.done
	}
}

// TrySchedule implements pebble.CompactionScheduler.
func (g *compactionGate) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.opened || g.closed || g.db.GetAllowedWithoutPermission() <= g.running {
		return false, nil
	}
	g.running++
	return true, g
}

// UpdateGetAllowedWithoutPermission implements pebble.CompactionScheduler.
func (g *compactionGate) UpdateGetAllowedWithoutPermission() { g.signal() }

// Started, MeasureCPU and CumulativeStats implement
// pebble.CompactionGrantHandle; the gate has no use for what they tell.
func (g *compactionGate) Started()                                          {}
func (g *compactionGate) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (g *compactionGate) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done implements pebble.CompactionGrantHandle: a compaction ended, so
// another may start.
func (g *compactionGate) Done() {
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
	g.grant()
}

func (g *compactionGate) signal() {
	select {
	case g.poke <- struct{}{}:
	default:
	}
}

// loop grants on a signal and every 100 ms, until Unregister.
func (g *compactionGate) loop() {
	defer close(g.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-g.poke:
		case <-t.C:
		}
		g.grant()
	}
}

// grant starts the compactions the database is waiting to run, as many as
// it allows at once; one goroutine at a time grants.
func (g *compactionGate) grant() {
	g.mu.Lock()
	for g.granting && !g.closed {
		g.cond.Wait()
	}
	if !g.opened || g.closed {
		g.mu.Unlock()
		return
	}
	n := g.db.GetAllowedWithoutPermission() - g.running
	if n <= 0 {
		g.mu.Unlock()
		return
	}
	g.granting = true
	g.mu.Unlock()
	for ; n > 0; n-- {
		// GetWaitingCompaction picks a compaction; it is asked only when
		// one may start, so that no pick is wasted.
		if waiting, _ := g.db.GetWaitingCompaction(); !waiting {
			break
		}
		g.mu.Lock()
		g.running++ // before Schedule: the compaction may end within it
		g.mu.Unlock()
		if !g.db.Schedule(g) {
			g.mu.Lock()
			g.running--
			g.mu.Unlock()
			break
		}
	}
	g.mu.Lock()
	g.granting = false
	g.cond.Broadcast()
	g.mu.Unlock()
}
