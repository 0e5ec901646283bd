package record

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func full() *store.Task {
	at := time.Date(2026, 11, 23, 12, 0, 0, 123456789, time.UTC)
	return &store.Task{
		ID: "01J0000000000000000000000", Type: "email:send", Queue: "critical",
		Priority: 9, MaxRetries: 25, Timeout: 30 * time.Minute, Deadline: at.Add(time.Hour),
		UniqueKey: "user:42", UniqueTTL: time.Minute, UniqueUntilSuccess: true, Retention: 24 * time.Hour,
		State: store.StateActive, Attempt: 3, LeaseID: 1<<63 + 5, LeaseExpiresAt: at.Add(30 * time.Second),
		WorkerID: "host-1:123", CancelRequested: true,
		CreatedAt: at, RunAt: at, StartedAt: at.Add(time.Second), FinishedAt: time.Time{}, ExpiresAt: time.Time{},
		Result: []byte(`{"ok":true}`), LastError: "boom", ProgressPercent: 42, ProgressMessage: "half way",
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	cases := map[string]*store.Task{
		"full":          full(),
		"minimal":       {ID: "a", Type: "t", Queue: "q", State: store.StatePending},
		"empty result":  {ID: "a", Type: "t", Queue: "q", State: store.StateSucceeded, Result: []byte{}},
		"before 1970":   {ID: "a", Type: "t", Queue: "q", State: store.StatePending, CreatedAt: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)},
		"at unix epoch": {ID: "a", Type: "t", Queue: "q", State: store.StatePending, CreatedAt: time.Unix(0, 0).UTC()},
		"traced":        {ID: "a", Type: "t", Queue: "q", State: store.StatePending, TraceParent: testTraceParent},
		"errors":        withErrors(),
		"only dropped":  {ID: "a", Type: "t", Queue: "q", State: store.StateRetry, ErrorsDropped: 3},
	}
	for name, want := range cases {
		b := Encode(nil, 77, want, false)
		if len(b) != Size(77, want, false) {
			t.Errorf("%s: Size = %d, Encode wrote %d bytes", name, Size(77, want, false), len(b))
		}
		var got store.Task
		seq, err := Decode(b, &got)
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		if seq != 77 {
			t.Errorf("%s: seq = %d, want 77", name, seq)
		}
		if diff := cmp.Diff(want, &got); diff != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", name, diff)
		}
		if (want.Result == nil) != (got.Result == nil) {
			t.Errorf("%s: result nil-ness changed: want nil=%v", name, want.Result == nil)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good := Encode(nil, 1, full(), false)
	cases := map[string][]byte{
		"empty":       {},
		"version 2":   append([]byte{2}, good[1:]...),
		"truncated":   good[:len(good)-3],
		"trailing":    append(append([]byte(nil), good...), 0),
		"huge length": {Version, 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range cases {
		var got store.Task
		if _, err := Decode(b, &got); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	bad := Encode(nil, 1, &store.Task{ID: "a", State: store.StatePending}, false)
	// The state byte of this record follows 12 fields; find it by re-encoding
	// with another state and comparing.
	other := Encode(nil, 1, &store.Task{ID: "a", State: store.StateDead}, false)
	for i := range bad {
		if bad[i] != other[i] {
			bad[i] = 0
			break
		}
	}
	var got store.Task
	if _, err := Decode(bad, &got); !errors.Is(err, ErrCorrupt) {
		t.Errorf("state 0: err = %v, want ErrCorrupt", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(nil, 1, full(), false))
	f.Add(Encode(nil, 0, &store.Task{ID: "a", Type: "b", Queue: "c", State: store.StatePending}, false))
	f.Add([]byte{Version})
	f.Add(Encode(nil, 2, withErrors(), false))
	f.Add(Encode(nil, 3, withPayload([]byte(`{"to":"a@example.com"}`)), true))
	f.Add(Encode(nil, 4, withPayload(nil), true))
	f.Fuzz(func(t *testing.T, b []byte) {
		var task store.Task
		seq, err := Decode(b, &task)
		if err != nil {
			return
		}
		// A record that decodes must encode back to an equivalent record,
		// with its payload when it had one.
		inline := task.Payload != nil
		again := Encode(nil, seq, &task, inline)
		var task2 store.Task
		seq2, err := Decode(again, &task2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if seq2 != seq || !cmp.Equal(task, task2) || (task2.Payload != nil) != inline {
			t.Fatalf("round trip changed the record:\n%s", cmp.Diff(task, task2))
		}
		if !bytes.Equal(again, Encode(nil, seq2, &task2, inline)) {
			t.Fatalf("encoding is not stable")
		}
		if len(again) != Size(seq, &task, inline) {
			t.Fatalf("Size = %d, Encode wrote %d bytes", Size(seq, &task, inline), len(again))
		}
	})
}

// withPayload is withErrors() with payload p.
func withPayload(p []byte) *store.Task {
	t := withErrors()
	t.Payload = p
	return t
}

// TestPayloadFlag: a record written with its payload sets flag 32 and ends
// with it (after the error history); one without is byte for byte what it
// was before the flag, whatever t.Payload holds, and decodes to a nil
// Payload, also into a task that had one. An empty payload comes back
// empty, not nil.
func TestPayloadFlag(t *testing.T) {
	t.Parallel()
	payload := []byte(`{"to":"a@example.com"}`)
	plain := Encode(nil, 1, withErrors(), false)
	if got := Encode(nil, 1, withPayload(payload), false); !bytes.Equal(got, plain) {
		t.Errorf("a record without its payload depends on the payload:\n got %x\nwant %x", got, plain)
	}
	with := Encode(nil, 1, withPayload(payload), true)
	if !bytes.HasSuffix(with, append([]byte{byte(len(payload))}, payload...)) || len(with) != len(plain)+1+len(payload) {
		t.Errorf("the payload does not end the record: %x", with)
	}
	flagAt := bytes.Index(plain, []byte("host-1:123")) + len("host-1:123")
	if plain[flagAt]&32 != 0 || with[flagAt] != plain[flagAt]|32 {
		t.Errorf("flags byte %#x with the payload, %#x without: want flag 32 added", with[flagAt], plain[flagAt])
	}
	for name, p := range map[string][]byte{"payload": payload, "empty": {}, "nil": nil} {
		var got store.Task
		if _, err := Decode(Encode(nil, 1, withPayload(p), true), &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Payload == nil || !bytes.Equal(got.Payload, p) {
			t.Errorf("%s: payload = %q (nil %v), want %q", name, got.Payload, got.Payload == nil, p)
		}
		got.Payload = p
		if diff := cmp.Diff(withPayload(p), &got); diff != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", name, diff)
		}
		if _, err := Decode(plain, &got); err != nil || got.Payload != nil {
			t.Errorf("%s: a record without a payload decoded into a task with one: payload %q, err %v", name, got.Payload, err)
		}
	}
	// Flag 32 with no payload after the history.
	cut := bytes.Clone(plain)
	cut[flagAt] |= 32
	if _, err := Decode(cut, new(store.Task)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("flag 32 without a payload: err = %v, want ErrCorrupt", err)
	}
	// The flag above 32 is still refused.
	cut[flagAt] = plain[flagAt] | 64
	if _, err := Decode(cut, new(store.Task)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("flag 64: err = %v, want ErrCorrupt", err)
	}
}

// TestEncodeAllocs: Encode sizes its buffer once, and appending to a
// buffer with room does not allocate.
func TestEncodeAllocs(t *testing.T) { //nolint:paralleltest // it counts the process's allocations, so it runs alone
	if raceOn {
		t.Skip("the race detector's instrumentation allocates on its own")
	}
	task := withErrors()
	if n := testing.AllocsPerRun(100, func() { _ = Encode(nil, 77, task, false) }); n != 1 {
		t.Errorf("Encode(nil) makes %v allocations, want 1", n)
	}
	buf := make([]byte, 0, Size(77, task, false)+1)
	if n := testing.AllocsPerRun(100, func() { _ = Encode(buf[:1], 77, task, false) }); n != 0 {
		t.Errorf("Encode into a buffer with room makes %v allocations, want 0", n)
	}
}

// goldenFull is the version 1 record of full() with sequence number 77, as
// the embedded store writes it to disk. A change here is a disk format
// change: it needs a new Version (and reading the old one), never an edit
// of this string. The wire's task encoding (internal/wirebin) has golden
// bytes of its own; changing the record must not change those.
//
// Flag bit 4 (UniqueUntilSuccess) was added to version 1 without a new
// Version: a record without it is byte for byte what it was
// (goldenFullBefore, which must still decode), and a reader that predates
// the bit refuses a record that has it (unknown flags: ErrCorrupt).
const (
	goldenFull       = "014d1930314a303030303030303030303030303030303030303030300a656d61696c3a73656e6408637269746963616c123280c0e285e368acb4ff94ef84d7ea3107757365723a343280e0ba84bf038080f89492a527030685808080808080808001ace4d7cb88b5d5ea310a686f73742d313a31323307acb4ba89a9b3d5ea31acb4ba89a9b3d5ea31acdc90c3b0b3d5ea3100000b7b226f6b223a747275657d04626f6f6d540868616c6620776179"
	goldenFullBefore = "014d1930314a303030303030303030303030303030303030303030300a656d61696c3a73656e6408637269746963616c123280c0e285e368acb4ff94ef84d7ea3107757365723a343280e0ba84bf038080f89492a527030685808080808080808001ace4d7cb88b5d5ea310a686f73742d313a31323303acb4ba89a9b3d5ea31acb4ba89a9b3d5ea31acdc90c3b0b3d5ea3100000b7b226f6b223a747275657d04626f6f6d540868616c6620776179"
)

func TestGoldenBytes(t *testing.T) {
	t.Parallel()
	want, err := hex.DecodeString(goldenFull)
	if err != nil {
		t.Fatal(err)
	}
	if got := Encode(nil, 77, full(), false); !bytes.Equal(got, want) {
		t.Errorf("record encoding changed (a disk format change):\n got %x\nwant %x", got, want)
	}
	var got store.Task
	if seq, err := Decode(want, &got); err != nil || seq != 77 {
		t.Fatalf("Decode(golden) = %d, %v", seq, err)
	}
	if diff := cmp.Diff(full(), &got); diff != "" {
		t.Errorf("golden record (-want +got):\n%s", diff)
	}
	// The record as written before flag bit 4 existed.
	before, err := hex.DecodeString(goldenFullBefore)
	if err != nil {
		t.Fatal(err)
	}
	old := full()
	old.UniqueUntilSuccess = false
	if got := Encode(nil, 77, old, false); !bytes.Equal(got, before) {
		t.Errorf("a record without the new flag changed:\n got %x\nwant %x", got, before)
	}
	var gotBefore store.Task
	if _, err := Decode(before, &gotBefore); err != nil {
		t.Fatalf("Decode(golden before flag 4): %v", err)
	}
	if diff := cmp.Diff(old, &gotBefore); diff != "" {
		t.Errorf("golden record before flag 4 (-want +got):\n%s", diff)
	}
}

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestTraceParentFlag: a record with a trace context sets flag 8 and ends
// with it; one without is byte for byte what it was before the flag.
func TestTraceParentFlag(t *testing.T) {
	t.Parallel()
	plain := &store.Task{ID: "a", Type: "t", Queue: "q", State: store.StatePending}
	traced := *plain
	traced.TraceParent = testTraceParent
	a, b := Encode(nil, 1, plain, false), Encode(nil, 1, &traced, false)
	if !bytes.HasSuffix(b, append([]byte{55}, testTraceParent...)) {
		t.Errorf("traced record does not end with the trace context: %x", b)
	}
	if len(b) != len(a)+56 {
		t.Errorf("traced record is %d bytes, want %d", len(b), len(a)+56)
	}
}

// withErrors is full() with an error history and a trace context.
func withErrors() *store.Task {
	t := full()
	t.TraceParent = testTraceParent
	at := t.CreatedAt
	t.Errors = []store.AttemptError{
		{Attempt: 2, At: at.Add(time.Minute), Error: "boom", WorkerID: "host-1:123"},
		{Attempt: 3, At: at.Add(2 * time.Minute), Error: "lease expired on attempt 3 (worker lost)"},
	}
	t.ErrorsDropped = 1
	return t
}

// TestErrorsFlag: a record with an error history sets flag 16 and ends
// with it (after the trace context); one without is byte for byte what it
// was before the flag (goldenFull still holds), and a history flag with
// nothing in it is refused.
func TestErrorsFlag(t *testing.T) {
	t.Parallel()
	plain := withErrors()
	plain.Errors, plain.ErrorsDropped = nil, 0
	a, b := Encode(nil, 1, plain, false), Encode(nil, 1, withErrors(), false)
	if !bytes.HasPrefix(b[len(a):], []byte{1, 2}) || len(b) <= len(a)+2 {
		t.Errorf("the history does not follow the record: %x", b[len(a):])
	}
	var got store.Task
	if _, err := Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(withErrors(), &got); diff != "" {
		t.Errorf("history round trip (-want +got):\n%s", diff)
	}
	// Reading a record into a task that had a history clears it.
	if _, err := Decode(a, &got); err != nil || got.Errors != nil || got.ErrorsDropped != 0 {
		t.Errorf("Decode of a record without history into a task with one: errors %v, dropped %d, err %v", got.Errors, got.ErrorsDropped, err)
	}
	// Flag 16 with an empty history, and with a count over the bytes left.
	flag := bytes.Clone(a)
	flagAt := bytes.Index(a, []byte("host-1:123")) + len("host-1:123")
	if flag[flagAt]&16 != 0 {
		t.Fatalf("flags byte %#x at %d already has 16", flag[flagAt], flagAt)
	}
	flag[flagAt] |= 16
	for name, tail := range map[string][]byte{"empty history": {0, 0}, "count over the bytes left": {0, 50, 1}} {
		if _, err := Decode(append(bytes.Clone(flag), tail...), &got); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestAppendIsEncode: Append writes what Encode writes, into a buffer with
// room for it and after what the buffer holds.
func TestAppendIsEncode(t *testing.T) {
	t.Parallel()
	for _, task := range []*store.Task{full(), withErrors(), {ID: "a", State: store.StatePending}, withPayload([]byte("p"))} {
		for _, inline := range []bool{false, true} {
			want := Encode([]byte("x"), 9, task, inline)
			buf := make([]byte, 1, 1+Size(9, task, inline))
			buf[0] = 'x'
			got := Append(buf, 9, task, inline)
			if !bytes.Equal(got, want) {
				t.Errorf("Append = %x, want %x", got, want)
			}
			if &got[0] != &buf[0] {
				t.Errorf("Append into a buffer with room moved it")
			}
		}
	}
}

// TestDecodeKeepsEqualStrings: Decode keeps the type, queue and worker id
// that t has when the record's are equal (no new strings for the records
// of one queue), and replaces them otherwise.
func TestDecodeKeepsEqualStrings(t *testing.T) { //nolint:paralleltest // it counts the process's allocations, so it runs alone
	src := full()
	rec := Encode(nil, 3, src, false)
	typ, queue, worker := string([]byte(src.Type)), string([]byte(src.Queue)), string([]byte(src.WorkerID))
	other := store.Task{Type: "other", Queue: "other", WorkerID: "other"}
	if _, err := Decode(rec, &other); err != nil {
		t.Fatal(err)
	}
	if other.Type != src.Type || other.Queue != src.Queue || other.WorkerID != src.WorkerID {
		t.Errorf("Decode kept strings that differ from the record's: %q %q %q", other.Type, other.Queue, other.WorkerID)
	}
	if raceOn {
		return // the race detector's instrumentation allocates on its own
	}
	withStrings := func() int {
		return int(testing.AllocsPerRun(100, func() {
			got := store.Task{Type: typ, Queue: queue, WorkerID: worker}
			_, _ = Decode(rec, &got)
		}))
	}
	fresh := int(testing.AllocsPerRun(100, func() {
		var got store.Task
		_, _ = Decode(rec, &got)
	}))
	if n := withStrings(); n != fresh-3 {
		t.Errorf("Decode with equal strings makes %d allocations, from scratch %d: want 3 fewer", n, fresh)
	}
}
