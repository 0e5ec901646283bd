package kiln

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
	"github.com/kilnhq/kiln/store/storetest"
)

// wfCounts counts handler calls by type, for the tests of workflows.
type wfCounts struct {
	mu    sync.Mutex
	calls map[string]int
	args  map[string][]string
	flaky map[string]int
}

func newCounts() *wfCounts {
	return &wfCounts{calls: map[string]int{}, args: map[string][]string{}, flaky: map[string]int{}}
}

func (c *wfCounts) note(typ string, payload []byte) {
	c.mu.Lock()
	c.calls[typ]++
	c.args[typ] = append(c.args[typ], string(payload))
	c.mu.Unlock()
}

func (c *wfCounts) n(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[typ]
}

func sumInts(xs []int) (int, error) {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s, nil
}

// register adds the handlers the workflow tests use.
func (c *wfCounts) register(w *Worker) {
	counted := func(typ string, h Handler) Handler {
		return HandlerFunc(func(ctx context.Context, t *Task) error {
			c.note(typ, t.Payload)
			return h.ProcessTask(ctx, t)
		})
	}
	w.Handle("add", counted("add", Func(sumInts)))
	w.Handle("sum", counted("sum", Func(sumInts)))
	w.Handle("double", counted("double", Func(func(n int) (int, error) { return 2 * n, nil })))
	w.Handle("fail", counted("fail", Func(func(n int) (int, error) {
		return 0, fmt.Errorf("fail %d: %w", n, SkipRetry)
	})))
	w.Handle("flaky", counted("flaky", HandlerFunc(func(_ context.Context, t *Task) error {
		c.mu.Lock()
		c.flaky[t.ID]++
		first := c.flaky[t.ID] == 1
		c.mu.Unlock()
		if first {
			return errors.New("first attempt fails")
		}
		t.SetResult([]byte("1"))
		return nil
	})))
	w.Handle("onerr", counted("onerr", Func(func(msg string) (string, error) { return "handled: " + msg, nil })))
	w.Handle("block", counted("block", FuncCtx(func(ctx context.Context, _ any) (int, error) {
		<-ctx.Done()
		return 0, context.Cause(ctx)
	})))
}

// wfEnv is a store with a client, for the workflow tests, run on the
// embedded store and on Redis.
type wfEnv struct {
	s      store.Store
	client *Client
	counts *wfCounts
}

// startWorker runs a worker with the test handlers until the test ends.
func (e *wfEnv) startWorker(t *testing.T, s store.Store, concurrency int) {
	t.Helper()
	w, err := NewWorker(s, &WorkerConfig{
		Concurrency: concurrency, LeaseWait: 50 * time.Millisecond, SweepInterval: 20 * time.Millisecond, LeaseDuration: 2 * time.Second,
		RetryDelayFunc: func(int, error, *Task) time.Duration { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.counts.register(w)
	runUntilCleanup(t, w)
}

// runUntilCleanup runs w until the test ends, then shuts it down and
// checks that Run returned without an error.
func runUntilCleanup(t *testing.T, w *Worker) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.WithoutCancel(t.Context())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// wfStores lists the stores the workflow tests run on: embedded always,
// and Redis (by testenv's rule: skipped when there is none, failed under
// KILN_TEST_REQUIRE_ALL=1).
func wfStores(t *testing.T, fn func(t *testing.T, open func(t *testing.T) (store.Store, func() store.Store))) {
	t.Helper()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		fn(t, func(t *testing.T) (store.Store, func() store.Store) {
			t.Helper()
			dir := t.TempDir()
			s, err := embedded.Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			cur := s
			t.Cleanup(func() { _ = cur.Close() })
			return s, func() store.Store {
				_ = cur.Close()
				n, err := embedded.Open(dir, nil)
				if err != nil {
					t.Fatal(err)
				}
				cur = n
				return n
			}
		})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		url := testenv.RedisURL(t)
		fn(t, func(t *testing.T) (store.Store, func() store.Store) {
			t.Helper()
			prefix := testenv.RedisPrefix(t, url)
			open := func() store.Store {
				s, err := redisstore.Open(t.Context(), url, &redisstore.Config{Prefix: prefix})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			return open(), open
		})
	})
}

func newEnv(t *testing.T, s store.Store) *wfEnv {
	t.Helper()
	c, err := NewClient(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &wfEnv{s: s, client: c, counts: newCounts()}
}

func TestWorkflows(t *testing.T) {
	t.Parallel()
	wfStores(t, func(t *testing.T, open func(t *testing.T) (store.Store, func() store.Store)) {
		t.Run("Chain", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 4)
			wf := Chain(NewSignature("add", 1, 2), NewSignature("double"), NewSignature("add", 10), &Signature{Type: "add", Args: []any{5, 5}, Immutable: true})
			r, err := e.client.EnqueueWorkflow(t.Context(), wf, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got int
			if err := r.Get(waitCtx(t), &got); err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got != 10 {
				t.Fatalf("chain result = %d, want 10", got)
			}
			var all []int
			if err := e.client.Workflow(r.ID()).GetAll(waitCtx(t), &all); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(all, []int{3, 6, 16, 10}) {
				t.Fatalf("GetAll = %v, want [3 6 16 10]", all)
			}
			st, err := r.State(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if st.State != "succeeded" || len(st.Members) != 4 || st.Members[1].Type != "double" || st.Members[1].State != "succeeded" {
				t.Fatalf("State = %+v", st)
			}
			if got := e.counts.args["add"][1]; got != "[10,6]" {
				t.Fatalf("third step's payload = %s, want [10,6] (own argument, then the result before it)", got)
			}
		})

		t.Run("GroupOrderAndChord", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 8)
			var members []Step
			want := make([]int, 20)
			for i := range 20 {
				members = append(members, NewSignature("add", i, i))
				want[i] = 2 * i
			}
			r, err := e.client.EnqueueWorkflow(t.Context(), Group(members...), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			if err := r.GetAll(waitCtx(t), &got); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("group results = %v, want %v", got, want)
			}
			r2, err := e.client.EnqueueWorkflow(t.Context(), Chord(Group(members...), NewSignature("sum")), nil)
			if err != nil {
				t.Fatal(err)
			}
			var total int
			if err := r2.Get(waitCtx(t), &total); err != nil {
				t.Fatal(err)
			}
			if total != 380 {
				t.Fatalf("chord result = %d, want 380", total)
			}
			if n := e.counts.n("sum"); n != 1 {
				t.Fatalf("chord callback ran %d times, want 1", n)
			}
		})

		t.Run("Nesting", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 4)
			// 2 -> [double 2 = 4, add(5, 2) = 7] -> sum = 11
			wf1 := Chain(NewSignature("add", 1, 1), Group(NewSignature("double"), NewSignature("add", 5)), NewSignature("sum"))
			// 3 -> chord([6, 6]) = 12 -> double = 24
			wf2 := Chain(NewSignature("add", 1, 2), Chord(Group(NewSignature("double"), NewSignature("double")), NewSignature("sum")), NewSignature("double"))
			// a group of chains: [[1+1 -> 4], [2+2 -> 8]]
			wf3 := Group(Chain(NewSignature("add", 1, 1), NewSignature("double")), Chain(NewSignature("add", 2, 2), NewSignature("double")))
			for _, c := range []struct {
				wf   *Workflow
				want string
			}{{wf1, "11"}, {wf2, "24"}, {wf3, "[4,8]"}} {
				r, err := e.client.EnqueueWorkflow(t.Context(), c.wf, nil)
				if err != nil {
					t.Fatal(err)
				}
				var got any
				if err := r.Get(waitCtx(t), &got); err != nil {
					t.Fatal(err)
				}
				if s := strings.ReplaceAll(fmt.Sprint(got), " ", ","); s != c.want {
					t.Fatalf("result = %s, want %s", s, c.want)
				}
			}
		})

		t.Run("FailureFailsChordOnce", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 4)
			cb := NewSignature("sum")
			cb.OnError = []*Signature{NewSignature("onerr")}
			cb.OnSuccess = []*Signature{NewSignature("double")}
			wf := Chain(Chord(Group(NewSignature("add", 1, 1), NewSignature("fail", 7), NewSignature("add", 2, 2)), cb), NewSignature("double")).
				OnError(NewSignature("onerr"))
			r, err := e.client.EnqueueWorkflow(t.Context(), wf, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := r.Wait(waitCtx(t))
			var we *WorkflowError
			if !errors.As(err, &we) || !errors.Is(err, ErrTaskDead) {
				t.Fatalf("Wait: %v, want a *WorkflowError matching ErrTaskDead", err)
			}
			if we.Cause == nil || we.Cause.Type != "fail" || !strings.Contains(we.Cause.Message, "fail 7") {
				t.Fatalf("cause = %+v, want the fail task", we.Cause)
			}
			if st.State != "failed" {
				t.Fatalf("State = %s", st.State)
			}
			if n := e.counts.n("sum"); n != 0 {
				t.Fatalf("chord callback ran %d times after a member failed", n)
			}
			// The callback's OnError and the workflow's OnError: once each.
			if n := e.counts.n("onerr"); n != 2 {
				t.Fatalf("error callbacks ran %d times, want 2 (args %v)", n, e.counts.args["onerr"])
			}
			for _, a := range e.counts.args["onerr"] {
				if !strings.Contains(a, "fail 7") {
					t.Fatalf("error callback input %s does not name the failure", a)
				}
			}
			if n := e.counts.n("double"); n != 0 {
				t.Fatalf("steps after the failure ran %d times", n)
			}
			var cancelledCallbacks int
			for _, m := range st.Members {
				if m.Callback && m.State == "cancelled" && strings.HasPrefix(m.Error, "skipped") || m.Callback && strings.HasPrefix(m.Error, "upstream") {
					cancelledCallbacks++
				}
			}
			if cancelledCallbacks != 1 { // the OnSuccess of the callback
				t.Fatalf("members = %+v", st.Members)
			}
		})

		t.Run("Concurrency1Chord", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 1)
			var members []Step
			for i := range 30 {
				members = append(members, NewSignature("add", i, 1))
			}
			r, err := e.client.EnqueueWorkflow(t.Context(), Chain(NewSignature("add", 0, 1), Chord(Group(members...), NewSignature("sum"))), nil)
			if err != nil {
				t.Fatal(err)
			}
			var total int
			if err := r.Get(waitCtx(t), &total); err != nil {
				t.Fatal(err)
			}
			if total != 435+30+30 {
				t.Fatalf("total = %d, want %d", total, 435+60)
			}
		})

		t.Run("RetriedMemberFiresOnce", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 4)
			r, err := e.client.EnqueueWorkflow(t.Context(), Chord(Group(NewSignature("flaky"), NewSignature("flaky"), NewSignature("flaky")), NewSignature("sum")), nil)
			if err != nil {
				t.Fatal(err)
			}
			var total int
			if err := r.Get(waitCtx(t), &total); err != nil {
				t.Fatal(err)
			}
			if total != 3 || e.counts.n("flaky") != 6 || e.counts.n("sum") != 1 {
				t.Fatalf("total %d, flaky ran %d times, sum %d; want 3, 6, 1", total, e.counts.n("flaky"), e.counts.n("sum"))
			}
		})

		t.Run("Cancel", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			e.startWorker(t, s, 2)
			r, err := e.client.EnqueueWorkflow(t.Context(), Chain(Group(NewSignature("block"), NewSignature("add", 1, 1)), NewSignature("sum"), NewSignature("double")), nil)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "block to start", func() bool { return e.counts.n("block") == 1 })
			if err := r.Cancel(t.Context()); err != nil {
				t.Fatal(err)
			}
			st, err := r.Wait(waitCtx(t))
			if !errors.Is(err, ErrTaskCancelled) {
				t.Fatalf("Wait after Cancel: %v, want ErrTaskCancelled", err)
			}
			for _, m := range st.Members {
				if m.Type != "add" && m.State != "cancelled" {
					t.Fatalf("member %s (%s) is %s after Cancel", m.ID, m.Type, m.State)
				}
			}
			if e.counts.n("sum")+e.counts.n("double") != 0 {
				t.Fatal("steps after a cancelled member ran")
			}
		})

		t.Run("ClientExitsAfterEnqueue", func(t *testing.T) {
			t.Parallel()
			s, reopen := open(t)
			e := newEnv(t, s)
			wf := Chain(NewSignature("add", 2, 3), Chord(Group(NewSignature("double"), NewSignature("double")), NewSignature("sum")))
			r, err := e.client.EnqueueWorkflow(t.Context(), wf, &WorkflowOptions{ID: "wf-exit"})
			if err != nil {
				t.Fatal(err)
			}
			// The enqueueing process goes away; another one, with only a
			// worker, runs the workflow; a third reads it by id.
			s2 := reopen()
			e2 := newEnv(t, s2)
			e2.counts = e.counts
			e2.startWorker(t, s2, 2)
			var total int
			if err := e2.client.Workflow(r.ID()).Get(waitCtx(t), &total); err != nil {
				t.Fatal(err)
			}
			if total != 20 {
				t.Fatalf("total = %d, want 20", total)
			}
		})

		t.Run("BadWorkflow", func(t *testing.T) {
			t.Parallel()
			s, _ := open(t)
			e := newEnv(t, s)
			bad := []Step{
				Chain(),
				Group(),
				Chord(nil, NewSignature("sum")),
				Chain(NewSignature("add", func() {})),
				Chain(&Signature{Type: "add", Options: TaskOptions{UniqueKey: "k", UniqueTTL: time.Minute}}),
				Chain(NewSignature("bad type!")),
			}
			for i, wf := range bad {
				if _, err := e.client.EnqueueWorkflow(t.Context(), wf, nil); err == nil {
					t.Errorf("workflow %d: no error", i)
				}
			}
			if _, err := e.client.EnqueueWorkflow(t.Context(), NewSignature("add", 1, 2), &WorkflowOptions{ID: "dup"}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.client.EnqueueWorkflow(t.Context(), NewSignature("add", 1, 2), &WorkflowOptions{ID: "dup"}); !errors.Is(err, ErrTaskExists) {
				t.Fatalf("same id twice: %v, want ErrTaskExists", err)
			}
		})
	})
}

// TestWorkflowNeedsFlows: a store without store.Flows is refused clearly.
func TestWorkflowNeedsFlows(t *testing.T) {
	t.Parallel()
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store { return struct{ store.Store }{s} }})
	if _, err := b.client.EnqueueWorkflow(t.Context(), NewSignature("x"), nil); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("EnqueueWorkflow on a store without Flows: %v", err)
	}
}

// TestWorkflowWorkerLostMidMember: the worker running a chord member is
// lost (its reports, heartbeats and leases fail from then on); the
// member's lease expires, another worker runs it again, and the chord's
// callback is released, and runs, once.
func TestWorkflowWorkerLostMidMember(t *testing.T) {
	t.Parallel()
	s, err := embedded.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	faulty := storetest.Faulty(s)
	c, err := NewClient(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	var slowRuns, sumRuns atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	slow := Func(func(int) (int, error) {
		if slowRuns.Add(1) == 1 {
			close(started)
			<-release
		}
		return 1, nil
	})
	mk := func(st store.Store, lease time.Duration, register func(w *Worker)) *Worker {
		w, err := NewWorker(st, &WorkerConfig{Concurrency: 2, LeaseDuration: lease, LeaseWait: 50 * time.Millisecond, SweepInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		register(w)
		done := make(chan error, 1)
		go func() { done <- w.Run(context.WithoutCancel(t.Context())) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = w.Shutdown(ctx) // the lost worker cannot report: its error is expected
			<-done              //nolint:errcheck // the lost worker's Run error is expected too
		})
		return w
	}
	mk(faulty, time.Second, func(w *Worker) { w.Handle("slow", slow) })
	r, err := c.EnqueueWorkflow(t.Context(), Chord(Group(NewSignature("slow", 0), NewSignature("add", 1, 1)), NewSignature("sum")), nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "the first worker to start the member")
	for _, m := range []string{"Report", "Extend", "Lease"} {
		faulty.FailAll(m, store.ErrUnavailable)
	}
	close(release)
	mk(s, 10*time.Second, func(w *Worker) {
		w.Handle("slow", slow)
		w.Handle("add", Func(sumInts))
		w.Handle("sum", Func(func(xs []int) (int, error) {
			sumRuns.Add(1)
			return sumInts(xs)
		}))
	})
	var total int
	if err := r.Get(waitCtx(t), &total); err != nil {
		t.Fatal(err)
	}
	if total != 3 || slowRuns.Load() != 2 || sumRuns.Load() != 1 {
		t.Fatalf("total %d, member ran %d times, callback %d; want 3, 2, 1", total, slowRuns.Load(), sumRuns.Load())
	}
}

// TestWorkflowCountTasks checks that the compiler's up-front count is the
// number of tasks it compiles (callbacks and nesting included), and that
// a workflow whose subtrees repeat stops counting at the limit.
func TestWorkflowCountTasks(t *testing.T) {
	t.Parallel()
	sig := func() *Signature {
		s := NewSignature("a")
		s.OnSuccess = []*Signature{NewSignature("ok")}
		s.OnError = []*Signature{NewSignature("err", 1)}
		return s
	}
	wfs := map[string]*Workflow{
		"chord":      Chord(Group(sig(), NewSignature("b"), Chain(NewSignature("c"), sig())), NewSignature("cb")),
		"chain":      Chain(NewSignature("a"), Group(NewSignature("b"), NewSignature("c")), NewSignature("d")).OnError(NewSignature("e")),
		"task":       Chain(sig()),
		"group":      Group(Chord(Group(NewSignature("a")), sig()), NewSignature("b")),
		"chainChord": Chain(Chord(Group(NewSignature("a"), NewSignature("b")), NewSignature("c")), NewSignature("d")),
	}
	for name, wf := range wfs {
		p, err := compileWorkflow(wf, "w", time.Hour, store.Limits{}.WithDefaults(), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, want := countTasks(wf, 1, store.MaxFlowTasks+1), len(p.Tasks)+len(p.Held); got != want {
			t.Errorf("%s: countTasks = %d, compiled %d tasks", name, got, want)
		}
	}
	// 2^40 tasks by reference: the count stops at the limit.
	w := Group(NewSignature("a"), NewSignature("b"))
	for range 39 {
		w = Group(w, w)
	}
	if got := countTasks(w, 1, 1000); got != 1000 {
		t.Errorf("countTasks of a repeated tree = %d, want the limit 1000", got)
	}
}

// flowRecorder is a store that keeps the FlowParams of its EnqueueFlow
// calls.
type flowRecorder struct {
	*embedded.Store
	got []store.FlowParams
}

func (r *flowRecorder) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	r.got = append(r.got, p)
	return r.Store.EnqueueFlow(ctx, p)
}

// TestEnqueueWorkflowNewIDs: a workflow whose id the Client made has every
// task marked NewID (the store need not look their ids up); one whose id
// the caller gave has none.
func TestEnqueueWorkflowNewIDs(t *testing.T) {
	t.Parallel()
	s, err := embedded.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rec := &flowRecorder{Store: s}
	c, err := NewClient(rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	wf := Chord(Group(NewSignature("a"), NewSignature("b")), NewSignature("cb"))
	if _, err := c.EnqueueWorkflow(t.Context(), wf, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EnqueueWorkflow(t.Context(), wf, &WorkflowOptions{ID: "mine"}); err != nil {
		t.Fatal(err)
	}
	if len(rec.got) != 2 {
		t.Fatalf("%d EnqueueFlow calls, want 2", len(rec.got))
	}
	for i, want := range []bool{true, false} {
		p := rec.got[i]
		if len(p.Tasks) != 2 || len(p.Held) != 1 {
			t.Fatalf("flow %s: %d tasks and %d held, want 2 and 1", p.ID, len(p.Tasks), len(p.Held))
		}
		for _, in := range append([]store.TaskInput{p.Held[0].Task}, p.Tasks...) {
			if in.NewID != want {
				t.Errorf("flow %s: task %s NewID %v, want %v", p.ID, in.ID, in.NewID, want)
			}
		}
	}
}

// outcomeGets counts the Get calls that read outcomes (a callback reading
// the tasks it waited for).
type outcomeGets struct {
	store.Store
	n atomic.Int64
}

func (g *outcomeGets) Get(ctx context.Context, p store.GetParams) (store.GetResult, error) {
	if p.Outcomes {
		g.n.Add(1)
	}
	return g.Store.Get(ctx, p)
}

// TestChordCallbackReads: a callback whose store counted every task it
// waited for as succeeded (store.Task.Upstream), without a result where it
// takes their results, runs without reading them, with the input it would
// have read; otherwise it reads them.
func TestChordCallbackReads(t *testing.T) {
	t.Parallel()
	wfStores(t, func(t *testing.T, open func(t *testing.T) (store.Store, func() store.Store)) {
		s, _ := open(t)
		c, err := NewClient(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		g := &outcomeGets{Store: s}
		w, err := NewWorker(g, &WorkerConfig{Concurrency: 4, LeaseWait: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]string{}
		w.Handle("noop", HandlerFunc(func(context.Context, *Task) error { return nil }))
		w.Handle("double", Func(func(n int) (int, error) { return 2 * n, nil }))
		w.Handle("fail", HandlerFunc(func(context.Context, *Task) error { return fmt.Errorf("no: %w", SkipRetry) }))
		w.Handle("cb", HandlerFunc(func(_ context.Context, tk *Task) error {
			mu.Lock()
			got[tk.ID] = string(tk.Payload)
			mu.Unlock()
			return nil
		}))
		runUntilCleanup(t, w)
		group := func(typ string, n int) *Workflow {
			ms := make([]Step, n)
			for i := range ms {
				ms[i] = NewSignature(typ, i)
			}
			return Group(ms...)
		}
		for _, tc := range []struct {
			name  string
			wf    Step
			input string
			reads bool // on a store that counts
		}{
			{"no results", Chord(group("noop", 5), NewSignature("cb")), "[null,null,null,null,null]", false},
			{"results", Chord(group("double", 3), NewSignature("cb")), "[0,2,4]", true},
			{"immutable", Chord(group("double", 3), &Signature{Type: "cb", Immutable: true}), "null", false},
			{"no results, one failed", Chord(Group(NewSignature("noop"), NewSignature("fail")), NewSignature("cb")), "", true},
		} {
			before := g.n.Load()
			r, err := c.EnqueueWorkflow(t.Context(), tc.wf, nil)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := r.Wait(waitCtx(t))
			reads := g.n.Load() - before
			if tc.input == "" {
				if err == nil {
					t.Errorf("%s: workflow %v, want it failed", tc.name, ws.State)
				}
			} else {
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				cb := ws.Members[len(ws.Members)-1].ID
				mu.Lock()
				in := got[cb]
				mu.Unlock()
				if in != tc.input {
					t.Errorf("%s: callback input %s, want %s", tc.name, in, tc.input)
				}
			}
			if want := tc.reads; (reads > 0) != want {
				t.Errorf("%s: the callback read the tasks it waited for %d times; want reads %v", tc.name, reads, want)
			}
		}
	})
}
