package server_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/remote"
)

// TestShutdownKeepsDeadlineWithRunningCode: a server whose code runner
// runs a task that would go on for a long time stops within its shutdown
// timeout (here 300 ms), not after the runner's own 30 s: the task is
// cancelled and handed back. Before the fix, Serve returned after 30 s.
func TestShutdownKeepsDeadlineWithRunningCode(t *testing.T) {
	t.Parallel()
	st, err := embedded.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	logs := &testenv.Buffer{}
	srv, err := server.New(&server.Config{
		Store: st, BootstrapToken: adminToken, SweepInterval: -1, ShutdownTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Runner: &hosted.Config{
			WorkDir: t.TempDir(), Concurrency: 1, PollInterval: 20 * time.Millisecond,
			LeaseDuration: 5 * time.Second, LeaseWait: 100 * time.Millisecond,
			Runner: &runner.Config{KillGrace: 100 * time.Millisecond},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	const project = "alpha"
	reg := hosted.NewRegistry(st, nil)
	var z bytes.Buffer
	zw := zip.NewWriter(&z)
	fw, err := zw.Create("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write([]byte("echo ready\nexec sleep 1000\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Upload(ctx, project, hosted.Revision{Name: "holder", Runtime: "sh", FileName: "run.sh"}, &z, 0); err != nil {
		t.Fatal(err)
	}
	c, err := kiln.NewClient(st, &kiln.ClientConfig{Namespace: project})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Enqueue(ctx, hosted.TaskType("holder"), nil, &kiln.TaskOptions{Queue: hosted.TaskType("holder")})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err := c.Info(ctx, res.ID())
		if err != nil {
			t.Fatal(err)
		}
		if info.State == kiln.StateActive {
			break
		}
		if time.Now().After(deadline) || info.State.Terminal() {
			t.Fatalf("the task did not start within 20 s (%v); server log:\n%s", info.State, logs)
		}
	}
	time.Sleep(100 * time.Millisecond) // not needed for the check: lets the process start, as in real use

	cancel() // Serve stops within ShutdownTimeout (300 ms)
	select {
	case err := <-served:
		if err != nil {
			t.Logf("Serve: %v (the deadline passed with the task still running)", err)
		}
	case <-time.After(10 * time.Second): // the runner's own timer was 30 s
		t.Fatalf("Serve did not return within 10 s of its context's end, with a shutdown timeout of 300 ms")
	}
	// The task was cancelled and handed back (or, had the hand-back not
	// made it, left to its lease's expiry): it is not lost.
	info, err := c.Info(context.Background(), res.ID())
	if err != nil {
		t.Fatal(err)
	}
	if info.State != kiln.StatePending && info.State != kiln.StateActive {
		t.Errorf("after the stop the task is %v (%s), want pending (handed back) or active (its lease expires)", info.State, info.LastError)
	}
}

// TestRemoteWorkerCancelPushed: a remote worker with a session key (the
// worker handshake) learns of a cancel through cancels:wait and cancels
// its handler at once, not at its next heartbeat (20 minutes away with an
// hour's lease).
func TestRemoteWorkerCancelPushed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok, secret := b.project("p")
	ws, err := remote.Open(t.Context(), b.ts.URL, &remote.Config{Project: "p", WorkerSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	w, err := kiln.NewWorker(ws, &kiln.WorkerConfig{Namespace: "p", LeaseDuration: time.Hour, LeaseWait: 100 * time.Millisecond, SweepInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	cause := make(chan error, 1)
	w.Handle("long", kiln.HandlerFunc(func(ctx context.Context, _ *kiln.Task) error {
		started <- struct{}{}
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.WithoutCancel(t.Context())) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	id := b.enqueue("p", tok, wire.TaskRequest{Type: "long"})
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the remote worker did not start the task")
	}
	var task wire.Task
	b.ok(http.StatusOK, "POST", "/v1/projects/p/tasks/"+id+"/cancel", tok, nil, &task)
	select {
	case c := <-cause:
		if !errors.Is(c, kiln.ErrTaskCancelled) {
			t.Fatalf("cause = %v, want ErrTaskCancelled", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the remote worker's handler was not cancelled within 20 s of the cancel")
	}
}
