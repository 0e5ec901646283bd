package remote_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
)

// mediaTypes records the media types of the lease answers, report bodies
// and enqueue bodies that pass; with oldServer it drops the Accept of lease
// requests and the Accept-Post of enqueue answers, as if the server did not
// know the binary encoding.
type mediaTypes struct {
	next      http.RoundTripper
	oldServer bool

	mu       sync.Mutex
	leases   []string
	reports  []string
	enqueues []string
}

func (m *mediaTypes) RoundTrip(r *http.Request) (*http.Response, error) {
	if m.oldServer && strings.HasSuffix(r.URL.Path, "/lease") {
		r = r.Clone(r.Context())
		r.Header.Del("Accept")
	}
	resp, err := m.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/tasks"):
		m.enqueues = append(m.enqueues, r.Header.Get("Content-Type"))
		if m.oldServer {
			resp.Header.Del("Accept-Post")
		}
	case strings.HasSuffix(r.URL.Path, "/lease"):
		m.leases = append(m.leases, resp.Header.Get("Content-Type"))
	case strings.HasSuffix(r.URL.Path, "/report"):
		m.reports = append(m.reports, r.Header.Get("Content-Type"))
	}
	return resp, nil
}

// TestBinaryNegotiation: by default the store leases and reports in
// binary; JSONOnly, or a server that answers leases in JSON, keeps both in
// JSON; the results are the same.
func TestBinaryNegotiation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                             string
		jsonOnly, old                    bool
		lease, reportType, secondEnqueue string
	}{
		{"binary", false, false, "application/x-kiln-tasks", "application/x-kiln-outcomes", "application/x-kiln-enqueue"},
		{"json-only", true, false, "application/json", "application/json", "application/json"},
		{"old-server", false, true, "application/json", "application/json", "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, store.SystemClock{}, nil)
			hc := apiclient.NewHTTPClient()
			t.Cleanup(hc.CloseIdleConnections)
			tr := &mediaTypes{next: hc.Transport, oldServer: tc.old}
			s := ts.open(t, &remote.Config{Token: adminToken, JSONOnly: tc.jsonOnly, HTTPClient: &http.Client{Transport: tr}})
			ctx := t.Context()
			in := []store.TaskInput{
				{ID: "a", Type: "t", Queue: "q", Payload: []byte("hi"), MaxRetries: 2, Timeout: time.Minute},
				{ID: "b", Type: "t", Queue: "q"},
			}
			// The first enqueue is JSON and tells whether the server takes
			// binary ones.
			for i := range in {
				res, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: "p", Tasks: in[i : i+1]})
				if err != nil || res.Items[0].Err != nil || res.Items[0].ID != in[i].ID || res.Items[0].State != store.StatePending {
					t.Fatalf("enqueue %s: %+v %v", in[i].ID, res.Items, err)
				}
			}
			res, err := s.Lease(ctx, store.LeaseParams{Namespace: "p", Queues: []string{"q"}, Max: 10, Duration: time.Minute})
			if err != nil || len(res.Tasks) != 2 {
				t.Fatalf("lease: %d tasks, %v", len(res.Tasks), err)
			}
			outs := make([]store.Outcome, len(res.Tasks))
			for i, task := range res.Tasks {
				if task.Namespace != "p" || task.State != store.StateActive || (task.ID == "a" && (string(task.Payload) != "hi" || task.MaxRetries != 2 || task.Timeout != time.Minute)) {
					t.Errorf("leased %+v", task)
				}
				outs[i] = store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte("r-" + task.ID)}
			}
			outs = append(outs, store.Outcome{ID: "a", LeaseID: res.Tasks[0].LeaseID + 99, Kind: store.OutcomeSucceeded})
			rep, err := s.Report(ctx, store.ReportParams{Namespace: "p", Outcomes: outs})
			if err != nil || rep.Errs[0] != nil || rep.Errs[1] != nil || !errors.Is(rep.Errs[2], store.ErrLeaseLost) {
				t.Fatalf("report: %v %v", rep.Errs, err)
			}
			got, err := s.Get(ctx, store.GetParams{Namespace: "p", IDs: []string{"a", "b"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, task := range got.Tasks {
				if task.State != store.StateSucceeded || string(task.Result) != "r-"+task.ID {
					t.Errorf("after the report: %+v", task)
				}
			}
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if len(tr.leases) != 1 || tr.leases[0] != tc.lease || len(tr.reports) != 1 || tr.reports[0] != tc.reportType {
				t.Errorf("lease answers %q, report bodies %q; want %s and %s", tr.leases, tr.reports, tc.lease, tc.reportType)
			}
			if len(tr.enqueues) != 2 || tr.enqueues[0] != "application/json" || tr.enqueues[1] != tc.secondEnqueue {
				t.Errorf("enqueue bodies %q; want application/json then %s", tr.enqueues, tc.secondEnqueue)
			}
		})
	}
}
