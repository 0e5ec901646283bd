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

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) {
	if childMain() {
		return
	}
	code := testenv.BenchMain(m).Run()
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

// purgeRun deletes every key this run created, by prefix; never FLUSHDB.
func purgeRun() {
	u := os.Getenv(testenv.RedisEnv)
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
		t.Helper()
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
	storetest.Run(t, harness(testenv.RedisURL(t)))
}

func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, harness(testenv.RedisURL(b)))
}
