package chaos_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
)

// backend is a store the store-generic scenarios (kill-workers, kill-store,
// graceful-stop) run on.
type backend struct {
	name string
	// redis: the server process and the worker processes on a private
	// redis-server (appendonly yes, appendfsync always), the workers on
	// Redis directly; otherwise the embedded store inside the server
	// process, and remote workers.
	redis bool
	// what describes the processes, for the report.
	what string
	// killStore SIGKILLs the store during load and brings it back after
	// down, recording the outage in the ledger.
	killStore func(t *testing.T, c *cluster, down time.Duration)
	// down is how long killStore leaves the store down.
	down time.Duration
}

// backends lists the stores. PostgreSQL has no store yet: when
// store/postgres exists, it joins this list (a private PostgreSQL cluster
// the test starts and kills with SIGKILL, like redis-server here), and
// every store-generic scenario covers it.
var backends = []backend{{
	name: "embedded",
	what: "3 remote worker processes, a server process on the embedded store",
	// The embedded store lives in the server process: killing the server
	// kills the store mid-write.
	killStore: func(_ *testing.T, c *cluster, down time.Duration) { c.killServer(down) },
	down:      200 * time.Millisecond,
}, {
	name:  "redis",
	redis: true,
	what:  "3 kiln.Worker processes on a private Redis (appendonly yes, appendfsync always), the load through a server process on it",
	killStore: func(t *testing.T, c *cluster, down time.Duration) {
		t.Helper()
		pid := c.redis.Pid()
		if err := c.redis.Kill(); err != nil {
			t.Fatalf("kill redis-server: %v", err)
		}
		end := c.ledger.Begin(chaos.Kill, "", "redis-server pid "+strconv.Itoa(pid))
		time.Sleep(down)
		if err := c.redis.Restart(); err != nil {
			t.Fatalf("restart redis-server: %v", err)
		}
		end(c.outageLinger())
	},
	// Down long enough for the Redis client's own retries (dials and
	// commands: a few seconds) to give up, so that the server has to
	// answer enqueues without Redis.
	down: 4 * time.Second,
}}
