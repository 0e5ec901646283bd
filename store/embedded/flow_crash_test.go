package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

const flowCrashEnv = "KILN_EMBEDDED_FLOW_CRASH_DIR"

// flowCrashChild runs the writer half of TestFlowCrash when the test
// binary is started as its child, and reports whether it did.
func flowCrashChild() bool {
	dir := os.Getenv(flowCrashEnv)
	if dir == "" {
		return false
	}
	if err := flowCrashWriter(dir, os.Getenv("KILN_EMBEDDED_CRASH_ROUND")); err != nil {
		fmt.Fprintln(os.Stderr, "flow crash child:", err)
		os.Exit(2)
	}
	return true
}

// crashFlow returns flow i of a round: a chain a -> chord(m0..m(k-1)) -> cb
// -> z, with k from 1 to 8. Flow 39 and every 70th after it, the last
// acknowledged before each kill of TestFlowCrash, also has 1,200 ready
// tasks of its own: it is written in parts, which the kill may interrupt.
func crashFlow(round string, i int) store.FlowParams {
	id := fmt.Sprintf("f%s-%d", round, i)
	k := 1 + i%8
	p := store.FlowParams{Namespace: "crash", ID: id, Spec: []byte(id)}
	a := id + ".a"
	p.Tasks = []store.TaskInput{{ID: a, Type: "t", Queue: "q", MaxRetries: 3}}
	var ms []string
	for j := range k {
		m := fmt.Sprintf("%s.m%d", id, j)
		ms = append(ms, m)
		p.Held = append(p.Held, store.HeldTask{Task: store.TaskInput{ID: m, Type: "t", Queue: "q", MaxRetries: 3}, After: []string{a}})
	}
	p.Held = append(p.Held,
		store.HeldTask{Task: store.TaskInput{ID: id + ".cb", Type: "t", Queue: "q", MaxRetries: 3}, After: ms},
		store.HeldTask{Task: store.TaskInput{ID: id + ".z", Type: "t", Queue: "q", MaxRetries: 3}, After: []string{id + ".cb"}})
	if i%70 == 39 {
		for j := range flowPartTasks + 200 {
			p.Tasks = append(p.Tasks, store.TaskInput{ID: fmt.Sprintf("%s.r%d", id, j), Type: "t", Queue: "q", MaxRetries: 3})
		}
	}
	return p
}

// flowCrashWriter enqueues flows and leases and reports their tasks
// without end, printing "F id" for every acknowledged flow, until killed.
func flowCrashWriter(dir, round string) error {
	s, err := Open(dir, nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		if err := s.EnqueueFlow(ctx, crashFlow(round, i)); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(out, "F %s\n", crashFlow(round, i).ID)
		if err := out.Flush(); err != nil {
			return err
		}
		l, err := s.Lease(ctx, store.LeaseParams{Namespace: "crash", Queues: []string{"q"}, Max: 6, Duration: time.Hour})
		if err != nil {
			return err
		}
		var outs []store.Outcome
		for k, t := range l.Tasks {
			kind := store.OutcomeSucceeded
			if k%4 == 3 {
				kind = store.OutcomeRetry
			}
			outs = append(outs, store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: kind, Result: []byte("ok"), Error: "e"})
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "crash", Outcomes: outs}); err != nil {
			return err
		}
	}
}

// TestFlowCrash kills a child that writes flows and completes their tasks
// with SIGKILL at several points, reopens the data folder and checks every
// acknowledged flow: each held task is either still held, with a task it
// waits for not finished, or released, after every task it waits for
// finished; never both, never neither. At the end the parent runs every
// task to its end and every flow must finish, each task once.
func TestFlowCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var flows []store.FlowParams
	for round := range 4 {
		killChildAfter(t, flowCrashEnv+"="+dir, round, 40+round*70, func(_, id string) {
			i, _ := strconv.Atoi(id[strings.IndexByte(id, '-')+1:])
			flows = append(flows, crashFlow(strconv.Itoa(round), i))
		})
		s := mustOpen(t, dir, nil)
		checkFlows(t, s, flows, false)
		storetest.CheckInvariants(t, s, "crash")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Run everything to its end. A killed child may have held leases (of
	// an hour) or left retries due later: on a clock two hours ahead, the
	// sweep hands those tasks back and everything is due.
	s := mustOpen(t, dir, &Config{Clock: storetest.NewFakeClock(time.Now().Add(2 * time.Hour))})
	defer func() { _ = s.Close() }()
	for {
		if _, err := s.Sweep(t.Context(), store.SweepParams{}); err != nil {
			t.Fatal(err)
		}
		l, err := s.Lease(t.Context(), store.LeaseParams{Namespace: "crash", Queues: []string{"q"}, Max: 1000, Duration: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Tasks) == 0 {
			break
		}
		var outs []store.Outcome
		for _, tk := range l.Tasks {
			outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		}
		if _, err := s.Report(t.Context(), store.ReportParams{Namespace: "crash", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	checkFlows(t, s, flows, true)
	t.Logf("%d acknowledged flows checked after 4 kills, and run to their end", len(flows))
}

func checkFlows(t *testing.T, s *Store, flows []store.FlowParams, done bool) {
	t.Helper()
	ctx := t.Context()
	for _, p := range flows {
		f, err := s.GetFlow(ctx, store.FlowGetParams{Namespace: "crash", ID: p.ID})
		if err != nil {
			t.Fatalf("acknowledged flow %s: %v", p.ID, err)
		}
		held := map[string]bool{}
		for _, h := range f.Held {
			held[h] = true
		}
		var ids []string
		for _, in := range p.Tasks {
			ids = append(ids, in.ID)
		}
		for _, h := range p.Held {
			ids = append(ids, h.Task.ID)
		}
		tasks := map[string]*store.Task{}
		for from := 0; from < len(ids); from += store.MaxBatch {
			g, err := s.Get(ctx, store.GetParams{Namespace: "crash", IDs: ids[from:min(from+store.MaxBatch, len(ids))]})
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range g.Tasks {
				if tk != nil {
					tasks[tk.ID] = tk
				}
			}
		}
		for _, in := range p.Tasks {
			if tk := tasks[in.ID]; tk == nil {
				t.Fatalf("flow %s: ready task %s lost", p.ID, in.ID)
			} else if done && tk.State != store.StateSucceeded {
				t.Fatalf("flow %s: ready task %s did not finish", p.ID, in.ID)
			}
		}
		for _, h := range p.Held {
			id := h.Task.ID
			tk := tasks[id]
			allDone := true
			for _, a := range h.After {
				if at := tasks[a]; at == nil || !at.State.Terminal() {
					allDone = false
				}
			}
			switch {
			case held[id] && tk != nil:
				t.Fatalf("flow %s: %s is both held and a task", p.ID, id)
			case !held[id] && tk == nil:
				t.Fatalf("flow %s: %s is lost: neither held nor a task", p.ID, id)
			case held[id] && allDone:
				t.Fatalf("flow %s: %s is still held although every task it waits for finished", p.ID, id)
			case tk != nil && !allDone:
				t.Fatalf("flow %s: %s was released before every task it waits for finished", p.ID, id)
			case done && (tk == nil || tk.State != store.StateSucceeded):
				t.Fatalf("flow %s: %s did not finish", p.ID, id)
			}
		}
	}
}

// TestCheckAndRecoverFlows: `kiln store check` knows the records of flows,
// and `kiln store recover` copies them: the held tasks are still held in
// the copy, and released there.
func TestCheckAndRecoverFlows(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, nil)
	p := crashFlow("c", 3)
	if err := s.EnqueueFlow(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Check(dir)
	if err != nil || !rep.OK() {
		t.Fatalf("Check: %v, %+v", err, rep)
	}
	dst := t.TempDir() + "/copy"
	if rep, err := Recover(dir, dst); err != nil || !rep.OK() {
		t.Fatalf("Recover: %v, %+v", err, rep)
	}
	c := mustOpen(t, dst, nil)
	defer func() { _ = c.Close() }()
	f, err := c.GetFlow(t.Context(), store.FlowGetParams{Namespace: "crash", ID: p.ID})
	if err != nil || len(f.Held) != len(p.Held) {
		t.Fatalf("GetFlow in the copy = %+v, %v", f, err)
	}
	l, err := c.Lease(t.Context(), store.LeaseParams{Namespace: "crash", Queues: []string{"q"}, Max: 1, Duration: time.Minute})
	if err != nil || len(l.Tasks) != 1 {
		t.Fatalf("Lease in the copy: %v, %v", l.Tasks, err)
	}
	if _, err := c.Report(t.Context(), store.ReportParams{Namespace: "crash", Outcomes: []store.Outcome{{ID: l.Tasks[0].ID, LeaseID: l.Tasks[0].LeaseID, Kind: store.OutcomeSucceeded}}}); err != nil {
		t.Fatal(err)
	}
	if f, err := c.GetFlow(t.Context(), store.FlowGetParams{Namespace: "crash", ID: p.ID}); err != nil || len(f.Held) != 2 {
		t.Fatalf("after the first task, held = %v, %v; want the members released, the callback and the last step held", f.Held, err)
	}
}
