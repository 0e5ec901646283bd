package resque

import (
	"context"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEncodeJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		class string
		args  []any
		want  string
	}{
		{"nil args are an empty array", "MyClass", nil, `{"class":"MyClass","args":[]}`},
		{"the seed's job", "MyClass", []any{"hi", "there"}, `{"class":"MyClass","args":["hi","there"]}`},
		{"numbers, objects, null", "C", []any{1, 2.5, map[string]any{"a": true}, nil}, `{"class":"C","args":[1,2.5,{"a":true},null]}`},
		{"no HTML escaping, as JSON.stringify", "A<b>&c", []any{"<script>&"}, `{"class":"A<b>&c","args":["<script>&"]}`},
		{"line separators as JSON.stringify", "C", []any{"a\u2028b\u2029c"}, "{\"class\":\"C\",\"args\":[\"a\u2028b\u2029c\"]}"},
		{"an escaped backslash before u2028 stays", "C", []any{`x\u2028`}, `{"class":"C","args":["x\\u2028"]}`},
		{"raw JSON is kept", "C", []any{json.RawMessage(`{"big":12345678901234567890}`)}, `{"class":"C","args":[{"big":12345678901234567890}]}`},
		{"control characters escaped", "C", []any{"\n\t\x01"}, `{"class":"C","args":["\n\t\u0001"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := EncodeJob(tc.class, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("EncodeJob(%q, %v)\n got %s\nwant %s", tc.class, tc.args, got, tc.want)
			}
		})
	}
}

func TestEncodeDelayedJob(t *testing.T) {
	t.Parallel()
	got, err := EncodeDelayedJob("low", "Mail", []any{7, "x"})
	if err != nil {
		t.Fatal(err)
	}
	// resque-scheduler's job_to_hash_with_queue order: class, args, queue.
	if want := `{"class":"Mail","args":[7,"x"],"queue":"low"}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestEncodeJobErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		queue string
		class string
		args  []any
		want  string
	}{
		{"empty class", "q", "", nil, "the job class is empty"},
		{"class not UTF-8", "q", "a\xffb", nil, `the job class "a\xffb" is not valid UTF-8`},
		{"unencodable arg", "q", "C", []any{make(chan int)}, "the args of a C job do not encode to JSON: json: unsupported type: chan int"},
		{"NaN", "q", "C", []any{math.NaN()}, "the args of a C job do not encode to JSON: json: unsupported value: NaN"},
		{"empty queue", "", "C", nil, "the queue name is empty"},
		{"queue not UTF-8", "\xff", "C", nil, `the queue name "\xff" is not valid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := EncodeDelayedJob(tc.queue, tc.class, tc.args)
			if err == nil || err.Error() != tc.want {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewClientNil(t *testing.T) {
	t.Parallel()
	if _, err := NewClient(nil, nil); err == nil || !strings.Contains(err.Error(), "Redis client is nil") {
		t.Errorf("NewClient(nil) err = %v", err)
	}
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Enqueue(ctx, "high", "MyClass", "hi", "there"); err != nil {
		t.Fatal(err)
	}
	if err := c.Enqueue(ctx, "high", "Other", 1); err != nil {
		t.Fatal(err)
	}
	if err := c.EnqueueMany(ctx, "low", "Many", []any{1}, nil, []any{"x"}); err != nil {
		t.Fatal(err)
	}
	if got, want := rdb.LRange(ctx, ns+"queue:high", 0, -1).Val(), []string{
		`{"class":"MyClass","args":["hi","there"]}`, `{"class":"Other","args":[1]}`,
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("queue:high = %q, want %q", got, want)
	}
	if got, want := rdb.LRange(ctx, ns+"queue:low", 0, -1).Val(), []string{
		`{"class":"Many","args":[1]}`, `{"class":"Many","args":[]}`, `{"class":"Many","args":["x"]}`,
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("queue:low = %q, want %q", got, want)
	}
	if got := rdb.SMembers(ctx, ns+"queues").Val(); len(got) != 2 || !rdb.SIsMember(ctx, ns+"queues", "high").Val() || !rdb.SIsMember(ctx, ns+"queues", "low").Val() {
		t.Errorf("queues = %q, want high and low", got)
	}

	// Nothing is written when one job of a batch does not encode.
	err = c.EnqueueMany(ctx, "bad", "C", []any{1}, []any{make(chan int)})
	if err == nil || !strings.Contains(err.Error(), `enqueue to "bad": job 1: the args of a C job do not encode`) {
		t.Errorf("EnqueueMany with a bad job: err = %v", err)
	}
	if n := rdb.Exists(ctx, ns+"queue:bad").Val(); n != 0 || rdb.SIsMember(ctx, ns+"queues", "bad").Val() {
		t.Error("EnqueueMany with a bad job wrote something")
	}
	if err := c.Enqueue(ctx, "", "C"); err == nil || err.Error() != "resque: enqueue: the queue name is empty" {
		t.Errorf("Enqueue to an empty queue name: err = %v", err)
	}
}

func TestClientNamespace(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	c, err := NewClient(rdb, &ClientConfig{Namespace: strings.TrimSuffix(ns, ":")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace() != ns {
		t.Errorf("Namespace() = %q, want %q (a colon added)", c.Namespace(), ns)
	}
	if err := c.Enqueue(context.Background(), "q", "C"); err != nil {
		t.Fatal(err)
	}
	if got := rdb.LLen(context.Background(), ns+"queue:q").Val(); got != 1 {
		t.Errorf("%squeue:q has %d jobs, want 1", ns, got)
	}
}

func TestEnqueueDefaultNamespace(t *testing.T) {
	t.Parallel()
	rdb, _ := ipSetup(t)
	c, err := NewClient(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Namespace(); got != "resque:" {
		t.Errorf("Namespace() = %q, want resque:", got)
	}
	// The package-level helpers write under resque:, shared with anything
	// else on the test Redis: check only the EnqueueAt path of a past time,
	// which goes through Enqueue, with a queue of this test's own.
	q := "kt-rsq-" + ipRun + "-default"
	t.Cleanup(func() {
		rdb.Del(context.Background(), "resque:queue:"+q)
		rdb.SRem(context.Background(), "resque:queues", q)
	})
	if err := EnqueueAt(context.Background(), rdb, time.Unix(1, 0), q, "C", 1); err != nil {
		t.Fatal(err)
	}
	if got := rdb.LRange(context.Background(), "resque:queue:"+q, 0, -1).Val(); len(got) != 1 || got[0] != `{"class":"C","args":[1]}` {
		t.Errorf("resque:queue:%s = %q", q, got)
	}
}

func TestEnqueueAtLayout(t *testing.T) {
	t.Parallel()
	rdb, ns := ipSetup(t)
	ctx := context.Background()
	now := time.Unix(1_900_000_000, 0)
	c, err := NewClient(rdb, &ClientConfig{Namespace: ns, NowFunc: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	at := now.Add(90*time.Second + 700*time.Millisecond) // cut to whole seconds
	if err := c.EnqueueAt(ctx, at, "mail", "Send", "a@b", 2); err != nil {
		t.Fatal(err)
	}
	if err := c.EnqueueIn(ctx, 90*time.Second, "mail", "Send", "c@d"); err != nil {
		t.Fatal(err)
	}
	item1 := `{"class":"Send","args":["a@b",2],"queue":"mail"}`
	item2 := `{"class":"Send","args":["c@d"],"queue":"mail"}`
	if got, want := rdb.LRange(ctx, ns+"delayed:1900000090", 0, -1).Val(), []string{item1, item2}; !reflect.DeepEqual(got, want) {
		t.Errorf("delayed:1900000090 = %q, want %q", got, want)
	}
	for _, item := range []string{item1, item2} {
		if got := rdb.SMembers(ctx, ns+"timestamps:"+item).Val(); len(got) != 1 || got[0] != "delayed:1900000090" {
			t.Errorf("timestamps:%s = %q, want [delayed:1900000090]", item, got)
		}
	}
	z := rdb.ZRangeWithScores(ctx, ns+"delayed_queue_schedule", 0, -1).Val()
	if len(z) != 1 || z[0].Member != "1900000090" || z[0].Score != 1900000090 {
		t.Errorf("delayed_queue_schedule = %v, want [1900000090 scored 1900000090]", z)
	}
	if n := rdb.Exists(ctx, ns+"queue:mail", ns+"queues").Val(); n != 0 {
		t.Errorf("a delayed job touched the queue (%d keys)", n)
	}

	// A time in the current second is still delayed; an earlier one is
	// enqueued at once.
	if err := c.EnqueueAt(ctx, now.Add(999*time.Millisecond), "mail", "Now"); err != nil {
		t.Fatal(err)
	}
	if got := rdb.LLen(ctx, ns+"delayed:1900000000").Val(); got != 1 {
		t.Errorf("delayed:1900000000 has %d items, want 1", got)
	}
	if err := c.EnqueueAt(ctx, now.Add(-time.Millisecond), "mail", "Past"); err != nil {
		t.Fatal(err)
	}
	if got := rdb.LRange(ctx, ns+"queue:mail", 0, -1).Val(); len(got) != 1 || got[0] != `{"class":"Past","args":[]}` {
		t.Errorf("queue:mail = %q, want the past job", got)
	}
	if err := c.EnqueueAt(ctx, at, "mail", "", 1); err == nil || err.Error() != `resque: enqueue at 1900000090 to "mail": the job class is empty` {
		t.Errorf("EnqueueAt with no class: err = %v", err)
	}
}
