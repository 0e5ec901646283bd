package dashboard_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
)

// TestLargeListPages: with 100,000 tasks in the project, the task list's
// calls through the dashboard (the pages' own: 50 newest, the next page by
// cursor, a filter that matches nothing) each answer one bounded page, so
// a page costs the same as with a hundred tasks.
func TestLargeListPages(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("enqueues 100,000 tasks")
	}
	ts := kilntest.StartServer(t, &kilntest.ServerOptions{Bare: true})
	ctx := testenv.Context(t)
	c, err := kiln.NewClient(ts.Store, &kiln.ClientConfig{Namespace: ts.Project})
	if err != nil {
		t.Fatal(err)
	}
	const total, batch = 100000, 10000
	reqs := make([]kiln.TaskRequest, batch)
	for i := range reqs {
		reqs[i] = kiln.TaskRequest{Type: "bulk", Payload: []byte("x"), Options: kiln.TaskOptions{Queue: "bulk"}}
	}
	for range total / batch {
		if _, err := c.EnqueueMany(ctx, reqs); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t, ts.URL, nil)
	if res := b.login(ts.AdminToken); res.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	type page struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
		NextCursor string `json:"next_cursor"`
	}
	get := func(q url.Values) (page, time.Duration) {
		t.Helper()
		start := time.Now()
		res, body := b.do("GET", "/ui/api/v1/projects/"+ts.Project+"/tasks?"+q.Encode(), nil, nil)
		took := time.Since(start)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("list %v: %d %s", q, res.StatusCode, body)
		}
		var p page
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p, took
	}
	first, d1 := get(url.Values{"limit": {"50"}, "order": {"newest"}})
	if len(first.Tasks) != 50 || first.NextCursor == "" {
		t.Fatalf("first page: %d tasks, cursor %q", len(first.Tasks), first.NextCursor)
	}
	second, d2 := get(url.Values{"limit": {"50"}, "order": {"newest"}, "cursor": {first.NextCursor}})
	if len(second.Tasks) != 50 || second.Tasks[0].ID == first.Tasks[0].ID {
		t.Fatalf("second page: %d tasks", len(second.Tasks))
	}
	seen := map[string]bool{}
	for _, tk := range append(first.Tasks, second.Tasks...) {
		if seen[tk.ID] {
			t.Fatalf("task %s on both pages", tk.ID)
		}
		seen[tk.ID] = true
	}
	// A filter that matches nothing examines a bounded stretch and says
	// where to go on, instead of reading all 100,000 tasks.
	none, d3 := get(url.Values{"limit": {"50"}, "state": {"dead"}})
	if len(none.Tasks) != 0 || none.NextCursor == "" {
		t.Fatalf("filter matching nothing: %d tasks, cursor %q (want an empty page that goes on)", len(none.Tasks), none.NextCursor)
	}
	t.Logf("100,000 tasks: first page %v, next page %v, an empty filtered stretch %v", d1, d2, d3)
}
