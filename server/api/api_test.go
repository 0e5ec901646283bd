package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestCatalogue checks errors.json against wire.Codes, both ways.
func TestCatalogue(t *testing.T) {
	t.Parallel()
	cat := api.Catalogue()
	if len(cat) != len(wire.Codes) {
		t.Errorf("errors.json has %d codes, wire.Codes %d", len(cat), len(wire.Codes))
	}
	for i, c := range wire.Codes {
		if i >= len(cat) {
			break
		}
		if cat[i].Code != c.Code || cat[i].Status != c.Status || cat[i].Message == "" {
			t.Errorf("errors.json[%d] = %+v, want code %s status %d", i, cat[i], c.Code, c.Status)
		}
	}
}

// TestCatalogueDocumented checks the two documents that repeat the error
// catalogue against errors.json: the table of docs/api.md (code, status and
// store sentinel, in order) and the code enum of docs/openapi.yaml.
func TestCatalogueDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([0-9]{3}) \\| (.*) \\|$")
	rows := row.FindAllStringSubmatch(string(doc), -1)
	cat := api.Catalogue()
	var codes []string
	for _, e := range cat {
		codes = append(codes, e.Code)
	}
	if len(rows) != len(codes) {
		t.Errorf("docs/api.md's error table has %d rows, errors.json %d codes", len(rows), len(codes))
	}
	for i, e := range cat {
		if i >= len(rows) {
			break
		}
		code, status, rest := rows[i][1], rows[i][2], rows[i][3]
		if code != e.Code || status != strconv.Itoa(e.Status) {
			t.Errorf("docs/api.md row %d = %s %s, want %s %d", i, code, status, e.Code, e.Status)
		}
		if e.Sentinel != "" && !strings.HasPrefix(rest, "`store."+e.Sentinel+"`") {
			t.Errorf("docs/api.md row %s does not start its sentinel column with store.%s: %q", code, e.Sentinel, rest)
		}
	}
	spec, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := "code: {type: string, enum: [" + strings.Join(codes, ", ") + "]}"; !strings.Contains(string(spec), want) {
		t.Errorf("docs/openapi.yaml's error code enum is not %s", want)
	}
}

// TestEventKindsDocumented checks that docs/api.md names every event kind
// of events.json.
func TestEventKindsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range wire.EventKinds {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/api.md does not name the event kind %s", k)
		}
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"tasks":[{"type":"t"}]}`, true},
		{` {"tasks":[]} ` + "\n", true},
		{`{"tasks":[{"type":"t"},{"type":"t"}]}`, true}, // same keys in sibling objects
		{`{"tasks":[{"type":"t","type":"t"}]}`, false},
		{`{"tasks":[{"type":"t","TYPE":"t"}]}`, false},
		{`{"tasks":[{"type":"t","ty\u0070e":"t"}]}`, false},
		{`{"tasks":[{"type":"t"}]} {}`, false},
		{`{"tasks":[{"type":"t"}]`, false},
		{`{"tasks":[{"typo":"t"}]}`, false},
		{`{"tasks":"x"}`, false},
		{`"x"`, false},
		{``, false},
	} {
		var req wire.EnqueueRequest
		err := api.Decode([]byte(tc.in), &req, false)
		if (err == nil) != tc.ok {
			t.Errorf("Decode(%s) = %v, want ok %v", tc.in, err, tc.ok)
		}
		var we *wire.Error
		if err != nil && (!errors.As(err, &we) || we.Code != wire.CodeBadRequest) {
			t.Errorf("Decode(%s) = %#v, want a bad_request *wire.Error", tc.in, err)
		}
	}
}

func TestTaskInputDefaults(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	in, err := api.TaskInput(&wire.TaskRequest{Type: "t", Options: &wire.TaskOptions{ProcessInMS: 1000}}, store.Limits{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if in.ID == "" || in.Queue != "default" || in.MaxRetries != 25 || in.Timeout != 30*time.Minute || !in.RunAt.Equal(now.Add(time.Second)) {
		t.Errorf("defaults: %+v", in)
	}
	// What store/remote sends comes back exactly.
	want := store.TaskInput{ID: "a", Type: "t", Queue: "q", RunAt: now.Add(time.Hour), UniqueKey: "k", UniqueTTL: time.Minute}
	req := wire.OptionsFromInput(want)
	got, err := api.TaskInput(&req, store.Limits{}, now)
	if err != nil || got.ID != want.ID || got.MaxRetries != 0 || got.Timeout != 0 || !got.RunAt.Equal(want.RunAt) || got.UniqueTTL != time.Minute {
		t.Errorf("exact: got %+v, %v; want %+v", got, err, want)
	}
}

// fuzzDecode checks the decoder's promise on any input: no panic, and an
// accepted body is a single JSON object without duplicate keys that
// encoding/json accepts too.
func fuzzDecode(t *testing.T, data []byte, v any) {
	t.Helper()
	err := api.Decode(data, v, false)
	if err == nil {
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if !strings.HasPrefix(strings.TrimLeft(string(data), " \t\r\n"), "{") {
			t.Fatalf("accepted a non-object %q", data)
		}
		if exactDuplicateKey(data) {
			t.Fatalf("accepted a body with a duplicate key: %q", data)
		}
		return
	}
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeBadRequest {
		t.Fatalf("Decode(%q) = %#v, want a bad_request error", data, err)
	}
}

// exactDuplicateKey is a slow reference for the decoder's duplicate-key
// check: it walks the tokens of valid JSON and reports whether some object
// has the same key twice, byte for byte.
func exactDuplicateKey(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object, key bool
		keys        map[string]bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				if top != nil && top.object {
					top.key = true
				}
				stack = append(stack, &frame{object: d == '{', key: d == '{', keys: map[string]bool{}})
			} else {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if s, ok := tok.(string); ok && top != nil && top.object && top.key {
			if top.keys[s] {
				return true
			}
			top.keys[s], top.key = true, false
			continue
		}
		if top != nil && top.object {
			top.key = true
		}
	}
}

func FuzzDecodeEnqueue(f *testing.F) {
	for _, s := range []string{
		`{"tasks":[{"type":"email:send","payload":"AAEC","options":{"queue":"q","priority":3,"max_retries":0,"timeout_ms":1000,"process_at":"2031-01-01T00:00:00Z","unique_key":"k","unique_ttl_ms":60000}}]}`,
		`{"tasks":[{"type":"t","type":"u"}]}`, `{"tasks":[]}x`, `[[[[`, `{"tasks":[{"Type":"t","type":"u"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req wire.EnqueueRequest
		fuzzDecode(t, data, &req)
		if api.Decode(data, &req, false) == nil {
			now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := range req.Tasks {
				in, err := api.TaskInput(&req.Tasks[i], store.Limits{}, now)
				if err == nil {
					if verr := in.Validate(store.Limits{}, now); verr != nil {
						t.Fatalf("TaskInput accepted an input the store rejects: %v", verr)
					}
				}
			}
		}
	})
}

func FuzzDecodeWorker(f *testing.F) {
	for _, s := range []string{
		`{"outcomes":[{"id":"a","lease_id":"12","kind":"retry","error":"x","retry_at":"2031-01-01T00:00:00Z"}]}`,
		`{"leases":[{"id":"a","lease_id":"1","progress":{"percent":5,"message":"m"}}],"duration_ms":1000}`,
		`{"queues":["a","b"],"weights":[1,2],"types":null,"max":5,"duration_ms":1,"wait_ms":2}`,
		`{"worker_id":"w","response":"00ff"}`, `{"lease_id":18446744073709551616}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep wire.ReportRequest
		fuzzDecode(t, data, &rep)
		var ext wire.ExtendRequest
		fuzzDecode(t, data, &ext)
		var lease wire.LeaseRequest
		fuzzDecode(t, data, &lease)
		var ver wire.VerifyRequest
		fuzzDecode(t, data, &ver)
		for i := range rep.Outcomes {
			_, _ = rep.Outcomes[i].ToOutcome() // must not panic
		}
	})
}
