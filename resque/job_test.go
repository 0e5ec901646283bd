package resque

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestDecodeJob(t *testing.T) {
	t.Parallel()
	good := []struct {
		in, class, args string
	}{
		{`{"class":"MyClass","args":["hi","there"]}`, "MyClass", `["hi","there"]`},
		{`{"class":"MyClass","queue":"q","args":[1,{"a":2}]}`, "MyClass", `[1,{"a":2}]`}, // node-resque
		{`{"class":"C","args":[],"extra":true}`, "C", `[]`},
		{`{"class":"C"}`, "C", `[]`},
		{`{"class":"C","args":null}`, "C", `[]`},
		{` {"args" : [ 1 ] , "class" : "C"} `, "C", `[ 1 ]`},
	}
	for _, g := range good {
		j, err := DecodeJob("q", []byte(g.in))
		if err != nil {
			t.Errorf("DecodeJob(%s): %v", g.in, err)
			continue
		}
		if j.Class != g.class || string(j.Args) != g.args || j.Queue != "q" || string(j.Payload) != g.in {
			t.Errorf("DecodeJob(%s) = %+v, want class %q args %s", g.in, j, g.class, g.args)
		}
	}
	bad := []struct{ in, reason string }{
		{"\xff\xfe", "not valid UTF-8"},
		{`{"class":"C","args":["` + "\xc3\x28" + `"]}`, "not valid UTF-8"},
		{`{"class":"C",`, "not valid JSON"},
		{``, "not valid JSON"},
		{`[1,2]`, "not a JSON object"},
		{`"str"`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`{"args":[1]}`, `no "class"`},
		{`{"class":1,"args":[]}`, `"class" is not a string`},
		{`{"class":null,"args":[]}`, `"class" is not a string`},
		{`{"class":"","args":[]}`, `"class" is empty`},
		{`{"class":"C","args":{"a":1}}`, `"args" is not an array`},
		{`{"class":"C","args":"x"}`, `"args" is not an array`},
	}
	for _, b := range bad {
		_, err := DecodeJob("q", []byte(b.in))
		var ij *InvalidJobError
		if !errors.As(err, &ij) || !strings.Contains(err.Error(), b.reason) {
			t.Errorf("DecodeJob(%q) = %v, want an InvalidJobError saying %q", b.in, err, b.reason)
		}
	}
}

func TestJobValues(t *testing.T) {
	t.Parallel()
	j, err := DecodeJob("q", []byte(`{"class":"C","args":[1,2.5,"s",[true],{"k":null}]}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := j.Values(false)
	if err != nil || len(v) != 5 || v[0] != float64(1) || v[1] != 2.5 || v[2] != "s" {
		t.Fatalf("Values(false) = %#v, %v", v, err)
	}
	v, err = j.Values(true)
	if err != nil || v[0] != json.Number("1") || v[1] != json.Number("2.5") {
		t.Fatalf("Values(true) = %#v, %v", v, err)
	}
}

// FuzzDecodeJob checks that DecodeJob never panics, that it accepts exactly
// the valid UTF-8 JSON objects with a non-empty string class and an array
// (or missing/null) args, and that an accepted job's Args decode.
func FuzzDecodeJob(f *testing.F) {
	for _, s := range []string{
		`{"class":"MyClass","args":["hi","there"]}`, `{"class":"C","queue":"q","args":[]}`,
		`{"class":"C"}`, `{"class":"","args":[]}`, `{"class":"C","args":{}}`, `[]`, `null`, "\xff",
		`{"class":"C","args":[1e400]}`, `{"class":"\u00e9","args":[{"a":[null]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The failed record of any entry, job or not, is valid JSON.
		if rec := encodeFailure(time.Unix(0, 0), b, failure{exception: "E", msg: "m"}, "w", "q"); !json.Valid(rec) {
			t.Fatalf("failed record of %q is not JSON: %s", b, rec)
		}
		j, err := DecodeJob("q", b)
		if err != nil {
			var ij *InvalidJobError
			if !errors.As(err, &ij) {
				t.Fatalf("error %v is not an *InvalidJobError", err)
			}
			if !utf8.ValidString(err.Error()) && utf8.Valid(b) {
				t.Fatalf("error %q is not valid UTF-8", err)
			}
			return
		}
		if !utf8.Valid(b) || !json.Valid(b) {
			t.Fatalf("accepted %q, which is not valid UTF-8 JSON", b)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted %q, not an object: %v", b, err)
		}
		var class string
		if err := json.Unmarshal(m["class"], &class); err != nil || class != j.Class || class == "" {
			t.Fatalf("accepted %q with class %q", b, j.Class)
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(j.Args, &raw); err != nil {
			t.Fatalf("accepted %q whose args %s are not an array: %v", b, j.Args, err)
		}
		if _, err := j.Values(true); err != nil {
			t.Fatalf("Values of accepted %q: %v", b, err)
		}
	})
}
