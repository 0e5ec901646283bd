package redisstore

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
	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	code := m.Run()
	purgeRun()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runToken makes this run's key prefixes unique; purgeRun deletes them.
var runToken = func() string {
	if t := os.Getenv("KILN_REDISSTORE_RUN"); t != "" {
		return t
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var prefixSeq atomic.Uint64

// newPrefix returns a key prefix no other test of any run uses.
func newPrefix() string {
	return fmt.Sprintf("kt-%s-%d", runToken, prefixSeq.Add(1))
}

// redisURL returns the test Redis, or skips (fails under
// KILN_TEST_REQUIRE_ALL=1) when there is none.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		missing(t, "KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0; scripts/services.sh starts one)")
		return ""
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("KILN_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		missing(t, fmt.Sprintf("Redis at KILN_TEST_REDIS_URL does not answer: %v", err))
	}
	return u
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("redisstore: %s (KILN_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skipf("redisstore: %s", why)
}

// purgeRun deletes every key this run created, by prefix; never FLUSHDB.
func purgeRun() {
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" || os.Getenv("KILN_REDISSTORE_RUN") != "" {
		return
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		return
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, pat := range []string{"{kt-" + runToken + "-*", "kt-" + runToken + "-*"} {
		iter := c.Scan(ctx, 0, pat, 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				c.Unlink(ctx, batch...)
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			c.Unlink(ctx, batch...)
		}
	}
}

func mustOpen(t testing.TB, url string, cfg *Config) *Store {
	t.Helper()
	s, err := Open(t.Context(), url, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// harness opens stores on url, each under a fresh prefix; reopen opens a new
// Store on the same prefix (Redis keeps the data).
func harness(url string) storetest.Harness {
	return storetest.Harness{New: func(t testing.TB, clock store.Clock) (store.Store, func() store.Store) {
		cfg := &Config{Prefix: newPrefix(), Clock: clock}
		cur := mustOpen(t, url, cfg)
		t.Cleanup(func() { _ = cur.Close() })
		return cur, func() store.Store {
			if err := cur.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			cur = mustOpen(t, url, cfg)
			return cur
		}
	}}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, harness(redisURL(t)))
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, harness(redisURL(b)))
}
