package kiln

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// A task of a handler that takes no arguments runs when it is enqueued
// without a payload, instead of failing to decode "".
func TestFuncNilPayload(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("ping", Func(func(struct{}) (string, error) { return "pong", nil }))
		w.Handle("count", Func(func(n int) (int, error) { return n + 1, nil }))
	})
	for _, c := range []struct {
		typ     string
		payload []byte
		want    string
	}{{"ping", nil, `"pong"`}, {"ping", []byte{}, `"pong"`}, {"count", nil, `1`}} {
		res, err := b.client.Enqueue(t.Context(), c.typ, c.payload, nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := res.Wait(waitCtx(t))
		if err != nil {
			t.Fatalf("%s with payload %q: %v", c.typ, c.payload, err)
		}
		if string(info.Result) != c.want {
			t.Fatalf("%s: result %s, want %s", c.typ, info.Result, c.want)
		}
	}
}

// One rule for every option (docs/decisions/005-option-defaults.md): left
// out, an option takes its default; given, it takes the value given, and 0
// is a value: no retries, no timeout. The same holds for options decoded
// from JSON (schedules store them so).
func TestOptionZeroMeansZero(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, c := range []struct {
		name        string
		opts        TaskOptions
		json        string
		wantRetries int
		wantTimeout time.Duration
	}{
		{"unset", TaskOptions{}, `{}`, MaxRetriesDefault, TimeoutDefault},
		{"zero retries", TaskOptions{MaxRetries: new(0)}, `{"max_retries":0}`, 0, TimeoutDefault},
		{"three retries", TaskOptions{MaxRetries: new(3)}, `{"max_retries":3}`, 3, TimeoutDefault},
		{"zero timeout", TaskOptions{Timeout: new(time.Duration(0))}, `{"timeout":0}`, MaxRetriesDefault, 0},
		{"a timeout", TaskOptions{Timeout: new(time.Minute)}, `{"timeout":60000000000}`, MaxRetriesDefault, time.Minute},
		{"deadline only", TaskOptions{Deadline: now.Add(time.Hour)}, ``, MaxRetriesDefault, 0},
		{"old NoRetries", TaskOptions{MaxRetries: new(NoRetries)}, `{"max_retries":-1}`, 0, TimeoutDefault},
	} {
		in, err := c.opts.taskInput("t", nil, store.Limits{}, now)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if in.MaxRetries != c.wantRetries || in.Timeout != c.wantTimeout {
			t.Errorf("%s: retries %d, timeout %s; want %d, %s", c.name, in.MaxRetries, in.Timeout, c.wantRetries, c.wantTimeout)
		}
		if c.json == "" {
			continue
		}
		var o TaskOptions
		if err := json.Unmarshal([]byte(c.json), &o); err != nil {
			t.Fatal(err)
		}
		in, err = o.taskInput("t", nil, store.Limits{}, now)
		if err != nil || in.MaxRetries != c.wantRetries || in.Timeout != c.wantTimeout {
			t.Errorf("%s from JSON %s: retries %d, timeout %s, %v; want %d, %s", c.name, c.json, in.MaxRetries, in.Timeout, err, c.wantRetries, c.wantTimeout)
		}
		if b, err := json.Marshal(o); err != nil || string(b) != c.json {
			t.Errorf("%s: marshals to %s, %v; want %s", c.name, b, err, c.json)
		}
	}
	for _, bad := range []TaskOptions{{MaxRetries: new(-2)}, {Timeout: new(-time.Second)}} {
		if _, err := bad.taskInput("t", nil, store.Limits{}, now); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%+v: %v, want ErrInvalidOption", bad, err)
		}
	}
}

// A task with no retries goes dead after its first failed attempt, and one
// with no timeout is not cancelled by the default 30 minutes (its context
// has no deadline).
func TestZeroOptionsRun(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var hasDeadline atomic.Bool
	b.startWorker(t, nil, func(w *Worker) {
		w.Handle("fail", HandlerFunc(func(context.Context, *Task) error { return errors.New("no") }))
		w.Handle("free", HandlerFunc(func(ctx context.Context, _ *Task) error {
			_, ok := ctx.Deadline()
			hasDeadline.Store(ok)
			return nil
		}))
	})
	res, err := b.client.Enqueue(t.Context(), "fail", nil, &TaskOptions{MaxRetries: new(0)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Wait(waitCtx(t))
	if !errors.Is(err, ErrTaskDead) || info.Attempt != 1 || info.MaxRetries != 0 {
		t.Fatalf("no retries: %v, attempt %d of max retries %d; want dead after 1 attempt", err, info.Attempt, info.MaxRetries)
	}
	res, err = b.client.Enqueue(t.Context(), "free", nil, &TaskOptions{Timeout: new(time.Duration(0))})
	if err != nil {
		t.Fatal(err)
	}
	if info, err = res.Wait(waitCtx(t)); err != nil || info.Timeout != 0 {
		t.Fatalf("no timeout: %v, timeout %s", err, info.Timeout)
	}
	if hasDeadline.Load() {
		t.Fatal("the handler of a task without a timeout had a deadline")
	}
}

// TestTaskInputNewID checks that an input says its id is new only when
// taskInput made the id: a caller's id keeps the store's check.
func TestTaskInputNewID(t *testing.T) {
	t.Parallel()
	made, err := (&TaskOptions{}).taskInput("t", nil, store.Limits{}, time.Now())
	if err != nil || made.ID == "" || !made.NewID {
		t.Fatalf("without an id: %+v, %v; want a made id marked NewID", made, err)
	}
	given, err := (&TaskOptions{ID: "mine"}).taskInput("t", nil, store.Limits{}, time.Now())
	if err != nil || given.ID != "mine" || given.NewID {
		t.Fatalf("with an id: %+v, %v; want it, not marked NewID", given, err)
	}
}
