// Command workflows runs machinery's example tasks (add, multiply,
// sum_ints, concat, split) as kiln workflows: a chain, a group, a chord,
// callbacks, and a fan-out of 1,000 tasks whose chord sums their results.
//
// It runs a worker and a client in one process over an embedded store in a
// temporary folder (or -dir, or a Redis store with -redis URL):
//
//	go run ./examples/workflows
//	go run ./examples/workflows -redis redis://127.0.0.1:6379/0
//
// The client side could exit right after EnqueueWorkflow: the workflow
// lives in the store and the workers drive it to its end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
)

// The tasks, as machinery's example defines them.

// Add adds its arguments.
func Add(args ...int64) (int64, error) {
	var sum int64
	for _, a := range args {
		sum += a
	}
	return sum, nil
}

// Multiply multiplies its arguments.
func Multiply(args ...int64) (int64, error) {
	p := int64(1)
	for _, a := range args {
		p *= a
	}
	return p, nil
}

// SumInts adds the numbers of a list (a chord's callback gets its group's
// results as one).
func SumInts(numbers []int64) (int64, error) { return Add(numbers...) }

// Concat joins strings.
func Concat(strs []string) (string, error) { return strings.Join(strs, ""), nil }

// Split splits a string into its words.
func Split(str string) ([]string, error) { return strings.Fields(str), nil }

// Fail always fails, for good.
func Fail(msg string) (string, error) { return "", fmt.Errorf("%s: %w", msg, kiln.SkipRetry) }

// Report is an error callback: it gets the failed task's error message.
func Report(msg string) (string, error) {
	log.Printf("error callback: %s", msg)
	return "reported", nil
}

// Register registers the tasks on w.
func Register(w *kiln.Worker) {
	w.Handle("add", kiln.MustFn(Add))
	w.Handle("multiply", kiln.MustFn(Multiply))
	w.Handle("sum_ints", kiln.MustFn(SumInts))
	w.Handle("concat", kiln.MustFn(Concat))
	w.Handle("split", kiln.MustFn(Split))
	w.Handle("fail", kiln.MustFn(Fail))
	w.Handle("report", kiln.MustFn(Report))
}

func main() {
	dir := flag.String("dir", "", "embedded store folder (default: a temporary one)")
	redisURL := flag.String("redis", "", "use the Redis store at this URL instead")
	fanout := flag.Int("fanout", 1000, "members of the fan-out chord")
	flag.Parse()
	if err := run(*dir, *redisURL, *fanout, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func open(ctx context.Context, dir, redisURL string) (store.Store, func(), error) {
	if redisURL != "" {
		s, err := redisstore.Open(ctx, redisURL, &redisstore.Config{Prefix: "kiln-example-workflows"})
		return s, func() { _ = s.Close() }, err
	}
	cleanup := func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "kiln-workflows-")
		if err != nil {
			return nil, nil, err
		}
		dir, cleanup = d, func() { _ = os.RemoveAll(d) }
	}
	s, err := embedded.Open(dir, nil)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return s, func() { _ = s.Close(); cleanup() }, nil
}

// run runs every example and writes what they return to out.
func run(dir, redisURL string, fanout int, out *os.File) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, closeStore, err := open(ctx, dir, redisURL)
	if err != nil {
		return err
	}
	defer closeStore()

	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: 8})
	if err != nil {
		return err
	}
	Register(w)
	werr := make(chan error, 1)
	go func() { werr <- w.Run(ctx) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = w.Shutdown(sctx)
		if err := <-werr; err != nil {
			log.Printf("worker: %v", err)
		}
	}()

	c, err := kiln.NewClient(s, nil)
	if err != nil {
		return err
	}
	say := func(format string, args ...any) { _, _ = fmt.Fprintf(out, format+"\n", args...) }

	// One task, sent like machinery's SendTask.
	r, err := c.Send(ctx, kiln.NewSignature("add", 1, 1))
	if err != nil {
		return err
	}
	var n int64
	if err := r.Get(ctx, &n); err != nil {
		return err
	}
	say("add(1, 1) = %d", n)

	// A chain: add(1, 1) -> add(5, 5, 2) -> multiply(4, 12) = 48.
	wf, err := c.EnqueueWorkflow(ctx, kiln.Chain(
		kiln.NewSignature("add", 1, 1),
		kiln.NewSignature("add", 5, 5),
		kiln.NewSignature("multiply", 4),
	), nil)
	if err != nil {
		return err
	}
	if err := wf.Get(ctx, &n); err != nil {
		return err
	}
	say("chain: (5 + 5 + (1 + 1)) * 4 = %d", n)

	// A group: its results in order.
	wf, err = c.EnqueueWorkflow(ctx, kiln.Group(
		kiln.NewSignature("add", 1, 1),
		kiln.NewSignature("add", 5, 5),
		kiln.NewSignature("multiply", 3, 3),
	), nil)
	if err != nil {
		return err
	}
	var ns []int64
	if err := wf.GetAll(ctx, &ns); err != nil {
		return err
	}
	say("group: %v", ns)

	// A chord: the callback gets the group's results.
	wf, err = c.EnqueueWorkflow(ctx, kiln.Chord(kiln.Group(
		kiln.NewSignature("add", 1, 1),
		kiln.NewSignature("add", 5, 5),
	), kiln.NewSignature("sum_ints")), nil)
	if err != nil {
		return err
	}
	if err := wf.Get(ctx, &n); err != nil {
		return err
	}
	say("chord: sum_ints([2, 10]) = %d", n)

	// A chain of machinery's string tasks.
	wf, err = c.EnqueueWorkflow(ctx, kiln.Chain(kiln.NewSignature("split", "the quick brown fox"), kiln.NewSignature("concat")), nil)
	if err != nil {
		return err
	}
	var str string
	if err := wf.Get(ctx, &str); err != nil {
		return err
	}
	say("chain: concat(split(\"the quick brown fox\")) = %q", str)

	// Callbacks: OnSuccess gets the result, OnError the error message.
	ok := kiln.NewSignature("add", 2, 3)
	ok.OnSuccess = []*kiln.Signature{kiln.NewSignature("multiply", 10)}
	bad := kiln.NewSignature("fail", "no disk")
	bad.OnError = []*kiln.Signature{kiln.NewSignature("report")}
	wf, err = c.EnqueueWorkflow(ctx, kiln.Group(ok, bad), nil)
	if err != nil {
		return err
	}
	st, err := wf.Wait(ctx)
	var we *kiln.WorkflowError
	if !errors.As(err, &we) {
		return fmt.Errorf("the failing group did not fail: %w", err)
	}
	say("callbacks: workflow %s, caused by %s (%s)", st.State, we.Cause.Type, we.Cause.Message)
	for _, m := range st.Members {
		say("  %-9s %-9s %s %s", m.Type, m.State, m.Result, m.Error)
	}

	// A fan-out: fanout tasks, and a chord that sums their results.
	members := make([]kiln.Step, fanout)
	for i := range members {
		members[i] = kiln.NewSignature("multiply", i, 2)
	}
	start := time.Now()
	wf, err = c.EnqueueWorkflow(ctx, kiln.Chord(kiln.Group(members...), kiln.NewSignature("sum_ints")), nil)
	if err != nil {
		return err
	}
	if err := wf.Get(ctx, &n); err != nil {
		return err
	}
	say("fan-out: %d tasks, sum = %d (want %d), in %s", fanout, n, int64(fanout)*int64(fanout-1), time.Since(start).Round(time.Millisecond))
	return nil
}
