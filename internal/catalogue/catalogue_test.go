package catalogue_test

import (
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/catalogue"
)

const okEvents = `[{"kind": "task.enqueued", "doc": "added"}]`

func TestGenerate(t *testing.T) {
	t.Parallel()
	src, err := catalogue.Generate([]byte(`[
  {"code": "not_found", "status": 404, "sentinel": "ErrNotFound", "match": 2, "message": "m"},
  {"code": "tls_required", "status": 403, "message": "m"},
  {"code": "unavailable", "status": 503, "sentinel": "ErrClosed", "match": 1, "retry_after": 1, "message": "m"}
]`), []byte(okEvents))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`CodeTLSRequired = "tls_required"`,
		`{Code: CodeNotFound, Status: http.StatusNotFound, Sentinel: store.ErrNotFound, RetryAfter: 0}`,
		`{Code: CodeUnavailable, Status: http.StatusServiceUnavailable, Sentinel: store.ErrClosed, RetryAfter: 1}`,
		"{store.ErrClosed, CodeUnavailable},\n\t{store.ErrNotFound, CodeNotFound},", // by match, not by file order
		`EventTaskEnqueued = "task.enqueued"`,
	} {
		if !strings.Contains(string(src), want) {
			t.Errorf("generated source lacks %q:\n%s", want, src)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, errors, events, want string
	}{
		{"unknown field", `[{"code": "x", "status": 400, "message": "m", "extra": 1}]`, okEvents, "unknown field"},
		{"bad code", `[{"code": "Bad-Code", "status": 400, "message": "m"}]`, okEvents, "snake_case"},
		{"twice", `[{"code": "x", "status": 400, "message": "m"}, {"code": "x", "status": 400, "message": "m"}]`, okEvents, "appears twice"},
		{"status", `[{"code": "x", "status": 200, "message": "m"}]`, okEvents, "not an HTTP error status"},
		{"no message", `[{"code": "x", "status": 400}]`, okEvents, "message is empty"},
		{"match alone", `[{"code": "x", "status": 400, "match": 1, "message": "m"}]`, okEvents, "without a sentinel"},
		{"no match", `[{"code": "x", "status": 400, "sentinel": "ErrX", "message": "m"}]`, okEvents, "positive match"},
		{"same match", `[{"code": "x", "status": 400, "sentinel": "ErrX", "match": 1, "message": "m"}, {"code": "y", "status": 400, "sentinel": "ErrY", "match": 1, "message": "m"}]`, okEvents, "also"},
		{"bad sentinel", `[{"code": "x", "status": 400, "sentinel": "NotFound", "match": 1, "message": "m"}]`, okEvents, "not a store error name"},
		{"bad kind", `[]`, `[{"kind": "job.done", "doc": "d"}]`, "task.name or worker.name"},
		{"no doc", `[]`, `[{"kind": "task.x"}]`, "doc is empty"},
		{"trailing", `[] []`, okEvents, "trailing data"},
	} {
		_, err := catalogue.Generate([]byte(tc.errors), []byte(tc.events))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one that says %q", tc.name, err, tc.want)
		}
	}
}

func TestGoName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"bad_request": "BadRequest", "tls_required": "TLSRequired", "task.lease_lost": "TaskLeaseLost"} {
		if got := catalogue.GoName(in); got != want {
			t.Errorf("GoName(%q) = %q, want %q", in, got, want)
		}
	}
}
