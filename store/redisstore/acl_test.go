package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// aclClientCommands and aclScriptCommands are the commands docs/redis.md
// tells an operator to grant a kiln ACL user: the ones the store sends and
// the ones its scripts call (Redis 7 checks both). CONFIG|GET is optional
// (Open only warns when it may not read maxmemory-policy) and WAIT is used
// only with Config.WaitReplicas; the conformance run below grants neither.
var (
	aclClientCommands = []string{"EVALSHA", "EVAL", "SCRIPT|LOAD", "PING", "PSUBSCRIBE", "PUBLISH", "SADD", "SMEMBERS",
		"HGET", "HMGET", "HGETALL", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZSCORE", "XRANGE", "XREVRANGE", "XREAD", "XINFO|STREAM", "SET", "WAIT", "CONFIG|GET"}
	aclScriptCommands = []string{"DEL", "EXISTS", "HDEL", "HEXISTS", "HGET", "HGETALL", "HINCRBY", "HMGET", "HSET",
		"INCR", "INCRBY", "PUBLISH", "SADD", "SISMEMBER", "SMEMBERS", "SREM", "TIME", "XADD", "XDEL", "ZADD", "ZPOPMIN",
		"ZRANGE", "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZREM"}
	aclOptional = []string{"WAIT", "CONFIG|GET"}
)

// TestACLDocumentedCommands checks that docs/redis.md names exactly the
// commands this file grants, so the conformance run as an ACL user below
// proves the documented list.
func TestACLDocumentedCommands(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/redis.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(doc)), " ")
	for name, re := range map[string]string{
		"client": "An ACL user needs the commands kiln uses: `([^`]+)`",
		"script": "those of the scripts: `([^`]+)`",
	} {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("docs/redis.md: the %s command list (%s) is missing", name, re)
		}
		got := strings.Fields(m[1])
		want := aclClientCommands
		if name == "script" {
			want = aclScriptCommands
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("docs/redis.md lists the %s commands %v; the ACL test grants %v", name, got, want)
		}
	}
}

// aclHarness opens every store as a Redis ACL user of its own that may run
// only the documented commands on the documented keys and channels of its
// prefix; a command or key the store uses beyond them fails with NOPERM.
func aclHarness(t *testing.T, rawURL string) storetest.Harness {
	t.Helper()
	return storetest.Harness{New: func(tb testing.TB, clock store.Clock) (store.Store, func() store.Store) {
		tb.Helper()
		prefix := newPrefix()
		userURL := aclUser(tb, rawURL, prefix)
		cfg := &Config{Prefix: prefix, Clock: clock}
		cur := mustOpen(tb, userURL, cfg)
		tb.Cleanup(func() { _ = cur.Close() })
		return cur, func() store.Store {
			if err := cur.Close(); err != nil {
				tb.Fatalf("Close: %v", err)
			}
			cur = mustOpen(tb, userURL, cfg)
			return cur
		}
	}}
}

// aclUser makes a Redis ACL user, deleted when tb ends, that may run the
// commands docs/redis.md lists (less the optional ones and those in
// without) on the keys and channels of prefix, and returns rawURL as that
// user. It skips tb on a Redis without ACLs (before 6).
func aclUser(tb testing.TB, rawURL, prefix string, without ...string) string {
	tb.Helper()
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		tb.Fatal(err)
	}
	admin := redis.NewClient(o)
	tb.Cleanup(func() { _ = admin.Close() })
	if err := admin.Do(context.Background(), "ACL", "WHOAMI").Err(); err != nil {
		tb.Skipf("the test Redis has no ACLs: %v", err)
	}
	var grants []string
	for _, c := range slices.Concat(aclClientCommands, aclScriptCommands) {
		if !slices.Contains(aclOptional, c) && !slices.Contains(without, c) {
			grants = append(grants, "+"+strings.ToLower(c))
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	user, pass := prefix+"-acl", hex.EncodeToString(b[:])
	rules := slices.Concat([]string{"reset", "on", ">" + pass,
		"~{" + prefix + ":*", "~" + prefix + ":*", "&" + prefix + ":wake:*", "-@all"}, grants)
	args := []any{"ACL", "SETUSER", user}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		tb.Fatalf("ACL SETUSER: %v", err)
	}
	tb.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })
	u, err := url.Parse(rawURL)
	if err != nil {
		tb.Fatal(err)
	}
	u.User = url.UserPassword(user, pass)
	return u.String()
}

// TestConformanceACLUser runs the whole conformance suite as an ACL user
// granted only what docs/redis.md lists (less the optional CONFIG GET and
// WAIT): it fails if the store or one of its scripts needs anything more.
func TestConformanceACLUser(t *testing.T) {
	t.Parallel()
	storetest.Run(t, aclHarness(t, testenv.RedisURL(t)))
}
