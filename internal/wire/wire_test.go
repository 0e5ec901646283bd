package wire_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestTaskRoundTrip(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 3, 14, 15, 9, 26, 535897932, time.UTC)
	in := &store.Task{
		Namespace: "acme", ID: "t1", Type: "email:send", Queue: "q", Payload: []byte{0, 1, 0xff},
		Priority: 3, MaxRetries: 2, Timeout: 1500 * time.Millisecond, Deadline: now.Add(time.Hour),
		UniqueKey: "k", UniqueTTL: time.Minute, Retention: time.Hour, State: store.StateActive,
		Attempt: 1, LeaseID: 1<<63 + 5, LeaseExpiresAt: now.Add(time.Minute), WorkerID: "w",
		CancelRequested: true, CreatedAt: now, RunAt: now, StartedAt: now,
		Result: []byte("r"), LastError: "boom", ProgressPercent: 40, ProgressMessage: "half",
	}
	b, err := json.Marshal(wire.FromTask(in))
	if err != nil {
		t.Fatal(err)
	}
	var w wire.Task
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	got, err := w.ToTask("acme")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s\n%s", diff, b)
	}
}

func TestErrorCatalogue(t *testing.T) {
	t.Parallel()
	for _, c := range wire.Codes {
		if c.Sentinel == nil {
			continue
		}
		err := fmt.Errorf("embedded: op: %w", c.Sentinel)
		status, obj := wire.ErrorFor(err)
		if status != c.Status || obj.Code != c.Code {
			t.Errorf("ErrorFor(%v) = %d %q, want %d %q", err, status, obj.Code, c.Status, c.Code)
		}
		back := wire.Err(obj.Code, obj.Message)
		if !errors.Is(back, c.Sentinel) {
			t.Errorf("Err(%q) does not match %v", c.Code, c.Sentinel)
		}
		if wire.Status(c.Code) != c.Status {
			t.Errorf("Status(%q) = %d, want %d", c.Code, wire.Status(c.Code), c.Status)
		}
	}
	status, obj := wire.ErrorFor(errors.New("open /secret/path: denied"))
	if status != http.StatusInternalServerError || obj.Message != "internal error" {
		t.Errorf("unknown error = %d %+v, want 500 without the text", status, obj)
	}
}

func TestValidationErrorRoundTrip(t *testing.T) {
	t.Parallel()
	in := store.TaskInput{ID: "x", Type: "t", Priority: 42}
	verr := in.Validate(store.Limits{}, time.Now())
	_, obj := wire.ErrorFor(verr)
	if obj.Code != wire.CodeInvalidOption || obj.Field != "priority" {
		t.Fatalf("ErrorFor = %+v", obj)
	}
	back := obj.Err()
	var ve *store.ValidationError
	if !errors.As(back, &ve) || !errors.Is(back, store.ErrInvalidOption) {
		t.Fatalf("Err() = %#v, want a ValidationError matching ErrInvalidOption", back)
	}
	if back.Error() != verr.Error() {
		t.Errorf("text = %q, want %q", back.Error(), verr.Error())
	}
}

func TestProof(t *testing.T) {
	t.Parallel()
	// HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
	const want = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	got, err := wire.Proof("key", "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==")
	if err != nil || got != want {
		t.Errorf("Proof = %q, %v; want %q", got, err, want)
	}
	if _, err := wire.Proof("key", "%%%"); err == nil {
		t.Error("Proof accepted a challenge that is not base64")
	}
}

func TestOptionsFromInput(t *testing.T) {
	t.Parallel()
	req := wire.OptionsFromInput(store.TaskInput{ID: "a", Type: "t"})
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"t","options":{"id":"a","max_retries":0,"timeout_ms":0}}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// FuzzDurField: a *_ms value is either refused as invalid_option naming
// its field or turned into exactly that many milliseconds; it never wraps
// around (2^62 ms once became 0).
func FuzzDurField(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 1000, 1 << 62, 1<<62 + 1000, math.MaxInt64, math.MinInt64, wire.MaxMS, -wire.MaxMS, wire.MaxMS + 1} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, ms int64) {
		d, err := wire.DurField("timeout_ms", ms)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeInvalidOption || we.Field != "timeout_ms" || !errors.Is(err, store.ErrInvalidOption) {
				t.Fatalf("DurField(%d) = %v, want an invalid_option error naming timeout_ms", ms, err)
			}
			if ms >= -wire.MaxMS && ms <= wire.MaxMS {
				t.Fatalf("DurField(%d) refused a value a duration holds: %v", ms, err)
			}
			return
		}
		if d.Milliseconds() != ms || d%time.Millisecond != 0 {
			t.Fatalf("DurField(%d) = %v (%d ms), want exactly %d ms", ms, d, d.Milliseconds(), ms)
		}
		if got := wire.Dur(ms); got != d {
			t.Fatalf("Dur(%d) = %v, DurField %v", ms, got, d)
		}
	})
}

// TestDurSaturates: Dur never wraps around; beyond ±MaxMS it is the
// largest (smallest) duration.
func TestDurSaturates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ms   int64
		want time.Duration
	}{
		{1 << 62, math.MaxInt64}, {1<<62 + 1000, math.MaxInt64}, {math.MaxInt64, math.MaxInt64},
		{math.MinInt64, math.MinInt64}, {-(1 << 62), math.MinInt64}, {-1, -time.Millisecond},
		{wire.MaxMS, time.Duration(wire.MaxMS) * time.Millisecond},
	} {
		if got := wire.Dur(tc.ms); got != tc.want {
			t.Errorf("Dur(%d) = %v, want %v", tc.ms, got, tc.want)
		}
	}
}

// TestStorageFull checks that a full disk answers 507 storage_full with a
// fixed message (the store's names its data folder) that a client maps back
// to store.ErrStorageFull.
func TestStorageFull(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("embedded: enqueue: %w: the disk of /var/lib/kiln is full", store.ErrStorageFull)
	status, obj := wire.ErrorFor(err)
	if status != http.StatusInsufficientStorage || obj.Code != wire.CodeStorageFull || obj.Message != wire.StorageFullMessage {
		t.Fatalf("ErrorFor(%v) = %d %+v", err, status, obj)
	}
	if !errors.Is(obj.Err(), store.ErrStorageFull) {
		t.Fatalf("%v does not match store.ErrStorageFull on the client side", obj.Err())
	}
}
