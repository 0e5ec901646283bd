package resque

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/testenv"
)

func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	code := testenv.BenchMain(m).Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testRedisURL returns the test Redis, or skips (fails under
// KILN_TEST_REQUIRE_ALL=1) when there is none.
func testRedisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
			t.Fatal("KILN_TEST_REDIS_URL is not set and KILN_TEST_REQUIRE_ALL is (scripts/services.sh starts Redis)")
		}
		t.Skip("KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0; scripts/services.sh starts one)")
	}
	return u
}

// testClient connects to the test Redis and gives the test a namespace of
// its own, whose keys are deleted when the test ends.
func testClient(t testing.TB) (*redis.Client, string) {
	t.Helper()
	u := testRedisURL(t)
	o, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	o.PoolSize = 64
	rdb := redis.NewClient(o)
	ns := "kilntest:" + rand.Text()[:12] + ":"
	t.Cleanup(func() {
		deletePrefix(t, rdb, ns)
		_ = rdb.Close()
	})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("test Redis %s: %v", u, err)
	}
	return rdb, ns
}

// deletePrefix deletes every key that starts with prefix.
func deletePrefix(t testing.TB, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			rdb.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Unlink(ctx, keys...)
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup of %s*: %v", prefix, err)
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
