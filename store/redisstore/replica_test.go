package redisstore

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// startServer starts a redis-server of the test's own on a free loopback
// port, with extra arguments, and returns its address once it answers.
// It skips the test when redis-server is not installed.
func startServer(t *testing.T, extra ...string) (string, *exec.Cmd) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") != "" {
			t.Fatal("redis-server is not on PATH and KILN_TEST_REQUIRE_ALL is set")
		}
		t.Skip("redis-server is not on PATH")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
		"--save", "", "--appendonly", "no", "--protected-mode", "no"}, extra...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	testenv.Eventually(t, "redis-server on "+addr+" to answer PING", func() bool {
		return c.Ping(t.Context()).Err() == nil
	})
	return addr, cmd
}

// TestWaitReplicasLease: with WaitReplicas, Lease hands over a task only
// once the replicas acknowledged every write before the lease (its
// enqueue among them). With the replica stopped (SIGSTOP), a task whose
// enqueue the replica never got is leased on the master but not handed
// over: Lease fails with ErrUnavailable and gives the task back unstarted
// (pending, attempt 0); once the replica runs again, the task is leased.
func TestWaitReplicasLease(t *testing.T) {
	t.Parallel()
	master, _ := startServer(t)
	_, replica := startServer(t, "--replicaof", strings.Replace(master, ":", " ", 1))
	mc := redis.NewClient(&redis.Options{Addr: master})
	defer func() { _ = mc.Close() }()
	ctx := t.Context()
	testenv.Eventually(t, "the replica to be in sync", func() bool {
		info, err := mc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
	})

	s := mustOpen(t, "redis://"+master+"/0", &Config{Prefix: newPrefix(), WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	defer func() { _ = s.Close() }()
	// A store without WaitReplicas on the same data: its enqueue returns
	// before any replica has the task, as a WaitReplicas enqueue is between
	// its script and its WAIT.
	plain := mustOpen(t, "redis://"+master+"/0", &Config{Prefix: s.cfg.Prefix})
	defer func() { _ = plain.Close() }()
	const ns = "ns"
	lease := func() (store.LeaseResult, error) {
		return s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 10, Duration: time.Minute, WorkerID: "w"})
	}
	enqueue := func(st *Store, id string) error {
		_, err := st.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: id, Type: "t"}}})
		return err
	}

	// The replica runs: enqueue and lease both acknowledged.
	if err := enqueue(s, "a"); err != nil {
		t.Fatalf("Enqueue with the replica running: %v", err)
	}
	res, err := lease()
	if err != nil || len(res.Tasks) != 1 || res.Tasks[0].ID != "a" {
		t.Fatalf("Lease with the replica running = %+v, %v; want task a", res.Tasks, err)
	}

	// The replica stops acknowledging.
	if err := replica.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := enqueue(s, "b"); err == nil {
		t.Fatal("Enqueue with the replica stopped: got nil error; want WAIT's failure")
	}
	if err := enqueue(plain, "c"); err != nil {
		t.Fatal(err)
	}
	res, err = lease()
	if !errors.Is(err, store.ErrUnavailable) || len(res.Tasks) != 0 {
		t.Fatalf("Lease with the replica stopped = %+v, %v; want no task and ErrUnavailable", res.Tasks, err)
	}
	got, err := s.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"b", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range got.Tasks {
		if tk == nil || tk.State != store.StatePending || tk.Attempt != 0 {
			t.Fatalf("after the refused lease: %+v; want b and c pending at attempt 0", tk)
		}
	}

	// The replica runs again: both are leased, at their first attempt.
	if err := replica.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var ids []string
	testenv.Eventually(t, "b and c to be leased", func() bool {
		res, err := lease()
		if err != nil {
			return false
		}
		for _, tk := range res.Tasks {
			if tk.Attempt != 1 {
				t.Errorf("leased %s at attempt %d; want 1", tk.ID, tk.Attempt)
			}
			ids = append(ids, tk.ID)
		}
		return len(ids) == 2
	})
}
