package ids

import (
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewFormatAndTime(t *testing.T) {
	t.Parallel()
	before := time.Now().Truncate(time.Millisecond)
	id := New()
	after := time.Now()
	if len(id) != Len {
		t.Fatalf("len(%q) = %d, want %d", id, len(id), Len)
	}
	if !Valid(id) {
		t.Fatalf("Valid(%q) = false", id)
	}
	got, ok := Time(id)
	if !ok || got.Before(before) || got.After(after) {
		t.Fatalf("Time(%q) = %v, %v; want between %v and %v", id, got, ok, before, after)
	}
}

func TestSortedAndUniqueUnderConcurrency(t *testing.T) {
	t.Parallel()
	const goroutines, each = 8, 5000
	var mu sync.Mutex
	var all []string
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			local := make([]string, 0, each)
			for range each {
				local = append(local, New())
			}
			if !sort.StringsAreSorted(local) {
				t.Error("ids from one goroutine are not increasing")
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	seen := make(map[string]bool, len(all))
	for _, id := range all {
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestSameMillisecondIncrements(t *testing.T) {
	t.Parallel()
	var g generator
	now := time.UnixMilli(1_700_000_000_000)
	a, b := g.next(now), g.next(now)
	if a >= b {
		t.Fatalf("second id %q is not after first %q", b, a)
	}
	// A clock that steps back keeps the order.
	c := g.next(now.Add(-time.Hour))
	if b >= c {
		t.Fatalf("id after a clock step back %q is not after %q", c, b)
	}
	g.rnd = [10]byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for i := range g.rnd {
		g.rnd[i] = 0xff
	}
	d := g.next(now)
	if c >= d {
		t.Fatalf("id after overflow %q is not after %q", d, c)
	}
}

func TestValidRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "short", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "0000000000000000000000000U", "0000000000000000000000000i"} {
		if Valid(s) {
			t.Errorf("Valid(%q) = true, want false", s)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		New()
	}
}
