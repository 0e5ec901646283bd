package kiln

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

type addArgs struct{ A, B int64 }

func TestFnSignatures(t *testing.T) {
	t.Parallel()
	bad := []any{
		nil,
		42,
		func(int) int { return 0 },
		func(chan int) error { return nil },
		func(int) (error, int) { return nil, 0 }, //nolint:staticcheck // ST1008: the unsupported signature under test
	}
	for i, fn := range bad {
		if _, err := Fn(fn); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Fn(bad %d: %T): %v, want ErrInvalidOption", i, fn, err)
		}
	}
	for i, fn := range []any{
		func() error { return nil },
		func(_ ...int64) (int64, error) { return 0, nil },
		func(string) ([]string, error) { return nil, nil },
		func(context.Context, int, int) (int, error) { return 0, nil },
		func(int) (int, string, error) { return 0, "", nil },
	} {
		if _, err := Fn(fn); err != nil {
			t.Errorf("Fn(good %d: %T): %v", i, fn, err)
		}
	}
}

func TestFnAndDefine(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var sawTask atomic.Bool
	add := Define[addArgs, int64]("add2")
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("add", MustFn(func(args ...int64) (int64, error) {
			var s int64
			for _, a := range args {
				s += a
			}
			return s, nil
		}))
		w.Handle("split", MustFn(func(s string) ([]string, error) { return strings.Fields(s), nil }))
		w.Handle("mul", MustFn(func(ctx context.Context, a, b int) (int, error) {
			if tk, ok := TaskFromContext(ctx); ok && tk.Type == "mul" && tk.Attempt == 1 {
				sawTask.Store(true)
			}
			return a * b, nil
		}))
		w.Handle("pair", MustFn(func(n int) (int, string, error) { return n + 1, "x", nil }))
		w.Handle("sumints", MustFn(func(xs []int) (int, error) {
			s := 0
			for _, x := range xs {
				s += x
			}
			return s, nil
		}))
		add.Handle(w, func(_ context.Context, a addArgs) (int64, error) { return a.A + a.B, nil })
	})
	ctx := waitCtx(t)
	send := func(sig *Signature, out any) error {
		t.Helper()
		r, err := b.client.Send(ctx, sig)
		if err != nil {
			t.Fatalf("Send(%s): %v", sig.Type, err)
		}
		return r.Get(ctx, out)
	}
	var n int64
	if err := send(NewSignature("add", 1, 2, 3), &n); err != nil || n != 6 {
		t.Fatalf("add(1, 2, 3) = %d, %v", n, err)
	}
	if err := send(NewSignature("add"), &n); err != nil || n != 0 {
		t.Fatalf("add() = %d, %v", n, err)
	}
	var words []string
	if err := send(NewSignature("split", "a b c"), &words); err != nil || !slices.Equal(words, []string{"a", "b", "c"}) {
		t.Fatalf("split = %v, %v", words, err)
	}
	var m int
	if err := send(NewSignature("mul", 6, 7), &m); err != nil || m != 42 {
		t.Fatalf("mul(6, 7) = %d, %v", m, err)
	}
	if !sawTask.Load() {
		t.Error("TaskFromContext did not give the handler its task")
	}
	var pair []any
	if err := send(NewSignature("pair", 1), &pair); err != nil || len(pair) != 2 || pair[0] != 2.0 || pair[1] != "x" {
		t.Fatalf("pair(1) = %v, %v", pair, err)
	}
	if err := send(NewSignature("sumints", []int{1, 2, 3}), &m); err != nil || m != 6 {
		t.Fatalf("sumints([1 2 3]) = %d, %v", m, err)
	}
	// A wrong argument fails the task for good, naming the argument.
	err := send(NewSignature("mul", "six", 7), nil)
	if !errors.Is(err, ErrTaskDead) || !strings.Contains(err.Error(), "argument 1 (int)") {
		t.Fatalf("mul(\"six\", 7): %v, want a dead task naming argument 1", err)
	}
	if err := send(NewSignature("mul", 6), nil); !errors.Is(err, ErrTaskDead) || !strings.Contains(err.Error(), "1 arguments given, 2 wanted") {
		t.Fatalf("mul(6): %v", err)
	}
	// Multi-argument functions in a chain: the result comes last.
	r, err := b.client.EnqueueWorkflow(ctx, Chain(NewSignature("add", 1, 2), NewSignature("mul", 10), Chord(Group(NewSignature("add", 1), NewSignature("add", 2)), NewSignature("sumints"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Get(ctx, &m); err != nil || m != 63 {
		t.Fatalf("chain = %d, %v; want (1+2)*10 = 30, then 31 + 32 = 63", m, err)
	}
	// The typed definition.
	res, err := add.Enqueue(ctx, b.client, addArgs{A: 40, B: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := add.Get(ctx, res); err != nil || got != 42 {
		t.Fatalf("add2 = %d, %v", got, err)
	}
	r, err = b.client.EnqueueWorkflow(ctx, Chain(add.Signature(addArgs{A: 1, B: 1}), add.Signature(addArgs{A: 2, B: 2})), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Get(ctx, &n); err != nil || n != 4 {
		t.Fatalf("typed chain = %d, %v", n, err)
	}
	if _, err := b.client.Send(ctx, &Signature{Type: "add", OnError: []*Signature{NewSignature("x")}}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Send with callbacks: %v", err)
	}
}

// FuzzFnArgs: any payload either decodes into the arguments of each
// function shape or is refused with an error; never a panic.
func FuzzFnArgs(f *testing.F) {
	for _, s := range []string{"null", "[1,2]", "[[1,2]]", `"a b"`, "[1]", "5", "[", `[{"A":1}]`, ""} {
		f.Add([]byte(s))
	}
	fns := []any{
		func(_ ...int64) (int64, error) { return 0, nil },
		func(string) ([]string, error) { return nil, nil },
		func(context.Context, int, int) (int, error) { return 0, nil },
		func([]int) (int, error) { return 0, nil },
		func(addArgs, ...string) error { return nil },
		func() error { return nil },
	}
	hs := make([]Handler, len(fns))
	for i, fn := range fns {
		hs[i] = MustFn(fn)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, h := range hs {
			err := h.ProcessTask(context.Background(), &Task{Type: "f", Payload: payload})
			if err != nil && !errors.Is(err, SkipRetry) {
				t.Fatalf("payload %q: %v does not match SkipRetry", payload, err)
			}
		}
	})
}
