package chaos_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
)

// TestChaosPartition: remote worker processes in network namespaces of
// their own, each cut off the server in turn (its link down: packets are
// dropped, not refused) for longer than a lease, then reconnected, during
// load. The tasks a cut-off worker held run again elsewhere once their
// leases expire; nothing is lost, and every extra run is explained by the
// partition of the worker that ran the task before.
func TestChaosPartition(t *testing.T) {
	t.Parallel()
	d := loadTime(t)
	const (
		workers = 3
		lease   = time.Second
		timeout = 3 * time.Second // the workers' request timeout
		cut     = 2500 * time.Millisecond
	)
	c := newCluster(t, options{workers: workers, netns: true, lease: lease, timeout: timeout})
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	wait := c.startLoad(ctx, load{})
	interval := killEvery(t, time.Second)
	every(ctx, interval, func(i int) {
		slot := i % workers
		p := c.worker(slot)
		// The partition's effects may outlast it by a request stuck on a
		// cut connection until its timeout, and a lease.
		end := c.ledger.Begin(chaos.Partition, runner(p), p.Name())
		if err := c.net.Cut(slot); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cut)
		if err := c.net.Heal(slot); err != nil {
			t.Fatal(err)
		}
		end(timeout + lease)
	})
	wait()
	r := c.finish("partition", fmt.Sprintf("%d remote worker processes in network namespaces (8 handlers of 100 ms, %s leases, %s request timeout), a server process on the embedded store; %s of load at 150 tasks/s; a worker cut off for %s every ~%s", workers, lease, timeout, d, cut, interval+cut))
	if r.Faults[chaos.Partition] == 0 || r.ExtraRuns+r.Burned == 0 {
		t.Errorf("the partitions hit nothing (%d partitions, %d extra runs, %d burned attempts): the scenario tested nothing", r.Faults[chaos.Partition], r.ExtraRuns, r.Burned)
	}
}
