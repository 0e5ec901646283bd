package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
)

// node is one server of a cluster, called from any goroutine (no t.Fatal).
type node struct {
	url    string
	client *http.Client
}

// answer is what a node answered.
type answer struct {
	status int
	code   string // the error object's code, if any
	body   []byte
}

func (n node) call(method, path, token string, body any) (answer, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.url+path, r)
	if err != nil {
		return answer{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, body: out}
	var eb wire.ErrorBody
	if resp.StatusCode >= 300 && json.Unmarshal(out, &eb) == nil && eb.Error != nil {
		a.code = eb.Error.Code
	}
	return a, nil
}

// cluster is servers sharing one store, with project "p", a token of it and
// its worker secret.
type cluster struct {
	nodes  []node
	token  string
	secret string
}

// startCluster runs n servers on one store: the embedded store (one
// *embedded.Store shared by the servers) or Redis (one connection each).
func startCluster(t *testing.T, kind string, n int) *cluster {
	t.Helper()
	var stores []kilntest.MetaStore
	switch kind {
	case "embedded":
		st := kilntest.Embedded(t, nil)
		for range n {
			stores = append(stores, st)
		}
	case "redis":
		rawURL := kilntest.RedisURL(t)
		prefix := kilntest.RedisPrefix(t, rawURL)
		for range n {
			stores = append(stores, kilntest.RedisAt(t, rawURL, prefix, nil))
		}
	default:
		t.Fatalf("unknown store kind %q", kind)
	}
	c := &cluster{}
	for _, st := range stores {
		// Every handshake of these tests comes from 127.0.0.1, hundreds
		// of them: no handshake limits.
		b := serveOn(t, st, nil, func(c *server.Config) {
			c.HandshakeRate, c.ProjectHandshakeRate, c.MaxOpenHandshakes = -1, -1, -1
		})
		c.nodes = append(c.nodes, node{url: b.ts.URL, client: b.ts.Client()})
	}
	var p wire.CreateProjectResponse
	c.must(t, 0, http.StatusCreated, "POST", "/v1/projects", adminToken, wire.CreateProjectRequest{ID: "p"}, &p)
	var tok wire.NewToken
	c.must(t, 0, http.StatusCreated, "POST", "/v1/projects/p/tokens", adminToken, wire.TokenRequest{Name: "t"}, &tok)
	c.token, c.secret = tok.Token, p.WorkerSecret
	return c
}

// must makes a call on node i that must answer want, decoding into out.
func (c *cluster) must(t *testing.T, i, want int, method, path, token string, body, out any) {
	t.Helper()
	a, err := c.nodes[i%len(c.nodes)].call(method, path, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if a.status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, a.status, a.body, want)
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, a.body, err)
		}
	}
}

// handshake registers a worker on node i and verifies it on node i+1; it
// returns the worker id and session key.
func (c *cluster) handshake(t *testing.T, i int) (id, key string) {
	t.Helper()
	var reg wire.RegisterResponse
	c.must(t, i, http.StatusOK, "POST", "/v1/projects/p/workers/register", "", wire.RegisterRequest{Name: "w"}, &reg)
	var sess wire.Session
	c.must(t, i+1, http.StatusOK, "POST", "/v1/projects/p/workers/verify", "", wire.VerifyRequest{WorkerID: reg.WorkerID, Response: proof(t, c.secret, reg.Challenge)}, &sess)
	return reg.WorkerID, sess.SessionKey
}

// workerState returns the state of worker id as node i lists it.
func (c *cluster) workerState(i int, id string) (string, error) {
	a, err := c.nodes[i%len(c.nodes)].call("GET", "/v1/projects/p/workers", c.token, nil)
	if err != nil {
		return "", err
	}
	var l wire.WorkerList
	if err := json.Unmarshal(a.body, &l); err != nil {
		return "", fmt.Errorf("listing workers: %d %s: %w", a.status, a.body, err)
	}
	for _, w := range l.Workers {
		if w.ID == id {
			return w.State, nil
		}
	}
	return "", fmt.Errorf("worker %s is not listed", id)
}

// lockedOut checks that worker id is revoked on every node and that every
// one of its session keys is refused (401 unauthorized) by every node for
// lease, extend, report and refresh.
func (c *cluster) lockedOut(id string, keys []string) error {
	for i, n := range c.nodes {
		st, err := c.workerState(i, id)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		if st != "revoked" {
			return fmt.Errorf("node %d: worker %s is %q, want revoked", i, id, st)
		}
		for _, k := range keys {
			for _, r := range []struct {
				path string
				body any
			}{
				{"/v1/projects/p/lease", wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 1000}},
				{"/v1/projects/p/extend", wire.ExtendRequest{DurationMS: 1000}},
				{"/v1/projects/p/report", wire.ReportRequest{}},
				{"/v1/projects/p/workers/refresh", nil},
			} {
				a, err := n.call("POST", r.path, k, r.body)
				if err != nil {
					return err
				}
				if a.status != http.StatusUnauthorized || a.code != wire.CodeUnauthorized {
					return fmt.Errorf("node %d: POST %s with a session key of revoked worker %s = %d %s, want 401 unauthorized", i, r.path, id, a.status, a.body)
				}
			}
		}
	}
	return nil
}

// clusterKinds are the stores and server counts the revoke tests run on.
var clusterKinds = []struct {
	name  string
	store string
	n     int
}{
	{"embedded/one-server", "embedded", 1},
	{"embedded/two-servers", "embedded", 2},
	{"redis/one-server", "redis", 1},
	{"redis/two-servers", "redis", 2},
}

// TestRevokeWinsRaces races, for each of 100 workers, a revoke against a
// refresh of the worker's session and a lease (whose last-seen write is a
// read-modify-write of the worker record too), started together; with two
// servers the revoke goes to one and the refresh and lease to the other.
// Whatever the order, once all three are answered the worker must be
// revoked and every session key it ever had (the old one, and the new one
// if the refresh answered 200) refused by every server.
func TestRevokeWinsRaces(t *testing.T) {
	t.Parallel()
	for _, k := range clusterKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, k.store, k.n)
			const pairs, parallel = 100, 10
			var failed, refreshWon atomic.Int32
			var wg sync.WaitGroup
			defer wg.Wait() // also when a handshake fails the test
			sem := make(chan struct{}, parallel)
			for i := range pairs {
				id, key := c.handshake(t, i)
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					start := make(chan struct{})
					var fresh answer
					var errs [3]error
					var race sync.WaitGroup
					race.Add(3)
					go func() {
						defer race.Done()
						<-start
						_, errs[0] = c.nodes[0].call("POST", "/v1/projects/p/workers/"+id+"/revoke", c.token, nil)
					}()
					go func() {
						defer race.Done()
						<-start
						fresh, errs[1] = c.nodes[1%len(c.nodes)].call("POST", "/v1/projects/p/workers/refresh", key, nil)
					}()
					go func() {
						defer race.Done()
						<-start
						_, errs[2] = c.nodes[1%len(c.nodes)].call("POST", "/v1/projects/p/lease", key, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 1000})
					}()
					close(start)
					race.Wait()
					keys := []string{key}
					if fresh.status == http.StatusOK {
						refreshWon.Add(1)
						var s wire.Session
						if err := json.Unmarshal(fresh.body, &s); err != nil {
							errs[1] = err
						}
						keys = append(keys, s.SessionKey)
					} else if fresh.status != 0 && fresh.code != wire.CodeUnauthorized {
						errs[1] = fmt.Errorf("refresh = %d %s, want 200 or 401 unauthorized", fresh.status, fresh.body)
					}
					for _, err := range errs {
						if err != nil {
							t.Errorf("pair %d: %v", i, err)
						}
					}
					if err := c.lockedOut(id, keys); err != nil {
						failed.Add(1)
						t.Errorf("pair %d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			t.Logf("%d of %d revoked workers came back; %d refreshes answered 200 (ahead of their revoke)", failed.Load(), pairs, refreshWon.Load())
		})
	}
}

// TestRevokeLocksOutRefreshLoop revokes, ten times, a worker whose key
// holder trades its session key for a new one in a tight loop (through the
// other server, when there are two). The loop must end: a refresh sent
// after the revoke answered is refused, and so is every key the loop got,
// for every worker route on every server.
func TestRevokeLocksOutRefreshLoop(t *testing.T) {
	t.Parallel()
	for _, k := range clusterKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, k.store, k.n)
			const rounds = 10
			survived := 0
			for round := range rounds {
				id, key := c.handshake(t, round)
				var revoked atomic.Bool
				refreshed := make(chan struct{}, 1)
				type result struct {
					keys []string
					err  error
				}
				done := make(chan result, 1)
				go func() {
					keys := []string{key}
					for n := 0; ; n++ {
						after := revoked.Load()
						a, err := c.nodes[1%len(c.nodes)].call("POST", "/v1/projects/p/workers/refresh", keys[len(keys)-1], nil)
						if err != nil {
							done <- result{keys, err}
							return
						}
						if a.status != http.StatusOK {
							if a.code != wire.CodeUnauthorized {
								err = fmt.Errorf("refresh %d = %d %s, want 401 unauthorized", n, a.status, a.body)
							}
							done <- result{keys, err}
							return
						}
						var s wire.Session
						if err := json.Unmarshal(a.body, &s); err != nil {
							done <- result{keys, err}
							return
						}
						keys = append(keys, s.SessionKey)
						if after {
							done <- result{keys, fmt.Errorf("refresh %d, sent after the revoke answered, got a new key", n)}
							return
						}
						if n == 3 {
							refreshed <- struct{}{}
						}
					}
				}()
				select {
				case <-refreshed:
				case r := <-done:
					t.Fatalf("round %d: the refresh loop ended before the revoke: %v", round, r.err)
				}
				c.must(t, 0, http.StatusOK, "POST", "/v1/projects/p/workers/"+id+"/revoke", c.token, nil, nil)
				revoked.Store(true)
				r := <-done
				err := r.err
				if err == nil {
					err = c.lockedOut(id, r.keys)
				}
				if err != nil {
					survived++
					t.Errorf("round %d: %v", round, err)
				}
			}
			t.Logf("%d of %d revokes survived", survived, rounds)
		})
	}
}

// TestRevokeEndsLongPoll revokes a worker while its lease waits for work:
// the task enqueued after the revoke is not handed to it (the lease answers
// 401) and stays pending for other workers.
func TestRevokeEndsLongPoll(t *testing.T) {
	t.Parallel()
	for _, k := range clusterKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, k.store, k.n)
			id, key := c.handshake(t, 0)
			type result struct {
				a   answer
				err error
			}
			done := make(chan result, 1)
			go func() {
				a, err := c.nodes[1%len(c.nodes)].call("POST", "/v1/projects/p/lease", key, wire.LeaseRequest{Queues: []string{"default"}, Max: 1, DurationMS: 60000, WaitMS: 30000})
				done <- result{a, err}
			}()
			// The lease is waiting once the worker's last-seen time is set
			// (it is written before the store's lease starts).
			kilntest.Eventually(t, "the lease to start", func() bool {
				var l wire.WorkerList
				c.must(t, 0, http.StatusOK, "GET", "/v1/projects/p/workers", c.token, nil, &l)
				return len(l.Workers) == 1 && l.Workers[0].LastSeenAt != nil && l.Workers[0].SessionExpiresAt != nil && !l.Workers[0].LastSeenAt.Equal(l.Workers[0].SessionExpiresAt.Add(-time.Hour))
			})
			c.must(t, 0, http.StatusOK, "POST", "/v1/projects/p/workers/"+id+"/revoke", c.token, nil, nil)
			var enq wire.EnqueueResponse
			c.must(t, 0, http.StatusOK, "POST", "/v1/projects/p/tasks", c.token, wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "t"}}}, &enq)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.a.status != http.StatusUnauthorized || r.a.code != wire.CodeUnauthorized {
				t.Fatalf("the revoked worker's long poll = %d %s, want 401 unauthorized", r.a.status, r.a.body)
			}
			var task wire.Task
			c.must(t, 0, http.StatusOK, "GET", "/v1/projects/p/tasks/"+enq.Tasks[0].ID, c.token, nil, &task)
			if task.State != "pending" || task.Attempt != 0 {
				t.Errorf("the task after the revoked lease: state %q attempt %d, want pending, 0", task.State, task.Attempt)
			}
		})
	}
}
