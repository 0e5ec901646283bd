package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// Kind is the kind of a fault the harness made.
type Kind string

// The faults. Every kind but Term explains a duplicate or a burned attempt
// that follows it; Term (a graceful stop) explains nothing.
const (
	// Kill is a SIGKILL of a process: a worker, the server, Redis.
	Kill Kind = "kill"
	// Term is a SIGTERM: a graceful stop.
	Term Kind = "term"
	// Partition is a worker cut off the network, from At to End.
	Partition Kind = "partition"
	// Revoke is the revocation of a remote worker's session.
	Revoke Kind = "revoke"
	// Outage is the store refusing writes, from At to End (a full disk).
	Outage Kind = "outage"
	// Unread is a client that dropped its connection after the server's
	// answer had reached its socket unread. It explains a burned attempt
	// only of a task whose last lease is Target's.
	Unread Kind = "unread"
	// Stall is a process that did not get to run for a while (WatchStalls).
	// It explains a duplicate (a lease that expired meanwhile) but no
	// burned attempt: a stalled worker still starts what it leased.
	Stall Kind = "stall"
)

// Event is a fault, with what it hit and when.
type Event struct {
	Kind Kind `json:"kind"`
	// Target is the runner (RunLog name) or lease holder it hit; empty
	// means the whole store (the server, Redis, the disk).
	Target string `json:"target,omitempty"`
	// Note says more (a pid, an address).
	Note string `json:"note,omitempty"`
	// At is when it began and End when it ended (At for a kill); a zero
	// End means it had not ended when the run was checked.
	At  time.Time `json:"at"`
	End time.Time `json:"end"`
}

// label names the event relative to the start of the run.
func (e *Event) label(start time.Time) string {
	var b strings.Builder
	b.WriteString(string(e.Kind))
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	} else {
		b.WriteString(" store")
	}
	if e.Note != "" {
		b.WriteString(" (" + e.Note + ")")
	}
	fmt.Fprintf(&b, " @%.3fs", e.At.Sub(start).Seconds())
	if !e.End.Equal(e.At) {
		if e.End.IsZero() {
			b.WriteString("..end")
		} else {
			fmt.Fprintf(&b, "..%.3fs", e.End.Sub(start).Seconds())
		}
	}
	return b.String()
}

// overlaps reports whether the event touches [lo, hi] (a zero hi: no end).
func (e *Event) overlaps(lo, hi time.Time) bool {
	if !hi.IsZero() && e.At.After(hi) {
		return false
	}
	return e.End.IsZero() || !e.End.Before(lo)
}

// Ledger is the harness's record of a run: the acknowledged enqueues, the
// refused ones, and the faults. It is safe for concurrent use.
type Ledger struct {
	mu        sync.Mutex
	leaseWait time.Duration
	start     time.Time
	acked     map[string]time.Time
	order     []string
	refused   map[string]int
	events    []*Event
}

// NewLedger starts a ledger; times in its report are relative to now.
func NewLedger() *Ledger {
	return &Ledger{start: time.Now(), leaseWait: 30 * time.Second, acked: map[string]time.Time{}, refused: map[string]int{}}
}

// SetLeaseWait sets the longest the server holds a lease request of the
// run (the workers' lease wait; default 30 s, the server's longest). A
// request whose process has died may still be answered that long after
// the death, so a fault that long before a task's enqueue may explain its
// burned attempt.
func (l *Ledger) SetLeaseWait(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaseWait = d
}

// Ack records tasks whose enqueue the store acknowledged (a nil error for
// the call and for the item). Only those count: a failed enqueue may have
// been stored or not, and the suite promises nothing about it.
func (l *Ledger) Ack(ids ...string) { l.AckSent(time.Now(), ids...) }

// AckSent is Ack for an enqueue call sent at sent: no lease of these tasks
// can be older, which narrows what may explain a burned first attempt (see
// SetLeaseWait).
func (l *Ledger) AckSent(sent time.Time, ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if _, ok := l.acked[id]; !ok {
			l.acked[id] = sent
			l.order = append(l.order, id)
		}
	}
}

// Refused counts n enqueues that failed, by a short reason (the error's
// catalogue code, say).
func (l *Ledger) Refused(reason string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused[reason] += n
}

// Acked returns the acknowledged task ids in the order of their
// acknowledgement.
func (l *Ledger) Acked() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order)
}

// Event records a fault that happens now (End = At).
func (l *Ledger) Event(kind Kind, target, note string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, &Event{Kind: kind, Target: target, Note: note, At: now, End: now})
}

// Begin records a fault that begins now and returns the function that
// records its end: now plus linger, the time its effects may outlast it
// (a request stuck on a cut connection until its timeout, say).
func (l *Ledger) Begin(kind Kind, target, note string) (end func(linger time.Duration)) {
	e := &Event{Kind: kind, Target: target, Note: note, At: time.Now()}
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	var once sync.Once
	return func(linger time.Duration) {
		once.Do(func() {
			l.mu.Lock()
			e.End = time.Now().Add(linger)
			l.mu.Unlock()
		})
	}
}

// Events returns a copy of the faults recorded so far.
func (l *Ledger) Events() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, len(l.events))
	for i, e := range l.events {
		out[i] = *e
	}
	return out
}

// Finding is one task the report has something to say about.
type Finding struct {
	// What is "duplicate" (an extra run), "burned" (an attempt counted
	// without a handler start), "lost" (acknowledged, not succeeded in the
	// end) or "phantom" (succeeded with no run on record).
	What string `json:"what"`
	Task string `json:"task"`
	// Detail tells the runs or the state.
	Detail string `json:"detail"`
	// By is the fault that explains a duplicate or a burned attempt;
	// empty when none does.
	By string `json:"by,omitempty"`
}

// Report is the outcome of a run, as Check computes it.
type Report struct {
	Scenario string `json:"scenario"`
	// Setup describes the run: the store, the processes, the load.
	Setup string `json:"setup"`
	// Start is when the ledger began; times in labels are relative to it.
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Acknowledged enqueues, and of them Completed (succeeded in the store)
	// and Lost (not found, or in any other state at the end).
	Acknowledged int `json:"acknowledged"`
	Completed    int `json:"completed"`
	Lost         int `json:"lost"`
	// Refused counts the enqueues that failed, by reason.
	Refused map[string]int `json:"refused,omitempty"`
	// Runs counts the handler starts of acknowledged tasks, Unfinished
	// those with no finish on record.
	Runs       int `json:"runs"`
	Unfinished int `json:"unfinished"`
	// Duplicates counts the tasks that started more than once, ExtraRuns
	// the starts beyond the first.
	Duplicates int `json:"duplicates"`
	ExtraRuns  int `json:"extra_runs"`
	// Burned counts attempts counted by the store without a handler start.
	Burned int `json:"burned"`
	// Faults counts the events by kind.
	Faults map[Kind]int `json:"faults"`
	// Events are the faults themselves.
	Events []Event `json:"events"`
	// Findings lists every duplicate, burned attempt, lost and phantom
	// task.
	Findings []Finding `json:"findings"`
}

// Check computes the report of the run: logs are the run logs (ReadLogs),
// tasks the store's final state of every acknowledged task (nil or absent:
// not found). The stalls of the logs join the faults.
func (l *Ledger) Check(scenario, setup string, logs *Logs, tasks map[string]*store.Task) *Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	runs := logs.Runs
	events := slices.Clone(l.events)
	for i := range logs.Stalls {
		events = append(events, &logs.Stalls[i])
	}
	slices.SortStableFunc(events, func(a, b *Event) int { return a.At.Compare(b.At) })
	now := time.Now()
	r := &Report{Scenario: scenario, Setup: setup, Start: l.start, Duration: now.Sub(l.start), Acknowledged: len(l.order), Faults: make(map[Kind]int)}
	if len(l.refused) > 0 {
		r.Refused = map[string]int{}
		for k, v := range l.refused {
			r.Refused[k] = v
		}
	}
	for _, e := range events {
		r.Faults[e.Kind]++
		r.Events = append(r.Events, *e)
	}
	// explain names the latest fault that pick accepts: the nearest
	// cause.
	explain := func(pick func(*Event) bool) string {
		for i := len(events) - 1; i >= 0; i-- {
			if e := events[i]; e.Kind != Term && pick(e) {
				return e.label(l.start)
			}
		}
		return ""
	}
	for _, id := range l.order {
		t := tasks[id]
		rs := runs[id]
		r.Runs += len(rs)
		for _, run := range rs {
			if run.Finish.IsZero() {
				r.Unfinished++
			}
		}
		switch {
		case t == nil:
			r.Lost++
			r.Findings = append(r.Findings, Finding{What: "lost", Task: id, Detail: "not found in the store; " + l.describe(rs)})
		case t.State != store.StateSucceeded:
			r.Lost++
			r.Findings = append(r.Findings, Finding{What: "lost", Task: id, Detail: fmt.Sprintf("%s after %d attempts (last error %q, last lease %s); %s", t.State, t.Attempt, t.LastError, t.WorkerID, l.describe(rs))})
		default:
			r.Completed++
			if len(rs) == 0 {
				r.Findings = append(r.Findings, Finding{What: "phantom", Task: id, Detail: fmt.Sprintf("succeeded (attempt %d, last lease %s) with no handler start on record", t.Attempt, t.WorkerID)})
			}
		}
		// Duplicates: every run after the first, in the order of their
		// leases (attempts), needs a fault of the process that ran the one
		// before it (or of the whole store) between the two starts. An
		// earlier lease may start later than the next one, when its answer
		// was held up (by a partition, say) until after the lease expired:
		// the fault must then still be going on when the next one starts.
		if len(rs) > 1 {
			r.Duplicates++
		}
		byLease := slices.Clone(rs)
		slices.SortStableFunc(byLease, func(a, b *Run) int {
			if a.Attempt != b.Attempt {
				return a.Attempt - b.Attempt
			}
			return a.Start.Compare(b.Start)
		})
		for i := 1; i < len(byLease); i++ {
			a, b := byLease[i-1], byLease[i]
			r.ExtraRuns++
			lo := a.Start
			if b.Start.Before(lo) {
				lo = b.Start
			}
			by := explain(func(e *Event) bool {
				return e.Kind != Unread && (e.Target == "" || e.Target == a.Runner) && e.overlaps(lo, b.Start)
			})
			r.Findings = append(r.Findings, Finding{What: "duplicate", Task: id, By: by,
				Detail: fmt.Sprintf("%s then %s", l.runLabel(a), l.runLabel(b))})
		}
		// Burned attempts: numbers the store counted that no handler
		// started with. Which process leased them is not on record, so a
		// fault of any process between the neighbouring starts explains
		// them; a dropped connection only the tasks its request leased.
		if t == nil {
			continue
		}
		started := map[int]bool{}
		for _, run := range rs {
			started[run.Attempt] = true
		}
		for k := 1; k <= t.Attempt; k++ {
			if started[k] {
				continue
			}
			r.Burned++
			// No lease is older than the enqueue, and the request it
			// answered no older than the lease wait before that.
			lo, hi := l.acked[id].Add(-l.leaseWait), time.Time{}
			for _, run := range rs {
				if run.Attempt < k && run.Start.After(lo) {
					lo = run.Start
				}
				if run.Attempt > k && (hi.IsZero() || run.Start.Before(hi)) {
					hi = run.Start
				}
			}
			last := k == t.Attempt
			by := explain(func(e *Event) bool {
				if e.Kind == Stall || (e.Kind == Unread && (!last || e.Target != t.WorkerID)) {
					return false
				}
				return e.overlaps(lo, hi)
			})
			r.Findings = append(r.Findings, Finding{What: "burned", Task: id, By: by,
				Detail: fmt.Sprintf("attempt %d of %d never started (task %s, last lease %s); %s", k, t.Attempt, t.State, t.WorkerID, l.describe(rs))})
		}
	}
	return r
}

func (l *Ledger) runLabel(r *Run) string {
	end := "never finished"
	if !r.Finish.IsZero() {
		end = fmt.Sprintf("finished @%.3fs %s", r.Finish.Sub(l.start).Seconds(), r.Result)
	}
	return fmt.Sprintf("attempt %d on %s started @%.3fs, %s", r.Attempt, r.Runner, r.Start.Sub(l.start).Seconds(), end)
}

func (l *Ledger) describe(rs []*Run) string {
	if len(rs) == 0 {
		return "no run on record"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = l.runLabel(r)
	}
	return "runs: " + strings.Join(parts, "; ")
}

// Failures returns what makes the run fail: lost and phantom tasks, and
// duplicates and burned attempts that no fault explains.
func (r *Report) Failures() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.What == "lost" || f.What == "phantom" || f.By == "" {
			out = append(out, f)
		}
	}
	return out
}

// maxFaultRows caps the faults the table lists one by one.
const maxFaultRows = 12

// Table returns the report in its fixed text form.
func (r *Report) Table() string {
	var b strings.Builder
	count := func(what string, explained bool) int {
		n := 0
		for _, f := range r.Findings {
			if f.What == what && (f.By != "") == explained {
				n++
			}
		}
		return n
	}
	row := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "  %-18s %s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "chaos %s: %s\n", r.Scenario, r.Setup)
	row("duration", "%.1fs", r.Duration.Seconds())
	row("acknowledged", "%d", r.Acknowledged)
	row("completed", "%d", r.Completed)
	row("lost", "%d (must be 0)", r.Lost)
	refused := 0
	var reasons []string
	for k, v := range r.Refused {
		refused += v
		reasons = append(reasons, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(reasons)
	if refused > 0 {
		row("refused enqueues", "%d (%s)", refused, strings.Join(reasons, ", "))
	} else {
		row("refused enqueues", "0")
	}
	row("runs", "%d (%d never finished)", r.Runs, r.Unfinished)
	row("duplicates", "%d tasks, %d extra runs: %d explained, %d not", r.Duplicates, r.ExtraRuns, count("duplicate", true), count("duplicate", false))
	row("burned attempts", "%d: %d explained, %d not", r.Burned, count("burned", true), count("burned", false))
	var kinds []string
	for k, v := range r.Faults {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		kinds = []string{"none"}
	}
	row("faults", "%s", strings.Join(kinds, ", "))
	// Each fault with what it explains, in the order they happened.
	type tally struct{ dup, burned int }
	by := map[string]*tally{}
	for _, f := range r.Findings {
		if f.By == "" {
			continue
		}
		if by[f.By] == nil {
			by[f.By] = &tally{}
		}
		if f.What == "duplicate" {
			by[f.By].dup++
		} else {
			by[f.By].burned++
		}
	}
	if len(by) > 0 {
		b.WriteString("  explained by\n")
		shown := 0
		for i := range r.Events {
			label := r.Events[i].label(r.Start)
			t := by[label]
			if t == nil {
				continue
			}
			if shown++; shown > maxFaultRows {
				continue
			}
			fmt.Fprintf(&b, "    %-50s %d extra runs, %d burned attempts\n", label, t.dup, t.burned)
		}
		if shown > maxFaultRows {
			fmt.Fprintf(&b, "    ... %d faults in all (every one in the JSON report)\n", shown)
		}
	}
	if fs := r.Failures(); len(fs) > 0 {
		fmt.Fprintf(&b, "  FAILURES: %d (first %d)\n", len(fs), min(len(fs), 20))
		for _, f := range fs[:min(len(fs), 20)] {
			fmt.Fprintf(&b, "    %s %s: %s\n", f.What, f.Task, f.Detail)
		}
	}
	return b.String()
}

// AppendJSON appends the report as one line of JSON to the file at path.
func (r *Report) AppendJSON(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // G304: a path the person running the tests gave
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
