package resque

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The helpers of the producer, scheduler and interoperability tests. Every
// test works under a namespace of its own ("kt-rsq-<run>-<n>:") and deletes
// its keys by that prefix when it ends; nothing here ever flushes a database.

// ipWait bounds every wait for something that should happen promptly; it
// guards against hanging tests and is never a measurement.
const ipWait = 60 * time.Second

var (
	ipRun = func() string {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}()
	ipSeq atomic.Int64
)

// ipMissing skips the test with why, or fails it under KILN_TEST_REQUIRE_ALL=1
// (make test and CI), where every third-party piece must be there.
func ipMissing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("resque: %s (KILN_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skipf("resque: %s", why)
}

// ipRedisURL returns the test Redis' URL, or skips (fails under
// KILN_TEST_REQUIRE_ALL=1) when there is none.
func ipRedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		ipMissing(t, "KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0; scripts/services.sh starts one)")
	}
	return u
}

// ipSetup returns a client of the test Redis and a fresh namespace (with its
// trailing colon) whose keys are deleted when the test ends.
func ipSetup(t testing.TB) (*redis.Client, string) {
	t.Helper()
	o, err := redis.ParseURL(ipRedisURL(t))
	if err != nil {
		t.Fatalf("KILN_TEST_REDIS_URL: %v", err)
	}
	o.PoolSize = 64
	rdb := redis.NewClient(o)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		ipMissing(t, fmt.Sprintf("Redis at KILN_TEST_REDIS_URL does not answer: %v", err))
	}
	ns := fmt.Sprintf("kt-rsq-%s-%d:", ipRun, ipSeq.Add(1))
	t.Cleanup(func() {
		ipDeletePrefix(t, rdb, ns)
		_ = rdb.Close()
	})
	return rdb, ns
}

// ipDeletePrefix deletes every key that starts with prefix (never FLUSHDB).
func ipDeletePrefix(t testing.TB, rdb *redis.Client, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := rdb.Scan(ctx, 0, ipGlobEscape(prefix)+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
	if err := iter.Err(); err != nil {
		t.Logf("delete keys %s*: %v", prefix, err)
	}
}

// ipGlobEscape escapes the glob characters of s for SCAN MATCH.
func ipGlobEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// ipEventually polls cond every 10 ms until it holds, failing the test with
// what after ipWait.
func ipEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ipWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", ipWait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
