package redisstore

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// ownServerURL starts a redis-server of the test's own (startServer, no
// persistence, no eviction) and returns its URL; it is stopped when the
// test ends. Its INFO commandstats count only the test's commands. Like the
// cluster test, it needs what the other tests need (KILN_TEST_REDIS_URL).
func ownServerURL(t *testing.T) string {
	t.Helper()
	testenv.RedisURL(t)
	addr, _ := startServer(t, "--maxmemory-policy", "noeviction")
	return "redis://" + addr + "/0"
}

// commandCalls reads INFO commandstats: calls by command, leaving out the
// connection's own commands (a pool may dial more or fewer connections).
func commandCalls(t *testing.T, c *redis.Client) map[string]int64 {
	t.Helper()
	info, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(rest, ":")
		switch name {
		case "info", "config|resetstat", "hello", "ping", "client|setinfo", "select", "psubscribe", "punsubscribe", "script|load", "config|get", "dbsize", "keys":
			continue
		}
		for f := range strings.SplitSeq(stats, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

// monitoredStore opens a store on a Redis server of the test's own, whose
// MONITOR shows only the test's commands, and returns it with a client of
// that server and the server's options.
func monitoredStore(t *testing.T) (*Store, *redis.Client, *redis.Options) {
	t.Helper()
	url := ownServerURL(t)
	opts := must(redis.ParseURL(url))
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	return s, c, opts
}

// scriptMonitor records the commands that scripts run on a server (the
// "[0 lua]" lines of MONITOR), each as its arguments.
type scriptMonitor struct {
	conn net.Conn
	done chan struct{}
	mu   sync.Mutex
	cmds [][]string
	seen string // the last ECHO argument seen from a client
	err  error
}

func startMonitor(t *testing.T, addr string) *scriptMonitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	m := &scriptMonitor{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			_, rest, ok := strings.Cut(line, "] ")
			if !ok {
				continue
			}
			args, err := monitorArgs(strings.TrimRight(rest, "\r\n"))
			m.mu.Lock()
			switch {
			case err != nil:
				m.err = fmt.Errorf("MONITOR line %q: %w", line, err)
			case strings.Contains(line, " lua] "):
				m.cmds = append(m.cmds, args)
			case len(args) == 2 && strings.EqualFold(args[0], "echo"):
				m.seen = args[1]
			}
			m.mu.Unlock()
		}
	}()
	return m
}

// stop waits until MONITOR has shown the ECHO of marker that c sends (so
// that every earlier command is recorded), ends the monitor and returns the
// scripts' commands.
func (m *scriptMonitor) stop(t *testing.T, c *redis.Client, marker string) [][]string {
	t.Helper()
	if err := c.Echo(t.Context(), marker).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := poll(ctx, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.seen == marker
	})
	_ = m.conn.Close()
	<-m.done
	if err != nil {
		t.Fatalf("MONITOR did not show the marker: %v", err)
	}
	if m.err != nil {
		t.Fatal(m.err)
	}
	return m.cmds
}

// monitorArgs splits the quoted arguments of a MONITOR line: "a" "b\"c".
func monitorArgs(s string) ([]string, error) {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] != '"' {
			return nil, fmt.Errorf("argument not quoted at %q", s)
		}
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'x' && i+2 < len(s) {
					v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
					if err != nil {
						return nil, err
					}
					b.WriteByte(byte(v))
					i += 2
					continue
				}
			}
			b.WriteByte(s[i])
		}
		if i == len(s) {
			return nil, fmt.Errorf("unterminated argument in %q", s)
		}
		out = append(out, b.String())
		s = s[i+1:]
	}
	return out, nil
}

// boundedRead is the most elements one command of the lease, report and
// sweep scripts may read: Sweep's default limit per kind.
const boundedRead = 10000

// unbounded says why the command args (as a script ran it) reads or walks
// more than boundedRead elements, or a set that grows with the tasks, or ""
// when it does not.
func unbounded(args []string) string {
	cmd := strings.ToUpper(args[0])
	key := ""
	if len(args) > 1 {
		key = args[1]
	}
	num := func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	limit := func(from int) string {
		for i := from; i+2 < len(args); i++ {
			if strings.EqualFold(args[i], "LIMIT") {
				n, ok := num(args[i+2])
				if !ok || n < 0 || n > boundedRead {
					return "LIMIT count " + args[i+2]
				}
				return ""
			}
		}
		return "no LIMIT"
	}
	switch cmd {
	case "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX":
		return limit(4)
	case "ZRANGE", "ZREVRANGE":
		for _, a := range args[4:] {
			if u := strings.ToUpper(a); u == "BYSCORE" || u == "BYLEX" {
				return limit(4)
			}
		}
		start, ok1 := num(args[2])
		stop, ok2 := num(args[3])
		if !ok1 || !ok2 || start < 0 || stop < 0 || stop-start >= boundedRead {
			return "index range " + args[2] + " " + args[3]
		}
	case "ZPOPMIN", "ZPOPMAX":
		if len(args) > 2 {
			if n, ok := num(args[2]); !ok || n > boundedRead {
				return "count " + args[2]
			}
		}
	case "SMEMBERS":
		if !strings.Contains(key, ":ty:") && !strings.HasSuffix(key, ":namespaces") {
			return "reads a whole set that is not a queue's types"
		}
	case "HGETALL":
		if !strings.Contains(key, ":t:") {
			return "reads a whole hash that is not a task record"
		}
	case "XADD":
		if len(args) < 3 || !strings.EqualFold(args[2], "MAXLEN") {
			return "adds to the change feed without trimming it"
		}
	case "SCAN", "KEYS", "HKEYS", "HVALS", "LRANGE", "SORT", "SORT_RO", "SUNION", "SINTER", "SDIFF",
		"ZUNION", "ZINTER", "ZDIFF", "ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE", "ZRANGESTORE",
		"XRANGE", "XREVRANGE", "SSCAN", "HSCAN", "ZSCAN":
		return "walks a key or the keyspace"
	}
	return ""
}

// TestUnbounded: the checker of TestBacklogWorkPerTask flags unbounded
// reads and passes the bounded ones the scripts make.
func TestUnbounded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		bad  bool
	}{
		{[]string{"ZRANGEBYSCORE", "T:d", "-inf", "5", "LIMIT", "0", "1000"}, false},
		{[]string{"ZRANGEBYSCORE", "T:d", "-inf", "5"}, true},
		{[]string{"ZRANGEBYSCORE", "T:d", "-inf", "5", "LIMIT", "0", "-1"}, true},
		{[]string{"ZRANGE", "T:d", "0", "0", "WITHSCORES"}, false},
		{[]string{"ZRANGE", "T:r:q/a", "0", "24"}, false},
		{[]string{"ZRANGE", "T:r:q/a", "0", "-1"}, true},
		{[]string{"ZRANGE", "T:d", "-inf", "5", "BYSCORE"}, true},
		{[]string{"ZPOPMIN", "T:r:q/a", "25"}, false},
		{[]string{"ZPOPMIN", "T:r:q/a", "1000000"}, true},
		{[]string{"SMEMBERS", "T:ty:q"}, false},
		{[]string{"SMEMBERS", "T:all"}, true},
		{[]string{"HGETALL", "T:t:x"}, false},
		{[]string{"HGETALL", "T:c"}, true},
		{[]string{"XADD", "T:ev", "MAXLEN", "~", "10000", "0-*", "t", "1"}, false},
		{[]string{"XADD", "T:ev", "0-*", "t", "1"}, true},
		{[]string{"ZCARD", "T:r:q/a"}, false},
		{[]string{"SCAN", "0"}, true},
	} {
		if got := unbounded(c.args) != ""; got != c.bad {
			t.Errorf("unbounded(%q) = %q, want flagged %v", c.args, unbounded(c.args), c.bad)
		}
	}
	args, err := monitorArgs(`"ZADD" "{p:n}:x" "1" "a\"b\x00c"`)
	if err != nil || !slices.Equal(args, []string{"ZADD", "{p:n}:x", "1", "a\"b\x00c"}) {
		t.Errorf("monitorArgs = %q, %v", args, err)
	}
}

// backlogWork fills a fresh namespace on url with a backlog of n pending
// tasks (plus, whatever n, the same few scheduled, running and finished
// tasks of other kinds), then counts the Redis commands, the scripts'
// included, that processing 250 tasks takes: ten Leases of 25, each
// followed by a Report of their successes, and a Sweep. Every command the
// scripts run meanwhile must read a bounded number of elements (see
// unbounded).
func backlogWork(t *testing.T, url string, n int) map[string]int64 {
	t.Helper()
	ctx := t.Context()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := mustOpen(t, url, &Config{Prefix: newPrefix(), Clock: clock})
	defer func() { _ = s.Close() }()
	const ns, q = "n", "q"
	types := []string{"a", "b", "c"}
	for done := 0; done < n; {
		k := min(1000, n-done)
		tasks := make([]store.TaskInput, k)
		for i := range tasks {
			tasks[i] = store.TaskInput{ID: fmt.Sprintf("p%d", done+i), Queue: q, Type: types[(done+i)%len(types)], Payload: []byte("x")}
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: tasks}); err != nil {
			t.Fatal(err)
		}
		done += k
	}
	// Other kinds of tasks, the same whatever n: scheduled for later,
	// active in another queue, finished in another queue.
	var others []store.TaskInput
	for i := range 20 {
		others = append(others,
			store.TaskInput{ID: fmt.Sprintf("s%d", i), Queue: q, Type: "a", RunAt: clock.Now().Add(time.Hour)},
			store.TaskInput{ID: fmt.Sprintf("o%d", i), Queue: "other", Type: "a"})
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: others}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{"other"}, Max: 20, Duration: time.Hour, WorkerID: "w0"})
	if err != nil || len(res.Tasks) != 20 {
		t.Fatalf("lease the other queue: %d tasks, %v", len(res.Tasks), err)
	}
	var outs []store.Outcome
	for _, tk := range res.Tasks[:10] {
		outs = append(outs, store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
	}
	if _, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)

	opts := must(redis.ParseURL(url))
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	mon := startMonitor(t, opts.Addr)
	for range 10 {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{q}, Max: 25, Duration: time.Minute, WorkerID: "w1"})
		if err != nil || len(res.Tasks) != 25 {
			t.Fatalf("backlog %d: lease = %d tasks, %v", n, len(res.Tasks), err)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, tk := range res.Tasks {
			outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
		}
		rep, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range rep.Errs {
			if e != nil {
				t.Fatalf("backlog %d: report: %v", n, e)
			}
		}
	}
	sw, err := s.Sweep(ctx, store.SweepParams{})
	if err != nil || sw.Total() != 0 {
		t.Fatalf("backlog %d: sweep = %+v, %v (nothing is due)", n, sw, err)
	}
	cmds := mon.stop(t, c, fmt.Sprintf("end of backlog %d", n))
	if len(cmds) == 0 {
		t.Fatal("MONITOR showed no command of the scripts")
	}
	bad := 0
	for _, args := range cmds {
		if why := unbounded(args); why != "" {
			if bad++; bad <= 5 {
				t.Errorf("backlog %d: a script ran %q: %s", n, args, why)
			}
		}
	}
	if bad > 5 {
		t.Errorf("backlog %d: %d such commands in all", n, bad)
	}
	return commandCalls(t, c)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestBacklogWorkPerTask: leasing, reporting and sweeping take the same
// Redis commands, call for call and the scripts' own included, whether 300
// or 20,000 tasks wait in the queue: no step of those paths walks, counts
// or scans the backlog one command per task (the work of each command on
// a sorted set is O(log N) in the set's size). A Redis of the test's own,
// so that INFO commandstats counts nothing else.
func TestBacklogWorkPerTask(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	small := backlogWork(t, url, 300)
	large := backlogWork(t, url, 20_000)
	if !maps.Equal(small, large) {
		names := map[string]bool{}
		for k := range small {
			names[k] = true
		}
		for k := range large {
			names[k] = true
		}
		var diff []string
		for _, k := range slices.Sorted(maps.Keys(names)) {
			if small[k] != large[k] {
				diff = append(diff, fmt.Sprintf("%s %d -> %d", k, small[k], large[k]))
			}
		}
		t.Fatalf("Redis commands for the same 250 tasks differ between a backlog of 300 and of 20,000: %s", strings.Join(diff, ", "))
	}
	if small["evalsha"] != 21 {
		t.Errorf("evalsha calls = %d, want 21 (10 leases, 10 reports, 1 sweep): %v", small["evalsha"], small)
	}
	t.Logf("commands for 250 tasks at either backlog: %v", small)
}

// TestNoKeysLeftBehind: processing a backlog leaves exactly the namespace's
// fixed keys beside the task records, and once the finished tasks' retention
// ends, Sweep deletes the records and their indexes: only the counters, the
// sequences, the change feed and the lease set (its sentinel alone, see
// leaseSetSentinel) remain.
func TestNoKeysLeftBehind(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	ctx := t.Context()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	prefix := newPrefix()
	s := mustOpen(t, url, &Config{Prefix: prefix, Clock: clock})
	defer func() { _ = s.Close() }()
	const n = 3000
	for done := 0; done < n; done += 1000 {
		tasks := make([]store.TaskInput, 1000)
		for i := range tasks {
			tasks[i] = store.TaskInput{ID: fmt.Sprintf("t%d", done+i), Type: "noop", Payload: []byte("x")}
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "n", Tasks: tasks}); err != nil {
			t.Fatal(err)
		}
	}
	c := redis.NewClient(must(redis.ParseURL(url)))
	defer func() { _ = c.Close() }()
	tag := "{" + prefix + ":n}"
	others := func() []string {
		t.Helper()
		keys, err := c.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range keys {
			if !strings.HasPrefix(k, tag+":t:") {
				out = append(out, strings.TrimPrefix(k, tag))
			}
		}
		slices.Sort(out)
		return out
	}
	want := func(when string, got []string, keys ...string) {
		t.Helper()
		if !slices.Equal(got, keys) {
			t.Errorf("%s: keys other than task records = %q, want %q", when, got, keys)
		}
	}
	want("after the enqueues", others(), ":all", ":c", ":ev", ":r:default/noop", ":seq", ":ty:default", prefix+":namespaces")
	for done := 0; done < n; {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: "n", Queues: []string{store.DefaultQueue}, Max: 100, Duration: time.Minute, WorkerID: "w"})
		if err != nil || len(res.Tasks) == 0 {
			t.Fatalf("lease after %d: %d tasks, %v", done, len(res.Tasks), err)
		}
		outs := make([]store.Outcome, len(res.Tasks))
		for i, tk := range res.Tasks {
			outs[i] = store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded}
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: "n", Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
		done += len(res.Tasks)
	}
	if got := must(c.DBSize(ctx).Result()); got != n+9 {
		t.Errorf("after processing: %d keys, want %d task records and 9 others (%q)", got, n, others())
	}
	want("after processing", others(), ":all", ":c", ":ev", ":l", ":lseq", ":seq", ":xg", ":xgi", prefix+":namespaces")
	clock.Advance(store.RetentionDefault + time.Second)
	sw, err := s.Sweep(ctx, store.SweepParams{})
	if err != nil || sw.Deleted != n {
		t.Fatalf("sweep after the retention = %+v, %v; want %d deleted", sw, err, n)
	}
	want("after the retention's sweep", others(), ":c", ":ev", ":l", ":lseq", ":seq", prefix+":namespaces")
	if got := must(c.ZRange(ctx, tag+":l", 0, -1).Result()); len(got) != 1 || got[0] != leaseSetSentinel {
		t.Errorf("the lease set at the end = %q, want its sentinel alone", got)
	}
}
