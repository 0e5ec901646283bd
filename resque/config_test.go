package resque

import (
	"flag"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseQueues(t *testing.T) {
	t.Parallel()
	q, err := parseQueues([]string{"high", "low"})
	if err != nil || !q.strict || !slices.Equal(q.names, []string{"high", "low"}) {
		t.Fatalf("strict: %+v, %v", q, err)
	}
	for range 10 {
		if o := q.order(rand.New(rand.NewPCG(1, 2))); !slices.Equal(o, []string{"high", "low"}) {
			t.Fatalf("strict order %v", o)
		}
	}
	q, err = parseQueues([]string{"high=3", "low=1"})
	if err != nil || q.strict || !slices.Equal(q.weights, []int{3, 1}) {
		t.Fatalf("weighted: %+v, %v", q, err)
	}
	// high is first in about 3 passes out of 4.
	r := rand.New(rand.NewPCG(1, 2))
	first := 0
	const n = 4000
	for range n {
		o := q.order(r)
		if len(o) != 2 {
			t.Fatalf("order %v", o)
		}
		if o[0] == "high" {
			first++
		}
	}
	if first < n*70/100 || first > n*80/100 {
		t.Errorf("high first in %d of %d passes, want about 75%%", first, n)
	}
	for _, bad := range [][]string{nil, {""}, {"a=0"}, {"a=x"}, {"=2"}} {
		if _, err := parseQueues(bad); err == nil {
			t.Errorf("parseQueues(%q) accepted", bad)
		}
	}
	if _, _, err := (Config{Queues: []string{"a:b"}, Hostname: "h"}).withDefaults(); err == nil || !strings.Contains(err.Error(), "contains ':'") {
		t.Errorf("queue a:b: %v", err)
	}
	if _, _, err := (Config{Queues: []string{"a"}, Hostname: "h", HeartbeatInterval: time.Second, DeadAfter: time.Second}).withDefaults(); err == nil {
		t.Error("DeadAfter below twice HeartbeatInterval accepted")
	}
}

func TestBindFlags(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	get := BindFlags(fs)
	if err := fs.Parse([]string{"-queues=high=2,low=1", "-interval=0.5", "-concurrency=7", "-connections=3",
		"-uri=redis://h:1/2", "-namespace=app:", "-exit-on-complete", "-use-number", "-insecure-tls", "-plain", "-shutdown-timeout=9s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := get()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Queues, []string{"high=2", "low=1"}) || cfg.Interval != 500*time.Millisecond || cfg.Concurrency != 7 ||
		cfg.Connections != 3 || cfg.URI != "redis://h:1/2" || cfg.Namespace != "app:" || !cfg.ExitOnComplete || !cfg.UseNumber ||
		cfg.TLSConfig == nil || !cfg.TLSConfig.InsecureSkipVerify || !cfg.Plain || cfg.ShutdownTimeout != 9*time.Second {
		t.Errorf("config %+v", cfg)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	get = BindFlags(fs)
	_ = fs.Parse([]string{"-queues=q", "-tls-cert=/nonexistent"})
	if _, err := get(); err == nil || !strings.Contains(err.Error(), "-tls-cert") {
		t.Errorf("missing -tls-cert file: %v", err)
	}
}

// TestBlockSeconds checks the timeout of a blocking read sent as text: a
// timeout under a millisecond must not become "0.000", which Redis reads
// as "block for ever".
func TestBlockSeconds(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.001"},
		{300 * time.Microsecond, "0.001"},
		{time.Millisecond, "0.001"},
		{250 * time.Millisecond, "0.250"},
		{1500 * time.Millisecond, "1.500"},
	} {
		d, want := c.d, c.want
		if got := seconds(d); got != want {
			t.Errorf("seconds(%s) = %q, want %q", d, got, want)
		}
	}
}
