package kilntest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/kilntest"
)

// A user's test of a task handler: enqueue on a temporary store, drain the
// queue with a worker, read the result. In a real test the function is a
// TestXxx and tb is its *testing.T; here a benchmark's *testing.B stands in
// for it so that the example runs.
func Example() {
	testing.Benchmark(func(b *testing.B) {
		b.Helper()
		testShout(b)
		for b.Loop() {
		}
	})
	// Output: HELLO
}

func testShout(tb testing.TB) {
	tb.Helper()
	st := kilntest.Embedded(tb, nil)
	client, err := kiln.NewClient(st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := client.EnqueueJSON(tb.Context(), "shout", "hello", nil)
	if err != nil {
		tb.Fatal(err)
	}

	w, err := kiln.NewWorker(st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	w.Handle("shout", kiln.FuncCtx(func(_ context.Context, s string) (string, error) {
		return strings.ToUpper(s), nil
	}))
	kilntest.Drain(tb, w, st, "")

	var got string
	if err := res.Get(tb.Context(), &got); err != nil {
		tb.Fatal(err)
	}
	fmt.Println(got)
}
