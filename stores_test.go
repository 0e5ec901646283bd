package kiln_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/server/api" //nolint:depguard // the tests serve the API in-process to run workers through a server
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
	"github.com/kilnhq/kiln/store/remote"
)

// The tests and benchmarks of this file and of engine_test.go run the
// worker on every store: the embedded store, Redis (skipped, with the
// reason, when KILN_TEST_REDIS_URL is not set or Redis does not answer;
// failed instead under KILN_TEST_REQUIRE_ALL=1), and a kiln server reached
// with the remote store (the server on an embedded store).

// storesAdminToken is the admin token of the test servers.
const storesAdminToken = "kiln_test-admin-token-stores-0123456789abcdef"

// testStore is one store a test runs on.
type testStore struct {
	name string
	// open returns a fresh, empty store (closed at cleanup); every call
	// of one test gives a handle on the same tasks. cfg adjusts the Redis
	// store's config (nil: none).
	open func(tb testing.TB) store.Store
	// openRedis, on Redis only, opens another handle with cfg changed.
	openRedis func(tb testing.TB, change func(*redisstore.Config)) store.Store
}

// eachStore runs f once per store, as parallel subtests.
func eachStore(t *testing.T, f func(t *testing.T, ts *testStore)) {
	t.Helper()
	for _, kind := range []string{"embedded", "redis", "remote"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f(t, newTestStore(t, kind))
		})
	}
}

// newTestStore makes the store of kind for tb: its data lives as long as tb.
func newTestStore(tb testing.TB, kind string) *testStore {
	tb.Helper()
	switch kind {
	case "embedded":
		dir := tb.TempDir()
		var first *embedded.Store
		return &testStore{name: kind, open: func(tb testing.TB) store.Store {
			tb.Helper()
			if first != nil {
				return first // one process holds the folder
			}
			s, err := embedded.Open(dir, nil)
			if err != nil {
				tb.Fatalf("embedded.Open: %v", err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			first = s
			return s
		}}
	case "redis":
		url := testRedisURL(tb)
		prefix := "kilntest-engine-" + rand.Text()
		tb.Cleanup(func() { deleteRedisPrefix(tb, url, prefix) })
		openCfg := func(tb testing.TB, change func(*redisstore.Config)) store.Store {
			tb.Helper()
			cfg := &redisstore.Config{Prefix: prefix}
			if change != nil {
				change(cfg)
			}
			s, err := redisstore.Open(context.Background(), url, cfg)
			if err != nil {
				tb.Fatalf("redisstore.Open: %v", err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}
		return &testStore{name: kind, open: func(tb testing.TB) store.Store { return openCfg(tb, nil) }, openRedis: openCfg}
	case "remote":
		emb, err := embedded.Open(tb.TempDir(), nil)
		if err != nil {
			tb.Fatalf("embedded.Open: %v", err)
		}
		a, err := api.New(api.Config{Store: emb, Meta: emb})
		if err != nil {
			_ = emb.Close()
			tb.Fatalf("api.New: %v", err)
		}
		hook.AutoCreateProjects(a)
		if _, err := a.AddToken(context.Background(), "", "test", storesAdminToken); err != nil {
			_ = emb.Close()
			tb.Fatalf("AddToken: %v", err)
		}
		srv := httptest.NewServer(a)
		tb.Cleanup(func() {
			a.Stop()
			srv.Close()
			_ = emb.Close()
		})
		return &testStore{name: kind, open: func(tb testing.TB) store.Store {
			tb.Helper()
			s, err := remote.Open(context.Background(), srv.URL, &remote.Config{Token: storesAdminToken})
			if err != nil {
				tb.Fatalf("remote.Open: %v", err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}}
	}
	tb.Fatalf("unknown store kind %q", kind)
	return nil
}

// testRedisURL returns the test Redis' URL, or skips (fails under
// KILN_TEST_REQUIRE_ALL=1) when there is none.
func testRedisURL(tb testing.TB) string {
	tb.Helper()
	missing := func(why string) {
		tb.Helper()
		if os.Getenv("KILN_TEST_REQUIRE_ALL") == "1" {
			tb.Fatalf("%s (KILN_TEST_REQUIRE_ALL=1)", why)
		}
		tb.Skip(why)
	}
	u := os.Getenv("KILN_TEST_REDIS_URL")
	if u == "" {
		missing("KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0; scripts/services.sh starts one)")
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		tb.Fatalf("KILN_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		missing(fmt.Sprintf("Redis at KILN_TEST_REDIS_URL does not answer: %v", err))
	}
	return u
}

// deleteRedisPrefix deletes every key of a test's prefix.
func deleteRedisPrefix(tb testing.TB, url, prefix string) {
	tb.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		tb.Errorf("KILN_TEST_REDIS_URL: %v", err)
		return
	}
	c := redis.NewClient(o)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	for _, pat := range []string{prefix + ":*", "{" + prefix + ":*"} {
		iter := c.Scan(ctx, 0, pat, 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil && !strings.Contains(err.Error(), "closed") {
			tb.Errorf("scan %s: %v", pat, err)
		}
		for i := 0; i < len(keys); i += 500 {
			if err := c.Del(ctx, keys[i:min(i+500, len(keys))]...).Err(); err != nil {
				tb.Errorf("delete %s: %v", pat, err)
			}
		}
	}
}
