package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

const leaseCrashEnv = "KILN_EMBEDDED_LEASE_CRASH_DIR"

// slowEngine waits before every commit, as a slow disk's sync would: the
// time between a write being queued and being durable grows to at least
// that.
type slowEngine struct {
	engine
	delay time.Duration
}

func (e slowEngine) apply(ops []op, sync bool) error {
	time.Sleep(e.delay)
	return e.engine.apply(ops, sync)
}

// leaseCrashChild runs the writer half of TestCrashLeasedSurvive when the
// test binary is started as its child, and reports whether it did.
func leaseCrashChild() bool {
	dir := os.Getenv(leaseCrashEnv)
	if dir == "" {
		return false
	}
	if err := leaseCrashWriter(dir, os.Getenv("KILN_EMBEDDED_CRASH_ROUND")); err != nil {
		fmt.Fprintln(os.Stderr, "lease crash child:", err)
		os.Exit(2)
	}
	return true
}

// leaseCrashWriter enqueues tasks in one goroutine and leases them in
// another, as a worker does, printing "L id" for every task leased (a
// handler would start it now), until it is killed. Commits are slowed
// down, so that many enqueues wait for theirs at any time.
func leaseCrashWriter(dir, round string) error {
	s, err := Open(dir, &Config{wrapEngine: func(e engine) engine { return slowEngine{engine: e, delay: 2 * time.Millisecond} }})
	if err != nil {
		return err
	}
	ctx := context.Background()
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	errc := make(chan error, 2)
	go func() {
		for i := 0; ; i++ {
			in := make([]store.TaskInput, 1+i%8)
			for j := range in {
				in[j] = store.TaskInput{ID: fmt.Sprintf("l%s-%d-%d", round, i, j), Type: "crash", Queue: "q"}
			}
			if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "crash", Tasks: in}); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			l, err := s.Lease(ctx, store.LeaseParams{Namespace: "crash", Queues: []string{"q"}, Max: 16, Duration: time.Hour, Wait: 50 * time.Millisecond})
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			for _, t := range l.Tasks {
				_, _ = fmt.Fprintf(out, "L %s\n", t.ID) // errors surface at Flush
			}
			err = out.Flush()
			mu.Unlock()
			if err != nil {
				errc <- err
				return
			}
			outs := make([]store.Outcome, len(l.Tasks))
			for k, t := range l.Tasks {
				outs[k] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
			}
			if _, err := s.Report(ctx, store.ReportParams{Namespace: "crash", Outcomes: outs}); err != nil {
				errc <- err
				return
			}
		}
	}()
	return <-errc
}

// TestCrashLeasedSurvive kills, with SIGKILL, a child that enqueues tasks
// while a leaser takes them, its commits slowed down, and checks after each
// kill that every task the leaser got (a handler would have run it) is in
// the data folder: a task is leased only once its enqueue is durable.
func TestCrashLeasedSurvive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	leased := map[string]bool{}
	for round := range 3 {
		killChildAfter(t, leaseCrashEnv+"="+dir, round, 300+round*400, func(_, id string) { leased[id] = true })
		s := mustOpen(t, dir, nil)
		ids := make([]string, 0, len(leased))
		for id := range leased {
			ids = append(ids, id)
		}
		got := getAll(t, s, "crash", ids)
		for _, id := range ids {
			if got[id] == nil {
				t.Errorf("round %d: task %s was leased, and is gone after the crash", round, id)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
		t.Logf("round %d: %d leased tasks intact", round, len(leased))
	}
}
