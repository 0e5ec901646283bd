package cancelfeed

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

func wait(t *testing.T, f *Feed, cursor string, d time.Duration) store.WaitCancelsResult {
	t.Helper()
	res, err := f.Wait(context.Background(), store.WaitCancelsParams{Namespace: "ns", Cursor: cursor, Wait: d}, nil)
	if err != nil {
		t.Fatalf("Wait(%q): %v", cursor, err)
	}
	return res
}

// TestOverflowMissed: a cursor older than the kept history gets the last
// Keep requests and Missed.
func TestOverflowMissed(t *testing.T) {
	t.Parallel()
	f := New()
	cur := wait(t, f, "", 0).Cursor
	for i := range Keep + 10 {
		f.Publish("ns", store.LeaseRef{ID: fmt.Sprint(i), LeaseID: uint64(i)})
	}
	res := wait(t, f, cur, 0)
	if !res.Missed || len(res.Leases) != Keep || res.Leases[0].ID != "10" || res.Leases[Keep-1].ID != fmt.Sprint(Keep+9) {
		t.Fatalf("after %d requests: Missed %v, %d leases from %v; want Missed and the last %d in order", Keep+10, res.Missed, len(res.Leases), res.Leases[0], Keep)
	}
	again := wait(t, f, res.Cursor, 0)
	if again.Missed || len(again.Leases) != 0 || again.Cursor != res.Cursor {
		t.Fatalf("with the new cursor: %+v; want nothing new", again)
	}
}

// TestForeignCursor: a cursor of another feed (another process, or the
// store opened again) is Missed, never an error.
func TestForeignCursor(t *testing.T) {
	t.Parallel()
	a, b := New(), New()
	b.Publish("ns", store.LeaseRef{ID: "x", LeaseID: 1})
	cur := wait(t, b, "", 0).Cursor
	res := wait(t, a, cur, time.Hour) // answers at once
	if !res.Missed || len(res.Leases) != 0 || res.Cursor == cur {
		t.Fatalf("foreign cursor: %+v; want Missed with a cursor of this feed", res)
	}
}

// TestCloseEndsWait: Close ends a waiting Wait with ErrClosed.
func TestCloseEndsWait(t *testing.T) {
	t.Parallel()
	f := New()
	cur := wait(t, f, "", 0).Cursor
	errc := make(chan error, 1)
	go func() {
		_, err := f.Wait(context.Background(), store.WaitCancelsParams{Namespace: "ns", Cursor: cur, Wait: time.Hour}, nil)
		errc <- err
	}()
	f.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Wait after Close: %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not end a waiting Wait")
	}
}

// FuzzCursor: any cursor gets an answer (Missed or the requests after it),
// never a panic or an error.
func FuzzCursor(f *testing.F) {
	feed := New()
	feed.Publish("ns", store.LeaseRef{ID: "a", LeaseID: 1}, store.LeaseRef{ID: "b", LeaseID: 2})
	good := feed.cursor(1)
	f.Add(good)
	f.Add("")
	f.Add(feed.epoch + ".18446744073709551615")
	f.Add(feed.epoch + ".-1")
	f.Add("x.y.z")
	f.Add(feed.epoch + ".02")
	f.Fuzz(func(t *testing.T, cursor string) {
		res, err := feed.Wait(context.Background(), store.WaitCancelsParams{Namespace: "ns", Cursor: cursor}, nil)
		if err != nil {
			t.Fatalf("Wait(%q): %v", cursor, err)
		}
		if res.Cursor != feed.cursor(2) {
			t.Fatalf("Wait(%q): cursor %q, want %q", cursor, res.Cursor, feed.cursor(2))
		}
		if len(res.Leases) > 2 {
			t.Fatalf("Wait(%q): %d leases", cursor, len(res.Leases))
		}
	})
}
