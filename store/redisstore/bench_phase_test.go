package redisstore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// BenchmarkChordPhases compares what the Redis server spends on a chord of
// 10,000 members (as a kiln Client enqueues one: a retention, a payload,
// the callback held) with 10,000 tasks enqueued in batches of 1000, per
// phase: the enqueue, then leasing them 50 at a time and reporting each
// batch until none is left (the callback too), all through the store, one
// op per fresh store. It reports the server's CPU time per phase
// (enq-srv-ms, proc-srv-ms; see serverCPUUsec), and for the chord the part
// of the enqueue spent before its first tasks were written (first-srv-ms).
//
// CPU time moves with the machine's load; the server's instructions do
// not. With a server run under callgrind, KILN_TEST_CALLGRIND set to its
// output files ("<dir>/callgrind.out.<pid>", as --callgrind-out-file=
// <dir>/callgrind.out.%p names them) makes it report them too (Minstr),
// dumping the counts between phases with callgrind_control:
//
//	valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/callgrind.out.%p redis-server --port 6650 --save '' --appendonly no &
//	KILN_TEST_CALLGRIND=/tmp/cg/callgrind.out.<pid> KILN_TEST_REDIS_URL='redis://127.0.0.1:6650/0?read_timeout=120s' \
//	    go test -run '^$' -bench ChordPhases -benchtime 1x ./store/redisstore/
func BenchmarkChordPhases(b *testing.B) {
	url := testenv.RedisURL(b)
	o, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	const n = 10000
	for _, kind := range []string{"tasks", "chord"} {
		b.Run(kind, func(b *testing.B) {
			var enq, proc, first, enqI, procI, firstI float64
			k := 0
			for b.Loop() {
				k++
				s := mustOpen(b, url, &Config{Prefix: newPrefix()})
				dumpInstructions(b)
				cpu0 := serverCPUUsec(b, c)
				if kind == "chord" {
					s.flowPartsHook = func(off int) bool {
						if off == 0 {
							first += serverCPUUsec(b, c) - cpu0
							f := dumpInstructions(b) // counted in the enqueue's too
							firstI += f
							enqI += f
						}
						return true
					}
					if err := s.EnqueueFlow(b.Context(), phaseChord(k, n)); err != nil {
						b.Fatal(err)
					}
				} else {
					for j := 0; j < n; j += 1000 {
						in := make([]store.TaskInput, 1000)
						for i := range in {
							in[i] = store.TaskInput{ID: fmt.Sprintf("%s.%d", phaseFlowID(k), j+i), Type: "noop"}
						}
						if _, err := s.Enqueue(b.Context(), store.EnqueueParams{Namespace: "ns", Tasks: in}); err != nil {
							b.Fatal(err)
						}
					}
				}
				cpu1 := serverCPUUsec(b, c)
				enqI += dumpInstructions(b)
				leaseAll(b, s)
				proc += serverCPUUsec(b, c) - cpu1
				procI += dumpInstructions(b)
				enq += cpu1 - cpu0
				_ = s.Close()
			}
			per := func(v float64) float64 { return v / float64(b.N) / 1000 }
			b.ReportMetric(per(enq), "enq-srv-ms")
			b.ReportMetric(per(proc), "proc-srv-ms")
			if os.Getenv("KILN_TEST_CALLGRIND") != "" {
				b.ReportMetric(per(enqI)/1000, "enq-srv-Minstr")
				b.ReportMetric(per(procI)/1000, "proc-srv-Minstr")
			}
			if kind == "chord" {
				b.ReportMetric(per(first), "first-srv-ms")
				if os.Getenv("KILN_TEST_CALLGRIND") != "" {
					b.ReportMetric(per(firstI)/1000, "first-srv-Minstr")
				}
			}
		})
	}
}

// phaseFlowID is the id of op k's flow: a ULID's length, as a kiln
// Client's.
func phaseFlowID(k int) string { return fmt.Sprintf("01M95YNVK22FGRS62NTT0N%04d", k) }

// phaseChord is a chord of n members as a kiln Client writes one.
func phaseChord(k, n int) store.FlowParams {
	p := store.FlowParams{Namespace: "ns", ID: phaseFlowID(k), Spec: []byte("s")}
	after := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("%s.%d", p.ID, i)
		p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "noop", Payload: []byte("null"), Retention: 7 * 24 * time.Hour})
		after[i] = id
	}
	p.Held = []store.HeldTask{{Task: store.TaskInput{ID: fmt.Sprintf("%s.%d", p.ID, n), Type: "noop", Retention: 7 * 24 * time.Hour}, After: after}}
	return p
}

// leaseAll leases the default queue's tasks 50 at a time and succeeds
// each batch, until none is left.
func leaseAll(b *testing.B, s *Store) {
	b.Helper()
	for {
		l, err := s.Lease(b.Context(), store.LeaseParams{Namespace: "ns", Queues: []string{store.DefaultQueue}, Max: 50, Duration: time.Minute, WorkerID: "w1"})
		if err != nil {
			b.Fatal(err)
		}
		if len(l.Tasks) == 0 {
			return
		}
		outs := make([]store.Outcome, len(l.Tasks))
		for i, t := range l.Tasks {
			outs[i] = store.Outcome{ID: t.ID, LeaseID: t.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(b.Context(), store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil {
			b.Fatal(err)
		}
	}
}

// dumpInstructions makes the callgrind that runs the server (see
// BenchmarkChordPhases) dump its counts, and returns the instructions
// since its last dump; 0 without KILN_TEST_CALLGRIND.
func dumpInstructions(b *testing.B) float64 {
	b.Helper()
	out := os.Getenv("KILN_TEST_CALLGRIND")
	if out == "" {
		return 0
	}
	pid := out[strings.LastIndexByte(out, '.')+1:]
	before, _ := filepath.Glob(out + ".*")
	if err := exec.Command("callgrind_control", "-d", pid).Run(); err != nil {
		b.Fatalf("callgrind_control: %v", err)
	}
	after, _ := filepath.Glob(out + ".*")
	for _, f := range after {
		if slices.Contains(before, f) {
			continue
		}
		bs, err := os.ReadFile(f) //nolint:gosec // G304: callgrind's own dump
		if err != nil {
			b.Fatal(err)
		}
		for l := range strings.SplitSeq(string(bs), "\n") {
			if v, ok := strings.CutPrefix(l, "summary: "); ok {
				n, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
				if err != nil {
					b.Fatal(err)
				}
				return n
			}
		}
	}
	b.Fatal("callgrind wrote no new dump")
	return 0
}
