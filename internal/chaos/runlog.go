package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ServerRunner is the run-log name of the server process, which records
// only its stalls: a stall of the server stands for one of the whole store.
const ServerRunner = "server"

// RunLog is a worker's record of its handler runs: one append-only file per
// worker process in a folder the harness reads at the end. Every line is
// written with one write(2) on a file opened with O_APPEND, so lines of
// concurrent handlers never interleave and a SIGKILL loses nothing already
// written. Nothing is fsynced: the record must survive the kill of the
// process, not of the machine.
type RunLog struct {
	f      *os.File
	runner string
}

// OpenRunLog opens (creates) runner's file in dir. runner names the worker
// in the ledger (a pid, or the name of an in-process worker); it must not
// contain white space.
func OpenRunLog(dir, runner string) (*RunLog, error) {
	if runner == "" || strings.ContainsAny(runner, " \t\n/") {
		return nil, fmt.Errorf("chaos: bad runner name %q", runner)
	}
	f, err := os.OpenFile(filepath.Join(dir, "runs-"+runner+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600) //nolint:gosec // G304: a file in the test's own folder
	if err != nil {
		return nil, err
	}
	return &RunLog{f: f, runner: runner}, nil
}

// Runner returns the name the log records its runs under.
func (l *RunLog) Runner() string { return l.runner }

// Start records that the handler of attempt of task id starts, before it
// does any work.
func (l *RunLog) Start(id string, attempt int) error {
	return l.line("S", id, attempt, "")
}

// Finish records that the handler returned err (nil: success), before the
// worker reports it.
func (l *RunLog) Finish(id string, attempt int, err error) error {
	res := "ok"
	if err != nil {
		res = strings.Join(strings.Fields(err.Error()), "_")
	}
	return l.line("F", id, attempt, res)
}

func (l *RunLog) line(kind, id string, attempt int, res string) error {
	b := make([]byte, 0, 96)
	b = append(b, kind...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ' ')
	b = append(b, l.runner...)
	b = append(b, ' ')
	b = append(b, id...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(attempt), 10)
	if res != "" {
		b = append(b, ' ')
		b = append(b, res...)
	}
	b = append(b, '\n')
	_, err := l.f.Write(b) // one write(2): the line is whole or absent
	return err
}

// Stall records that the process was not running for gap, just now (see
// WatchStalls).
func (l *RunLog) Stall(gap time.Duration) error {
	b := make([]byte, 0, 64)
	b = append(b, "P "...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ' ')
	b = append(b, l.runner...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(gap), 10)
	b = append(b, '\n')
	_, err := l.f.Write(b)
	return err
}

// Close closes the file.
func (l *RunLog) Close() error { return l.f.Close() }

// WatchStalls records in l every time the process did not get to run for
// longer than threshold (a machine so busy that it starves the process, a
// stopped VM), until ctx ends. A worker that does not run cannot renew its
// leases, and a server that does not run cannot take their renewals: either
// may make a task run twice with no other fault, and the ledger counts such
// a stall as the fault that explains it.
func WatchStalls(ctx context.Context, l *RunLog, threshold time.Duration) {
	const tick = 20 * time.Millisecond
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if gap := now.Sub(last); gap > tick+threshold {
					_ = l.Stall(gap) // best effort: the file is the test's
				}
				last = now
			}
		}
	}()
}

// Run is one handler run of a task, as the run logs tell it.
type Run struct {
	Task    string
	Attempt int
	Runner  string
	Start   time.Time
	// Finish is zero when the handler never returned (its process was
	// killed, or the log ends there).
	Finish time.Time
	// Result is "ok" or the handler's error, when Finish is set.
	Result string
}

// Logs is what the run logs of a folder tell.
type Logs struct {
	// Runs maps each task id to its runs, by start time.
	Runs map[string][]*Run
	// Stalls are the stalls of the processes (Kind Stall, Target the
	// runner; "server" stands for the whole store).
	Stalls []Event
}

// ReadLogs reads every run log in dir.
func ReadLogs(dir string) (*Logs, error) {
	files, err := filepath.Glob(filepath.Join(dir, "runs-*.log"))
	if err != nil {
		return nil, err
	}
	out := &Logs{Runs: map[string][]*Run{}}
	for _, name := range files {
		if err := readRunLog(name, out); err != nil {
			return nil, err
		}
	}
	for _, rs := range out.Runs {
		slices.SortStableFunc(rs, func(a, b *Run) int { return a.Start.Compare(b.Start) })
	}
	return out, nil
}

func readRunLog(name string, out *Logs) error {
	f, err := os.Open(name) //nolint:gosec // G304: a file in the test's own folder
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	open := map[string]*Run{} // task/attempt -> the run of this file not finished yet
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 4 && fs[0] == "P" {
			ns, err1 := strconv.ParseInt(fs[1], 10, 64)
			gap, err2 := strconv.ParseInt(fs[3], 10, 64)
			if err1 != nil || err2 != nil {
				return fmt.Errorf("%s:%d: malformed line %q", name, n, sc.Text())
			}
			end := time.Unix(0, ns)
			target := fs[2]
			if target == ServerRunner {
				target = ""
			}
			out.Stalls = append(out.Stalls, Event{Kind: Stall, Target: target, Note: fs[2] + " did not run for " + time.Duration(gap).Round(time.Millisecond).String(), At: end.Add(-time.Duration(gap)), End: end})
			continue
		}
		if len(fs) < 5 || (fs[0] != "S" && fs[0] != "F") || (fs[0] == "F" && len(fs) != 6) || (fs[0] == "S" && len(fs) != 5) {
			return fmt.Errorf("%s:%d: malformed line %q", name, n, sc.Text())
		}
		ns, err1 := strconv.ParseInt(fs[1], 10, 64)
		attempt, err2 := strconv.Atoi(fs[4])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%s:%d: malformed line %q", name, n, sc.Text())
		}
		at, key := time.Unix(0, ns), fs[3]+" "+fs[4]
		if fs[0] == "S" {
			r := &Run{Task: fs[3], Attempt: attempt, Runner: fs[2], Start: at}
			out.Runs[r.Task] = append(out.Runs[r.Task], r)
			open[key] = r
			continue
		}
		r := open[key]
		if r == nil {
			return fmt.Errorf("%s:%d: a finish without its start: %q", name, n, sc.Text())
		}
		r.Finish, r.Result = at, fs[5]
		delete(open, key)
	}
	return sc.Err()
}
