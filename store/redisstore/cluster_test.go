package redisstore

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store/storetest"
)

// startCluster starts a Redis Cluster of three masters (no replicas) on
// loopback, in processes of the test's own, and returns a store URL for it.
// The cluster is torn down when the test ends.
func startCluster(t *testing.T) string {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		testenv.Missing(t, "redis-server and redis-cli are needed to start a local Redis Cluster")
	}
	dir := t.TempDir()
	ports := freePorts(t, 3)
	var addrs []string
	for _, port := range ports {
		nodeDir := filepath.Join(dir, strconv.Itoa(port))
		if err := os.Mkdir(nodeDir, 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(server,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", nodeDir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
			"--maxmemory-policy", "noeviction", "--protected-mode", "no")
		cmd.Stdout, cmd.Stderr = nil, nil
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Wait (bounded) until every node answers, then create the cluster.
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		err := poll(ctx, func() bool { return c.Ping(ctx).Err() == nil })
		_ = c.Close()
		if err != nil {
			t.Fatalf("node %s does not answer: %v", a, err)
		}
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		err := poll(ctx, func() bool {
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		_ = c.Close()
		if err != nil {
			t.Fatalf("node %s: cluster not ok: %v", a, err)
		}
	}
	u := "redis+cluster://" + addrs[0]
	for _, a := range addrs[1:] {
		u += map[bool]string{true: "?", false: "&"}[!strings.Contains(u, "?")] + "addr=" + a
	}
	return u
}

// poll calls ok every 20 ms until it is true or ctx ends: a bounded poll.
func poll(ctx context.Context, ok func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// freePorts returns n loopback ports that are free, as are their cluster bus
// ports (port+10000).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000))
		if err != nil {
			continue
		}
		_ = bus.Close()
		out = append(out, port)
	}
	return out
}

// TestConformanceCluster runs the whole suite on a local Redis Cluster of
// three masters: every script touches the keys of one namespace, which share
// a hash tag.
func TestConformanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster: skipped with -short")
	}
	testenv.RedisURL(t) // the same requirement as the other tests
	t.Parallel()
	url := startCluster(t)
	storetest.Run(t, harness(url))
}
