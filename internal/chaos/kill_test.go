package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
)

// killEvery is how often a scenario kills something: often enough for a
// few kills in the CI size, every few seconds in a long run.
func killEvery(t *testing.T, ci time.Duration) time.Duration {
	t.Helper()
	if long(t) {
		return 2 * ci
	}
	return ci
}

// TestChaosKillWorkers: worker processes SIGKILLed, one at a time, during
// load, and replaced. Nothing acknowledged is lost; every duplicate follows
// a kill of the process that ran the task before, and every burned attempt
// a kill.
func TestChaosKillWorkers(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			d := loadTime(t)
			c := newCluster(t, options{workers: 3, redis: b.redis})
			ctx, cancel := context.WithTimeout(t.Context(), d)
			defer cancel()
			wait := c.startLoad(ctx, load{})
			interval := killEvery(t, time.Second)
			every(ctx, interval, func(i int) { c.killWorker(i % 3) })
			wait()
			r := c.finish("kill-workers/"+b.name, fmt.Sprintf("%s (8 handlers of 100 ms, 1 s leases); %s of load at 150 tasks/s; a worker SIGKILLed and replaced every ~%s", b.what, d, interval))
			if r.Faults[chaos.Kill] == 0 || r.ExtraRuns+r.Burned == 0 {
				t.Errorf("the kills hit nothing (%d kills, %d extra runs, %d burned attempts): the scenario tested nothing", r.Faults[chaos.Kill], r.ExtraRuns, r.Burned)
			}
		})
	}
}

// TestChaosKillStore: the store SIGKILLed during enqueues and work, and
// brought back on its data: the server process with its embedded store
// (restarted on the same folder and address), or redis-server (restarted on
// its folder and port). Every acknowledged enqueue survives and completes,
// and an enqueue while the store is down but the server up is answered 503
// unavailable, never 500.
func TestChaosKillStore(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			d := loadTime(t)
			c := newCluster(t, options{workers: 3, redis: b.redis})
			ctx, cancel := context.WithTimeout(t.Context(), d)
			defer cancel()
			var mu sync.Mutex
			statuses := map[string]int{}
			wait := c.startLoad(ctx, load{refused: func(err error) {
				var ae *apiclient.Error
				if errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable {
					mu.Lock()
					statuses[strconv.Itoa(ae.Status)+" "+ae.Error()]++
					mu.Unlock()
				}
			}})
			interval := killEvery(t, 2*time.Second)
			every(ctx, interval, func(int) { b.killStore(t, c, b.down) })
			wait()
			r := c.finish("kill-store/"+b.name, fmt.Sprintf("%s (8 handlers of 100 ms, 1 s leases); %s of load at 150 tasks/s; the store SIGKILLed every ~%s and restarted %s later", b.what, d, interval+b.down, b.down))
			if r.Faults[chaos.Kill] == 0 {
				t.Errorf("no kill: the scenario tested nothing")
			}
			for s, n := range statuses {
				t.Errorf("an enqueue while the store was down was answered %s (%d times); want 503 unavailable", s, n)
			}
		})
	}
}
