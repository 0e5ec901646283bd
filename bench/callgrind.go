package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// runCallgrind counts the instructions a Redis run under valgrind's
// callgrind executes per kiln script call, a measure the machine's load
// does not change: callgrind's counters are zeroed (callgrind_control -z)
// before each phase and dumped (-d) after it, and the dump's totals line
// is divided by the phase's calls or tasks. Phases, on the store directly
// and serially: 1,000 enqueue calls of one task, 100 of 20 tasks, 100
// lease calls of 20 tasks each followed by a report of the 20, and 500
// times the idle path of one task (enqueue, lease, report); then the end
// to end shapes: 5,000 tasks enqueued 1,000 per call, leased 50 per call,
// reported succeeded 50 per call; a worker's shape (5,000 tasks leased 50
// per call, each lease followed by the report of the 50 before); a second
// lease of 2,000 tasks released after their first, 50 per call; a lease of
// 1,000 members of 20 chords, 50 per call; and per call, a lease that
// finds nothing, a report of a task that does not exist and an EVAL of a
// script that does nothing (what a call costs whatever it does); last, one
// Sweep of 5,000 tasks past their retention (a store of a clock a day
// ahead deletes them). The tasks have no payload unless -task-payload
// gives its size. The dumps go where redis-server was started with
// --callgrind-out-file=DIR/cg.out.%p.
func runCallgrind(pid, dir string) {
	ctx := context.Background()
	o := must(redis.ParseURL(*redisURL))
	o.MaxRetries = -1
	rdb := redis.NewClient(o)
	defer func() { _ = rdb.Close() }()
	prefix := "kbench-" + token()
	defer deleteKeys(*redisURL, "{"+prefix+"*", prefix+"*")
	s, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: prefix})
	if err != nil {
		log.Fatalf("kiln: open: %v", err)
	}
	defer func() { _ = s.Close() }()
	seq := 0
	task := func() store.TaskInput {
		seq++
		// A task of kiln's default options, as Client sends it.
		return store.TaskInput{ID: fmt.Sprintf("01JBENCHCALLGRIND%09d", seq), Type: "noop", MaxRetries: kiln.MaxRetriesDefault, Timeout: kiln.TimeoutDefault, Payload: payload()}
	}
	enqueue := func(ns string, n int) {
		ts := make([]store.TaskInput, n)
		for i := range ts {
			ts[i] = task()
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: ts}); err != nil {
			log.Fatalf("kiln: enqueue: %v", err)
		}
	}
	leaseReport := func(ns string, n int) {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: n, Duration: time.Minute, WorkerID: "w"})
		if err != nil || len(res.Tasks) != n {
			log.Fatalf("kiln: lease: %d tasks, %v; want %d", len(res.Tasks), err, n)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, t := range res.Tasks {
			outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs}); err != nil {
			log.Fatalf("kiln: report: %v", err)
		}
	}
	for range 20 { // scripts loaded, namespaces registered
		enqueue("a", 1)
		enqueue("b", 1)
		enqueue("c", 1)
	}
	leaseReport("b", 20)
	leaseReport("c", 20)
	phase := func(per int, run func()) float64 {
		control(pid, "-z")
		run()
		control(pid, "-d")
		return float64(dumpTotal(dir, pid)) / float64(per)
	}
	one := phase(1000, func() {
		for range 1000 {
			enqueue("a", 1)
		}
	})
	twenty := phase(100, func() {
		for range 100 {
			enqueue("b", 20)
		}
	})
	lr := phase(2000, func() {
		for range 100 {
			leaseReport("b", 20)
		}
	})
	path := phase(500, func() {
		for range 500 {
			enqueue("c", 1)
			leaseReport("c", 1)
		}
	})
	// The end-to-end shapes, as -scripts runs them: enqueue calls of 1000
	// tasks, then leases of 50 per call, then reports of 50 per call; in a
	// namespace whose change feed no one reads, then in one whose feed is
	// read (the Redis store records changes only then).
	const big = 5000
	// leaseAll leases n tasks of namespace ns, 50 per call, and returns an
	// outcome of the kind given for each.
	leaseAll := func(ns string, n int, kind store.OutcomeKind) []store.Outcome {
		var leased []store.Outcome
		for len(leased) < n {
			res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 50, Duration: time.Minute, WorkerID: "w"})
			if err != nil || len(res.Tasks) == 0 {
				log.Fatalf("kiln: lease: %d tasks, %v", len(res.Tasks), err)
			}
			for _, t := range res.Tasks {
				leased = append(leased, store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: kind})
			}
		}
		return leased
	}
	shapes := func(ns string) (enq, lease, report float64) {
		var leased []store.Outcome
		enq = phase(big, func() {
			for range big / 1000 {
				enqueue(ns, 1000)
			}
		})
		lease = phase(big, func() { leased = leaseAll(ns, big, store.OutcomeSucceeded) })
		report = phase(big, func() {
			for i := 0; i < big; i += 50 {
				if _, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: leased[i : i+50]}); err != nil {
					log.Fatalf("kiln: report: %v", err)
				}
			}
		})
		return enq, lease, report
	}
	enq, lease, report := shapes("d")
	// A worker's shape: 50 tasks active at all times, as a worker of
	// concurrency 50 keeps them; each call leases 50 and reports the 50 of
	// the call before, so the lease set holds 50 to 100 tasks (the shapes
	// above lease all 5,000 before they report: a lease set of thousands).
	for range big / 1000 {
		enqueue("w", 1000)
	}
	steady := phase(big, func() {
		prev := leaseAll("w", 50, store.OutcomeSucceeded)
		for done := 50; done < big; done += 50 {
			cur := leaseAll("w", 50, store.OutcomeSucceeded)
			if _, err := s.Report(ctx, store.ReportParams{Namespace: "w", Outcomes: prev}); err != nil {
				log.Fatalf("kiln: report: %v", err)
			}
			prev = cur
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "w", Outcomes: prev}); err != nil {
			log.Fatalf("kiln: report: %v", err)
		}
	})
	if _, err := s.Changes(ctx, store.ChangesParams{Namespace: "r"}); err != nil {
		log.Fatalf("kiln: changes: %v", err)
	}
	enqR, leaseR, reportR := shapes("r")
	// A second lease: tasks released after their first lease, leased
	// again 50 per call (a retry's record, which the lease fields make
	// longer than a new task's).
	const nAgain = 2000
	for range nAgain / 1000 {
		enqueue("g", 1000)
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: "g", Outcomes: leaseAll("g", nAgain, store.OutcomeRelease)}); err != nil {
		log.Fatalf("kiln: report: %v", err)
	}
	again := phase(nAgain, func() { leaseAll("g", nAgain, store.OutcomeRelease) })
	// A workflow member's lease: 20 chords of 50 members (each member has
	// workflow fields, and the callback, held, waits for all of them),
	// their members leased 50 per call.
	for f := range 20 {
		members := make([]store.TaskInput, 50)
		after := make([]string, len(members))
		for i := range members {
			members[i] = task()
			after[i] = members[i].ID
		}
		if err := s.EnqueueFlow(ctx, store.FlowParams{Namespace: "f", ID: fmt.Sprintf("chord%d", f), Tasks: members, Held: []store.HeldTask{{Task: task(), After: after}}}); err != nil {
			log.Fatalf("kiln: enqueue flow: %v", err)
		}
	}
	member := phase(1000, func() { leaseAll("f", 1000, store.OutcomeSucceeded) })
	// What a call costs whatever it does: a lease that finds nothing, a
	// report of a task that does not exist, and Redis' own EVAL of a script
	// that does nothing.
	emptyLease := phase(500, func() {
		for range 500 {
			if _, err := s.Lease(ctx, store.LeaseParams{Namespace: "e", Queues: []string{store.DefaultQueue}, Max: 50, Duration: time.Minute, WorkerID: "w"}); err != nil {
				log.Fatalf("kiln: lease: %v", err)
			}
		}
	})
	unknown := phase(500, func() {
		for range 500 {
			if _, err := s.Report(ctx, store.ReportParams{Namespace: "e", Outcomes: []store.Outcome{{ID: "none", LeaseID: 1, Kind: store.OutcomeSucceeded}}}); err != nil {
				log.Fatalf("kiln: report: %v", err)
			}
		}
	})
	eval := phase(500, func() {
		for range 500 {
			if err := rdb.Eval(ctx, "return 1", []string{"{" + prefix + ":e}"}).Err(); err != nil {
				log.Fatalf("eval: %v", err)
			}
		}
	})
	// A sweep of tasks past their retention: 5,000 tasks enqueued, leased
	// and reported succeeded 50 per call, then a store whose clock is a
	// day and a second on deletes them (one Sweep call).
	clock := &laterClock{}
	sw, err := redisstore.New(ctx, rdb, &redisstore.Config{Prefix: prefix + "-sweep", Clock: clock})
	if err != nil {
		log.Fatalf("kiln: open: %v", err)
	}
	defer func() { _ = sw.Close() }()
	for range big / 1000 {
		in := make([]store.TaskInput, 1000)
		for i := range in {
			in[i] = task()
		}
		if _, err := sw.Enqueue(ctx, store.EnqueueParams{Namespace: "s", Tasks: in}); err != nil {
			log.Fatalf("kiln: enqueue: %v", err)
		}
	}
	for done := 0; done < big; {
		res, err := sw.Lease(ctx, store.LeaseParams{Namespace: "s", Queues: []string{store.DefaultQueue}, Max: 50, Duration: time.Minute, WorkerID: "w"})
		if err != nil || len(res.Tasks) == 0 {
			log.Fatalf("kiln: lease: %d tasks, %v", len(res.Tasks), err)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, t := range res.Tasks {
			outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := sw.Report(ctx, store.ReportParams{Namespace: "s", Outcomes: outs}); err != nil {
			log.Fatalf("kiln: report: %v", err)
		}
		done += len(res.Tasks)
	}
	clock.ahead.Store(int64(store.RetentionDefault + time.Second))
	sweep := phase(big, func() {
		if r, err := sw.Sweep(ctx, store.SweepParams{}); err != nil || r.Deleted != big {
			log.Fatalf("kiln: sweep: %+v, %v; want %d deleted", r, err, big)
		}
	})
	fmt.Printf("Redis instructions per call: a lease that finds nothing %.0f, a report of an unknown task %.0f, EVAL of 'return 1' %.0f\n", emptyLease, unknown, eval)
	fmt.Printf("Redis instructions: enqueue call of 1 task %.0f; of 20 tasks %.0f (%.0f per task, %.0f per task added to a call); lease and report of 20 per call, per task %.0f; idle path (enqueue, lease, report of 1 task) %.0f; load average %s\n",
		one, twenty, twenty/20, (twenty-one)/19, lr, path, loadAverage())
	if *taskPayload > 0 {
		fmt.Printf("Tasks with %d-byte payloads.\n", *taskPayload)
	}
	fmt.Printf("Per task, end-to-end shapes: enqueue (1000 per call) %.0f, lease (50 per call) %.0f, report succeeded (50 per call) %.0f, all three %.0f\n",
		enq, lease, report, enq+lease+report)
	fmt.Printf("A worker's shape (50 active: each call leases 50 and reports the 50 before), lease and report per task: %.0f\n", steady)
	fmt.Printf("The same with the change feed read: enqueue %.0f, lease %.0f, report succeeded %.0f, all three %.0f\n",
		enqR, leaseR, reportR, enqR+leaseR+reportR)
	fmt.Printf("A second lease (tasks released after their first, leased again 50 per call): %.0f per task; a workflow member's lease (chords of 50, 50 per call): %.0f per task\n", again, member)
	fmt.Printf("A sweep of tasks past their retention (5,000 in one call): %.0f per task\n", sweep)
}

// laterClock is the system clock moved on by ahead (a time.Duration).
type laterClock struct{ ahead atomic.Int64 }

func (c *laterClock) Now() time.Time { return time.Now().Add(time.Duration(c.ahead.Load())) }

func control(pid, op string) {
	if out, err := exec.Command("callgrind_control", op, pid).CombinedOutput(); err != nil { //nolint:gosec // G204: the pid is the operator's -callgrind-pid
		log.Fatalf("callgrind_control %s %s: %v: %s", op, pid, err, out)
	}
}

// dumpTotal reads the totals line of the newest callgrind dump of pid.
func dumpTotal(dir, pid string) int64 {
	files, err := filepath.Glob(filepath.Join(dir, "cg.out."+pid+".*"))
	if err != nil || len(files) == 0 {
		log.Fatalf("no callgrind dump of %s in %s", pid, dir)
	}
	newest, at := "", time.Time{}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(at) {
			newest, at = f, st.ModTime()
		}
	}
	raw := must(os.ReadFile(newest)) //nolint:gosec // G304: a dump in the operator's -callgrind-dir
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "totals: "); ok {
			return must(strconv.ParseInt(strings.Fields(v)[0], 10, 64))
		}
	}
	log.Fatalf("no totals line in %s", newest)
	return 0
}
