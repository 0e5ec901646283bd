// Package testenv is the one place kiln's tests learn about their
// environment: where the test Redis and PostgreSQL are, whether every test
// must run (KILN_TEST_REQUIRE_ALL=1), how long a test waits for something
// that should happen promptly, and how a test builds a Go program.
//
// It imports nothing of kiln, so every package's tests can use it, even the
// internal tests of the stores that package kilntest imports. Package
// kilntest re-exports what users' tests need of it.
package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The environment variables of the rule.
const (
	// RedisEnv names the test Redis, as a redis:// URL.
	RedisEnv = "KILN_TEST_REDIS_URL"
	// PostgresEnv names the test PostgreSQL, as a postgres:// URL.
	PostgresEnv = "KILN_TEST_POSTGRES_URL"
	// RequireAllEnv, set to 1, turns every skip for a missing service or
	// privilege into a failure (`make test` sets it).
	RequireAllEnv = "KILN_TEST_REQUIRE_ALL"
)

// WaitLimit bounds every wait for something that should happen promptly. It
// guards against hanging tests and is never a measurement: it is long, so
// that a loaded machine does not fail a correct test.
const WaitLimit = time.Minute

// RequireAll reports whether KILN_TEST_REQUIRE_ALL=1: every test must run.
func RequireAll() bool { return os.Getenv(RequireAllEnv) == "1" }

// Missing skips the test because something it needs is missing, saying why;
// under KILN_TEST_REQUIRE_ALL=1 it fails the test instead.
func Missing(tb testing.TB, why string) {
	tb.Helper()
	missing(tb, why, RequireAll())
}

func missing(tb testing.TB, why string, requireAll bool) {
	tb.Helper()
	if requireAll {
		tb.Fatalf("%s (%s=1: every test must run; scripts/services.sh starts the services)", why, RequireAllEnv)
		return
	}
	tb.Skip(why)
}

// RedisURL returns the test Redis's URL from KILN_TEST_REDIS_URL. When the
// variable is not set or Redis does not answer within 3 s, it skips the test
// with the reason (fails it under KILN_TEST_REQUIRE_ALL=1); a URL that does
// not parse fails the test.
func RedisURL(tb testing.TB) string {
	tb.Helper()
	return serviceURL(tb, RedisEnv, "Redis", "redis://127.0.0.1:6379/0", func(u string) (func(context.Context) error, error) {
		opts, err := redis.ParseURL(u)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			c := redis.NewClient(opts)
			defer func() { _ = c.Close() }()
			return c.Ping(ctx).Err()
		}, nil
	})
}

// PostgresURL returns the test PostgreSQL's URL from KILN_TEST_POSTGRES_URL.
// When the variable is not set or nothing listens at its host and port
// within 3 s, it skips the test with the reason (fails it under
// KILN_TEST_REQUIRE_ALL=1); a URL that does not parse fails the test.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	return serviceURL(tb, PostgresEnv, "PostgreSQL", "postgres://kiln:kiln@127.0.0.1:5432/kiln_test?sslmode=disable", func(u string) (func(context.Context) error, error) {
		p, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		if (p.Scheme != "postgres" && p.Scheme != "postgresql") || p.Host == "" {
			return nil, fmt.Errorf("%q is not a postgres://host/database URL", u)
		}
		host := p.Host
		if p.Port() == "" {
			host = net.JoinHostPort(p.Hostname(), "5432")
		}
		return func(ctx context.Context) error {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
			if err == nil {
				_ = conn.Close()
			}
			return err
		}, nil
	})
}

// serviceURL is the rule of RedisURL and PostgresURL: the URL in env, which
// parse checks (an error fails the test) and whose service must answer
// within 3 s (or the test is skipped, failed under KILN_TEST_REQUIRE_ALL=1).
func serviceURL(tb testing.TB, env, name, example string, parse func(u string) (answer func(context.Context) error, err error)) string {
	tb.Helper()
	u := os.Getenv(env)
	if u == "" {
		Missing(tb, env+" is not set (e.g. "+example+")")
		return ""
	}
	answer, err := parse(u)
	if err != nil {
		tb.Fatalf("%s: %v", env, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := answer(ctx); err != nil {
		Missing(tb, fmt.Sprintf("%s at %s does not answer: %v", name, env, err))
		return ""
	}
	return u
}

// RedisPrefix returns a key prefix that no other test of any run uses, for a
// store on the Redis at rawURL, and deletes every key under it (the plain
// keys and the {prefix…} hash-tagged ones) when the test ends. Tests share
// the Redis: they never flush it.
func RedisPrefix(tb testing.TB, rawURL string) string {
	tb.Helper()
	prefix := "kilntest-" + rand.Text()[:12]
	tb.Cleanup(func() {
		if err := DeleteRedisPrefix(rawURL, prefix); err != nil {
			tb.Errorf("deleting the test's Redis keys: %v", err)
		}
	})
	return prefix
}

// DeleteRedisPrefix deletes every key of the Redis at rawURL that starts
// with prefix or with "{"+prefix, by SCAN (never FLUSHDB).
func DeleteRedisPrefix(rawURL, prefix string) error {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	var keys []string
	for _, pattern := range []string{prefix + "*", "{" + prefix + "*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}
