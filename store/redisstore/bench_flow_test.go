package redisstore

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// BenchmarkEnqueueFlowChord enqueues a chord of 10,000 ready members and
// one held callback per op, and reports the Redis server's time in
// EVALSHA per op (srv-us/op, from INFO commandstats) and its CPU time
// per op (srv-cpu-us/op, from INFO cpu); other clients of the same server
// are counted too, so use a server of its own. With ids=new every task's
// id is marked as made for the call (store.TaskInput.NewID, as a kiln
// Client marks a workflow whose id it made): none is looked up.
//
//	KILN_TEST_REDIS_URL=redis://127.0.0.1:6490/0 go test -run '^$' -bench EnqueueFlowChord ./store/redisstore/
func BenchmarkEnqueueFlowChord(b *testing.B) {
	url := testenv.RedisURL(b)
	s := mustOpen(b, url, &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	o, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	const n = 10000
	k := 0
	for _, newID := range []bool{false, true} {
		b.Run(map[bool]string{false: "ids=checked", true: "ids=new"}[newID], func(b *testing.B) {
			var srv, cpu float64
			for b.Loop() {
				k++
				p := store.FlowParams{Namespace: "ns", ID: fmt.Sprintf("f%d", k), Spec: []byte("s")}
				after := make([]string, n)
				for i := range n {
					id := fmt.Sprintf("f%d.%d", k, i)
					p.Tasks = append(p.Tasks, store.TaskInput{ID: id, Type: "noop", Payload: []byte("[]"), NewID: newID})
					after[i] = id
				}
				p.Held = []store.HeldTask{{Task: store.TaskInput{ID: fmt.Sprintf("f%d.cb", k), Type: "noop", NewID: newID}, After: after}}
				before, cpu0 := evalshaUsec(b, c), serverCPUUsec(b, c)
				if err := s.EnqueueFlow(b.Context(), p); err != nil {
					b.Fatal(err)
				}
				srv += evalshaUsec(b, c) - before
				cpu += serverCPUUsec(b, c) - cpu0
			}
			b.ReportMetric(srv/float64(b.N), "srv-us/op")
			b.ReportMetric(cpu/float64(b.N), "srv-cpu-us/op")
		})
	}
}

// serverCPUUsec returns the CPU time (user and system, µs) the server has
// used: unlike EVALSHA's time, which counts the time the server waited for
// a CPU on a busy machine, it changes little with the load.
func serverCPUUsec(b *testing.B, c *redis.Client) float64 {
	b.Helper()
	info, err := c.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var us float64
	for line := range strings.SplitSeq(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			us += f * 1e6
		}
	}
	return us
}

// evalshaUsec returns the total µs the server has spent in EVALSHA.
func evalshaUsec(b *testing.B, c *redis.Client) float64 {
	b.Helper()
	info, err := c.Info(b.Context(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			for f := range strings.SplitSeq(strings.TrimSpace(rest), ",") {
				if v, ok := strings.CutPrefix(f, "usec="); ok {
					u, _ := strconv.ParseFloat(v, 64)
					return u
				}
			}
		}
	}
	return 0
}

// BenchmarkGetOutcomes reads the outcomes of 1,000 finished tasks per op,
// as a chord's callback reads its members (Get with Outcomes): the
// client's share of that read is what it measures (allocs/op, and CPU with
// /usr/bin/time over a fixed -benchtime).
//
//	KILN_TEST_REDIS_URL=redis://127.0.0.1:6490/0 go test -run '^$' -bench GetOutcomes -benchtime 1000x ./store/redisstore/
func BenchmarkGetOutcomes(b *testing.B) {
	s := mustOpen(b, testenv.RedisURL(b), &Config{Prefix: newPrefix()})
	defer func() { _ = s.Close() }()
	in := make([]store.TaskInput, 1000)
	ids := make([]string, len(in))
	for i := range in {
		ids[i] = fmt.Sprintf("f.%d", i)
		in[i] = store.TaskInput{ID: ids[i], Type: "noop", Queue: "m"}
	}
	if _, err := s.Enqueue(b.Context(), store.EnqueueParams{Namespace: "ns", Tasks: in}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := s.Get(b.Context(), store.GetParams{Namespace: "ns", IDs: ids, Outcomes: true})
		if err != nil || r.Tasks[len(ids)-1] == nil {
			b.Fatalf("Get: %v", err)
		}
	}
}
