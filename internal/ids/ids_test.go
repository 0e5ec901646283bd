package ids

import (
	"encoding/binary"
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

// TestSameMillisecondStepsVary checks that ids of one millisecond do not
// follow each other by a fixed step: the next cannot be told from the last.
func TestSameMillisecondStepsVary(t *testing.T) {
	t.Parallel()
	var g generator
	now := time.UnixMilli(1_700_000_000_000)
	g.next(now)
	steps := map[uint64]bool{}
	for range 20 {
		before := binary.BigEndian.Uint64(g.rnd[2:])
		g.next(now)
		after := binary.BigEndian.Uint64(g.rnd[2:])
		steps[after-before] = true
	}
	if len(steps) < 10 {
		t.Fatalf("20 steps within a millisecond take %d values: %v", len(steps), steps)
	}
}

// TestAddCarries checks the 80-bit addition across its 64-bit boundary.
func TestAddCarries(t *testing.T) {
	t.Parallel()
	r := [10]byte{0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !add(&r, 2) || r != [10]byte{0, 2, 0, 0, 0, 0, 0, 0, 0, 1} {
		t.Fatalf("carry: %x", r)
	}
	full := [10]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if add(&full, 1) {
		t.Fatal("an overflow of 80 bits was not reported")
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
