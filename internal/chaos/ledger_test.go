package chaos_test

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/store"
)

// TestLedgerCheck checks the analysis on made-up runs: which duplicates and
// burned attempts a fault explains, and what counts as lost.
func TestLedgerCheck(t *testing.T) {
	t.Parallel()
	succeeded := func(attempt int, lessee string) *store.Task {
		return &store.Task{State: store.StateSucceeded, Attempt: attempt, WorkerID: lessee}
	}
	type step func(l *chaos.Ledger, w *logWriter)
	type ledgerCase struct {
		name  string
		steps []step
		tasks map[string]*store.Task
		gone  []string // acknowledged, and not in the store
		own   bool     // a step acknowledges the tasks, not the setup
		want  string   // the findings: task what:explained|unexplained|-, sorted
	}
	cases := []ledgerCase{{
		name: "a run once is fine",
		steps: []step{func(_ *chaos.Ledger, w *logWriter) {
			w.run("pA", "t", 1)
		}},
		tasks: map[string]*store.Task{"t": succeeded(1, "pA")},
		want:  "",
	}, {
		name: "a duplicate after a kill of the earlier runner",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Kill, "pA", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:explained",
	}, {
		name: "a kill of another process explains nothing",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Kill, "pC", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:unexplained",
	}, {
		name: "a kill before the first run explains nothing",
		steps: []step{
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Kill, "pA", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:unexplained",
	}, {
		name: "a graceful stop explains nothing",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Term, "pA", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:unexplained",
	}, {
		name: "an outage of the store explains a duplicate on any process",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(l *chaos.Ledger, _ *logWriter) { l.Begin(chaos.Kill, "", "server")(0) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:explained",
	}, func() (c ledgerCase) {
		// pA leased attempt 1, then was cut off; its answer came through
		// only after the lease expired and pB had run attempt 2.
		var end func(time.Duration)
		c.name = "a lease answer held up by a partition starts after the next lease"
		c.steps = []step{
			func(l *chaos.Ledger, _ *logWriter) { end = l.Begin(chaos.Partition, "pA", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
			func(*chaos.Ledger, *logWriter) { end(0) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
		}
		c.tasks = map[string]*store.Task{"t": succeeded(2, "pB")}
		c.want = "t duplicate:explained"
		return c
	}(), {
		name: "a partition of the later runner explains nothing",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(l *chaos.Ledger, _ *logWriter) { l.Begin(chaos.Partition, "pB", "")(0) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:unexplained",
	}, {
		name: "a burned attempt after a kill of any process",
		steps: []step{
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Kill, "pC", "") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t burned:explained",
	}, {
		name: "a kill just before the enqueue explains a burned attempt",
		steps: []step{
			// Its lease request may still be held, and answered.
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Kill, "pC", "") },
			func(l *chaos.Ledger, _ *logWriter) { l.Ack("t") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		own:   true,
		want:  "t burned:explained",
	}, {
		name: "a kill longer than a lease wait before the enqueue explains no burned attempt",
		steps: []step{
			func(l *chaos.Ledger, _ *logWriter) {
				l.SetLeaseWait(time.Millisecond) // the steps are 2 ms apart
				l.Event(chaos.Kill, "pC", "")
			},
			func(l *chaos.Ledger, _ *logWriter) { l.Ack("t") },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		own:   true,
		want:  "t burned:unexplained",
	}, {
		name: "a stall of the earlier runner explains a duplicate",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(_ *chaos.Ledger, w *logWriter) { w.stall("pA", time.Millisecond) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:explained",
	}, {
		name: "a stall of the server explains a duplicate on any process",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(_ *chaos.Ledger, w *logWriter) { w.stall(chaos.ServerRunner, time.Millisecond) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:explained",
	}, {
		name: "a stall of another process explains nothing",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "t", 1) },
			func(_ *chaos.Ledger, w *logWriter) { w.stall("pC", time.Millisecond) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t duplicate:unexplained",
	}, {
		name: "a stall explains no burned attempt",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.stall(chaos.ServerRunner, time.Millisecond) },
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t burned:unexplained",
	}, {
		name: "a burned attempt with no fault",
		steps: []step{
			func(_ *chaos.Ledger, w *logWriter) { w.run("pB", "t", 2) },
		},
		tasks: map[string]*store.Task{"t": succeeded(2, "pB")},
		want:  "t burned:unexplained",
	}, {
		name: "an unread answer explains only the task it leased",
		steps: []step{
			func(l *chaos.Ledger, _ *logWriter) { l.Event(chaos.Unread, "abandon-1", "") },
		},
		tasks: map[string]*store.Task{
			"mine":  {State: store.StateDead, Attempt: 1, WorkerID: "abandon-1"},
			"other": {State: store.StateDead, Attempt: 1, WorkerID: "abandon-2"},
		},
		want: "mine burned:explained, mine lost:-, other burned:unexplained, other lost:-",
	}, {
		name:  "lost, gone and phantom tasks",
		steps: []step{func(_ *chaos.Ledger, w *logWriter) { w.run("pA", "retrying", 1) }},
		tasks: map[string]*store.Task{
			"retrying": {State: store.StateRetry, Attempt: 1},
			"phantom":  succeeded(0, ""),
		},
		gone: []string{"gone"},
		want: "gone lost:-, phantom phantom:-, retrying lost:-",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			l := chaos.NewLedger()
			ids := make([]string, 0, len(tc.tasks)+1)
			for id := range tc.tasks {
				ids = append(ids, id)
			}
			ids = append(ids, tc.gone...)
			sort.Strings(ids)
			if !tc.own {
				l.Ack(ids...)
			}
			w := &logWriter{t: t, dir: dir, logs: map[string]*chaos.RunLog{}}
			for i, s := range tc.steps {
				if i > 0 {
					time.Sleep(2 * time.Millisecond) // steps at distinct times
				}
				s(l, w)
			}
			for _, rl := range w.logs {
				if err := rl.Close(); err != nil {
					t.Fatal(err)
				}
			}
			read, err := chaos.ReadLogs(dir)
			if err != nil {
				t.Fatal(err)
			}
			r := l.Check("unit", tc.name, read, tc.tasks)
			var got []string
			for _, f := range r.Findings {
				state := "-"
				if f.What == "duplicate" || f.What == "burned" {
					state = map[bool]string{true: "explained", false: "unexplained"}[f.By != ""]
				}
				got = append(got, f.Task+" "+f.What+":"+state)
			}
			sort.Strings(got)
			if g := strings.Join(got, ", "); g != tc.want {
				t.Errorf("findings %q, want %q\n%s", g, tc.want, r.Table())
			}
		})
	}
}

// logWriter writes the run logs of TestLedgerCheck's made-up runs.
type logWriter struct {
	t    *testing.T
	dir  string
	logs map[string]*chaos.RunLog
}

func (w *logWriter) log(runner string) *chaos.RunLog {
	rl := w.logs[runner]
	if rl == nil {
		var err error
		if rl, err = chaos.OpenRunLog(w.dir, runner); err != nil {
			w.t.Fatal(err)
		}
		w.logs[runner] = rl
	}
	return rl
}

// run records a whole run of attempt of task on runner.
func (w *logWriter) run(runner, task string, attempt int) {
	rl := w.log(runner)
	if err := rl.Start(task, attempt); err != nil {
		w.t.Fatal(err)
	}
	if err := rl.Finish(task, attempt, nil); err != nil {
		w.t.Fatal(err)
	}
}

// stall records that runner did not run for the last gap.
func (w *logWriter) stall(runner string, gap time.Duration) {
	if err := w.log(runner).Stall(gap); err != nil {
		w.t.Fatal(err)
	}
}
