package server_test

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
)

// TestHugeMillisecondsAreRefused sends *_ms values that do not fit a
// duration (2^62 ms once became "no timeout" and 2^62+1000 a 1 s timeout)
// and negative ones in every request that takes them: each is
// invalid_option naming its field, and nothing is enqueued.
func TestHugeMillisecondsAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, _ := b.project("p")
	huge := []int64{1 << 62, 1<<62 + 1000, math.MaxInt64, math.MinInt64, -(1 << 62)}
	for _, field := range []string{"timeout_ms", "process_in_ms", "unique_ttl_ms", "retention_ms"} {
		for _, v := range append(huge, -1) {
			opts := fmt.Sprintf(`{%q:%d}`, field, v)
			if field == "unique_ttl_ms" {
				opts = fmt.Sprintf(`{"unique_key":"k",%q:%d}`, field, v)
			}
			var res wire.EnqueueResponse
			b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks", tok, `{"tasks":[{"type":"t","options":`+opts+`}]}`, &res)
			if len(res.Tasks) != 1 || res.Tasks[0].Error == nil || res.Tasks[0].Error.Code != wire.CodeInvalidOption {
				t.Errorf("enqueue with %s = %d: %+v, want invalid_option", field, v, res.Tasks)
				continue
			}
			e := res.Tasks[0].Error
			if v != -1 && e.Field != field {
				t.Errorf("enqueue with %s = %d: field %q (%s), want %q", field, v, e.Field, e.Message, field)
			}
			if e.Field == "" {
				t.Errorf("enqueue with %s = %d: no field in %+v", field, v, e)
			}
			// The same option in a schedule's task.
			sched := `{"task":{"type":"t","options":` + opts + `},"every_ms":1000}`
			if v != -1 || field == "timeout_ms" {
				msg := b.fail(wire.CodeInvalidOption, "POST", "/v1/projects/p/schedules", tok, sched)
				if msg == "" {
					t.Errorf("schedule with %s = %d: empty message", field, v)
				}
			}
		}
	}
	if n := b.counts("p"); n != 0 {
		t.Errorf("%d tasks were enqueued, want none", n)
	}
	for _, v := range huge {
		for _, rq := range []struct{ path, body, field string }{
			{"/v1/projects/p/lease", fmt.Sprintf(`{"queues":["q"],"max":1,"duration_ms":%d}`, v), "duration_ms"},
			{"/v1/projects/p/lease", fmt.Sprintf(`{"queues":["q"],"max":1,"duration_ms":1000,"wait_ms":%d}`, v), "wait_ms"},
			{"/v1/projects/p/extend", fmt.Sprintf(`{"leases":[{"id":"x","lease_id":"1"}],"duration_ms":%d}`, v), "duration_ms"},
		} {
			status, body := b.do("POST", rq.path, tok, rq.body)
			if status != http.StatusBadRequest || !strings.Contains(string(body), `"code":"invalid_option"`) || !strings.Contains(string(body), `"field":"`+rq.field+`"`) {
				t.Errorf("POST %s %s = %d %s, want 400 invalid_option naming %s", rq.path, rq.body, status, body, rq.field)
			}
		}
	}
}
