package server_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
	"github.com/kilnhq/kiln/store/storetest"
)

// TestLeaseCancelRace measures the direct reproduction of an abandoned
// lease, left to chance (the tests of abandon_test.go make the client leave
// at a chosen point instead): a store/remote client waits in a lease long
// poll, a task is enqueued, and the client's context ends as soon as the
// enqueue returns. Each round ends one of three ways: Lease returned the
// task, the server handed it back (pending, attempt 0), or it is still
// active 2 s later, lost until its lease expires. It runs only when
// KILN_MEASURE_ROUNDS is set (the number of rounds per store and
// encoding), logs the counts, and fails if any task was lost.
func TestLeaseCancelRace(t *testing.T) { //nolint:paralleltest // a measurement (KILN_MEASURE_ROUNDS), run alone so that other tests do not change its timing
	n, _ := strconv.Atoi(os.Getenv("KILN_MEASURE_ROUNDS"))
	if n <= 0 {
		t.Skip("a measurement: set KILN_MEASURE_ROUNDS to run it")
	}
	for _, be := range backends(t) {
		for _, enc := range encodings {
			b := startAbandon(t, be, storetest.NewFakeClock(storetest.Epoch), nil)
			rs, err := remote.Open(t.Context(), b.ts.URL, &remote.Config{Token: adminToken, JSONOnly: !enc.binary})
			if err != nil {
				t.Fatal(err)
			}
			returned, handedBack, lost := 0, 0, 0
			for i := range n {
				q, id := fmt.Sprintf("q%d", i), fmt.Sprintf("t%d", i)
				ctx, cancel := context.WithCancel(t.Context())
				got := make(chan int, 1)
				go func() {
					res, _ := rs.Lease(ctx, store.LeaseParams{Namespace: "default", Queues: []string{q}, Max: 1, Duration: time.Hour, Wait: 10 * time.Second})
					got <- len(res.Tasks)
				}()
				time.Sleep(2 * time.Millisecond) // most often the poll is waiting by now; either way is a valid round
				if _, err := rs.Enqueue(t.Context(), store.EnqueueParams{Namespace: "default", Tasks: []store.TaskInput{{ID: id, Type: "t", Queue: q}}}); err != nil {
					t.Fatal(err)
				}
				cancel()
				if recv(t, got, "the cancelled Lease") == 1 {
					returned++
					continue
				}
				deadline := time.Now().Add(2 * time.Second)
				for {
					if tk := b.task(id); tk.State == store.StatePending && tk.Attempt == 0 {
						handedBack++
						break
					}
					if time.Now().After(deadline) {
						lost++
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			_ = rs.Close()
			t.Logf("%s/%s: %d rounds: returned %d, handed back %d, lost until expiry %d", be.name, enc.name, n, returned, handedBack, lost)
			if lost > 0 {
				t.Errorf("%s/%s: %d of %d tasks lost until their lease expires", be.name, enc.name, lost, n)
			}
		}
	}
}
