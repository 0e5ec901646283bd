package flowspec

import (
	"encoding/json"
	"testing"

	"github.com/kilnhq/kiln/store"
)

func TestShapeRender(t *testing.T) {
	t.Parallel()
	s := Shape{IsList: true, List: []Shape{{ID: "a"}, {IsList: true, List: []Shape{{ID: "b"}, {ID: "c"}}}, {ID: "d"}}}
	got := string(s.Render(map[string][]byte{"a": []byte("1"), "b": []byte(` "x" `), "c": nil, "d": []byte("[2]")}))
	if got != `[1,["x",null],[2]]` {
		t.Fatalf("Render = %s", got)
	}
	if ids := s.IDs(); len(ids) != 4 || ids[0] != "a" || ids[3] != "d" {
		t.Fatalf("IDs = %v", ids)
	}
}

func TestPayload(t *testing.T) {
	t.Parallel()
	one := []json.RawMessage{json.RawMessage("1")}
	for _, c := range []struct {
		args  []json.RawMessage
		input []byte
		want  string
	}{
		{nil, nil, "null"},
		{one, nil, "1"},
		{nil, []byte("2"), "2"},
		{one, []byte("2"), "[1,2]"},
		{append(one, json.RawMessage(`"s"`)), []byte("[3]"), `[1,"s",[3]]`},
	} {
		if got := string(Payload(c.args, c.input)); got != c.want {
			t.Errorf("Payload(%s, %s) = %s, want %s", c.args, c.input, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	spec := &Spec{V: 1, Members: []Member{{ID: "a", Type: "t"}, {ID: "b", Type: "t"}, {ID: "e", Type: "onerr", Callback: true}}, Final: Shape{ID: "b"}}
	tk := func(id string, st store.State, msg string) *store.Task {
		return &store.Task{ID: id, State: st, LastError: msg}
	}
	st, _ := Summarize(spec, map[string]*store.Task{"a": tk("a", store.StatePending, "")}, []string{"b", "e"})
	if st != StatePending {
		t.Errorf("state = %s, want pending", st)
	}
	st, _ = Summarize(spec, map[string]*store.Task{"a": tk("a", store.StateActive, "")}, []string{"b", "e"})
	if st != StateRunning {
		t.Errorf("state = %s, want running", st)
	}
	st, ms := Summarize(spec, map[string]*store.Task{
		"a": tk("a", store.StateDead, "boom"),
		"b": tk("b", store.StateDead, Upstream+"task a (t) failed: boom"),
		"e": tk("e", store.StateSucceeded, ""),
	}, nil)
	if st != StateFailed || RootCause(ms).ID != "a" {
		t.Errorf("state = %s, cause %v; want failed, a", st, RootCause(ms))
	}
	st, _ = Summarize(spec, map[string]*store.Task{
		"a": tk("a", store.StateSucceeded, ""),
		"b": tk("b", store.StateSucceeded, ""),
		"e": tk("e", store.StateCancelled, Skipped+"nothing failed"),
	}, nil)
	if st != StateSucceeded {
		t.Errorf("state = %s, want succeeded (a skipped callback is no failure)", st)
	}
	st, ms = Summarize(spec, map[string]*store.Task{"b": tk("b", store.StateSucceeded, "")}, nil)
	if st != StateFailed || ms[0].State != StateGone {
		t.Errorf("state = %s, member a %s; want failed, gone", st, ms[0].State)
	}
}

// FuzzDecodeEnvelope: any payload either decodes into an envelope that
// encodes back to one that decodes the same, or is refused; never a panic.
func FuzzDecodeEnvelope(f *testing.F) {
	e := Envelope{Flow: "f", Args: []json.RawMessage{json.RawMessage("1")}, In: &Shape{IsList: true, List: []Shape{{ID: "a"}}}, After: []string{"a"}}
	b, _ := e.Encode()
	f.Add(b)
	f.Add([]byte(Magic + `{"after":[]}`))
	f.Add([]byte(Magic + `{"after":["x"],"in":{"is_list":true,"list":[{"is_list":true}]}}`))
	f.Add([]byte(`{"a":1}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		e, err := DecodeEnvelope(payload)
		if err != nil {
			return
		}
		if e.In != nil {
			_ = e.In.Render(map[string][]byte{})
			_ = e.In.IDs()
		}
		_ = Payload(e.Args, nil)
		b, err := e.Encode()
		if err != nil {
			return // raw arguments that are not JSON do not encode
		}
		e2, err := DecodeEnvelope(b)
		if err != nil || e2.Flow != e.Flow || len(e2.After) != len(e.After) {
			t.Fatalf("re-decode of %q: %+v, %v", b, e2, err)
		}
	})
}
