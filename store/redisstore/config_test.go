package redisstore

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

func TestOpenBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, url string
		cfg       *Config
	}{
		{"UnknownScheme", "redis+mesh://127.0.0.1:6379", nil},
		{"BadPrefix", "redis://127.0.0.1:6379/0", &Config{Prefix: "a b"}},
		{"BracePrefix", "redis://127.0.0.1:6379/0", &Config{Prefix: "{x}"}},
		{"NegativeWait", "redis://127.0.0.1:6379/0", &Config{WaitReplicas: -1}},
	} {
		s, err := Open(t.Context(), tc.url, tc.cfg)
		if !errors.Is(err, store.ErrInvalidOption) {
			t.Errorf("%s: Open: got (%v, %v), want %v", tc.name, s, err, store.ErrInvalidOption)
		}
		if s != nil {
			_ = s.Close()
		}
	}
}

func TestConnectForms(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://user:secret@127.0.0.1:6379/2",
		"rediss://127.0.0.1:6380/0",
		"unix:///tmp/redis.sock?db=1",
		"redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002",
		"redis+sentinel://127.0.0.1:26379?master_name=mymaster",
	} {
		c, err := connect(u)
		if err != nil {
			t.Errorf("connect(%q): %v", u, err)
			continue
		}
		_ = c.Close()
	}
}

// TestWaitReplicas checks that with WaitReplicas set, a change on a Redis
// without enough replicas fails loudly instead of being acknowledged.
func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	s := mustOpen(t, url, &Config{Prefix: newPrefix(), WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond})
	defer func() { _ = s.Close() }()
	_, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "ns", Tasks: []store.TaskInput{{ID: "a", Type: "t"}}})
	if err == nil {
		t.Fatal("Enqueue with WaitReplicas 1 on a Redis without replicas: got nil error")
	}
}
