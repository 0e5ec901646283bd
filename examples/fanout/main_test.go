package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/ironclient"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

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

	srv := kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true, Configure: func(c *server.Config) {
		c.Runner.Concurrency, c.Runner.LeaseDuration = 4, 2*time.Second
	}})
	url, tok := srv.URL, srv.Token
	c, err := ironclient.New(ironclient.Config{URL: url, ProjectID: "default", Token: tok,
		PollMin: 20 * time.Millisecond, PollMax: 200 * time.Millisecond, MaxWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	sid, err := Run(ctx, c, Deploy{URL: url, ProjectID: "default", Token: tok, FanoutBinary: bin, Count: count, Label: "run1"})
	if err != nil {
		t.Fatal(err)
	}

	// The schedule runs once, now: wait for its fan-out task.
	var fan []ironclient.Task
	kilntest.Eventually(t, "the schedule's fan-out task", func() bool {
		if fan, err = c.Tasks(ctx, ironclient.TaskFilter{CodeName: "fanout"}); err != nil {
			t.Fatal(err)
		}
		return len(fan) > 0
	})
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
	if strings.Contains(out, tok) {
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
