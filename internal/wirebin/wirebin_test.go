package wirebin_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/store"
)

func sampleTasks() []*store.Task {
	now := time.Date(2026, 11, 23, 13, 0, 0, 123456789, time.UTC)
	return []*store.Task{
		{Namespace: "p", ID: "a", Type: "t", Queue: "default", State: store.StateActive, Priority: -3, Attempt: 1, MaxRetries: 5,
			Timeout: time.Minute, Deadline: now.Add(time.Hour), LeaseID: 1<<63 + 7, LeaseExpiresAt: now.Add(time.Second),
			WorkerID: "wrk_1", CreatedAt: now, RunAt: now, StartedAt: now, Payload: []byte{0, 1, 2}, Result: []byte{},
			ProgressPercent: 50, ProgressMessage: "half", CancelRequested: true},
		{Namespace: "p", ID: "b", Type: "t", Queue: "q", State: store.StatePending, Payload: []byte{}},
		{Namespace: "p", ID: "c", Type: "t", Queue: "q", State: store.StateSucceeded, Result: []byte("ok"), FinishedAt: time.Unix(0, -5).UTC()},
	}
}

// withErrors is sampleTasks with an error history on the first task.
func withErrors() []*store.Task {
	ts := sampleTasks()
	at := time.Date(2026, 11, 23, 12, 0, 0, 1, time.UTC)
	ts[0].Errors = []store.AttemptError{
		{Attempt: 1, At: at, Error: "boom", WorkerID: "wrk_1"},
		{Attempt: 2, At: at.Add(time.Minute), Error: "lease expired on attempt 2 (worker lost)"},
	}
	ts[0].ErrorsDropped = 4
	return ts
}

func sampleOutcomes() []store.Outcome {
	return []store.Outcome{
		{ID: "a", LeaseID: 1, Kind: store.OutcomeSucceeded, Result: []byte("r")},
		{ID: "b", LeaseID: 1 << 63, Kind: store.OutcomeRetry, Error: "boom", RetryAt: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)},
		{ID: "c", Kind: store.OutcomeRelease, NotStarted: true},
		{ID: "d", Kind: store.OutcomeDead, Error: "x"},
		{ID: "e", Kind: store.OutcomeCancelled},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	ts := sampleTasks()
	if !wirebin.Encodable(ts) {
		t.Fatal("sample tasks not encodable")
	}
	got, err := wirebin.DecodeTasks(wirebin.AppendTasks(nil, ts), "p")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ts) {
		t.Fatalf("tasks:\n got %+v\nwant %+v", got, ts)
	}
	if got, err := wirebin.DecodeTasks(wirebin.AppendTasks(nil, nil), "p"); err != nil || len(got) != 0 {
		t.Fatalf("no tasks: %v %v", got, err)
	}
	os := sampleOutcomes()
	if !wirebin.OutcomesEncodable(os) {
		t.Fatal("sample outcomes not encodable")
	}
	gotO, err := wirebin.DecodeOutcomes(wirebin.AppendOutcomes(nil, os))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotO, os) {
		t.Fatalf("outcomes:\n got %+v\nwant %+v", gotO, os)
	}
	// A trace context travels (flag 4), and is told apart by HasTrace.
	traced := sampleTasks()
	traced[0].TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if !wirebin.HasTrace(traced) || wirebin.HasTrace(sampleTasks()) {
		t.Error("HasTrace is wrong")
	}
	got, err = wirebin.DecodeTasks(wirebin.AppendTasks(nil, traced), "p")
	if err != nil || !reflect.DeepEqual(got, traced) {
		t.Fatalf("traced tasks: %v\n got %+v\nwant %+v", err, got, traced)
	}
	// An error history travels (flag 8), and is told apart by HasErrors;
	// WithoutErrors strips it for older clients without touching ts.
	failed := withErrors()
	if !wirebin.HasErrors(failed) || wirebin.HasErrors(sampleTasks()) || !wirebin.Encodable(failed) {
		t.Error("HasErrors or Encodable is wrong")
	}
	got, err = wirebin.DecodeTasks(wirebin.AppendTasks(nil, failed), "p")
	if err != nil || !reflect.DeepEqual(got, failed) {
		t.Fatalf("tasks with errors: %v\n got %+v\nwant %+v", err, got, failed)
	}
	stripped := wirebin.WithoutErrors(failed)
	if wirebin.HasErrors(stripped) || !wirebin.HasErrors(failed) || stripped[1] != failed[1] {
		t.Errorf("WithoutErrors: stripped has errors %v, original %v; tasks without errors shared %v", wirebin.HasErrors(stripped), wirebin.HasErrors(failed), stripped[1] == failed[1])
	}
	plain := sampleTasks()
	if a, b := wirebin.AppendTasks(nil, stripped), wirebin.AppendTasks(nil, plain); string(a) != string(b) {
		t.Errorf("a task without its history encodes as before the flag:\n got %x\nwant %x", a, b)
	}
	if ws := wirebin.WithoutErrors(plain); &ws[0] != &plain[0] {
		t.Error("WithoutErrors copied tasks that have no history")
	}
	// An empty result travels as none, as in JSON.
	gotO, err = wirebin.DecodeOutcomes(wirebin.AppendOutcomes(nil, []store.Outcome{{ID: "a", Kind: store.OutcomeSucceeded, Result: []byte{}}}))
	if err != nil || gotO[0].Result != nil {
		t.Fatalf("empty result: %+v %v", gotO, err)
	}
}

func TestEncodable(t *testing.T) {
	t.Parallel()
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	if wirebin.Encodable([]*store.Task{{ID: "a", State: store.StatePending, Deadline: far}}) {
		t.Error("a deadline in year 3000 is encodable")
	}
	if wirebin.Encodable([]*store.Task{{ID: "a", State: store.StatePending, Priority: 1 << 40}}) {
		t.Error("a priority over int32 is encodable")
	}
	if wirebin.OutcomesEncodable([]store.Outcome{{ID: "a", Kind: store.OutcomeRetry, RetryAt: far}}) {
		t.Error("a retry in year 3000 is encodable")
	}
	if wirebin.OutcomesEncodable([]store.Outcome{{ID: "a", Kind: 0}}) {
		t.Error("kind 0 is encodable")
	}
}

func TestCorrupt(t *testing.T) {
	t.Parallel()
	tasks := wirebin.AppendTasks(nil, sampleTasks())
	outs := wirebin.AppendOutcomes(nil, sampleOutcomes())
	bad := map[string][]byte{
		"empty":           {},
		"version":         {2, 0},
		"no count":        {1},
		"count over max":  {1, 0x91, 0x4e}, // 10001
		"count over left": {1, 5, 0},
		"truncated tasks": tasks[:len(tasks)-1],
		"trailing tasks":  append(append([]byte(nil), tasks...), 0),
	}
	for name, b := range bad {
		if _, err := wirebin.DecodeTasks(b, "p"); !errors.Is(err, wirebin.ErrCorrupt) {
			t.Errorf("tasks %s: err = %v", name, err)
		}
	}
	bad["truncated outcomes"] = outs[:len(outs)-1]
	bad["trailing outcomes"] = append(append([]byte(nil), outs...), 0)
	bad["kind 0"] = wirebin.AppendOutcomes(nil, []store.Outcome{{ID: "a", Kind: 0}})
	bad["kind 6"] = wirebin.AppendOutcomes(nil, []store.Outcome{{ID: "a", Kind: 6}})
	flags := wirebin.AppendOutcomes(nil, []store.Outcome{{ID: "a", Kind: store.OutcomeRelease}})
	flags[len(flags)-1] = 2
	bad["flags"] = flags
	delete(bad, "truncated tasks")
	delete(bad, "trailing tasks")
	for name, b := range bad {
		if _, err := wirebin.DecodeOutcomes(b); !errors.Is(err, wirebin.ErrCorrupt) {
			t.Errorf("outcomes %s: err = %v", name, err)
		}
	}
}

// FuzzDecode feeds both decoders anything: they never panic, and whatever
// they accept encodes again to bytes that decode to the same values.
func FuzzDecode(f *testing.F) {
	f.Add(wirebin.AppendTasks(nil, sampleTasks()))
	f.Add(wirebin.AppendTasks(nil, withErrors()))
	f.Add(wirebin.AppendOutcomes(nil, sampleOutcomes()))
	f.Add(wirebin.AppendEnqueue(nil, sampleEnqueue()))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ts, err := wirebin.DecodeTasks(b, "p"); err == nil {
			if !wirebin.Encodable(ts) {
				t.Fatalf("decoded tasks are not encodable: %+v", ts)
			}
			again, err := wirebin.DecodeTasks(wirebin.AppendTasks(nil, ts), "p")
			if err != nil {
				t.Fatalf("re-decode tasks: %v", err)
			}
			if !reflect.DeepEqual(again, ts) {
				t.Fatalf("tasks round trip:\n got %+v\nwant %+v", again, ts)
			}
		}
		if ts, err := wirebin.DecodeEnqueue(b); err == nil {
			if !wirebin.EnqueueEncodable(ts) {
				t.Fatalf("decoded enqueue is not encodable: %+v", ts)
			}
			again, err := wirebin.DecodeEnqueue(wirebin.AppendEnqueue(nil, ts))
			if err != nil {
				t.Fatalf("re-decode enqueue: %v", err)
			}
			if !reflect.DeepEqual(again, ts) {
				t.Fatalf("enqueue round trip:\n got %+v\nwant %+v", again, ts)
			}
		}
		if os, err := wirebin.DecodeOutcomes(b); err == nil {
			if !wirebin.OutcomesEncodable(os) {
				t.Fatalf("decoded outcomes are not encodable: %+v", os)
			}
			again, err := wirebin.DecodeOutcomes(wirebin.AppendOutcomes(nil, os))
			if err != nil {
				t.Fatalf("re-decode outcomes: %v", err)
			}
			if !reflect.DeepEqual(again, os) {
				t.Fatalf("outcomes round trip:\n got %+v\nwant %+v", again, os)
			}
		}
	})
}

func sampleEnqueue() []wire.TaskRequest {
	at := time.Date(2031, 1, 2, 3, 4, 5, 6, time.UTC)
	retries, timeout := 0, int64(1500)
	return []wire.TaskRequest{
		{Type: "t"},
		{Type: "u", Payload: []byte{0, 1}, Options: &wire.TaskOptions{}},
		{Type: "v", Payload: []byte("p"), Options: &wire.TaskOptions{ID: "id", Queue: "q", Priority: -4, ProcessAt: &at, ProcessInMS: -7,
			MaxRetries: &retries, TimeoutMS: &timeout, Deadline: &at, UniqueKey: "k", UniqueTTLMS: 60000, RetentionMS: 1, UniqueUntilSuccess: true}},
		wire.OptionsFromInput(store.TaskInput{ID: "x", Type: "w", Queue: "q", RunAt: at, Deadline: at, MaxRetries: 3, Timeout: time.Second}),
	}
}

func TestEnqueueRoundTrip(t *testing.T) {
	t.Parallel()
	ts := sampleEnqueue()
	if !wirebin.EnqueueEncodable(ts) {
		t.Fatal("sample not encodable")
	}
	b := wirebin.AppendEnqueue(nil, ts)
	got, err := wirebin.DecodeEnqueue(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ts) {
		t.Fatalf("got %+v\nwant %+v", got, ts)
	}
	traced := []wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{Queue: "q", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}
	if got, err := wirebin.DecodeEnqueue(wirebin.AppendEnqueue(nil, traced)); err != nil || !reflect.DeepEqual(got, traced) {
		t.Fatalf("traced: %v\n got %+v\nwant %+v", err, got, traced)
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)-1],
		"trailing":  append(append([]byte(nil), b...), 0),
		"flags":     {1, 1, 1, 't', 0, 2},
		"unknown":   {1, 1, 1, 't', 0, 0x40},
	} {
		if _, err := wirebin.DecodeEnqueue(bad); !errors.Is(err, wirebin.ErrCorrupt) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	far := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	if wirebin.EnqueueEncodable([]wire.TaskRequest{{Type: "t", Options: &wire.TaskOptions{Deadline: &far}}}) {
		t.Error("a deadline in year 3000 is encodable")
	}
}
