package kiln

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestEnqueueBadInput(t *testing.T) {
	t.Parallel()
	var faulty *storetest.FaultyStore
	b := setup(t, &setupOpts{wrap: func(s store.Store) store.Store {
		faulty = storetest.Faulty(s)
		return faulty
	}})
	now := time.Now()
	tests := []struct {
		name    string
		typ     string
		payload []byte
		opts    TaskOptions
		want    error
		field   string
	}{
		{"empty type", "", nil, TaskOptions{}, ErrInvalidName, "type"},
		{"bad type", "send email", nil, TaskOptions{}, ErrInvalidName, "type"},
		{"long type", strings.Repeat("x", 256), nil, TaskOptions{}, ErrInvalidName, "type"},
		{"bad queue", "t", nil, TaskOptions{Queue: "a/b"}, ErrInvalidName, "queue"},
		{"bad id", "t", nil, TaskOptions{ID: "a b"}, ErrInvalidName, "id"},
		{"negative timeout", "t", nil, TaskOptions{Timeout: new(-time.Second)}, ErrInvalidOption, "timeout"},
		{"absurd timeout", "t", nil, TaskOptions{Timeout: new(48 * time.Hour)}, ErrInvalidOption, "timeout"},
		{"negative retries", "t", nil, TaskOptions{MaxRetries: new(-2)}, ErrInvalidOption, "max_retries"},
		{"absurd retries", "t", nil, TaskOptions{MaxRetries: new(1_000_000)}, ErrInvalidOption, "max_retries"},
		{"priority", "t", nil, TaskOptions{Priority: 10}, ErrInvalidOption, "priority"},
		{"payload over cap", "t", make([]byte, 1<<20+1), TaskOptions{}, ErrPayloadTooLarge, "payload"},
		{"process at far ahead", "t", nil, TaskOptions{ProcessAt: now.Add(2 * 366 * 24 * time.Hour)}, ErrInvalidOption, "run_at"},
		{"process in far ahead", "t", nil, TaskOptions{ProcessIn: 2 * 366 * 24 * time.Hour}, ErrInvalidOption, "run_at"},
		{"negative process in", "t", nil, TaskOptions{ProcessIn: -time.Second}, ErrInvalidOption, "process_in"},
		{"process in and at", "t", nil, TaskOptions{ProcessIn: time.Second, ProcessAt: now.Add(time.Hour)}, ErrInvalidOption, "process_in"},
		{"deadline past", "t", nil, TaskOptions{Deadline: now.Add(-time.Second)}, ErrInvalidOption, "deadline"},
		{"unique ttl without key", "t", nil, TaskOptions{UniqueTTL: time.Minute}, ErrInvalidOption, "unique_ttl"},
		{"unique key without ttl", "t", nil, TaskOptions{UniqueKey: "k"}, ErrInvalidOption, "unique_ttl"},
		{"negative retention", "t", nil, TaskOptions{Retention: -time.Second}, ErrInvalidOption, "retention"},
	}
	for _, tc := range tests {
		_, err := b.client.Enqueue(t.Context(), tc.typ, tc.payload, &tc.opts)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
			continue
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: err = %v, want a *ValidationError for field %q", tc.name, err, tc.field)
		}
	}
	// A batch with one bad request is refused whole.
	_, err := b.client.EnqueueMany(t.Context(), []TaskRequest{{Type: "ok"}, {Type: ""}, {Type: "ok", Options: TaskOptions{Priority: -1}}})
	if !errors.Is(err, ErrInvalidName) || !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "task 1") || !strings.Contains(err.Error(), "task 2") {
		t.Errorf("batch err = %v, want both problems named by index", err)
	}
	if n := faulty.Calls("Enqueue"); n != 0 {
		t.Fatalf("store Enqueue called %d times for bad input, want 0", n)
	}
	st, err := b.raw.Stats(t.Context(), store.StatsParams{Namespace: "default"})
	if err != nil || len(st.Queues) != 0 {
		t.Fatalf("store changed: %+v, %v", st, err)
	}
}

func TestEnqueueOptionsStored(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testEnqueueOptionsStored)
}

func testEnqueueOptionsStored(t *testing.T, b *bundle) {
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	res, err := b.client.Enqueue(t.Context(), "email:send", []byte(`{"to":"a@b"}`), &TaskOptions{
		ID: "my-id", Queue: "mail", Priority: 3, ProcessIn: time.Hour, MaxRetries: new(7),
		Timeout: new(time.Minute), Deadline: deadline, UniqueKey: "u", UniqueTTL: time.Minute, Retention: 2 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ID() != "my-id" {
		t.Fatalf("ID = %q", res.ID())
	}
	info, err := b.client.Info(t.Context(), "my-id")
	if err != nil {
		t.Fatal(err)
	}
	want := &TaskInfo{
		ID: "my-id", Type: "email:send", Queue: "mail", State: StateScheduled, Payload: []byte(`{"to":"a@b"}`),
		Priority: 3, MaxRetries: 7, Timeout: time.Minute, Deadline: deadline, UniqueKey: "u", Retention: 2 * time.Hour,
	}
	if diff := cmp.Diff(want, info, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
		cmp.FilterPath(func(p cmp.Path) bool {
			f := p.Last().String()
			return f == ".CreatedAt" || f == ".RunAt"
		}, cmp.Ignore())); diff != "" {
		t.Fatalf("info (-want +got):\n%s", diff)
	}
	if d := info.RunAt.Sub(info.CreatedAt); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("run at %v after creation, want 1h", d)
	}

	// Defaults: a new sortable id, the default queue, 25 retries, 30 min.
	def, err := b.client.Enqueue(t.Context(), "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ids.Valid(def.ID()) {
		t.Fatalf("default id %q is not a kiln id", def.ID())
	}
	di, err := def.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if di.Queue != "default" || di.MaxRetries != MaxRetriesDefault || di.Timeout != TimeoutDefault || di.State != StatePending {
		t.Fatalf("defaults: %+v", di)
	}
	none, err := b.client.Enqueue(t.Context(), "t", nil, &TaskOptions{MaxRetries: new(0)})
	if err != nil {
		t.Fatal(err)
	}
	if ni, _ := none.Info(t.Context()); ni.MaxRetries != 0 {
		t.Fatalf("MaxRetries new(0) stored as %d", ni.MaxRetries)
	}
	if _, err := b.client.Info(t.Context(), "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Info(missing) = %v, want ErrNotFound", err)
	}
	if _, err := b.client.Enqueue(t.Context(), "t", nil, &TaskOptions{ID: "my-id"}); !errors.Is(err, ErrTaskExists) {
		t.Fatalf("enqueue of an existing id = %v, want ErrTaskExists", err)
	}
}

func TestTaskOptionsJSON(t *testing.T) {
	t.Parallel()
	in := TaskOptions{Queue: "q", MaxRetries: new(3), ProcessIn: time.Second, UniqueKey: "k", UniqueTTL: time.Minute}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"queue":"q","process_in":1000000000,"max_retries":3,"unique_key":"k","unique_ttl":60000000000}`; string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
	var out TaskOptions
	if err := json.Unmarshal(b, &out); err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip = %+v, %v", out, err)
	}
	if b, _ := json.Marshal(TaskOptions{}); string(b) != "{}" {
		t.Fatalf("zero options marshal to %s", b)
	}
}

func TestUniqueKey(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testUniqueKey)
}

func testUniqueKey(t *testing.T, b *bundle) {
	opts := &TaskOptions{UniqueKey: "report:42", UniqueTTL: time.Hour}
	first, err := b.client.Enqueue(t.Context(), "report", nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.client.Enqueue(t.Context(), "report", nil, opts)
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second enqueue = %v, want ErrDuplicate", err)
	}
	if second == nil || second.ID() != first.ID() {
		t.Fatalf("duplicate's result = %v, want the first task %s", second, first.ID())
	}
}

func TestEnqueueMany(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testEnqueueMany)
}

func testEnqueueMany(t *testing.T, b *bundle) {
	if _, err := b.client.Enqueue(t.Context(), "t", nil, &TaskOptions{ID: "taken"}); err != nil {
		t.Fatal(err)
	}
	res, err := b.client.EnqueueMany(t.Context(), []TaskRequest{
		{Type: "t", Payload: []byte("a")},
		{Type: "t", Options: TaskOptions{ID: "taken"}},
		{Type: "t", Payload: []byte("c"), Options: TaskOptions{Queue: "other"}},
	})
	var be *BatchError
	if !errors.As(err, &be) || len(be.Errs) != 3 || be.Errs[0] != nil || !errors.Is(be.Errs[1], ErrTaskExists) || be.Errs[2] != nil {
		t.Fatalf("err = %#v, want a BatchError with ErrTaskExists for request 1", err)
	}
	if !errors.Is(err, ErrTaskExists) {
		t.Fatal("BatchError does not match ErrTaskExists")
	}
	if len(res) != 3 || res[0] == nil || res[1] != nil || res[2] == nil {
		t.Fatalf("results = %v", res)
	}
	info, err := res[2].Info(t.Context())
	if err != nil || info.Queue != "other" || !bytes.Equal(info.Payload, []byte("c")) {
		t.Fatalf("third task = %+v, %v", info, err)
	}
	if res[0].ID() >= res[2].ID() {
		t.Fatalf("ids of one batch are not increasing: %s, %s", res[0].ID(), res[2].ID())
	}
	if r, err := b.client.EnqueueMany(t.Context(), nil); r != nil || err != nil {
		t.Fatalf("empty batch = %v, %v", r, err)
	}
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	_, err := NewClient(b.store, &ClientConfig{Namespace: "no spaces", Limits: store.Limits{MaxPayloadBytes: -1}})
	if !errors.Is(err, ErrInvalidName) || !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("NewClient(bad config) = %v, want both problems", err)
	}
	if _, err := NewClient(nil, nil); err == nil {
		t.Fatal("NewClient(nil store) = nil error")
	}
	// A smaller payload cap is enforced by the client.
	c, err := NewClient(b.store, &ClientConfig{Namespace: "other", Limits: store.Limits{MaxPayloadBytes: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(t.Context(), "t", make([]byte, 11), nil); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("payload over a 10-byte cap = %v", err)
	}
	// Namespaces are separate.
	r, err := c.Enqueue(t.Context(), "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.Info(t.Context(), r.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("task of namespace other seen from default: %v", err)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	forEachStore(t, nil, testWaitHonoursContext)
}

func testWaitHonoursContext(t *testing.T, b *bundle) {
	res, err := b.client.Enqueue(t.Context(), "nobody-handles-this", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := res.Get(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v, want context.DeadlineExceeded", err)
	}
	if b.client.Result(res.ID()).ID() != res.ID() {
		t.Fatal("Client.Result lost the id")
	}
}
