package kilntest

import (
	"context"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/redisstore"
)

// StoreOptions configures a test store. The zero value (or nil) is the
// store's defaults on the wall clock.
type StoreOptions struct {
	// Clock is the store's clock; nil means the wall clock.
	Clock store.Clock
}

func (o *StoreOptions) clock() store.Clock {
	if o == nil {
		return nil
	}
	return o.Clock
}

// Embedded opens a fresh embedded store in a temporary folder of the test;
// it is closed when the test ends.
func Embedded(tb testing.TB, opts *StoreOptions) *embedded.Store {
	tb.Helper()
	st, err := embedded.Open(tb.TempDir(), &embedded.Config{Clock: opts.clock()})
	if err != nil {
		tb.Fatalf("kilntest: embedded.Open: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// Redis opens a store on the test Redis (see [RedisURL]: it skips the test
// when there is none) under a key prefix no other test uses; the store is
// closed and every key of the prefix deleted when the test ends. Two calls
// give two independent stores.
func Redis(tb testing.TB, opts *StoreOptions) *redisstore.Store {
	tb.Helper()
	u := RedisURL(tb)
	return RedisAt(tb, u, testenv.RedisPrefix(tb, u), opts)
}

// RedisAt opens another connection to a store on the Redis at rawURL under
// prefix, for tests that need two connections (two servers, two workers) to
// one store; the connection is closed when the test ends, and deleting the
// keys is left to whoever made the prefix ([RedisPrefix]).
func RedisAt(tb testing.TB, rawURL, prefix string, opts *StoreOptions) *redisstore.Store {
	tb.Helper()
	cfg := &redisstore.Config{Prefix: prefix}
	if c := opts.clock(); c != nil {
		cfg.Clock = c
	}
	st, err := redisstore.Open(context.Background(), rawURL, cfg)
	if err != nil {
		tb.Fatalf("kilntest: redisstore.Open: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// RedisPrefix returns a Redis key prefix no other test of any run uses, and
// deletes every key under it when the test ends (tests share the Redis:
// nothing is ever flushed).
func RedisPrefix(tb testing.TB, rawURL string) string {
	tb.Helper()
	return testenv.RedisPrefix(tb, rawURL)
}
