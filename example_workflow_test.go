package kiln_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kilnhq/kiln"
)

// A chain whose middle step is a chord: each step gets the result before
// it as its last argument, and the chord's callback gets the group's
// results.
func ExampleChain() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	w, err := kiln.NewWorker(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	w.Handle("add", kiln.MustFn(func(args ...int64) (int64, error) {
		var sum int64
		for _, a := range args {
			sum += a
		}
		return sum, nil
	}))
	w.Handle("multiply", kiln.MustFn(func(a, b int64) (int64, error) { return a * b, nil }))
	w.Handle("sum_ints", kiln.MustFn(func(xs []int64) (int64, error) {
		var sum int64
		for _, x := range xs {
			sum += x
		}
		return sum, nil
	}))
	stop := startWorker(w)
	defer stop()

	c, err := kiln.NewClient(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	wf := kiln.Chain(
		kiln.NewSignature("add", 1, 1), // 2
		kiln.Chord(kiln.Group(
			kiln.NewSignature("multiply", 3), // multiply(3, 2) = 6
			kiln.NewSignature("add", 5),      // add(5, 2) = 7
		), kiln.NewSignature("sum_ints")), // sum_ints([6, 7]) = 13
		kiln.NewSignature("multiply", 10), // multiply(10, 13) = 130
	)
	r, err := c.EnqueueWorkflow(ctx, wf, nil)
	if err != nil {
		log.Fatal(err)
	}
	var n int64
	if err := r.Get(ctx, &n); err != nil {
		log.Fatal(err)
	}
	fmt.Println(n)

	st, err := c.Workflow(r.ID()).State(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.State, len(st.Members), "tasks")
	// Output:
	// 130
	// succeeded 5 tasks
}
