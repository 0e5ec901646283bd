package leader_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/leader"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNow is a local clock that moves only when told to.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeNow) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openMeta(t *testing.T) store.Meta {
	t.Helper()
	return kilntest.Embedded(t, nil)
}

// tickAll ticks every elector but those in skip, at once (as workers do),
// and returns the indexes of those that lead.
func tickAll(t *testing.T, els []*leader.Elector, skip map[int]bool) []int {
	t.Helper()
	leads := make([]bool, len(els))
	errs := make([]error, len(els))
	var wg sync.WaitGroup
	for i, e := range els {
		if skip[i] {
			continue
		}
		wg.Go(func() { leads[i], errs[i] = e.Tick(context.Background()) })
	}
	wg.Wait()
	var out []int
	for i := range els {
		if errs[i] != nil {
			t.Fatalf("Tick %d: %v", i, errs[i])
		}
		if leads[i] {
			out = append(out, i)
		}
	}
	return out
}

// N candidates on one store: exactly one leads at every round; when it
// stops renewing, exactly one other takes over once the TTL has passed on
// the others' clocks, and not before; when it resigns, another takes over
// at its next tick.
func TestOneLeader(t *testing.T) {
	t.Parallel()
	m := openMeta(t)
	clock := &fakeNow{t: time.Unix(1000, 0)}
	const n, ttl = 5, 5 * time.Second
	els := make([]*leader.Elector, n)
	for i := range els {
		els[i] = leader.New(m, "sweeper", "w", ttl, clock.now)
	}
	first := tickAll(t, els, nil)
	if len(first) != 1 {
		t.Fatalf("first round: %v lead, want exactly one", first)
	}
	lead := first[0]
	for range 20 {
		clock.advance(time.Second)
		if got := tickAll(t, els, nil); len(got) != 1 || got[0] != lead {
			t.Fatalf("a steady round: %v lead, want only %d", got, lead)
		}
	}
	// One more round, the leader first, so that every other candidate has
	// seen its last renewal at this instant: the TTL counts from here.
	clock.advance(time.Second)
	if ok, err := els[lead].Tick(context.Background()); !ok || err != nil {
		t.Fatalf("the leader's renewal: %v, %v", ok, err)
	}
	others := map[int]bool{lead: true}
	if got := tickAll(t, els, others); len(got) != 0 {
		t.Fatalf("%v lead beside %d", got, lead)
	}
	if h, err := leader.Holder(context.Background(), m, "sweeper"); err != nil || h != els[lead].ID() {
		t.Fatalf("Holder = %q, %v; want %q", h, err, els[lead].ID())
	}

	// The leader stops ticking (a crash): nobody takes over before the TTL.
	stopped := others
	for range 4 {
		clock.advance(time.Second)
		if got := tickAll(t, els, stopped); len(got) != 0 {
			t.Fatalf("%v took over before the TTL passed", got)
		}
	}
	clock.advance(time.Second)
	got := tickAll(t, els, stopped)
	if len(got) != 1 {
		t.Fatalf("after the TTL: %v lead, want exactly one", got)
	}
	second := got[0]
	// The old leader comes back: it does not lead, the new one keeps on.
	clock.advance(time.Second)
	if got := tickAll(t, els, nil); len(got) != 1 || got[0] != second {
		t.Fatalf("after the old leader came back: %v lead, want only %d", got, second)
	}

	// A resigning leader hands over at the next round, without the TTL.
	if err := els[second].Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Millisecond)
	got = tickAll(t, els, map[int]bool{second: true})
	if len(got) != 1 {
		t.Fatalf("after a resignation: %v lead, want exactly one", got)
	}
}

type failingMeta struct{ store.Meta }

var errDown = errors.New("down")

func (failingMeta) MetaGet(context.Context, store.MetaGetParams) (store.MetaGetResult, error) {
	return store.MetaGetResult{}, errDown
}

// A store error means "not the leader", and says why.
func TestTickError(t *testing.T) {
	t.Parallel()
	e := leader.New(failingMeta{}, "sweeper", "w", time.Second, nil)
	if lead, err := e.Tick(context.Background()); lead || !errors.Is(err, errDown) {
		t.Fatalf("Tick = %v, %v; want false, the store's error", lead, err)
	}
	if err := e.Resign(context.Background()); !errors.Is(err, errDown) {
		t.Fatalf("Resign on a failing store: %v, want the store's error", err)
	}
}

// lostAck stores a write, then fails the call, as a store does when the
// caller's context ends while the write commits.
type lostAck struct{ store.Meta }

func (l lostAck) MetaPut(ctx context.Context, p store.MetaPutParams) (store.MetaPutResult, error) {
	if _, err := l.Meta.MetaPut(ctx, p); err != nil {
		return store.MetaPutResult{}, err
	}
	return store.MetaPutResult{}, context.Canceled
}

// A lease whose write was stored but not acknowledged is still the
// candidate's: it renews it and Resign releases it, so that another does
// not wait for the TTL.
func TestUnacknowledgedWrite(t *testing.T) {
	t.Parallel()
	m := openMeta(t)
	e := leader.New(lostAck{m}, "sweeper", "w", time.Hour, nil)
	if lead, err := e.Tick(context.Background()); lead || err == nil {
		t.Fatalf("Tick = %v, %v; want the write's error", lead, err)
	}
	if h, _ := leader.Holder(context.Background(), m, "sweeper"); h != e.ID() {
		t.Fatalf("Holder = %q, want %q (the write was stored)", h, e.ID())
	}
	if err := e.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, err := leader.Holder(context.Background(), m, "sweeper"); h != "" || err != nil {
		t.Fatalf("Holder after Resign = %q, %v; want none", h, err)
	}
	other := leader.New(m, "sweeper", "w2", time.Hour, nil)
	if lead, err := other.Tick(context.Background()); !lead || err != nil {
		t.Fatalf("another candidate after the resignation: %v, %v; want it to lead", lead, err)
	}
}
