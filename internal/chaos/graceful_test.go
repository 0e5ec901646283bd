package chaos_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
)

// TestChaosGracefulStop: worker processes stopped with SIGTERM, one at a
// time, during load, and replaced. A graceful stop hands back what it had
// not started and lets running handlers finish, so there must be no
// duplicate and no burned attempt at all: a SIGTERM explains nothing. The
// leases are long (10 s), so that no stall of a busy machine can make one
// expire: nothing here needs a lease to expire.
func TestChaosGracefulStop(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			d := loadTime(t)
			c := newCluster(t, options{workers: 3, redis: b.redis, lease: 10 * time.Second})
			ctx, cancel := context.WithTimeout(t.Context(), d)
			defer cancel()
			wait := c.startLoad(ctx, load{})
			interval := killEvery(t, 700*time.Millisecond)
			every(ctx, interval, func(i int) { c.stopWorker(i%3, true) })
			wait()
			r := c.finish("graceful-stop/"+b.name, fmt.Sprintf("%s (8 handlers of 100 ms, 10 s leases); %s of load at 150 tasks/s; a worker stopped with SIGTERM and replaced every ~%s", b.what, d, interval))
			if r.Faults[chaos.Term] == 0 {
				t.Errorf("no graceful stop: the scenario tested nothing")
			}
		})
	}
}
