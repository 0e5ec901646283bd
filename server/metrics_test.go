package server_test

import (
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// TestMetricsEndpoint: tasks enqueued over HTTP and run by a remote worker
// (lease and report through the API) are counted by queue and type; the
// HTTP requests by route and status; the queue depth by project. GET
// /metrics needs an admin token (401 without one, 403 with a project
// token); Config.MetricsAddr serves the same without a token, and nothing
// else. Scraped over real HTTP, on the embedded store and on Redis.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"embedded", "redis"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mod := func(c *server.Config) { c.MetricsAddr = "127.0.0.1:0" }
			var b *bundle
			if name == "embedded" {
				b = setup(t, mod)
			} else {
				b = serveOn(t, kilntest.Redis(t, nil), nil, mod)
			}
			tok, secret := b.project("acme")
			_, sess := b.handshake("acme", secret)
			none := 0
			for range 2 {
				b.enqueue("acme", tok, wire.TaskRequest{Type: "ok"})
			}
			b.enqueue("acme", tok, wire.TaskRequest{Type: "fail", Options: &wire.TaskOptions{Queue: "mail", MaxRetries: &none}})
			var lease wire.LeaseResponse
			b.ok(http.StatusOK, "POST", "/v1/projects/acme/lease", sess, wire.LeaseRequest{Queues: []string{"default", "mail"}, Max: 10, DurationMS: 60000}, &lease)
			if len(lease.Tasks) != 3 {
				t.Fatalf("leased %d tasks, want 3", len(lease.Tasks))
			}
			var outs []wire.Outcome
			for _, tk := range lease.Tasks {
				o := wire.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: "succeeded"}
				if tk.Type == "fail" {
					o.Kind, o.Error = "dead", "boom"
				}
				outs = append(outs, o)
			}
			var rep wire.ReportResponse
			b.ok(http.StatusOK, "POST", "/v1/projects/acme/report", sess, wire.ReportRequest{Outcomes: outs}, &rep)
			for i, e := range rep.Errors {
				if e != nil {
					t.Fatalf("outcome %d: %v", i, e)
				}
			}

			got := testenv.Scrape(t, http.DefaultClient, b.ts.URL+"/metrics", http.Header{"Authorization": {"Bearer " + adminToken}})
			want := map[string]float64{
				`kiln_tasks_enqueued_total{queue="default",type="ok"}`:                        2,
				`kiln_tasks_enqueued_total{queue="mail",type="fail"}`:                         1,
				`kiln_tasks_started_total{queue="default",type="ok"}`:                         2,
				`kiln_tasks_started_total{queue="mail",type="fail"}`:                          1,
				`kiln_tasks_succeeded_total{queue="default",type="ok"}`:                       2,
				`kiln_tasks_failed_total{queue="mail",type="fail"}`:                           1,
				`kiln_tasks_dead_total{queue="mail",type="fail"}`:                             1,
				`kiln_task_handler_duration_seconds_count{queue="default",type="ok"}`:         2,
				`kiln_task_wait_seconds_count{queue="default"}`:                               2,
				`kiln_task_wait_seconds_count{queue="mail"}`:                                  1,
				`kiln_queue_tasks{namespace="acme",queue="default",state="succeeded"}`:        2,
				`kiln_queue_tasks{namespace="acme",queue="mail",state="dead"}`:                1,
				`kiln_http_requests_total{route="POST /v1/projects/{p}/tasks",status="200"}`:  3,
				`kiln_http_requests_total{route="POST /v1/projects/{p}/lease",status="200"}`:  1,
				`kiln_http_requests_total{route="POST /v1/projects/{p}/report",status="200"}`: 1,
			}
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
				}
			}
			if _, ok := got["go_goroutines"]; !ok {
				t.Error("no go_goroutines: the Go collector is missing")
			}

			b.fail(wire.CodeUnauthorized, "GET", "/metrics", "", nil)
			b.fail(wire.CodeForbidden, "GET", "/metrics", tok, nil)
			// The refusals are counted too.
			got = testenv.Scrape(t, http.DefaultClient, b.ts.URL+"/metrics", http.Header{"Authorization": {"Bearer " + adminToken}})
			if g := got[`kiln_http_requests_total{route="GET /metrics",status="401"}`]; g != 1 {
				t.Errorf("GET /metrics 401 counted %v times, want 1", g)
			}

			addr := b.srv.MetricsAddr()
			if addr == nil {
				t.Fatal("MetricsAddr is nil while serving")
			}
			open := testenv.Scrape(t, http.DefaultClient, "http://"+addr.String()+"/metrics", nil)
			if g := open[`kiln_tasks_succeeded_total{queue="default",type="ok"}`]; g != 2 {
				t.Errorf("on the metrics address: succeeded = %v, want 2", g)
			}
			resp, err := http.Get("http://" + addr.String() + "/v1/projects/acme/tasks") //nolint:noctx // a test's one-off request
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("the metrics address serves the API: %s", resp.Status)
			}
		})
	}
}

// TestMetricsDisabled: with DisableMetrics, GET /metrics is not_found and
// there is no handler to serve.
func TestMetricsDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.DisableMetrics = true })
	b.fail(wire.CodeNotFound, "GET", "/metrics", adminToken, nil)
	if b.srv.MetricsHandler() != nil {
		t.Error("MetricsHandler is set with DisableMetrics")
	}
}
