package chaos_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/chaos"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
)

// options of a scenario's cluster.
type options struct {
	workers     int           // worker processes
	concurrency int           // handlers per worker; default 8
	work        time.Duration // each handler's work; default 100 ms
	lease       time.Duration // the workers' lease duration; default 1 s
	timeout     time.Duration // the remote workers' request timeout; default the store's
	redis       bool          // the server on a private Redis, the workers on it directly
	netns       bool          // the workers in network namespaces of their own (root)
	sessionTTL  time.Duration // the server's worker session life; default 1 h
	dataDir     string        // the embedded store's folder; default <dir>/data
}

// cluster is a scenario's processes: one server (on the embedded store or
// on a private Redis), worker processes, the admin client the load
// generator and the final check use, and the ledger.
type cluster struct {
	t      *testing.T
	o      options
	dir    string
	ledger *chaos.Ledger
	net    *chaos.Net
	redis  *chaos.Redis
	prefix string

	srvMu    sync.Mutex
	srv      *chaos.Proc
	addr     string
	crashed  chan string // a server process that ended without being told to
	stopping atomic.Pointer[chaos.Proc]

	url    string
	secret string
	admin  *apiclient.Client
	st     *remote.Store
	client *kiln.Client

	wMu     sync.Mutex
	workers []*chaos.Proc
}

// newCluster starts the server and the workers of a scenario.
func newCluster(t *testing.T, o options) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos suite: skipped with -short")
	}
	if o.concurrency == 0 {
		o.concurrency = 8
	}
	if o.work == 0 {
		o.work = 100 * time.Millisecond
	}
	if o.lease == 0 {
		o.lease = time.Second
	}
	c := &cluster{t: t, o: o, dir: t.TempDir(), ledger: chaos.NewLedger(), crashed: make(chan string, 1)}
	// The workers wait 1 s in each lease request (roles_test.go); a second
	// more for a busy machine.
	c.ledger.SetLeaseWait(2 * time.Second)
	if o.dataDir == "" {
		c.o.dataDir = filepath.Join(c.dir, "data")
	}
	if o.netns {
		c.net = chaos.NewNet(t, o.workers)
		if !c.net.Isolated {
			chaos.Need(t, "network namespaces: %s", c.net.Why)
		}
	} else {
		c.net = &chaos.Net{Host: "127.0.0.1"}
	}
	if o.redis {
		rdir := filepath.Join(c.dir, "redis")
		if err := os.Mkdir(rdir, 0o700); err != nil {
			t.Fatal(err)
		}
		c.redis = chaos.StartRedis(t, rdir)
		c.prefix = "chaos-" + rand.Text()[:8]
	}
	c.startServer()
	c.url = "http://" + c.addr
	var err error
	if c.admin, err = apiclient.New(c.url, &apiclient.Config{Token: adminToken}); err != nil {
		t.Fatal(err)
	}
	var ws wire.WorkerSecret
	if err := c.admin.Do(t.Context(), apiclient.Request{Method: http.MethodPost, Path: apiclient.Path("v1", "projects", project, "worker-secret")}, &ws); err != nil {
		t.Fatalf("rotate the worker secret: %v", err)
	}
	c.secret = ws.WorkerSecret
	if c.st, err = remote.Open(t.Context(), c.url, &remote.Config{Token: adminToken, RequestTimeout: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if c.client, err = kiln.NewClient(c.st, &kiln.ClientConfig{Namespace: project}); err != nil {
		t.Fatal(err)
	}
	c.workers = make([]*chaos.Proc, o.workers)
	for i := range c.workers {
		c.workers[i] = c.startWorker(i)
	}
	t.Cleanup(c.cleanup)
	return c
}

// cleanup stops what is still running, and on failure shows the end of
// each process's log.
func (c *cluster) cleanup() {
	c.wMu.Lock()
	ws := slices.Clone(c.workers)
	c.wMu.Unlock()
	for _, p := range ws {
		if p != nil {
			_ = p.Stop(syscall.SIGKILL)
		}
	}
	_ = c.st.Close()
	c.srvMu.Lock()
	srv := c.srv
	c.srvMu.Unlock()
	if srv != nil {
		c.stopping.Store(srv)
		_ = srv.Stop(syscall.SIGKILL)
	}
	if c.t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
		for _, name := range logs {
			if strings.HasPrefix(filepath.Base(name), "runs-") {
				continue
			}
			b, _ := os.ReadFile(name)
			if len(b) > 1500 {
				b = b[len(b)-1500:]
			}
			if len(b) > 0 {
				c.t.Logf("--- end of %s:\n%s", filepath.Base(name), b)
			}
		}
	}
}

// startServer starts the server process, on the address of the previous
// one if there was one, and waits until it listens.
func (c *cluster) startServer() {
	c.t.Helper()
	listen := c.addr
	if listen == "" {
		listen = c.net.Listen()
	}
	addrFile := filepath.Join(c.dir, "addr")
	_ = os.Remove(addrFile)
	env := []string{envRole + "=server", envDir + "=" + c.dir, envListen + "=" + listen}
	if c.redis != nil {
		env = append(env, envRedis+"="+c.redis.URL(), envPrefix+"="+c.prefix)
	} else {
		env = append(env, envData+"="+c.o.dataDir)
	}
	if c.o.sessionTTL > 0 {
		env = append(env, envSessionTTL+"="+c.o.sessionTTL.String())
	}
	p := chaos.Start(c.t, chaos.Cmd{Name: "server", Env: env, Log: filepath.Join(c.dir, "server.log")})
	go func() {
		<-p.Done()
		if c.stopping.Load() == p {
			return
		}
		_, err := p.Exited()
		select {
		case c.crashed <- fmt.Sprintf("the server (pid %d) ended by itself: %v\n%s", p.Pid(), err, p.Tail(3000)):
		default:
		}
	}()
	c.addr = chaos.WaitFile(c.t, addrFile, p)
	c.srvMu.Lock()
	c.srv = p
	c.srvMu.Unlock()
}

// killServer SIGKILLs the server, waits pause and starts it again on the
// same data and address. The ledger gets an outage of the whole store from
// the kill until the new server listens, and its lingering effects.
func (c *cluster) killServer(pause time.Duration) {
	c.t.Helper()
	c.srvMu.Lock()
	p := c.srv
	c.srvMu.Unlock()
	c.stopping.Store(p)
	if err := p.Kill(); err != nil {
		c.t.Fatalf("kill the server: %v", err)
	}
	end := c.ledger.Begin(chaos.Kill, "", "server pid "+strconv.Itoa(p.Pid()))
	time.Sleep(pause)
	c.startServer()
	end(c.outageLinger())
}

// outageLinger is how long the effects of a store outage outlast it: a
// worker whose store calls failed retries them with a backoff that grows up
// to 5 s (kiln.Worker's longest), so its outcomes and heartbeats may reach
// the store that much later, and a lease that expired meanwhile makes the
// task run again.
func (c *cluster) outageLinger() time.Duration { return 5*time.Second + c.o.lease }

// startWorker starts worker slot's process (in its namespace if any).
func (c *cluster) startWorker(slot int) *chaos.Proc {
	c.t.Helper()
	env := []string{
		envRole + "=worker", envDir + "=" + c.dir, envWork + "=" + c.o.work.String(),
		envLease + "=" + c.o.lease.String(), envConcurrency + "=" + strconv.Itoa(c.o.concurrency),
	}
	if c.o.timeout > 0 {
		env = append(env, envTimeout+"="+c.o.timeout.String())
	}
	if c.o.redis {
		env = append(env, envRedis+"="+c.redis.URL(), envPrefix+"="+c.prefix)
	} else {
		env = append(env, envURL+"="+c.url, envSecret+"="+c.secret)
	}
	p := chaos.Start(c.t, chaos.Cmd{
		Name: fmt.Sprintf("worker-%d", slot), Prefix: c.net.Prefix(slot), Env: env,
		Log: filepath.Join(c.dir, fmt.Sprintf("worker-%d.log", slot)),
	})
	// Wait until it handles SIGTERM: a graceful stop before that would be
	// the default action of the signal, not kiln's.
	chaos.WaitFile(c.t, filepath.Join(c.dir, "ready-"+runner(p)), p)
	return p
}

// runner is the run-log name of a worker process.
func runner(p *chaos.Proc) string { return "p" + strconv.Itoa(p.Pid()) }

// worker returns the process in slot.
func (c *cluster) worker(slot int) *chaos.Proc {
	c.wMu.Lock()
	defer c.wMu.Unlock()
	return c.workers[slot]
}

// addWorker starts one more worker process.
func (c *cluster) addWorker() {
	c.t.Helper()
	c.wMu.Lock()
	slot := len(c.workers)
	c.workers = append(c.workers, nil)
	c.wMu.Unlock()
	p := c.startWorker(slot)
	c.wMu.Lock()
	c.workers[slot] = p
	c.wMu.Unlock()
}

// killWorker SIGKILLs the worker in slot and starts a successor.
func (c *cluster) killWorker(slot int) {
	c.t.Helper()
	p := c.worker(slot)
	if err := p.Kill(); err != nil {
		c.t.Errorf("kill %s: %v", p.Name(), err)
	}
	c.ledger.Event(chaos.Kill, runner(p), p.Name())
	c.wMu.Lock()
	c.workers[slot] = c.startWorker(slot)
	c.wMu.Unlock()
}

// stopWorker stops the worker in slot with SIGTERM (a graceful stop) and,
// when restart is set, starts a successor. The worker must exit cleanly.
func (c *cluster) stopWorker(slot int, restart bool) {
	c.t.Helper()
	p := c.worker(slot)
	c.ledger.Event(chaos.Term, runner(p), p.Name())
	if err := p.Stop(syscall.SIGTERM); err != nil {
		c.t.Errorf("%s (pid %d) after SIGTERM: %v\n%s", p.Name(), p.Pid(), err, p.Tail(2000))
	}
	if restart {
		c.wMu.Lock()
		c.workers[slot] = c.startWorker(slot)
		c.wMu.Unlock()
	}
}

// load is the load generator's settings.
type load struct {
	rate       int           // tasks a second (default 150)
	maxRetries int           // per task; default 100 (kiln.NoRetries for none)
	timeout    time.Duration // of each enqueue call; default 10 s
	// refused, when set, sees the error of every failed enqueue call.
	refused func(error)
}

// startLoad enqueues tasks until ctx ends, in batches every 20 ms, and
// records each acknowledged one in the ledger. It returns the function
// that waits for it to end.
func (c *cluster) startLoad(ctx context.Context, l load) (wait func()) {
	if l.rate == 0 {
		l.rate = 150
	}
	if l.maxRetries == 0 {
		l.maxRetries = 100
	}
	if l.timeout == 0 {
		l.timeout = 10 * time.Second
	}
	batch := max(1, l.rate/50)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		seq := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			reqs := make([]kiln.TaskRequest, batch)
			for i := range reqs {
				seq++
				reqs[i] = kiln.TaskRequest{Type: taskType, Payload: []byte(`"x"`), Options: kiln.TaskOptions{ID: fmt.Sprintf("t%07d", seq), MaxRetries: new(l.maxRetries)}}
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
			sent := time.Now()
			res, err := c.client.EnqueueMany(cctx, reqs)
			cancel()
			var be *kiln.BatchError
			switch {
			case err == nil:
			case errors.As(err, &be):
				c.ledger.Refused("item: "+err.Error(), len(reqs)-countNonNil(res))
			default:
				c.ledger.Refused(reason(err), len(reqs))
				if l.refused != nil {
					l.refused(err)
				}
				continue
			}
			for _, r := range res {
				if r != nil {
					c.ledger.AckSent(sent, r.ID())
				}
			}
		}
	}()
	return func() { <-done }
}

func countNonNil(rs []*kiln.Result) int {
	n := 0
	for _, r := range rs {
		if r != nil {
			n++
		}
	}
	return n
}

// reason names a failed call for the table: its HTTP status and catalogue
// code, or "no answer".
func reason(err error) string {
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		return fmt.Sprintf("%d %s", ae.Status, ae.Code())
	}
	return "no answer"
}

// tasks reads the store's state of ids (nil for the ones not found),
// retrying while the server does not answer (it may be restarting).
func (c *cluster) tasks(ctx context.Context, ids []string) (map[string]*store.Task, error) {
	out := make(map[string]*store.Task, len(ids))
	for start := 0; start < len(ids); start += 1000 {
		chunk := ids[start:min(start+1000, len(ids))]
		for {
			res, err := c.st.Get(ctx, store.GetParams{Namespace: project, IDs: chunk})
			if err == nil {
				for i, t := range res.Tasks {
					out[chunk[i]] = t
				}
				break
			}
			if ctx.Err() != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return out, nil
}

// drainLimit bounds the wait for every acknowledged task to finish after
// the load: generous, and cut short only when nothing at all finishes for
// stallLimit (leases last a second: a live system never stalls that long).
const (
	drainLimit = 5 * time.Minute
	stallLimit = 45 * time.Second
)

// finish waits until every acknowledged task has finished, stops the
// workers gracefully, checks the run against the ledger, logs the table
// and fails the test on a lost task or an unexplained duplicate or burned
// attempt.
func (c *cluster) finish(scenario, setup string) *chaos.Report {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), drainLimit)
	defer cancel()
	pending := c.ledger.Acked()
	lastProgress := time.Now()
	for len(pending) > 0 {
		select {
		case msg := <-c.crashed:
			c.t.Fatal(msg)
		default:
		}
		ts, err := c.tasks(ctx, pending)
		if err != nil {
			c.t.Fatalf("read the tasks: %v", err)
		}
		var left []string
		for _, id := range pending {
			if t := ts[id]; t != nil && !finished(t.State) {
				left = append(left, id)
			}
		}
		if len(left) < len(pending) {
			lastProgress = time.Now()
		}
		pending = left
		if len(pending) == 0 {
			break
		}
		if time.Since(lastProgress) > stallLimit || ctx.Err() != nil {
			show := pending[:min(len(pending), 10)]
			var b strings.Builder
			for _, id := range show {
				t := ts[id]
				fmt.Fprintf(&b, "\n  %s: %s attempt %d, lease of %s until %s", id, t.State, t.Attempt, t.WorkerID, t.LeaseExpiresAt.Format(time.RFC3339Nano))
			}
			c.t.Errorf("%d acknowledged tasks did not finish (nothing finished for %s); the first ones:%s", len(pending), stallLimit, b.String())
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Stop the workers gracefully: they must exit cleanly.
	c.wMu.Lock()
	ws := slices.Clone(c.workers)
	c.wMu.Unlock()
	for _, p := range ws {
		if err := p.Stop(syscall.SIGTERM); err != nil {
			c.t.Errorf("%s (pid %d) at the end: %v", p.Name(), p.Pid(), err)
		}
	}
	logs, err := chaos.ReadLogs(c.dir)
	if err != nil {
		c.t.Fatal(err)
	}
	acked := c.ledger.Acked()
	ts, err := c.tasks(ctx, acked)
	if err != nil {
		c.t.Fatalf("read the tasks: %v", err)
	}
	r := c.ledger.Check(scenario, setup, logs, ts)
	report(c.t, r)
	return r
}

// report logs the table, appends the JSON when asked, and fails the test
// on what must not happen.
func report(t *testing.T, r *chaos.Report) {
	t.Helper()
	t.Log("\n" + r.Table())
	if *flagJSON != "" {
		if err := r.AppendJSON(*flagJSON); err != nil {
			t.Errorf("write the report: %v", err)
		}
	}
	if r.Acknowledged == 0 {
		t.Errorf("no enqueue was acknowledged: the scenario tested nothing")
	}
	if fs := r.Failures(); len(fs) > 0 {
		t.Errorf("%s: %d lost, %d failures in all (lost, phantom, or a duplicate or burned attempt no fault explains); see the table", r.Scenario, r.Lost, len(fs))
	}
}

func finished(s store.State) bool {
	switch s {
	case store.StateSucceeded, store.StateDead, store.StateCancelled:
		return true
	case store.StateScheduled, store.StatePending, store.StateActive, store.StateRetry:
		return false
	}
	return false
}

// every calls fn every interval (±25 %, at random) until ctx ends, on the
// calling goroutine (the test's, so that fn may fail the test).
func every(ctx context.Context, interval time.Duration, fn func(i int)) {
	for i := 0; ; i++ {
		jitter := time.Duration(mrand.Int64N(int64(interval/2))) - interval/4
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval + jitter):
		}
		if ctx.Err() != nil {
			return
		}
		fn(i)
	}
}
