package chaos_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/internal/wire"
)

// TestChaosRevokeRefresh: remote workers that refresh their session in a
// loop (and lease, run and report between refreshes) are revoked at random
// moments. Once the revoke has answered, no request of that worker may
// succeed, whatever key it holds (one from a refresh that raced the revoke
// included), and the worker stays revoked. Their tasks are not lost: a
// revoked worker's leases expire and the tasks run elsewhere, each extra
// run explained by the revoke.
func TestChaosRevokeRefresh(t *testing.T) {
	t.Parallel()
	d := loadTime(t)
	c := newCluster(t, options{workers: 2, sessionTTL: 2 * time.Second})
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	wait := c.startLoad(ctx, load{rate: 100})

	const racers = 3
	api, err := apiclient.New(c.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]*racer, racers)
	var wg sync.WaitGroup
	for k := range rs {
		rs[k] = &racer{c: c, api: api, k: k}
		wg.Go(func() { rs[k].run(ctx) })
	}
	revoked := map[string]bool{}
	every(ctx, 300*time.Millisecond, func(i int) {
		r := rs[i%racers]
		id, runner, ok := r.current()
		if !ok {
			return
		}
		var w wire.Worker
		err := c.admin.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", project, "workers", id, "revoke")}, &w)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("revoke %s: %v", id, err)
			}
			return
		}
		r.revoked(id)
		c.ledger.Begin(chaos.Revoke, runner, id) // for good: it never ends
		revoked[id] = true
	})
	wg.Wait()
	wait()
	var violations []string
	requests := 0
	for _, r := range rs {
		violations = append(violations, r.violations...)
		requests += r.afterRevoke
	}
	c.finish("revoke-refresh", fmt.Sprintf("%d in-process remote workers refreshing their session in a loop, one revoked every ~300 ms, %d remote worker processes (session TTL 2 s); %s of load at 100 tasks/s", racers, 2, d))
	t.Logf("%d revokes; %d requests sent by revoked workers after their revoke answered, %d of them succeeded", len(revoked), requests, len(violations))
	if len(revoked) == 0 || requests == 0 {
		t.Errorf("no revoke raced anything (%d revokes, %d requests after them): the scenario tested nothing", len(revoked), requests)
	}
	for i, v := range violations {
		if i == 10 {
			t.Errorf("... and %d more", len(violations)-10)
			break
		}
		t.Error(v)
	}
	// Every revoked worker is still revoked.
	var list wire.WorkerList
	if err := c.admin.Do(t.Context(), apiclient.Request{Method: http.MethodGet, Path: apiclient.Path("v1", "projects", project, "workers")}, &list); err != nil {
		t.Fatal(err)
	}
	for _, w := range list.Workers {
		if revoked[w.ID] && w.State != "revoked" {
			t.Errorf("worker %s was revoked and is %s now", w.ID, w.State)
		}
	}
}

// racer is a remote worker speaking the API itself, so that it can refresh
// its session as often as it likes and see every answer.
type racer struct {
	c   *cluster
	api *apiclient.Client
	k   int

	mu        sync.Mutex
	workerID  string
	runner    string
	revokedAt time.Time // when the revoke of workerID answered

	// Written by run only, read after it returned.
	violations  []string
	afterRevoke int
}

// current returns the worker the racer is now, unless it is revoked.
func (r *racer) current() (id, runner string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.workerID, r.runner, r.workerID != "" && r.revokedAt.IsZero()
}

// revoked records that the revoke of id has answered.
func (r *racer) revoked(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.workerID == id {
		r.revokedAt = time.Now()
	}
}

func (r *racer) revokedSince() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revokedAt
}

// run registers a worker, then refreshes, leases, runs and reports in a
// loop; 300 ms after it is revoked it starts over as a new worker.
func (r *racer) run(ctx context.Context) {
	path := func(parts ...string) string {
		return apiclient.Path(append([]string{"v1", "projects", project}, parts...)...)
	}
	for ctx.Err() == nil {
		var reg wire.RegisterResponse
		if err := r.api.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: path("workers", "register"), NoAuth: true, Body: wire.RegisterRequest{Name: fmt.Sprintf("racer-%d", r.k)}}, &reg); err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		proof, err := wire.Proof(r.c.secret, reg.Challenge)
		if err != nil {
			r.violations = append(r.violations, err.Error())
			return
		}
		var ses wire.Session
		if err := r.api.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: path("workers", "verify"), NoAuth: true, Body: wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof}}, &ses); err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		runs, err := chaos.OpenRunLog(r.c.dir, fmt.Sprintf("racer%d-%s", r.k, reg.WorkerID))
		if err != nil {
			r.violations = append(r.violations, err.Error())
			return
		}
		r.mu.Lock()
		r.workerID, r.runner, r.revokedAt = reg.WorkerID, runs.Runner(), time.Time{}
		r.mu.Unlock()
		key := ses.SessionKey
		// check records a request of this worker that succeeded although
		// it was sent after the revoke had answered.
		check := func(op string, sent time.Time, err error) {
			at := r.revokedSince()
			if at.IsZero() || !sent.After(at) {
				return
			}
			r.afterRevoke++
			if err == nil {
				r.violations = append(r.violations, fmt.Sprintf("%s of revoked worker %s succeeded %s after its revoke answered", op, reg.WorkerID, sent.Sub(at).Round(time.Microsecond)))
			}
		}
		for ctx.Err() == nil {
			if at := r.revokedSince(); !at.IsZero() && time.Since(at) > 300*time.Millisecond {
				break
			}
			sent := time.Now()
			var next wire.Session
			err := r.api.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: path("workers", "refresh"), Token: key}, &next)
			check("refresh", sent, err)
			if err == nil {
				key = next.SessionKey
			}
			sent = time.Now()
			var lr wire.LeaseResponse
			err = r.api.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: path("lease"), Token: key, Body: wire.LeaseRequest{Queues: []string{"default"}, Types: []string{taskType}, Max: 4, DurationMS: 5000}}, &lr)
			check("lease", sent, err)
			if err != nil || len(lr.Tasks) == 0 {
				continue
			}
			var rep wire.ReportRequest
			for _, tk := range lr.Tasks {
				_ = runs.Start(tk.ID, tk.Attempt)
				_ = runs.Finish(tk.ID, tk.Attempt, nil)
				rep.Outcomes = append(rep.Outcomes, wire.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: "succeeded"})
			}
			sent = time.Now()
			var out wire.ReportResponse
			err = r.api.Do(ctx, apiclient.Request{Method: http.MethodPost, Path: path("report"), Token: key, Body: rep}, &out)
			check("report", sent, err)
		}
		_ = runs.Close()
	}
}
