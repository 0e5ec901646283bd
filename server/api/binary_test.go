package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/server/api"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

const binToken = "kiln_test-admin-token-0123456789abcdefghijklmnop"

// binServer is the API on an embedded store with a fake clock.
type binServer struct {
	t     *testing.T
	emb   *embedded.Store
	clock *storetest.FakeClock
	url   string
}

func startBinServer(t *testing.T) *binServer {
	t.Helper()
	clock := storetest.NewFakeClock(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC))
	emb, err := embedded.Open(t.TempDir(), &embedded.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(api.Config{Store: emb, Meta: emb, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	hook.AutoCreateProjects(a)
	if _, err := a.AddToken(context.Background(), "", "test", binToken); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		a.Stop()
		srv.Close()
		_ = emb.Close() // the test is over
	})
	return &binServer{t: t, emb: emb, clock: clock, url: srv.URL}
}

// post sends body to /v1/projects/p/<route> and returns the status, the
// answer's media type and its body.
func (s *binServer) post(route, contentType, accept string, body []byte) (int, string, []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), http.MethodPost, s.url+"/v1/projects/p/"+route, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+binToken)
	req.Header.Set("Content-Type", contentType)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return resp.StatusCode, ct, b
}

func (s *binServer) postJSON(route string, in, out any) {
	s.t.Helper()
	body, err := json.Marshal(in)
	if err != nil {
		s.t.Fatal(err)
	}
	status, _, b := s.post(route, "application/json", "", body)
	if status != http.StatusOK {
		s.t.Fatalf("%s: %d %s", route, status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		s.t.Fatalf("%s: %v", route, err)
	}
}

// enqueue adds tasks of every shape to queue q and returns their ids.
func (s *binServer) enqueue(q string) []string {
	s.t.Helper()
	now := s.clock.Now()
	ins := []store.TaskInput{
		{ID: q + "-a", Type: "t", Queue: q, Payload: []byte{0, 1, 2, 255}, Priority: 5, MaxRetries: 3, Timeout: time.Minute,
			Deadline: now.Add(time.Hour), UniqueKey: q + "-k", UniqueTTL: time.Hour, Retention: 24 * time.Hour, RunAt: now},
		{ID: q + "-b", Type: "u", Queue: q, Payload: []byte{}, MaxRetries: 0, RunAt: now},
		{ID: q + "-c", Type: "t", Queue: q, Priority: 9, MaxRetries: 1, RunAt: now},
	}
	res, err := s.emb.Enqueue(s.t.Context(), store.EnqueueParams{Namespace: "p", Tasks: ins})
	if err != nil {
		s.t.Fatal(err)
	}
	ids := make([]string, len(ins))
	for i, it := range res.Items {
		if it.Err != nil {
			s.t.Fatal(it.Err)
		}
		ids[i] = ins[i].ID
	}
	return ids
}

// get reads tasks through the JSON route tasks:batchGet.
func (s *binServer) get(ids []string) []*store.Task {
	s.t.Helper()
	var resp wire.BatchGetResponse
	s.postJSON("tasks:batchGet", wire.IDsRequest{IDs: ids}, &resp)
	out := make([]*store.Task, len(resp.Tasks))
	for i, w := range resp.Tasks {
		t, err := w.ToTask("p")
		if err != nil {
			s.t.Fatal(err)
		}
		out[i] = t
	}
	return out
}

// byID sorts tasks by id, and makes an empty payload nil: the store
// itself answers a lease with an empty payload and tasks:batchGet with none.
func byID(ts []*store.Task) []*store.Task {
	for _, t := range ts {
		if len(t.Payload) == 0 {
			t.Payload = nil
		}
	}
	slices.SortFunc(ts, func(a, b *store.Task) int { return strings.Compare(a.ID, b.ID) })
	return ts
}

// TestLeaseBinary: the binary answer of a lease carries exactly the tasks
// the JSON routes show, and any other Accept gets JSON.
func TestLeaseBinary(t *testing.T) {
	t.Parallel()
	s := startBinServer(t)
	for i, tc := range []struct {
		accept string
		binary bool
	}{
		{wirebin.TasksType, true},
		{wirebin.TasksType + ", application/json;q=0.5", true},
		{"application/json, " + strings.ToUpper(wirebin.TasksType), true},
		{"", false},
		{"application/json", false},
		{"application/x-kiln-unknown", false},
		{"*/*", false},
		{wirebin.TasksType + ";q=0", false},
		{"not a media type;;", false},
	} {
		q := "q" + string(rune('a'+i))
		ids := s.enqueue(q)
		body, err := json.Marshal(wire.LeaseRequest{Queues: []string{q}, Max: 10, DurationMS: 60000, WorkerID: "w"})
		if err != nil {
			t.Fatal(err)
		}
		status, ct, b := s.post("lease", "application/json", tc.accept, body)
		if status != http.StatusOK {
			t.Fatalf("Accept %q: %d %s", tc.accept, status, b)
		}
		var got []*store.Task
		switch {
		case tc.binary && ct == wirebin.TasksType:
			if got, err = wirebin.DecodeTasks(b, "p"); err != nil {
				t.Fatalf("Accept %q: %v", tc.accept, err)
			}
		case !tc.binary && ct == "application/json":
			var resp wire.LeaseResponse
			if err := json.Unmarshal(b, &resp); err != nil {
				t.Fatalf("Accept %q: %v", tc.accept, err)
			}
			for _, w := range resp.Tasks {
				task, err := w.ToTask("p")
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, task)
			}
		default:
			t.Fatalf("Accept %q: answer of type %q, want binary %v", tc.accept, ct, tc.binary)
		}
		want := s.get(ids)
		if len(got) != len(ids) || !reflect.DeepEqual(byID(got), byID(want)) {
			t.Errorf("Accept %q: leased\n%s\nwant (tasks:batchGet)\n%s", tc.accept, dump(got), dump(want))
		}
	}
}

// reportCase leases the tasks of a fresh server, reports outcomes of every
// kind (and two that fail: a stale lease and an unknown task) with send,
// and returns the per-item errors and the tasks afterwards.
func reportCase(t *testing.T, send func(s *binServer, outs []store.Outcome) []*wire.Error) ([]*wire.Error, []*store.Task) {
	t.Helper()
	s := startBinServer(t)
	var ids []string
	for _, q := range []string{"q1", "q2"} {
		ids = append(ids, s.enqueue(q)...)
	}
	res, err := s.emb.Lease(t.Context(), store.LeaseParams{Namespace: "p", Queues: []string{"q1", "q2"}, Max: 10, Duration: time.Minute, WorkerID: "w"})
	if err != nil || len(res.Tasks) != len(ids) {
		t.Fatalf("lease: %d tasks, %v", len(res.Tasks), err)
	}
	leases := map[string]uint64{}
	for _, task := range res.Tasks {
		leases[task.ID] = task.LeaseID
	}
	retryAt := s.clock.Now().Add(time.Hour)
	outs := []store.Outcome{
		{ID: "q1-a", LeaseID: leases["q1-a"], Kind: store.OutcomeSucceeded, Result: []byte("done")},
		{ID: "q1-b", LeaseID: leases["q1-b"], Kind: store.OutcomeRetry, Error: "try again", RetryAt: retryAt},
		{ID: "q1-c", LeaseID: leases["q1-c"], Kind: store.OutcomeDead, Error: "gave up"},
		{ID: "q2-a", LeaseID: leases["q2-a"], Kind: store.OutcomeCancelled, Error: "cancelled"},
		{ID: "q2-b", LeaseID: leases["q2-b"], Kind: store.OutcomeRelease, NotStarted: true},
		{ID: "q2-c", LeaseID: leases["q2-c"] + 1000, Kind: store.OutcomeSucceeded},
		{ID: "nope", LeaseID: 1, Kind: store.OutcomeSucceeded},
	}
	errs := send(s, outs)
	return errs, s.get(ids)
}

func reportAnswer(t *testing.T, status int, b []byte) []*wire.Error {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("report: %d %s", status, b)
	}
	var resp wire.ReportResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Errors
}

// TestReportBinary: a binary report has the same effect and the same
// per-item errors as the same report in JSON.
func TestReportBinary(t *testing.T) {
	t.Parallel()
	jsonErrs, jsonTasks := reportCase(t, func(s *binServer, outs []store.Outcome) []*wire.Error {
		req := wire.ReportRequest{}
		for _, o := range outs {
			req.Outcomes = append(req.Outcomes, wire.FromOutcome(o))
		}
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		status, _, b := s.post("report", "application/json", "", body)
		return reportAnswer(t, status, b)
	})
	binErrs, binTasks := reportCase(t, func(s *binServer, outs []store.Outcome) []*wire.Error {
		status, _, b := s.post("report", wirebin.OutcomesType, "", wirebin.AppendOutcomes(nil, outs))
		return reportAnswer(t, status, b)
	})
	if !reflect.DeepEqual(binErrs, jsonErrs) {
		t.Errorf("errors: binary %+v, JSON %+v", binErrs, jsonErrs)
	}
	if jsonErrs[5] == nil || jsonErrs[5].Code != wire.CodeLeaseLost || jsonErrs[6] == nil || jsonErrs[6].Code != wire.CodeNotFound {
		t.Errorf("errors of the failing outcomes: %+v %+v", jsonErrs[5], jsonErrs[6])
	}
	for i := range jsonTasks {
		// Lease ids are the store's own: compare them apart.
		jsonTasks[i].LeaseID, binTasks[i].LeaseID = 0, 0
	}
	if !reflect.DeepEqual(binTasks, jsonTasks) {
		t.Errorf("tasks after a binary report\n%+v\nafter the JSON one\n%+v", binTasks, jsonTasks)
	}
}

// TestReportBinaryBad: a malformed binary report is 400 bad_request and
// changes nothing.
func TestReportBinaryBad(t *testing.T) {
	t.Parallel()
	s := startBinServer(t)
	ids := s.enqueue("q")
	res, err := s.emb.Lease(t.Context(), store.LeaseParams{Namespace: "p", Queues: []string{"q"}, Max: 10, Duration: time.Minute})
	if err != nil || len(res.Tasks) != len(ids) {
		t.Fatalf("lease: %v", err)
	}
	before := s.get(ids)
	good := wirebin.AppendOutcomes(nil, []store.Outcome{{ID: ids[0], LeaseID: res.Tasks[0].LeaseID, Kind: store.OutcomeSucceeded}})
	kind := bytes.Clone(good)
	kind[3+len(ids[0])+len(binary(res.Tasks[0].LeaseID))] = 9 // version, count, id length, id, lease id, then the kind
	for name, body := range map[string][]byte{
		"empty":          {},
		"json":           []byte(`{"outcomes":[]}`),
		"version":        append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"count over max": {1, 0x91, 0x4e},
		"count too big":  {1, 3, 0},
		"kind":           kind,
	} {
		status, _, b := s.post("report", wirebin.OutcomesType, "", body)
		var eb wire.ErrorBody
		if err := json.Unmarshal(b, &eb); err != nil || status != http.StatusBadRequest || eb.Error == nil || eb.Error.Code != wire.CodeBadRequest {
			t.Errorf("%s: %d %s, want 400 bad_request", name, status, b)
		}
	}
	if after := s.get(ids); !reflect.DeepEqual(after, before) {
		t.Errorf("bad reports changed the tasks:\n%+v\nwas\n%+v", after, before)
	}
}

// binary is the uvarint encoding of v.
func binary(v uint64) []byte {
	var out []byte
	for v >= 0x80 {
		out = append(out, byte(v)|0x80)
		v >>= 7
	}
	return append(out, byte(v))
}

func dump(ts []*store.Task) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%+v payload %#v result %#v\n", *t, t.Payload, t.Result)
	}
	return b.String()
}

// enqueueBatch is a batch with every shape of task, and some that fail.
func enqueueBatch(now time.Time) []wire.TaskRequest {
	at := now.Add(time.Hour)
	zero, neg, timeout := 0, -1, int64(1500)
	return []wire.TaskRequest{
		{Type: "t", Options: &wire.TaskOptions{ID: "plain"}},
		{Type: "t", Payload: []byte{0, 1, 255}, Options: &wire.TaskOptions{ID: "full", Queue: "q", Priority: 7, ProcessAt: &at,
			MaxRetries: &zero, TimeoutMS: &timeout, Deadline: &at, UniqueKey: "k", UniqueTTLMS: 60000, RetentionMS: 3600000}},
		{Type: "t", Options: &wire.TaskOptions{ID: "later", ProcessInMS: 5000}},
		wire.OptionsFromInput(store.TaskInput{ID: "exact", Type: "u", Queue: "q", RunAt: at, MaxRetries: 2}),
		{Type: "t", Options: &wire.TaskOptions{ID: "dup", UniqueKey: "k", UniqueTTLMS: 60000}},   // duplicate
		{Type: "t", Options: &wire.TaskOptions{ID: "bad-priority", Priority: 99}},                // invalid_option
		{Type: "t", Options: &wire.TaskOptions{ID: "bad-retries", MaxRetries: &neg}},             // invalid_option
		{Type: "", Options: &wire.TaskOptions{ID: "no-type"}},                                    // invalid_name
		{Type: "t", Options: &wire.TaskOptions{ID: "past", ProcessAt: ptr(now.Add(-time.Hour))}}, // accepted: runs now
	}
}

func ptr[T any](v T) *T { return &v }

// TestEnqueueBinary: a binary enqueue gives the same answer and the same
// tasks as the same batch in JSON, and says it is welcome in Accept-Post.
func TestEnqueueBinary(t *testing.T) {
	t.Parallel()
	run := func(binary bool) (wire.EnqueueResponse, []*store.Task) {
		s := startBinServer(t)
		batch := enqueueBatch(s.clock.Now())
		var status int
		var ct string
		var b []byte
		if binary {
			status, ct, b = s.post("tasks", wirebin.EnqueueType, "", wirebin.AppendEnqueue(nil, batch))
		} else {
			body, err := json.Marshal(wire.EnqueueRequest{Tasks: batch})
			if err != nil {
				t.Fatal(err)
			}
			status, ct, b = s.post("tasks", "application/json", "", body)
		}
		var resp wire.EnqueueResponse
		if status != http.StatusOK || ct != "application/json" || json.Unmarshal(b, &resp) != nil {
			t.Fatalf("binary %v: %d %s %s", binary, status, ct, b)
		}
		ids := make([]string, len(batch))
		for i, tr := range batch {
			ids[i] = tr.Options.ID
		}
		return resp, s.get(ids)
	}
	jsonResp, jsonTasks := run(false)
	binResp, binTasks := run(true)
	if !reflect.DeepEqual(binResp, jsonResp) {
		t.Errorf("answer: binary %+v, JSON %+v", binResp, jsonResp)
	}
	if !reflect.DeepEqual(binTasks, jsonTasks) {
		t.Errorf("tasks after a binary enqueue\n%s\nafter the JSON one\n%s", dump(binTasks), dump(jsonTasks))
	}
	for i, want := range []string{"", "", "", "", wire.CodeDuplicate, wire.CodeInvalidOption, wire.CodeInvalidOption, wire.CodeInvalidName, ""} {
		got := ""
		if e := jsonResp.Tasks[i].Error; e != nil {
			got = e.Code
		}
		if got != want {
			t.Errorf("task %d: error %q, want %q", i, got, want)
		}
	}
	s := startBinServer(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/v1/projects/p/tasks", strings.NewReader(`{"tasks":[{"type":"t"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+binToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close() // only the header matters
	if ap := resp.Header.Get("Accept-Post"); !strings.Contains(ap, wirebin.EnqueueType) {
		t.Errorf("Accept-Post = %q", ap)
	}
}

// TestEnqueueBinaryBad: a malformed binary enqueue is 400 bad_request and
// enqueues nothing.
func TestEnqueueBinaryBad(t *testing.T) {
	t.Parallel()
	s := startBinServer(t)
	good := wirebin.AppendEnqueue(nil, []wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{ID: "x"}}})
	for name, body := range map[string][]byte{
		"empty":          {},
		"json":           []byte(`{"tasks":[{"type":"t"}]}`),
		"version":        append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"count over max": {1, 0x91, 0x4e},
		"flags":          {1, 1, 1, 't', 0, 0x80},
	} {
		status, _, b := s.post("tasks", wirebin.EnqueueType, "", body)
		var eb wire.ErrorBody
		if err := json.Unmarshal(b, &eb); err != nil || status != http.StatusBadRequest || eb.Error == nil || eb.Error.Code != wire.CodeBadRequest {
			t.Errorf("%s: %d %s, want 400 bad_request", name, status, b)
		}
	}
	res, err := s.emb.List(t.Context(), store.ListParams{Namespace: "p"})
	if err != nil || len(res.Tasks) != 0 {
		t.Errorf("bad enqueues left %d tasks (%v)", len(res.Tasks), err)
	}
}
