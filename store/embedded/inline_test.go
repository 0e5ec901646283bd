package embedded

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// inlineSizes are payload sizes on both sides of inlineMax.
var inlineSizes = []int{0, 1, inlineMax, inlineMax + 1, 4096}

// inlinePayload is the payload of the task of size n and index i, nil
// for size 0 (stored, and read back, as empty).
func inlinePayload(n, i int) []byte {
	if n == 0 {
		return nil
	}
	p := []byte(fmt.Sprintf("%d-%d:", n, i))
	return append(p, strings.Repeat("x", max(n-len(p), 0))...)[:n]
}

// countKeys counts the keys of kind of namespace ns in s's engine.
func countKeys(t *testing.T, s *Store, kind byte, ns string) int {
	t.Helper()
	if err := s.barrier().wait(); err != nil {
		t.Fatal(err)
	}
	n := 0
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	if err := s.d.eng.scan(nsPrefix(kind, ns), nil, false, func(_, _ []byte) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	return n
}

// leaseAll leases every task of queue q of ns, checks each payload
// against want (by id), and reports them all succeeded.
func leaseAll(t *testing.T, s *Store, ns string, want map[string][]byte) {
	t.Helper()
	ctx := t.Context()
	seen := 0
	for {
		res, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, WorkerID: "w", Max: 7, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Tasks) == 0 {
			break
		}
		var out []store.Outcome
		for _, task := range res.Tasks {
			if w, ok := want[task.ID]; !ok || !bytes.Equal(task.Payload, w) || task.Payload == nil {
				t.Errorf("leased %s with payload %q (nil %v), want %q", task.ID, task.Payload, task.Payload == nil, w)
			}
			out = append(out, store.Outcome{ID: task.ID, LeaseID: task.LeaseID, Kind: store.OutcomeSucceeded})
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: out}); err != nil {
			t.Fatal(err)
		}
		seen += len(res.Tasks)
	}
	if seen != len(want) {
		t.Fatalf("leased %d tasks, want %d", seen, len(want))
	}
}

// checkPayloads reads every task of want with Get and with List, and
// checks the payloads; List without payloads returns none.
func checkPayloads(t *testing.T, s *Store, ns string, want map[string][]byte) {
	t.Helper()
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	for id, task := range getAll(t, s, ns, ids) {
		if task == nil || !bytes.Equal(task.Payload, want[id]) {
			t.Errorf("Get %s: %+v, want payload %q", id, task, want[id])
		}
	}
	// One at a time too: Get of one id reads by another path.
	for _, id := range ids[:3] {
		res, err := s.Get(t.Context(), store.GetParams{Namespace: ns, IDs: []string{id}})
		if err != nil || res.Tasks[0] == nil || !bytes.Equal(res.Tasks[0].Payload, want[id]) {
			t.Errorf("Get %s alone: %+v, %v; want payload %q", id, res.Tasks, err, want[id])
		}
	}
	for _, with := range []bool{true, false} {
		res, err := s.List(t.Context(), store.ListParams{Namespace: ns, WithPayload: with, Limit: store.MaxListLimit})
		if err != nil || len(res.Tasks) != len(want) {
			t.Fatalf("List: %d tasks, %v; want %d", len(res.Tasks), err, len(want))
		}
		for _, task := range res.Tasks {
			if with && !bytes.Equal(task.Payload, want[task.ID]) {
				t.Errorf("List: %s has payload %q, want %q", task.ID, task.Payload, want[task.ID])
			}
			if !with && task.Payload != nil {
				t.Errorf("List without payloads: %s has payload %q", task.ID, task.Payload)
			}
		}
	}
}

// inlineFolder returns a fake clock, a new data folder and the Config to
// open it with, with windows of 2 tasks (so most tasks are read back from
// the disk).
func inlineFolder(t *testing.T) (*storetest.FakeClock, string, *Config) {
	t.Helper()
	clock := storetest.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return clock, t.TempDir(), &Config{Clock: clock, window: 2, ReserveBytes: -1}
}

// TestPayloadInRecord: a payload of up to inlineMax bytes is stored in the
// task's record and a larger one in a key of its own, through every path
// that writes, reads and deletes tasks: enqueue, the window read back
// from the disk, a restart, lease, report, Get, List, Delete and Sweep.
// Nothing is left on disk at the end.
func TestPayloadInRecord(t *testing.T) {
	t.Parallel()
	clock, dir, cfg := inlineFolder(t)
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	const ns, per = "inline", 6
	want := make(map[string][]byte)
	var in []store.TaskInput
	apart := 0
	for _, n := range inlineSizes {
		for i := range per {
			id := fmt.Sprintf("p%05d-%d", n, i)
			want[id] = inlinePayload(n, i)
			if want[id] == nil {
				want[id] = []byte{}
			}
			in = append(in, store.TaskInput{ID: id, Type: "x", Payload: inlinePayload(n, i), Retention: time.Hour})
			if n > inlineMax {
				apart++
			}
		}
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
		t.Fatal(err)
	}
	if got := countKeys(t, s, kPayload, ns); got != apart {
		t.Fatalf("%d payload keys, want %d (the payloads over %d bytes)", got, apart, inlineMax)
	}
	if rep, err := checkOpen(s); err != nil || !rep.OK() {
		t.Fatalf("Check: %v %v", rep, err)
	}
	checkPayloads(t, s, ns, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	checkPayloads(t, s, ns, want)
	leaseAll(t, s, ns, want)
	if got := memTasks(s, ns); got != 0 {
		t.Fatalf("%d finished tasks in memory", got)
	}
	checkPayloads(t, s, ns, want)
	if rep, err := checkOpen(s); err != nil || !rep.OK() {
		t.Fatalf("Check after the leases: %v %v", rep, err)
	}
	// Delete one task of each size; the sweep takes the rest.
	var del []string
	for _, n := range inlineSizes {
		del = append(del, fmt.Sprintf("p%05d-0", n))
	}
	res, err := s.Delete(ctx, store.IDsParams{Namespace: ns, IDs: del})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range res.Items {
		if it.Err != nil {
			t.Fatalf("Delete %s: %v", del[i], it.Err)
		}
	}
	if got := countKeys(t, s, kPayload, ns); got != apart-2 {
		t.Fatalf("%d payload keys after Delete, want %d", got, apart-2)
	}
	clock.Advance(2 * time.Hour)
	if r, err := s.Sweep(ctx, store.SweepParams{}); err != nil || r.Deleted != len(want)-len(del) {
		t.Fatalf("Sweep deleted %d (%v), want %d", r.Deleted, err, len(want)-len(del))
	}
	for _, kind := range []byte{kTask, kPayload, kID} {
		if got := countKeys(t, s, kind, ns); got != 0 {
			t.Errorf("%d keys of kind %c left", got, kind)
		}
	}
}

// TestPayloadApartFromOlderVersion: a data folder whose records were
// written before payloads went into records (every payload in a key of its
// own) reads as before, keeps that layout as its tasks change state, and
// loses the payload keys with the tasks; new tasks in it get their
// payloads in their records.
func TestPayloadApartFromOlderVersion(t *testing.T) {
	t.Parallel()
	clock, dir, cfg := inlineFolder(t)
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	const ns = "older"
	want := make(map[string][]byte)
	var in []store.TaskInput
	for i := range 20 {
		id := fmt.Sprintf("o%03d", i)
		want[id] = inlinePayload(1+i, i)
		in = append(in, store.TaskInput{ID: id, Type: "x", Payload: want[id], Retention: time.Hour})
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite every record as the older version wrote it.
	eng, err := openEngine(enginePebble, dir, false, engineHooks{})
	if err != nil {
		t.Fatal(err)
	}
	var ops []op
	err = eng.scan(nsPrefix(kTask, ns), nil, false, func(k, v []byte) bool {
		var task store.Task
		seq, err := record.Decode(v, &task)
		if err != nil || task.Payload == nil {
			t.Errorf("record %x: payload %q, %v; want the payload in the record", k, task.Payload, err)
			return false
		}
		ops = append(ops, op{key: bytes.Clone(k), val: record.Encode(nil, seq, &task, false)},
			op{key: seqKey(kPayload, ns, seq), val: task.Payload})
		return true
	})
	if err != nil || len(ops) != 2*len(want) {
		t.Fatalf("scan: %v, %d writes", err, len(ops))
	}
	if err := eng.apply(ops, true); err != nil {
		t.Fatal(err)
	}
	if err := eng.close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(dir); err != nil || !rep.OK() {
		t.Fatalf("Check of the older folder: %v %v", rep, err)
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	// A new task beside them has its payload in its record.
	want["new"] = []byte("new")
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "new", Type: "x", Payload: want["new"], Retention: time.Hour}}}); err != nil {
		t.Fatal(err)
	}
	checkPayloads(t, s, ns, want)
	// A cancelled task leaves memory; retried, it is read back from the
	// disk and rewritten as it was.
	for _, admin := range []func(context.Context, store.IDsParams) (store.AdminResult, error){s.Cancel, s.Retry} {
		res, err := admin(ctx, store.IDsParams{Namespace: ns, IDs: []string{"o015"}})
		if err != nil || res.Items[0].Err != nil {
			t.Fatalf("cancel, retry: %+v, %v", res, err)
		}
		if err := s.barrier().wait(); err != nil {
			t.Fatal(err)
		}
	}
	leaseAll(t, s, ns, want)
	// Every older record changed state twice and kept its payload apart.
	if got := countKeys(t, s, kPayload, ns); got != len(want)-1 {
		t.Fatalf("%d payload keys after the leases, want %d", got, len(want)-1)
	}
	if rep, err := checkOpen(s); err != nil || !rep.OK() {
		t.Fatalf("Check after the leases: %v %v", rep, err)
	}
	checkPayloads(t, s, ns, want)
	res, err := s.Delete(ctx, store.IDsParams{Namespace: ns, IDs: []string{"o000", "new"}})
	if err != nil || res.Items[0].Err != nil || res.Items[1].Err != nil {
		t.Fatalf("Delete: %+v, %v", res, err)
	}
	if got := countKeys(t, s, kPayload, ns); got != len(want)-2 {
		t.Fatalf("%d payload keys after Delete, want %d", got, len(want)-2)
	}
	clock.Advance(2 * time.Hour)
	if r, err := s.Sweep(ctx, store.SweepParams{}); err != nil || r.Deleted != len(want)-2 {
		t.Fatalf("Sweep deleted %d (%v), want %d", r.Deleted, err, len(want)-2)
	}
	for _, kind := range []byte{kTask, kPayload, kID} {
		if got := countKeys(t, s, kind, ns); got != 0 {
			t.Errorf("%d keys of kind %c left", got, kind)
		}
	}
}

// TestRecoverPayloadInRecord: Recover copies a task whose record holds its
// payload without looking for a payload key, and the copy reads it back.
func TestRecoverPayloadInRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &Config{ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	want := map[string][]byte{"small": []byte("small"), "large": inlinePayload(inlineMax+1, 0), "empty": {}}
	var in []store.TaskInput
	for id, p := range want {
		in = append(in, store.TaskInput{ID: id, Type: "x", Payload: p})
	}
	if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "r", Tasks: in}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir() + "/copy"
	rep, err := Recover(dir, dst)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("Recover: %v, problems %v", err, rep.Problems)
	}
	s = mustOpen(t, dst, cfg)
	defer func() { _ = s.Close() }()
	if got := countKeys(t, s, kPayload, "r"); got != 1 {
		t.Errorf("the copy has %d payload keys, want 1 (the large payload's)", got)
	}
	checkPayloads(t, s, "r", want)
}
