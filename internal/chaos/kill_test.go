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
	if long(t) {
		return 2 * ci
	}
	return ci
}

// TestChaosKillWorkers: remote worker processes SIGKILLed, one at a time,
// during load (server on the embedded store). Nothing acknowledged is lost;
// every duplicate and burned attempt follows a kill of the process that ran
// or leased the task.
func TestChaosKillWorkers(t *testing.T) {
	t.Parallel()
	d := loadTime(t)
	c := newCluster(t, options{workers: 3})
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	wait := c.startLoad(ctx, load{})
	interval := killEvery(t, time.Second)
	every(ctx, interval, func(i int) { c.killWorker(i % 3) })
	wait()
	r := c.finish("kill-workers", fmt.Sprintf("3 remote worker processes (8 handlers of 100 ms, 1 s leases), a server process on the embedded store; %s of load at 150 tasks/s; a worker SIGKILLed and replaced every ~%s", d, interval))
	if r.Faults[chaos.Kill] == 0 || r.ExtraRuns+r.Burned == 0 {
		t.Errorf("the kills hit nothing (%d kills, %d extra runs, %d burned attempts): the scenario tested nothing", r.Faults[chaos.Kill], r.ExtraRuns, r.Burned)
	}
}

// TestChaosKillServer: the server process (embedded store) SIGKILLed during
// enqueues and work, and restarted on the same data folder and address.
// Every acknowledged enqueue survives (the embedded store fsyncs before it
// answers) and completes.
func TestChaosKillServer(t *testing.T) {
	t.Parallel()
	d := loadTime(t)
	c := newCluster(t, options{workers: 3})
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	wait := c.startLoad(ctx, load{})
	interval := killEvery(t, 1500*time.Millisecond)
	every(ctx, interval, func(int) { c.killServer(200 * time.Millisecond) })
	wait()
	r := c.finish("kill-server", fmt.Sprintf("3 remote worker processes (8 handlers of 100 ms, 1 s leases), a server process on the embedded store; %s of load at 150 tasks/s; the server SIGKILLed every ~%s and restarted 200 ms later", d, interval))
	if r.Faults[chaos.Kill] == 0 {
		t.Errorf("no kill: the scenario tested nothing")
	}
}

// TestChaosKillRedis: a private redis-server (appendonly yes, appendfsync
// always) SIGKILLed during load and restarted on its folder; kiln.Worker
// processes run on Redis directly and the load goes through a server
// process on the same Redis. Every acknowledged enqueue survives and
// completes, and an enqueue during the outage is answered 503 unavailable,
// never 500.
func TestChaosKillRedis(t *testing.T) {
	t.Parallel()
	d := loadTime(t)
	c := newCluster(t, options{workers: 3, redis: true})
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
	// Down long enough for the Redis client's own retries (dials and
	// commands: a few seconds) to give up, so that the server has to answer
	// enqueues without Redis.
	const redisDown = 4 * time.Second
	every(ctx, interval, func(int) {
		pid := c.redis.Pid()
		if err := c.redis.Kill(); err != nil {
			t.Fatalf("kill redis-server: %v", err)
		}
		end := c.ledger.Begin(chaos.Kill, "", "redis-server pid "+strconv.Itoa(pid))
		time.Sleep(redisDown)
		if err := c.redis.Restart(); err != nil {
			t.Fatalf("restart redis-server: %v", err)
		}
		end(0)
	})
	wait()
	r := c.finish("kill-redis", fmt.Sprintf("3 kiln.Worker processes on Redis (8 handlers of 100 ms, 1 s leases), the load through a server process on the same Redis (appendonly yes, appendfsync always); %s of load at 150 tasks/s; redis-server SIGKILLed every ~%s and restarted %s later", d, interval, redisDown))
	if r.Faults[chaos.Kill] == 0 {
		t.Errorf("no kill: the scenario tested nothing")
	}
	for s, n := range statuses {
		t.Errorf("an enqueue during a Redis outage was answered %s (%d times); want 503 unavailable", s, n)
	}
}
