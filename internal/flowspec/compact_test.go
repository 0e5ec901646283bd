package flowspec

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// chordSpec is the spec of a chord of n members of workflow id and its
// callback, as the compiler builds it.
func chordSpec(id string, n int) *Spec {
	s := &Spec{V: Version}
	g := Shape{IsList: true}
	for i := range n {
		mid := id + "." + strconv.Itoa(i)
		s.Members = append(s.Members, Member{ID: mid, Type: "noop"})
		g.List = append(g.List, Shape{ID: mid})
	}
	cb := id + "." + strconv.Itoa(n)
	s.Members = append(s.Members, Member{ID: cb, Type: "sum"}, Member{ID: id + "." + strconv.Itoa(n+1), Type: "onerr", Callback: true})
	s.Final = Shape{ID: cb}
	s.Top = []Shape{{IsList: true, List: []Shape{g, {ID: cb}, {ID: id + ".0"}, {ID: id + ".1"}}}}
	return s
}

func TestSpecCompactRoundTrip(t *testing.T) {
	t.Parallel()
	s := chordSpec("wf", 10000)
	b, err := EncodeSpec("wf", s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 200 {
		t.Fatalf("compact spec of a chord of 10,000 is %d bytes: %s", len(b), b)
	}
	got, err := DecodeSpec("wf", b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got.Top, s.Top)
	}
}

// A spec whose ids do not follow the rule is written in full, and the
// full form (what older kilns wrote) still reads.
func TestSpecFullForm(t *testing.T) {
	t.Parallel()
	s := chordSpec("wf", 3)
	s.Members[1].ID = "other"
	b, err := EncodeSpec("wf", s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"v":1`) || !strings.Contains(string(b), `"other"`) {
		t.Fatalf("spec with a foreign id not in full: %s", b)
	}
	got, err := DecodeSpec("wf", b)
	if err != nil || !reflect.DeepEqual(got, &Spec{V: VersionFull, Members: s.Members, Final: s.Final, Top: s.Top}) {
		t.Fatalf("full form: %+v, %v", got, err)
	}
	old := `{"v":1,"members":[{"id":"x.0","type":"a"},{"id":"x.1","type":"b"}],"final":{"id":"x.1"},"top":[{"id":"x.0"},{"id":"x.1"}]}`
	got, err = DecodeSpec("x", []byte(old))
	if err != nil || len(got.Members) != 2 || got.Final.ID != "x.1" || len(got.Top) != 2 {
		t.Fatalf("old spec: %+v, %v", got, err)
	}
	for _, bad := range []string{`{"v":3}`, `{"v":2,"m":[{"t":"a"}],"f":"0-x"}`, `{"v":2,"m":[{"t":"a","n":99999999}],"f":0}`, `{"v":2,"m":[],"f":["5-2"]}`, `{"v":2,"m":[],"f":-1}`} {
		if _, err := DecodeSpec("x", []byte(bad)); err == nil {
			t.Errorf("DecodeSpec(%s) = nil error", bad)
		}
	}
}

func TestEnvelopeCompact(t *testing.T) {
	t.Parallel()
	after := make([]string, 10000)
	for i := range after {
		after[i] = "wf." + strconv.Itoa(i)
	}
	in := chordSpec("wf", 10000).Top[0]
	e := Envelope{Flow: "wf", Args: []json.RawMessage{json.RawMessage(`"a"`)}, In: &in, After: after, RunIf: RunIfFailed}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 200 {
		t.Fatalf("compact envelope of 10,000 is %d bytes", len(b))
	}
	got, err := DecodeEnvelope(b)
	if err != nil || !reflect.DeepEqual(got, &e) {
		t.Fatalf("round trip: %v", err)
	}
	// Ids of another flow: the full form, which older workers read.
	e = Envelope{Flow: "wf", In: &Shape{ID: "x.0"}, After: []string{"x.0", "wf.1"}}
	b, _ = e.Encode()
	if !strings.Contains(string(b), `"after":["x.0","wf.1"]`) {
		t.Fatalf("foreign ids not in full: %s", b)
	}
	if got, err = DecodeEnvelope(b); err != nil || !reflect.DeepEqual(got, &e) {
		t.Fatalf("full round trip: %+v, %v", got, err)
	}
	old := []byte(Magic + `{"flow":"f","in":{"is_list":true,"list":[{"id":"f.0"}]},"after":["f.0"]}`)
	if got, err = DecodeEnvelope(old); err != nil || got.After[0] != "f.0" || got.In.List[0].ID != "f.0" {
		t.Fatalf("old envelope: %+v, %v", got, err)
	}
}

// A chord's callback takes as its input the list of the members it waits
// for: the two compact fields are the same, decoded once, and the ids of
// a range that crosses powers of ten come out whole.
func TestEnvelopeChordInput(t *testing.T) {
	t.Parallel()
	in := Shape{IsList: true}
	var after []string
	for i := 5; i <= 1204; i++ {
		id := "wf." + strconv.Itoa(i)
		after = append(after, id)
		in.List = append(in.List, Shape{ID: id})
	}
	e := Envelope{Flow: "wf", In: &in, After: after}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var j envelopeJSON
	if err := json.Unmarshal(b[len(Magic):], &j); err != nil || string(j.CIn) != string(j.CAfter) || len(j.CIn) == 0 {
		t.Fatalf("compact input %s, list waited for %s (%v); want the same", j.CIn, j.CAfter, err)
	}
	got, err := DecodeEnvelope(b)
	if err != nil || !reflect.DeepEqual(got, &e) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}
