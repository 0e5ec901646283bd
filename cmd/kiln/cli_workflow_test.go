package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store/remote"
)

func TestCLIWorkflow(t *testing.T) {
	t.Parallel()
	s := startCLIServer(t)
	rs, err := remote.Open(t.Context(), s.url, &remote.Config{Token: testAdminToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Close() })
	c, err := kiln.NewClient(rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer cancel()

	// A chain that succeeds: echo "a", then echo its result.
	ok, err := c.EnqueueWorkflow(ctx, kiln.Chain(kiln.NewSignature("echo", "a"), kiln.NewSignature("echo")), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := ok.Get(ctx, &got); err != nil || got != "a" {
		t.Fatalf("Get = %q, %v; want a", got, err)
	}
	out := mustKiln(t, s, "workflow", "get", ok.ID())
	if !strings.Contains(out, "workflow "+ok.ID()+": succeeded") || strings.Count(out, "succeeded") != 3 {
		t.Fatalf("workflow get:\n%s", out)
	}
	var f wire.Flow
	if err := json.Unmarshal([]byte(mustKiln(t, s, "workflow", "get", ok.ID(), "--json")), &f); err != nil {
		t.Fatal(err)
	}
	if f.State != "succeeded" || len(f.Members) != 2 || f.Members[1].Type != "echo" {
		t.Fatalf("workflow get --json = %+v", f)
	}

	// A chain whose first task has no worker: cancel it all.
	stuck, err := c.EnqueueWorkflow(ctx, kiln.Chain(kiln.NewSignature("nobody-handles-this"), kiln.NewSignature("echo")), nil)
	if err != nil {
		t.Fatal(err)
	}
	out = mustKiln(t, s, "workflow", "get", stuck.ID())
	if !strings.Contains(out, "waiting") || !strings.Contains(out, "pending") {
		t.Fatalf("workflow get of a stuck workflow:\n%s", out)
	}
	mustKiln(t, s, "workflow", "cancel", stuck.ID())
	if _, err := stuck.Wait(ctx); err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("Wait after cancel: %v", err)
	}
	deadline := time.Now().Add(testenv.WaitLimit)
	for !strings.Contains(mustKiln(t, s, "workflow", "get", stuck.ID()), ": cancelled") {
		if time.Now().After(deadline) {
			t.Fatal("workflow not cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantExit(t, s, exitNotFound, "not found", "workflow", "get", "no-such-workflow")
	out = mustKiln(t, s, "workflow", "ls", "--limit", "1")
	if !strings.Contains(out, ok.ID()) || !strings.Contains(out, "succeeded") || !strings.Contains(out, "more: kiln workflow ls --after "+ok.ID()) {
		t.Fatalf("workflow ls --limit 1:\n%s", out)
	}
	out = mustKiln(t, s, "workflow", "ls", "--after", ok.ID())
	if !strings.Contains(out, stuck.ID()) || !strings.Contains(out, "cancelled") || strings.Contains(out, "more:") {
		t.Fatalf("workflow ls --after:\n%s", out)
	}
}
