package ironapi_test

import (
	"context"
	"crypto/rand"
	"net/http"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store/redisstore"
)

// TestTwoServersOnRedis: a package uploaded to a server without a runner,
// on one Redis connection, is run by another server's runner on another
// connection to the same Redis; status and log are read back through the
// first.
func TestTwoServersOnRedis(t *testing.T) {
	t.Parallel()
	rawURL := os.Getenv("KILN_TEST_REDIS_URL")
	if rawURL == "" {
		if os.Getenv("KILN_TEST_REQUIRE_ALL") != "" {
			t.Fatal("KILN_TEST_REDIS_URL is not set and KILN_TEST_REQUIRE_ALL is (scripts/services.sh starts Redis)")
		}
		t.Skip("KILN_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0; scripts/services.sh starts one)")
	}
	prefix := "kilntest-ironapi-" + rand.Text()
	t.Cleanup(func() { deleteRedisPrefix(t, rawURL, prefix) })
	open := func() *redisstore.Store {
		st, err := redisstore.Open(context.Background(), rawURL, &redisstore.Config{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	front := setupOn(t, open(), false)
	setupOn(t, open(), true)

	front.mustUpload(map[string]any{"name": "seed", "file_name": "__runner__.sh", "runtime": "sh"}, seedZip(t))
	ids := front.queue(map[string]any{"code_name": "seed", "payload": `{"n":1}`})
	if ti := front.wait(ids[0]); ti.Status != "complete" {
		t.Fatalf("task: %+v", ti)
	}
	if log := front.log(ids[0]); log != "Hello, playground\nmap[n:1]\n" {
		t.Errorf("log = %q", log)
	}
	var code struct {
		Codes []struct {
			ID string `json:"id"`
		} `json:"codes"`
	}
	front.json(http.MethodGet, "/2/projects/"+project+"/codes", nil, &code)
	front.json(http.MethodDelete, "/2/projects/"+project+"/codes/"+code.Codes[0].ID, nil, nil)
}

// deleteRedisPrefix deletes the keys of a test's store prefix.
func deleteRedisPrefix(t *testing.T, rawURL, prefix string) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		t.Error(err)
		return
	}
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	var keys []string
	for _, pattern := range []string{prefix + "*", "{" + prefix + "*"} {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Error(err)
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Del(ctx, keys[:n]...).Err(); err != nil {
			t.Error(err)
			return
		}
		keys = keys[n:]
	}
}
