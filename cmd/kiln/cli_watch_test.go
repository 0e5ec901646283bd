package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
)

// TestWatchFollowsCancel: `task watch` ends as soon as the task it follows
// is cancelled by `task cancel` (the batch cancel route), from the event
// stream: the slow re-read of the task is turned off, so only the event
// can end the watch. Not parallel: it sets watchRecheck.
func TestWatchFollowsCancel(t *testing.T) { //nolint:paralleltest // it sets watchRecheck
	old := watchRecheck
	watchRecheck = time.Hour
	defer func() { watchRecheck = old }()
	s := startCLIServer(t)
	out := mustKiln(t, s, "enqueue", "nobody", "--queue", "idle")
	id := strings.Fields(out)[0]
	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut := s.kiln(t, "task", "watch", id)
		done <- result{code, out, errOut}
	}()
	// Cancel once the watch follows the stream, so that its first reads
	// of the task cannot see the cancel.
	testenv.Eventually(t, "the watch's event stream to open", func() bool { return s.api.EventStreams() == 1 })
	mustKiln(t, s, "task", "cancel", id)
	r := testenv.Recv(t, done, "task watch to end after the cancel")
	if r.code != exitTaskFailed || !strings.Contains(r.errOut, "cancelled") {
		t.Fatalf("task watch of a cancelled task: exit %d, stderr %q, stdout %q; want exit %d naming the cancel", r.code, r.errOut, r.out, exitTaskFailed)
	}
}
