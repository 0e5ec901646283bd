package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

const crashEnv = "KILN_EMBEDDED_CRASH_DIR"

// crashChild runs the writer half of TestCrashRecovery when the test binary
// is started as its child, and reports whether it did.
func crashChild() bool {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		return false
	}
	if err := crashWriter(dir, os.Getenv("KILN_EMBEDDED_CRASH_ROUND")); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	return true
}

// crashWriter enqueues, leases and reports tasks without end, printing a line
// for every acknowledged enqueue ("E id") and outcome ("S id"), until it is
// killed.
func crashWriter(dir, round string) error {
	s, err := Open(dir, nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		n := 1 + i%64
		in := make([]store.TaskInput, n)
		for j := range in {
			in[j] = store.TaskInput{
				ID: fmt.Sprintf("r%s-%d-%d", round, i, j), Type: "crash", Queue: []string{"a", "b"}[j%2],
				Payload: []byte(strings.Repeat("p", j*100)), MaxRetries: 3,
			}
		}
		r, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "crash", Tasks: in})
		if err != nil {
			return err
		}
		for _, it := range r.Items {
			if it.Err != nil {
				return it.Err
			}
			_, _ = fmt.Fprintf(out, "E %s\n", it.ID) // errors surface at Flush
		}
		if err := out.Flush(); err != nil {
			return err
		}
		l, err := s.Lease(ctx, store.LeaseParams{Namespace: "crash", Queues: []string{"a", "b"}, Max: max(1, n/2), Duration: time.Hour})
		if err != nil {
			return err
		}
		var outs []store.Outcome
		for k, t := range l.Tasks {
			kind := store.OutcomeSucceeded
			if k%5 == 4 {
				kind = store.OutcomeRetry
			}
			outs = append(outs, store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: kind, Result: []byte("ok " + t.ID), Error: "e"})
		}
		rr, err := s.Report(ctx, store.ReportParams{Namespace: "crash", Outcomes: outs})
		if err != nil {
			return err
		}
		for k, e := range rr.Errs {
			if e != nil {
				return e
			}
			if outs[k].Kind == store.OutcomeSucceeded {
				_, _ = fmt.Fprintf(out, "S %s\n", outs[k].ID) // errors surface at Flush
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

// TestCrashRecovery kills a writing child process with SIGKILL at several
// points, reopens the data folder and checks that every acknowledged task and
// outcome is intact and every invariant holds.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	enq := map[string]bool{}
	succ := map[string]bool{}
	for round := 0; round < 4; round++ {
		// Kill after a different number of acknowledged writes each round.
		killChildAfter(t, crashEnv+"="+dir, round, 500+round*1700, func(kind, id string) {
			if kind == "E" {
				enq[id] = true
			} else {
				succ[id] = true
			}
		})

		s := mustOpen(t, dir, nil)
		ids := make([]string, 0, len(enq))
		for id := range enq {
			ids = append(ids, id)
		}
		for len(ids) > 0 {
			chunk := ids[:min(len(ids), store.MaxBatch)]
			ids = ids[len(chunk):]
			g, err := s.Get(t.Context(), store.GetParams{Namespace: "crash", IDs: chunk})
			if err != nil {
				t.Fatal(err)
			}
			for i, task := range g.Tasks {
				id := chunk[i]
				if task == nil {
					t.Fatalf("round %d: acknowledged task %s lost", round, id)
				}
				if succ[id] && (task.State != store.StateSucceeded || string(task.Result) != "ok "+id) {
					t.Fatalf("round %d: task %s acknowledged as succeeded is %s with result %q", round, id, task.State, task.Result)
				}
				if j := strings.LastIndexByte(id, '-'); j > 0 {
					n, _ := strconv.Atoi(id[j+1:])
					if len(task.Payload) != n*100 {
						t.Fatalf("round %d: task %s payload has %d bytes, want %d", round, id, len(task.Payload), n*100)
					}
				}
			}
		}
		storetest.CheckInvariants(t, s, "crash")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged tasks, %d acknowledged successes intact", round, len(enq), len(succ))
	}
}

// killChildAfter runs this test binary as a child with env (the child's
// part of a crash test, for round), hands each line it prints to line, and
// kills it with SIGKILL after killAfter lines; it fails the test when the
// child stops before that.
func killChildAfter(t *testing.T, env string, round, killAfter int, line func(kind, id string)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env, "KILN_EMBEDDED_CRASH_ROUND="+strconv.Itoa(round))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	seen := 0
	for sc.Scan() {
		kind, id, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("bad line %q", sc.Text())
		}
		line(kind, id)
		if seen++; seen == killAfter {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if seen < killAfter {
		t.Fatalf("round %d: child stopped after %d lines: %v\n%s", round, seen, err, stderr.String())
	}
}
