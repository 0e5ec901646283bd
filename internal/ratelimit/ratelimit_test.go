package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestBurstThenRate(t *testing.T) {
	t.Parallel()
	k := New(10, 20, 100)
	for i := range 20 {
		if ok, _ := k.Allow("a", t0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := k.Allow("a", t0)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("request 21 = %v, wait %v; want refused, wait 100ms", ok, wait)
	}
	// A refused request takes nothing: the wait stays the same.
	if ok, again := k.Allow("a", t0); ok || again != wait {
		t.Fatalf("request 22 = %v, wait %v; want refused, wait %v", ok, again, wait)
	}
	// Another key has its own bucket.
	if ok, _ := k.Allow("b", t0); !ok {
		t.Fatal("another key refused")
	}
	// After the wait, one more; then refused again.
	if ok, _ := k.Allow("a", t0.Add(wait)); !ok {
		t.Fatal("refused after the wait")
	}
	if ok, _ := k.Allow("a", t0.Add(wait)); ok {
		t.Fatal("two allowed after one token's wait")
	}
	// A long pause refills the burst, not more.
	later := t0.Add(time.Hour)
	n := 0
	for {
		if ok, _ := k.Allow("a", later); !ok {
			break
		}
		n++
	}
	if n != 20 {
		t.Errorf("after an hour: %d allowed, want the burst of 20", n)
	}
}

func TestBoundedKeys(t *testing.T) {
	t.Parallel()
	const most = 1000
	k := New(1, 1, most)
	for i := range 20 * most {
		if ok, _ := k.Allow(fmt.Sprint("key-", i), t0); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if k.Len() > most {
			t.Fatalf("after %d keys the table holds %d, more than %d", i+1, k.Len(), most)
		}
	}
	if k.Len() != most {
		t.Errorf("table holds %d keys, want %d", k.Len(), most)
	}
	// The keys used most recently are kept, the oldest forgotten.
	if ok, _ := k.Allow(fmt.Sprint("key-", 20*most-1), t0); ok {
		t.Error("the most recent key was forgotten (its empty bucket is full again)")
	}
	if ok, _ := k.Allow("key-0", t0); !ok {
		t.Error("the oldest key is still remembered (its bucket is still empty)")
	}
}

func TestNil(t *testing.T) {
	t.Parallel()
	var k *Keyed
	if ok, wait := k.Allow("a", t0); !ok || wait != 0 || k.Len() != 0 {
		t.Errorf("nil Keyed: Allow = %v, %v; Len %d", ok, wait, k.Len())
	}
}
