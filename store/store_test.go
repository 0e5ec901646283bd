package store_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStateText(t *testing.T) {
	t.Parallel()
	for _, s := range store.AllStates {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatalf("%d: MarshalText: %v", s, err)
		}
		var got store.State
		if err := got.UnmarshalText(b); err != nil || got != s {
			t.Errorf("round trip of %s: got %v, %v", s, got, err)
		}
	}
	if len(store.AllStates) != store.NumStates {
		t.Errorf("AllStates has %d states, NumStates is %d", len(store.AllStates), store.NumStates)
	}
	var s store.State
	if err := s.UnmarshalText([]byte("running")); !errors.Is(err, store.ErrInvalidOption) {
		t.Errorf("UnmarshalText(running): got %v, want ErrInvalidOption", err)
	}
	if _, err := store.State(0).MarshalText(); err == nil {
		t.Error("MarshalText of the zero state: got nil error")
	}
	for _, s := range []store.State{store.StateSucceeded, store.StateDead, store.StateCancelled} {
		if !s.Terminal() {
			t.Errorf("%s.Terminal() = false", s)
		}
	}
	for _, s := range []store.State{store.StateScheduled, store.StatePending, store.StateActive, store.StateRetry} {
		if s.Terminal() {
			t.Errorf("%s.Terminal() = true", s)
		}
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	good := []string{"a", "email:send", "Mailer::Deliver", "q-1.high_prio", strings.Repeat("x", store.MaxNameLen)}
	bad := []string{"", ".", "..", "a/b", "a b", "a\x00", "a\n", "é", "a\u202e", strings.Repeat("x", store.MaxNameLen+1), "\xff"}
	for _, s := range good {
		if !store.ValidName(s) {
			t.Errorf("ValidName(%q) = false, want true", s)
		}
	}
	for _, s := range bad {
		if store.ValidName(s) {
			t.Errorf("ValidName(%q) = true, want false", s)
		}
		if err := store.CheckName("type", s); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalidName", s, err)
		}
	}
}

func TestTaskInputValidate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	ok := store.TaskInput{ID: "id1", Type: "t", Queue: "q", Payload: make([]byte, store.MaxPayloadBytesDefault)}
	if err := ok.Validate(store.Limits{}, now); err != nil {
		t.Fatalf("valid input: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(*store.TaskInput)
		field string
		want  error
	}{
		{"no id", func(in *store.TaskInput) { in.ID = "" }, "id", store.ErrInvalidName},
		{"bad type", func(in *store.TaskInput) { in.Type = "a b" }, "type", store.ErrInvalidName},
		{"bad queue", func(in *store.TaskInput) { in.Queue = "../q" }, "queue", store.ErrInvalidName},
		{"payload over cap", func(in *store.TaskInput) { in.Payload = make([]byte, store.MaxPayloadBytesDefault+1) }, "payload", store.ErrPayloadTooLarge},
		{"negative priority", func(in *store.TaskInput) { in.Priority = -1 }, "priority", store.ErrInvalidOption},
		{"priority too high", func(in *store.TaskInput) { in.Priority = store.MaxPriority + 1 }, "priority", store.ErrInvalidOption},
		{"negative retries", func(in *store.TaskInput) { in.MaxRetries = -1 }, "max_retries", store.ErrInvalidOption},
		{"absurd retries", func(in *store.TaskInput) { in.MaxRetries = 1 << 30 }, "max_retries", store.ErrInvalidOption},
		{"negative timeout", func(in *store.TaskInput) { in.Timeout = -time.Second }, "timeout", store.ErrInvalidOption},
		{"absurd timeout", func(in *store.TaskInput) { in.Timeout = 1000 * time.Hour }, "timeout", store.ErrInvalidOption},
		{"deadline past", func(in *store.TaskInput) { in.Deadline = now.Add(-time.Second) }, "deadline", store.ErrInvalidOption},
		{"run at far future", func(in *store.TaskInput) { in.RunAt = now.AddDate(5, 0, 0) }, "run_at", store.ErrInvalidOption},
		{"unique ttl zero", func(in *store.TaskInput) { in.UniqueKey = "k" }, "unique_ttl", store.ErrInvalidOption},
		{"unique ttl huge", func(in *store.TaskInput) { in.UniqueKey, in.UniqueTTL = "k", 365*24*time.Hour }, "unique_ttl", store.ErrInvalidOption},
		{"ttl without key", func(in *store.TaskInput) { in.UniqueTTL = time.Minute }, "unique_ttl", store.ErrInvalidOption},
		{"negative retention", func(in *store.TaskInput) { in.Retention = -time.Second }, "retention", store.ErrInvalidOption},
	}
	for _, tc := range cases {
		in := ok
		tc.edit(&in)
		err := in.Validate(store.Limits{}, now)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			continue
		}
		var ve *store.ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: got %v, want a ValidationError on field %q", tc.name, err, tc.field)
		}
	}
	// Every problem is reported at once.
	in := store.TaskInput{Priority: -1, Timeout: -1}
	err := in.Validate(store.Limits{}, now)
	for _, want := range []string{"id", "type", "priority", "timeout"} {
		if !strings.Contains(err.Error(), want+":") {
			t.Errorf("joined error %q does not name %s", err, want)
		}
	}
}

func TestOrderQueues(t *testing.T) {
	t.Parallel()
	qs := []string{"a", "b", "c"}
	if got := store.OrderQueues(qs, nil, nil); strings.Join(got, ",") != "a,b,c" {
		t.Errorf("strict order: got %v", got)
	}
	r := rand.New(rand.NewPCG(1, 2))
	first := map[string]int{}
	const n = 6000
	for range n {
		got := store.OrderQueues(qs, []int{3, 2, 1}, r)
		if len(got) != 3 {
			t.Fatalf("got %v, want a permutation of %v", got, qs)
		}
		seen := map[string]bool{}
		for _, q := range got {
			seen[q] = true
		}
		if len(seen) != 3 {
			t.Fatalf("got %v, want a permutation of %v", got, qs)
		}
		first[got[0]]++
	}
	// Expected shares 1/2, 1/3, 1/6; the band is many standard deviations wide.
	for q, want := range map[string]float64{"a": 0.5, "b": 1.0 / 3, "c": 1.0 / 6} {
		if share := float64(first[q]) / n; share < want-0.05 || share > want+0.05 {
			t.Errorf("queue %s first in %.3f of draws, want about %.3f", q, share, want)
		}
	}
}

func TestLeaseParamsValidate(t *testing.T) {
	t.Parallel()
	ok := store.LeaseParams{Namespace: "ns", Queues: []string{"q"}, Max: 1, Duration: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	bad := []func(*store.LeaseParams){
		func(p *store.LeaseParams) { p.Namespace = "" },
		func(p *store.LeaseParams) { p.Queues = nil },
		func(p *store.LeaseParams) { p.Queues = []string{"a b"} },
		func(p *store.LeaseParams) { p.Weights = []int{1, 2} },
		func(p *store.LeaseParams) { p.Weights = []int{0} },
		func(p *store.LeaseParams) { p.Types = []string{""} },
		func(p *store.LeaseParams) { p.Max = 0 },
		func(p *store.LeaseParams) { p.Max = store.MaxBatch + 1 },
		func(p *store.LeaseParams) { p.Duration = 0 },
		func(p *store.LeaseParams) { p.Wait = -1 },
	}
	for i, edit := range bad {
		p := ok
		edit(&p)
		if err := p.Validate(); !errors.Is(err, store.ErrInvalidOption) && !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("case %d: got %v, want an invalid option or name", i, err)
		}
	}
}

// FuzzTaskInputValidate checks that validation never panics and that what
// it accepts has valid names and a payload within the cap.
func FuzzTaskInputValidate(f *testing.F) {
	f.Add("id", "type", "queue", []byte("{}"), 0, 3, int64(time.Second), int64(0), "", int64(0))
	f.Add("", "a b", "..", []byte(nil), -1, -1, int64(-1), int64(1<<62), "k", int64(1))
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, id, typ, queue string, payload []byte, prio, retries int, timeout, delay int64, ukey string, uttl int64) {
		in := store.TaskInput{
			ID: id, Type: typ, Queue: queue, Payload: payload, Priority: prio, MaxRetries: retries,
			Timeout: time.Duration(timeout), RunAt: now.Add(time.Duration(delay)), UniqueKey: ukey, UniqueTTL: time.Duration(uttl),
		}
		if err := in.Validate(store.Limits{}, now); err != nil {
			return
		}
		if !store.ValidName(in.ID) || !store.ValidName(in.Type) || (in.Queue != "" && !store.ValidName(in.Queue)) {
			t.Fatalf("accepted invalid names: %+v", in)
		}
		if in.Priority < 0 || in.Priority > store.MaxPriority || in.MaxRetries < 0 || in.Timeout < 0 {
			t.Fatalf("accepted out-of-range options: %+v", in)
		}
	})
}
