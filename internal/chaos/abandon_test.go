package chaos_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/internal/wire"
)

// TestChaosAbandonedLease: clients open long-poll lease requests and drop
// the connection at random moments, many of them just as a task arrives,
// while tasks that may not be retried (max_retries 0) are enqueued one by
// one. A task leased to a request whose answer was never delivered must go
// back with no attempt counted, so no task may end dead without a run, and
// none may be lost.
//
// Whether an answer was delivered is decided without a race: a client
// that finds the answer in its socket reads it and hands the tasks back
// (release, not started), as a correct client does; one that finds nothing
// resets the connection (SO_LINGER 0), after which the server cannot write
// the answer. An answer that lands between the look and the reset is told
// by the kernel's count of connections closed with unread data
// (TCPAbortOnClose): the ledger records it as an Unread fault of that
// request, which explains a burned attempt of the task it leased.
func TestChaosAbandonedLease(t *testing.T) {
	t.Parallel()
	if !long(t) {
		// A reset with nothing unread can still meet an answer in flight on
		// loopback, which the server cannot tell from a delivered one; with
		// max_retries 0 that task ends dead and the run fails (1 of ~730
		// drops in one CI-sized run). Until the ledger tells that window
		// apart, this scenario runs only in `make chaos`; the deterministic
		// server tests (TestLeaseCancelledByClient, TestLeaseAnswerWriteFails)
		// keep the defect out of make test.
		t.Skip("abandoned-lease runs in the long run only (make chaos)")
	}
	if _, err := chaos.AbortsOnClose(); err != nil {
		chaos.Need(t, "the kernel's TCP counters: %v", err)
	}
	d := loadTime(t)
	c := newCluster(t, options{workers: 0})
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()

	const clients = 6
	var st abandonStats
	drop := &broadcast{ch: make(chan struct{})}
	var wg sync.WaitGroup
	for k := range clients {
		wg.Go(func() { abandoner(ctx, c, k, drop, &st) })
	}
	// One task at a time; shortly after its enqueue starts (before or after
	// it is leased), every waiting client drops its request.
	for seq := 1; ctx.Err() == nil; seq++ {
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, err := c.client.Enqueue(ctx, taskType, []byte(`"x"`), &kiln.TaskOptions{ID: fmt.Sprintf("a%06d", seq), MaxRetries: new(0)})
			if err != nil {
				c.ledger.Refused(reason(err), 1)
				return
			}
			c.ledger.Ack(res.ID())
		}()
		time.Sleep(time.Duration(mrand.Int64N(int64(4 * time.Millisecond))))
		drop.fire()
		<-done
		time.Sleep(30 * time.Millisecond) // the clients ask again
	}
	wg.Wait()
	if err := errors.Join(st.errs...); err != nil {
		t.Fatalf("a client could not tell whether it had an answer: %v", err)
	}
	// Then a worker runs what is left.
	c.addWorker()
	c.finish("abandoned-lease", fmt.Sprintf("%d clients holding long-poll lease requests (max 1, 2 s leases) and dropping them at random, mostly just as a task arrives; a server process on the embedded store; %s of enqueues, one max_retries-0 task at a time; then one remote worker process", clients, d))
	t.Logf("lease requests: %d dropped unanswered, %d answered before the drop (tasks handed back), %d answered between the look and the reset (unread)", st.dropped.Load(), st.answered.Load(), st.unread.Load())
	if st.dropped.Load() == 0 {
		t.Errorf("no request was dropped: the scenario tested nothing")
	}
}

type abandonStats struct {
	dropped, answered, unread atomic.Int64

	mu   sync.Mutex
	errs []error
}

func (s *abandonStats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
}

// broadcast wakes every waiter at once, again and again.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

// dropMu makes the look, the reset and the two readings of the kernel's
// counter of one client one step that no other client's reset interleaves.
var dropMu sync.Mutex

// abandoner opens lease requests and drops them (see
// TestChaosAbandonedLease) until ctx ends.
func abandoner(ctx context.Context, c *cluster, k int, drop *broadcast, st *abandonStats) {
	for n := 0; ctx.Err() == nil; n++ {
		tag := fmt.Sprintf("abandon-%d-%d", k, n)
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		tc := conn.(*net.TCPConn)
		body, _ := json.Marshal(wire.LeaseRequest{Queues: []string{"default"}, Types: []string{taskType}, Max: 1, DurationMS: 2000, WaitMS: 10000, WorkerID: tag})
		req := fmt.Sprintf("POST /v1/projects/%s/lease HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", project, c.addr, adminToken, len(body), body)
		if _, err := tc.Write([]byte(req)); err != nil {
			_ = tc.Close()
			continue
		}
		wake := drop.wait()
		timer := time.NewTimer(time.Duration(50+mrand.IntN(450)) * time.Millisecond)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		dropMu.Lock()
		before, err1 := chaos.AbortsOnClose()
		waiting, err2 := pending(tc)
		if err := errors.Join(err1, err2); err != nil {
			dropMu.Unlock()
			_ = tc.Close()
			st.fail(err)
			return
		}
		if waiting {
			dropMu.Unlock()
			st.answered.Add(1)
			handBack(c, tc)
			continue
		}
		_ = tc.SetLinger(0) // close sends RST: the server's write of the answer fails
		_ = tc.Close()
		after, err := chaos.AbortsOnClose()
		dropMu.Unlock()
		if err != nil {
			st.fail(err)
			return
		}
		if after > before {
			st.unread.Add(1)
			c.ledger.Event(chaos.Unread, tag, "the answer reached the socket between the look and the reset")
			continue
		}
		st.dropped.Add(1)
	}
}

// pending reports whether bytes of an answer wait unread in the socket.
func pending(tc *net.TCPConn) (bool, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return false, err
	}
	var n int
	var rerr error
	var b [1]byte
	if err := rc.Control(func(fd uintptr) {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return false, err
	}
	if errors.Is(rerr, syscall.EAGAIN) {
		return false, nil
	}
	return n > 0, rerr
}

// handBack reads the answer that reached the client and hands its tasks
// back, not started: what a client that does not want them does.
func handBack(c *cluster, tc *net.TCPConn) {
	defer func() { _ = tc.Close() }()
	_ = tc.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return
	}
	defer func() { _ = resp.Body.Close() }()
	var lr wire.LeaseResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&lr) != nil || len(lr.Tasks) == 0 {
		return
	}
	var rep wire.ReportRequest
	for _, tk := range lr.Tasks {
		rep.Outcomes = append(rep.Outcomes, wire.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: "release", NotStarted: true})
	}
	var out wire.ReportResponse
	_ = c.admin.Do(context.Background(), apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", project, "report"), Body: rep}, &out)
}
