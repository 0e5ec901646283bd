package kiln_test

import (
	"context"
	"testing"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/redisstore"
)

// The tests and benchmarks of engine_test.go and engine_bench_test.go run
// the worker on every store: the embedded store, Redis (skipped, with the
// reason, when there is none; failed instead under KILN_TEST_REQUIRE_ALL=1,
// by kilntest's one rule), and a kiln server reached with the remote store.

// testStore is one store a test runs on.
type testStore struct {
	name string
	// open returns a handle on the test's store (closed at cleanup); every
	// call of one test gives a handle on the same tasks.
	open func(tb testing.TB) store.Store
	// openRedis, on Redis only, opens another handle with its config
	// changed.
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
		st := kilntest.Embedded(tb, nil)
		return &testStore{name: kind, open: func(tb testing.TB) store.Store { tb.Helper(); return st }}
	case "redis":
		url := kilntest.RedisURL(tb)
		prefix := kilntest.RedisPrefix(tb, url)
		openCfg := func(tb testing.TB, change func(*redisstore.Config)) store.Store {
			tb.Helper()
			if change == nil {
				return kilntest.RedisAt(tb, url, prefix, nil)
			}
			cfg := &redisstore.Config{Prefix: prefix}
			change(cfg)
			s, err := redisstore.Open(context.Background(), url, cfg)
			if err != nil {
				tb.Fatalf("redisstore.Open: %v", err)
			}
			tb.Cleanup(func() { _ = s.Close() })
			return s
		}
		return &testStore{name: kind, open: func(tb testing.TB) store.Store { tb.Helper(); return openCfg(tb, nil) }, openRedis: openCfg}
	case "remote":
		srv := kilntest.StartServer(tb, &kilntest.ServerOptions{Bare: true})
		return &testStore{name: kind, open: func(tb testing.TB) store.Store { tb.Helper(); return srv.Remote(tb) }}
	}
	tb.Fatalf("unknown store kind %q", kind)
	return nil
}
