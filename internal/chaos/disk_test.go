package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/store"
)

// TestChaosDiskFull: the server's embedded store lives on a small tmpfs the
// test mounts, and the test fills it during load, holds it full, then frees
// the space. While it is full, an enqueue fails with a clear error (an
// answer, not a crash and not 500 internal) and reads keep working; once
// space is back, enqueues succeed again without a restart, and every
// acknowledged task completes.
func TestChaosDiskFull(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("chaos suite: skipped with -short")
	}
	d := loadTime(t)
	disk := t.TempDir()
	chaos.MountTmpfs(t, disk, 160<<20) // the embedded store keeps 2 x 32 MiB for itself
	c := newCluster(t, options{workers: 2, dataDir: filepath.Join(disk, "data")})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var mu sync.Mutex
	full := false
	var duringFull []error // failed enqueues while the disk was full
	var unclear []string   // failed enqueues whose answer was not a clear one
	wait := c.startLoad(ctx, load{refused: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if full {
			duringFull = append(duringFull, err)
		}
		var ae *apiclient.Error
		switch {
		case !errors.As(err, &ae):
			unclear = append(unclear, "no answer: "+err.Error())
		case ae.Status == http.StatusInternalServerError || ae.Code() == "internal":
			unclear = append(unclear, fmt.Sprintf("%d %s", ae.Status, ae.Error()))
		}
	}})
	// Cycles of: normal load for a phase, the disk full for a phase (filled
	// by a file of the test's), then the space freed.
	phase := 2 * time.Second
	if long(t) {
		phase = 5 * time.Second
	}
	cycles := max(1, int(d/(2*phase)))
	for i := range cycles {
		sleepOrCrash(t, c, phase)
		filled, err := chaos.Fill(disk, "filler")
		if err != nil {
			t.Fatalf("fill the disk: %v", err)
		}
		mu.Lock()
		full = true
		nFull := len(duringFull)
		mu.Unlock()
		end := c.ledger.Begin(chaos.Outage, "", fmt.Sprintf("disk full (%d MiB filler)", filled>>20))
		sleepOrCrash(t, c, phase)
		// Reads keep working while the disk is full.
		if acked := c.ledger.Acked(); len(acked) > 0 {
			ids := acked[:min(len(acked), 100)]
			if _, err := c.st.Get(t.Context(), store.GetParams{Namespace: project, IDs: ids}); err != nil {
				t.Errorf("cycle %d: a read while the disk was full: %v", i, err)
			}
		}
		mu.Lock()
		full = false
		if len(duringFull) == nFull {
			t.Errorf("cycle %d: no enqueue failed while the disk was full (%d MiB of filler): the cycle tested nothing", i, filled>>20)
		}
		mu.Unlock()
		// Free the space: enqueues succeed again, without a restart.
		if err := os.Remove(filepath.Join(disk, "filler")); err != nil {
			t.Fatal(err)
		}
		end(c.outageLinger())
		before := len(c.ledger.Acked())
		deadline := time.Now().Add(time.Minute)
		for len(c.ledger.Acked()) == before {
			if time.Now().After(deadline) {
				mu.Lock()
				last := "none"
				if len(duringFull) > 0 {
					last = duringFull[len(duringFull)-1].Error()
				}
				mu.Unlock()
				t.Fatalf("cycle %d: no enqueue succeeded within a minute after the space came back (the store must recover without a restart); the last refusal: %s", i, last)
			}
			sleepOrCrash(t, c, 100*time.Millisecond)
		}
	}
	sleepOrCrash(t, c, phase)
	cancel()
	wait()
	mu.Lock()
	for i, u := range unclear {
		if i == 5 {
			t.Errorf("... %d unclear answers in all", len(unclear))
			break
		}
		t.Errorf("an enqueue got an unclear answer (want a precise error such as 507 or 503, not 500 internal or none): %s", u)
	}
	mu.Unlock()
	c.finish("disk-full", fmt.Sprintf("2 remote worker processes (8 handlers of 100 ms, 1 s leases), a server process on the embedded store on a 160 MiB tmpfs; 150 tasks/s; %d cycles of %s normal, %s with the disk full", cycles, phase, phase))
}

// sleepOrCrash waits d, failing at once if the server process ends by
// itself meanwhile.
func sleepOrCrash(t *testing.T, c *cluster, d time.Duration) {
	t.Helper()
	select {
	case msg := <-c.crashed:
		t.Fatal(msg)
	case <-time.After(d):
	}
}
