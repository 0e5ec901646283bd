package kiln_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store/embedded"
)

// openStore opens an embedded store in a temporary folder; the returned
// function closes it and removes the folder.
func openStore() (*embedded.Store, func()) {
	dir, err := os.MkdirTemp("", "kiln-example-")
	if err != nil {
		log.Fatal(err)
	}
	s, err := embedded.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	return s, func() { _ = s.Close(); _ = os.RemoveAll(dir) }
}

// startWorker runs w in the background; the returned function shuts it down
// and waits for Run to return.
func startWorker(w *kiln.Worker) (stop func()) {
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	return func() {
		if err := w.Shutdown(context.Background()); err != nil {
			log.Fatal(err)
		}
		if err := <-done; err != nil {
			log.Fatal(err)
		}
	}
}

// Say is the task of the quick start.
func Say(name string) (string, error) {
	return "Hello " + name + "!", nil
}

// Register a typed function, enqueue it with a JSON argument, and wait for
// its result.
func Example() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	w, err := kiln.NewWorker(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	w.Handle("Say", kiln.Func(Say))
	stop := startWorker(w)
	defer stop()

	c, err := kiln.NewClient(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.EnqueueJSON(ctx, "Say", "kiln", nil)
	if err != nil {
		log.Fatal(err)
	}
	var greeting string
	if err := res.Get(ctx, &greeting); err != nil {
		log.Fatal(err)
	}
	fmt.Println(greeting)
	// Output: Hello kiln!
}

// Enqueue a task with a raw payload and look at it before any worker runs.
func ExampleClient_Enqueue() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	c, err := kiln.NewClient(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Enqueue(ctx, "email:send", []byte(`{"to":"ada@example.com"}`), &kiln.TaskOptions{Queue: "mail"})
	if err != nil {
		log.Fatal(err)
	}
	info, err := res.Info(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Type, info.Queue, info.State, info.MaxRetries, info.Timeout)
	// Output: email:send mail pending 25 30m0s
}

// Per-task options are plain data: they marshal to JSON, and bad values are
// refused before the store is touched.
func ExampleTaskOptions() {
	s, cleanup := openStore()
	defer cleanup()
	c, err := kiln.NewClient(s, nil)
	if err != nil {
		log.Fatal(err)
	}

	opts := kiln.TaskOptions{
		Queue:      "reports",
		Priority:   5,
		ProcessIn:  time.Minute,
		MaxRetries: new(3),
		Timeout:    new(10 * time.Second),
		UniqueKey:  "report:2026-11",
		UniqueTTL:  time.Hour,
	}
	res, err := c.Enqueue(context.Background(), "report:build", nil, &opts)
	if err != nil {
		log.Fatal(err)
	}
	st, _ := res.State(context.Background())
	fmt.Println(st)

	_, err = c.Enqueue(context.Background(), "report:build", nil, &opts)
	fmt.Println(errors.Is(err, kiln.ErrDuplicate))

	_, err = c.Enqueue(context.Background(), "report:build", nil, &kiln.TaskOptions{Timeout: new(-time.Second)})
	fmt.Println(errors.Is(err, kiln.ErrInvalidOption))
	// Output:
	// scheduled
	// true
	// true
}

// Worker.Handle with kiln.Func takes a function of one argument; use a
// struct to pass several values.
func ExampleWorker_Handle() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	type sum struct{ A, B int }
	w, err := kiln.NewWorker(s, &kiln.WorkerConfig{Concurrency: 4})
	if err != nil {
		log.Fatal(err)
	}
	w.Handle("add", kiln.Func(func(in sum) (int, error) { return in.A + in.B, nil }))
	stop := startWorker(w)
	defer stop()

	c, _ := kiln.NewClient(s, nil)
	res, err := c.EnqueueJSON(ctx, "add", sum{A: 2, B: 40}, nil)
	if err != nil {
		log.Fatal(err)
	}
	var n int
	if err := res.Get(ctx, &n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)
	// Output: 42
}

// Result.Get reports a task that failed for good as a *kiln.TaskError.
func ExampleResult_Get() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	w, _ := kiln.NewWorker(s, nil)
	w.Handle("charge", kiln.Func(func(amount int) (string, error) {
		if amount <= 0 {
			return "", fmt.Errorf("amount %d: %w", amount, kiln.SkipRetry)
		}
		return "charged", nil
	}))
	stop := startWorker(w)
	defer stop()

	c, _ := kiln.NewClient(s, nil)
	res, _ := c.EnqueueJSON(ctx, "charge", -5, nil)
	var out string
	err := res.Get(ctx, &out)
	var te *kiln.TaskError
	fmt.Println(errors.Is(err, kiln.ErrTaskDead), errors.As(err, &te) && te.Attempt == 1)
	// Output: true true
}

// Cancelling a running task cancels its handler's context with cause
// kiln.ErrTaskCancelled.
func ExampleClient_Cancel() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	started := make(chan struct{})
	w, _ := kiln.NewWorker(s, &kiln.WorkerConfig{LeaseDuration: 300 * time.Millisecond})
	w.Handle("watch", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
		close(started)
		<-ctx.Done()
		fmt.Println("handler stopped:", context.Cause(ctx))
		return ctx.Err()
	}))
	stop := startWorker(w)
	defer stop()

	c, _ := kiln.NewClient(s, nil)
	res, _ := c.Enqueue(ctx, "watch", nil, nil)
	<-started
	if err := c.Cancel(ctx, res.ID()); err != nil {
		log.Fatal(err)
	}
	_, err := res.Wait(ctx)
	fmt.Println(errors.Is(err, kiln.ErrTaskCancelled))
	// Output:
	// handler stopped: kiln: task cancelled
	// true
}

// Shutdown lets running tasks finish within its context's time, then
// cancels them and hands them back to the store.
func ExampleWorker_Shutdown() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	started := make(chan struct{})
	w, _ := kiln.NewWorker(s, nil)
	w.Handle("slow", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
		close(started)
		<-ctx.Done() // a handler that only stops when told to
		return ctx.Err()
	}))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	c, _ := kiln.NewClient(s, nil)
	res, _ := c.Enqueue(ctx, "slow", nil, nil)
	<-started

	// The handler is cancelled a quarter of the time before the deadline
	// (at most 1 s), which leaves that time to hand its task back.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	fmt.Println("shutdown:", w.Shutdown(sctx))
	fmt.Println("run:", <-done)
	info, _ := res.Info(ctx)
	fmt.Println(info.State, info.Attempt)
	// Output:
	// shutdown: context deadline exceeded
	// run: <nil>
	// pending 1
}
