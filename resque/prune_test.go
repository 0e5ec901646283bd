package resque

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// rubyPrune does what Ruby Resque 3.0's Worker#prune_dead_workers does for
// a Ruby worker on this host serving queues (["*"]: all): it unregisters
// every worker whose workers:heartbeat entry is older than pruneInterval,
// and every other worker of this host with the same queue set (any, for
// "*") whose pid is not among the pids of the processes whose command line
// contains "resque" (ps -A -o pid,command). It returns the ids it
// unregistered (removing them from workers and workers:heartbeat, as Ruby
// does).
func rubyPrune(t *testing.T, rdb *redis.Client, ns, hostname string, queues []string, pruneInterval time.Duration) []string {
	t.Helper()
	ctx := context.Background()
	out, err := exec.Command("ps", "-A", "-o", "pid,command").Output()
	if err != nil {
		t.Skipf("ps: %v", err)
	}
	var known []string
	resqueRE := regexp.MustCompile(`(?i)resque`)
	for _, line := range strings.Split(string(out), "\n") {
		if !resqueRE.MatchString(line) || strings.Contains(line, "resque-web") {
			continue
		}
		if f := strings.Fields(line); len(f) > 0 {
			known = append(known, f[0])
		}
	}
	hbs := rdb.HGetAll(ctx, ns+"workers:heartbeat").Val()
	var pruned []string
	for _, id := range rdb.SMembers(ctx, ns+"workers").Val() {
		if hb, ok := hbs[id]; ok {
			at, err := time.Parse(time.RFC3339, hb)
			if err != nil {
				t.Fatalf("heartbeat %q of %s does not parse: %v", hb, id, err)
			}
			if time.Since(at) > pruneInterval {
				pruned = append(pruned, id)
				continue
			}
		}
		parts := strings.Split(id, ":") // Ruby: host, pid, queues = id.split(':')
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		host, pid, wq := parts[0], parts[1], strings.Split(parts[2], ",")
		if !slices.Contains(queues, "*") {
			a, b := slices.Clone(wq), slices.Clone(queues)
			slices.Sort(a)
			slices.Sort(b)
			if !slices.Equal(slices.Compact(a), slices.Compact(b)) {
				continue
			}
		}
		if host != hostname || slices.Contains(known, pid) {
			continue
		}
		pruned = append(pruned, id)
	}
	for _, id := range pruned {
		rdb.SRem(ctx, ns+"workers", id)
		rdb.HDel(ctx, ns+"workers:heartbeat", id)
		rdb.Del(ctx, ns+"worker:"+id, ns+"worker:"+id+":started", ns+"stat:processed:"+id, ns+"stat:failed:"+id)
	}
	slices.Sort(pruned)
	return pruned
}

// TestRubyPruneSparesLiveWorkers runs a kiln worker on this host and a port
// of Ruby Resque's prune_dead_workers, as a Ruby worker on the same host
// and queues (and on "*") would run it at its start: it removes none of
// kiln's live workers (their heartbeats are fresh, and their ids carry the
// pid of a process whose command line names resque), while it does remove
// a dead process's id and a goworker-style id (pid "1234-0"). A kiln
// worker that was pruned anyway registers again at its next heartbeat.
func TestRubyPruneSparesLiveWorkers(t *testing.T) {
	t.Parallel()
	if !cmdlineHasResque() {
		t.Skip("the test binary's command line does not contain \"resque\"")
	}
	rdb, ns := testClient(t)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(rdb, ns, NewRegistry(), "q", "r")
	cfg.Hostname, cfg.Concurrency = host, 2
	stop := startWork(t, cfg)
	base := host + ":" + strconv.Itoa(os.Getpid()) + ":q,r"
	live := []string{base + ":0", base + ":1"}
	waitFor(t, "the worker's registration", func() bool {
		return rdb.SCard(context.Background(), ns+"workers").Val() == 2
	})
	dead := host + ":999999999:q,r" // no such process
	goworkerID := host + ":1-0:q,r" // goworker's form
	rdb.SAdd(t.Context(), ns+"workers", dead, goworkerID)

	for _, queues := range [][]string{{"q", "r"}, {"*"}} {
		got := rubyPrune(t, rdb, ns, host, queues, 300*time.Second)
		want := []string{dead, goworkerID}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Ruby on %v pruned %v, want %v", queues, got, want)
		}
		rdb.SAdd(t.Context(), ns+"workers", dead, goworkerID)
	}

	// Pruned anyway (say, by a heartbeat rule with a tiny interval): the
	// kiln worker registers again.
	if got := rubyPrune(t, rdb, ns, host, []string{"*"}, time.Nanosecond); !slices.Contains(got, live[0]) {
		t.Fatalf("with a 1 ns prune interval, Ruby pruned %v", got)
	}
	waitFor(t, "the worker to register again", func() bool {
		m := rdb.SMembers(context.Background(), ns+"workers").Val()
		return slices.Contains(m, live[0]) && slices.Contains(m, live[1]) &&
			rdb.HExists(context.Background(), ns+"workers:heartbeat", live[0]).Val() &&
			rdb.Exists(context.Background(), ns+"worker:"+live[0]+":started").Val() == 1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
