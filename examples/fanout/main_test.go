package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/ironclient"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
)

func TestMain(m *testing.M) {
	// The test binary is the trampoline of the runner's task processes.
	runner.Main()
	goleak.VerifyTestMain(m)
}

const adminToken = "kiln_fanout-test-admin-token-0123456789abc"

// TestFanout deploys the example on a server with a runner: one scheduled
// run of "fanout" queues 200 "area" tasks, and they all complete.
func TestFanout(t *testing.T) {
	t.Parallel()
	const count = 200
	ctx := t.Context()
	bin, err := Build(ctx, ".", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	st, err := embedded.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(&server.Config{
		Store: st, BootstrapToken: adminToken, SweepInterval: 100 * time.Millisecond, ShutdownTimeout: 10 * time.Second,
		Runner: &hosted.Config{
			WorkDir: t.TempDir(), Concurrency: 4, PollInterval: 100 * time.Millisecond,
			LeaseDuration: 2 * time.Second, LeaseWait: 200 * time.Millisecond,
			Runner: &runner.Config{KillGrace: 500 * time.Millisecond}, SlotPoll: 20 * time.Millisecond,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		_ = st.Close()
	})
	tok, err := srv.API().CreateToken(ctx, "default", "fanout")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	c, err := ironclient.New(ironclient.Config{URL: url, ProjectID: "default", Token: tok.Token,
		PollMin: 20 * time.Millisecond, PollMax: 200 * time.Millisecond, MaxWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	sid, err := Run(ctx, c, Deploy{URL: url, ProjectID: "default", Token: tok.Token, FanoutBinary: bin, Count: count, Label: "run1"})
	if err != nil {
		t.Fatal(err)
	}

	// The schedule runs once, now: wait for its fan-out task.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(time.Minute)
	var fan []ironclient.Task
	for {
		if fan, err = c.Tasks(ctx, ironclient.TaskFilter{CodeName: "fanout"}); err != nil {
			t.Fatal(err)
		}
		if len(fan) > 0 {
			break
		}
		if time.Now().After(deadline) {
			s, _ := c.ScheduleInfo(ctx, sid)
			t.Fatalf("the schedule queued no fan-out task within a minute: %+v", s)
		}
		<-tick.C
	}
	if len(fan) != 1 || fan[0].ScheduleID != sid {
		t.Fatalf("fan-out tasks = %+v", fan)
	}
	ft, err := c.WaitForTask(ctx, fan[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Log(ctx, ft.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ft.Status != ironclient.StatusComplete || !strings.Contains(out, "queued 200 tasks of area") {
		t.Fatalf("fan-out task %+v, log %q", ft, out)
	}
	if strings.Contains(out, tok.Token) {
		t.Error("the fan-out task printed the token")
	}

	// Every area task it queued completes.
	var ids []string
	for page := 0; page < 3; page++ {
		ts, err := c.Tasks(ctx, ironclient.TaskFilter{CodeName: "area", Label: "run1", Page: page, PerPage: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range ts {
			ids = append(ids, task.ID)
		}
	}
	if len(ids) != count {
		t.Fatalf("%d area tasks, want %d", len(ids), count)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		ti, err := c.WaitForTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Status != ironclient.StatusComplete {
			t.Fatalf("area task %+v", ti)
		}
		seen[ti.Payload] = true
	}
	if len(seen) != count {
		t.Errorf("%d distinct payloads, want %d", len(seen), count)
	}
	last, err := c.Log(ctx, ids[0])
	if err != nil || !strings.HasPrefix(last, "forecast area ") {
		t.Errorf("area log %q, %v", last, err)
	}
	if s, err := c.ScheduleInfo(ctx, sid); err != nil || s.RunCount != 1 || s.Status != "complete" {
		t.Errorf("schedule = %+v, %v", s, err)
	}
}
