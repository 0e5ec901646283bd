package store_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/kilnhq/kiln/store"
)

// A state prints as its name wherever it is printed: fmt verbs, structs,
// and both slog handlers, and an invalid state prints as State(n) in logs
// instead of a marshalling error.
func TestStatePrints(t *testing.T) {
	t.Parallel()
	s := store.StateActive
	for _, c := range []struct{ got, want string }{
		{fmt.Sprintf("%v", s), "active"},
		{s.String(), "active"},
		{fmt.Sprint(s), "active"},
		{fmt.Sprintf("%+v", struct{ S store.State }{s}), "{S:active}"},
		{fmt.Sprintf("%#v", s), "store.StateActive"},
		{fmt.Sprintf("%#v", store.State(0)), "store.State(0)"},
		{fmt.Sprint(store.State(0)), "State(0)"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		h    func(*bytes.Buffer) slog.Handler
		want string
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }, "state=dead zero=State(0)"},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }, `"state":"dead","zero":"State(0)"`},
	} {
		var b bytes.Buffer
		slog.New(c.h(&b)).Info("x", "state", store.StateDead, "zero", store.State(0))
		if !bytes.Contains(b.Bytes(), []byte(c.want)) {
			t.Errorf("%s log: %s, want it to contain %s", c.name, b.Bytes(), c.want)
		}
	}
}
