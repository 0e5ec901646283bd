package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
)

// TestWorkflowOnSessionWorker: a remote worker that signs in with the
// worker secret (a session key) runs a workflow whose steps wait for
// others: it reads the tasks a step waits for through tasks:batchGet. Before
// that route took session keys, the chain's second step failed with 403.
func TestWorkflowOnSessionWorker(t *testing.T) {
	t.Parallel()
	srv := kilntest.StartServer(t, nil)
	w, err := kiln.NewWorker(srv.WorkerStore(t), &kiln.WorkerConfig{Namespace: srv.Project, LeaseWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("add", kiln.MustFn(func(args ...int64) (int64, error) {
		var sum int64
		for _, a := range args {
			sum += a
		}
		return sum, nil
	}))
	w.Handle("sum_ints", kiln.MustFn(func(xs []int64) (int64, error) {
		var sum int64
		for _, x := range xs {
			sum += x
		}
		return sum, nil
	}))
	kilntest.RunWorker(t, w)

	c, err := kiln.NewClient(srv.Remote(t), &kiln.ClientConfig{Namespace: srv.Project})
	if err != nil {
		t.Fatal(err)
	}
	wf := kiln.Chain(
		kiln.NewSignature("add", 1, 2), // 3
		kiln.Chord(kiln.Group(
			kiln.NewSignature("add", 10), // 13
			kiln.NewSignature("add", 20), // 23
		), kiln.NewSignature("sum_ints")), // 36
		kiln.NewSignature("add", 100), // 136
	)
	r, err := c.EnqueueWorkflow(t.Context(), wf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), kilntest.WaitLimit)
	defer cancel()
	var n int64
	if err := r.Get(ctx, &n); err != nil {
		t.Fatalf("Get: %v\nserver log:\n%s", err, srv.Logs())
	}
	if n != 136 {
		t.Fatalf("result = %d, want 136", n)
	}
}

// TestSessionKeyReadsOnlyItsProject: a worker's session key reads tasks
// by id in its own project, not in another, and still may not call the
// other token routes (listing tasks).
func TestSessionKeyReadsOnlyItsProject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, secret := b.project("p")
	b.project("q")
	_, ws := b.handshake("p", secret)
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "t"})
	var got struct {
		Tasks []*struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks:batchGet", ws, map[string]any{"ids": []string{id}}, &got)
	if len(got.Tasks) != 1 || got.Tasks[0] == nil || got.Tasks[0].ID != id {
		t.Fatalf("batchGet with the session key = %+v, want task %s", got.Tasks, id)
	}
	b.ok(http.StatusNotFound, "POST", "/v1/projects/q/tasks:batchGet", ws, map[string]any{"ids": []string{id}}, nil)
	b.ok(http.StatusForbidden, "GET", "/v1/projects/p/tasks", ws, nil, nil)
}
