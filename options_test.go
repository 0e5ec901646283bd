package kiln

import (
	"testing"
)

// A task of a handler that takes no arguments runs when it is enqueued
// without a payload, instead of failing to decode "".
func TestFuncNilPayload(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("ping", Func(func(struct{}) (string, error) { return "pong", nil }))
		w.Handle("count", Func(func(n int) (int, error) { return n + 1, nil }))
	})
	for _, c := range []struct {
		typ     string
		payload []byte
		want    string
	}{{"ping", nil, `"pong"`}, {"ping", []byte{}, `"pong"`}, {"count", nil, `1`}} {
		res, err := b.client.Enqueue(t.Context(), c.typ, c.payload, nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := res.Wait(waitCtx(t))
		if err != nil {
			t.Fatalf("%s with payload %q: %v", c.typ, c.payload, err)
		}
		if string(info.Result) != c.want {
			t.Fatalf("%s: result %s, want %s", c.typ, info.Result, c.want)
		}
	}
}
