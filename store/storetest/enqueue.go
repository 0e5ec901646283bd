package storetest

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kilnhq/kiln/store"
)

func testEnqueue(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("Fields", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		now := f.now()
		in := store.TaskInput{
			ID: newID(), Type: "email:send", Queue: "mail", Payload: []byte("hello\x00world"),
			Priority: 7, MaxRetries: 4, Timeout: 90 * time.Second, Deadline: now.Add(48 * time.Hour),
			RunAt: now.Add(time.Hour), UniqueKey: newName("key"), UniqueTTL: time.Minute, Retention: 2 * time.Hour,
		}
		items := f.enqueue(in)
		if diff := cmp.Diff(store.EnqueueItem{ID: in.ID, State: store.StateScheduled}, items[0], cmpOpts...); diff != "" {
			t.Errorf("Enqueue item (-want +got):\n%s", diff)
		}
		want := &store.Task{
			Namespace: f.ns, ID: in.ID, Type: in.Type, Queue: in.Queue, Payload: in.Payload,
			Priority: in.Priority, MaxRetries: in.MaxRetries, Timeout: in.Timeout, Deadline: in.Deadline,
			UniqueKey: in.UniqueKey, UniqueTTL: in.UniqueTTL, Retention: in.Retention,
			State: store.StateScheduled, CreatedAt: now, RunAt: in.RunAt,
		}
		if diff := cmp.Diff(want, f.get(in.ID), cmpOpts...); diff != "" {
			t.Errorf("Get after Enqueue (-want +got):\n%s", diff)
		}
		f.check()
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := store.TaskInput{ID: newID(), Type: "t"}
		items := f.enqueue(in)
		if diff := cmp.Diff(store.EnqueueItem{ID: in.ID, State: store.StatePending}, items[0], cmpOpts...); diff != "" {
			t.Errorf("Enqueue item (-want +got):\n%s", diff)
		}
		now := f.now()
		want := &store.Task{
			Namespace: f.ns, ID: in.ID, Type: "t", Queue: store.DefaultQueue,
			State: store.StatePending, CreatedAt: now, RunAt: now,
		}
		// Retention 0 may be stored as 0 or as the default it stands for.
		if diff := cmp.Diff(want, f.get(in.ID), append(cmpOpts, cmpopts.IgnoreFields(store.Task{}, "Retention"))...); diff != "" {
			t.Errorf("Get after Enqueue (-want +got):\n%s", diff)
		}
		if got := f.leaseOne(store.DefaultQueue); got.ID != in.ID {
			t.Errorf("Lease(default queue): got %s, want %s", got.ID, in.ID)
		}
	})

	t.Run("BatchKeepsOrderAndFailsAlone", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		good1, good2 := input("t", "q"), input("t", "q")
		bad := input("", "q")
		items := f.enqueue(good1, bad, good2)
		for i, want := range []string{good1.ID, "", good2.ID} {
			if want != "" && (items[i].Err != nil || items[i].ID != want) {
				t.Errorf("item %d: got (%q, %v), want (%q, nil)", i, items[i].ID, items[i].Err, want)
			}
		}
		if !errors.Is(items[1].Err, store.ErrInvalidName) {
			t.Errorf("item 1 (empty type): got error %v, want %v", items[1].Err, store.ErrInvalidName)
		}
		if got, want := sorted(ids(f.listAll(store.ListParams{}))), sorted([]string{good1.ID, good2.ID}); !cmp.Equal(got, want) {
			t.Errorf("List: got %v, want %v", got, want)
		}
		f.check()
	})

	t.Run("DuplicateID", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		first := input("first", "q")
		f.add(first)
		again := first
		again.Type = "second"
		if it := f.enqueue(again)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
			t.Errorf("Enqueue of an existing id: got error %v, want %v", it.Err, store.ErrTaskExists)
		}
		if got := f.mustGet(first.ID); got.Type != "first" {
			t.Errorf("after duplicate id: Type = %q, want %q (unchanged)", got.Type, "first")
		}
		// Within one batch, the second of two equal ids fails.
		twin := input("t", "q")
		items := f.enqueue(twin, twin)
		if items[0].Err != nil || !errors.Is(items[1].Err, store.ErrTaskExists) {
			t.Errorf("batch with one id twice: got errors (%v, %v), want (nil, %v)", items[0].Err, items[1].Err, store.ErrTaskExists)
		}
		if got := len(f.listAll(store.ListParams{})); got != 2 {
			t.Errorf("List: got %d tasks, want 2", got)
		}
		// Larger batches (a store may look at all their ids at once): an id
		// repeated among new ones, and an existing id among new ones.
		b1, b2, b3, b4 := input("b", "q"), input("b", "q"), input("b", "q"), input("b", "q")
		items = f.enqueue(b1, b2, b1, b3, b2, b4)
		for i, want := range []error{nil, nil, store.ErrTaskExists, nil, store.ErrTaskExists, nil} {
			if !errors.Is(items[i].Err, want) {
				t.Errorf("batch of new ids, two of them twice: item %d error %v, want %v", i, items[i].Err, want)
			}
		}
		c1, c2, c3 := input("c", "q"), input("c", "q"), input("c", "q")
		items = f.enqueue(c1, c2, first, c3, c3)
		for i, want := range []error{nil, nil, store.ErrTaskExists, nil, store.ErrTaskExists} {
			if !errors.Is(items[i].Err, want) {
				t.Errorf("batch with an existing id and one id twice: item %d error %v, want %v", i, items[i].Err, want)
			}
		}
		if got, want := sorted(ids(f.listAll(store.ListParams{}))), sorted([]string{first.ID, twin.ID, b1.ID, b2.ID, b3.ID, b4.ID, c1.ID, c2.ID, c3.ID}); !cmp.Equal(got, want) {
			t.Errorf("List: got %v, want %v", got, want)
		}
		if got := f.mustGet(first.ID); got.Type != "first" {
			t.Errorf("after a batch with its id: Type = %q, want %q (unchanged)", got.Type, "first")
		}
		f.check()
	})

	// NewID marks an id made for the call: the store may skip its disk
	// check, but the task is stored and runs like any other, a task alive
	// with the id is still refused, and so is a caller's later enqueue of
	// the id, live or finished.
	t.Run("NewID", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.NewID = true
		f.add(in)
		if it := f.enqueue(in)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
			t.Errorf("NewID enqueue of a live task's id: got error %v, want %v", it.Err, store.ErrTaskExists)
		}
		tk := f.leaseOne("q")
		if tk.ID != in.ID {
			t.Fatalf("leased %s, want %s", tk.ID, in.ID)
		}
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		again := in
		again.NewID = false
		if it := f.enqueue(again)[0]; !errors.Is(it.Err, store.ErrTaskExists) {
			t.Errorf("Enqueue of a finished task's id: got error %v, want %v", it.Err, store.ErrTaskExists)
		}
		if got := f.mustGet(in.ID); got.State != store.StateSucceeded {
			t.Errorf("after the refused enqueues: state %s, want succeeded", got.State)
		}
		f.check()
	})

	t.Run("PayloadAtCap", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		in := input("t", "q")
		in.Payload = bytes.Repeat([]byte{0xa5}, store.MaxPayloadBytesDefault)
		f.add(in)
		if got := f.mustGet(in.ID); !bytes.Equal(got.Payload, in.Payload) {
			t.Errorf("Get: payload of %d bytes differs from the %d enqueued", len(got.Payload), len(in.Payload))
		}
		// A result of exactly the cap is accepted too; one byte more is not.
		tk := f.leaseOne("q")
		errs := f.report(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: make([]byte, store.MaxPayloadBytesDefault+1)})
		if !errors.Is(errs[0], store.ErrPayloadTooLarge) {
			t.Errorf("Report with an oversized result: got %v, want %v", errs[0], store.ErrPayloadTooLarge)
		}
		f.wantState(tk.ID, store.StateActive)
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: in.Payload})
		if got := f.wantState(tk.ID, store.StateSucceeded); !bytes.Equal(got.Result, in.Payload) {
			t.Errorf("Get: result of %d bytes differs from the %d reported", len(got.Result), len(in.Payload))
		}
	})

	t.Run("BadOutcome", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		tk := f.makeTask(store.StateActive, store.TaskInput{})
		errs := f.report(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID})
		if !errors.Is(errs[0], store.ErrInvalidOption) {
			t.Errorf("Report with Kind 0: got %v, want %v", errs[0], store.ErrInvalidOption)
		}
		if diff := cmp.Diff(tk, f.mustGet(tk.ID), cmpOpts...); diff != "" {
			t.Errorf("task changed by a rejected outcome (-before +after):\n%s", diff)
		}
	})
}

// testUnique covers unique keys: one winner among concurrent enqueues, the
// window, and its end.
func testUnique(t *testing.T, h Harness) {
	t.Parallel()

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		const n = 50
		key := newName("key")
		ins := make([]store.TaskInput, n)
		items := make([]store.EnqueueItem, n)
		errs := make([]error, n)
		for i := range ins {
			ins[i] = input("t", "q")
			ins[i].UniqueKey, ins[i].UniqueTTL = key, time.Hour
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				res, err := f.s.Enqueue(f.ctx(), store.EnqueueParams{Namespace: f.ns, Tasks: ins[i : i+1]})
				if err == nil && len(res.Items) != 1 {
					errs[i] = errors.New("wrong number of items")
					return
				}
				errs[i] = err
				if err == nil {
					items[i] = res.Items[0]
				}
			})
		}
		close(start)
		wg.Wait()
		winner := ""
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Enqueue %d: %v", i, errs[i])
			}
			if items[i].Err == nil {
				if winner != "" {
					t.Fatalf("two enqueues with one unique key succeeded: %s and %s", winner, items[i].ID)
				}
				winner = ins[i].ID
			}
		}
		if winner == "" {
			t.Fatal("no enqueue succeeded")
		}
		for i := range n {
			if ins[i].ID == winner {
				continue
			}
			if !errors.Is(items[i].Err, store.ErrDuplicate) {
				t.Errorf("Enqueue %d: got error %v, want %v", i, items[i].Err, store.ErrDuplicate)
			}
			if items[i].ID != winner {
				t.Errorf("Enqueue %d: got ID %q with ErrDuplicate, want the winner's %q", i, items[i].ID, winner)
			}
		}
		if got := ids(f.listAll(store.ListParams{})); !cmp.Equal(got, []string{winner}) {
			t.Errorf("List: got %v, want [%s]", got, winner)
		}
		f.check()
	})

	t.Run("Window", func(t *testing.T) {
		t.Parallel()
		f := h.setup(t)
		key := newName("key")
		in := func() store.TaskInput {
			in := input("t", "q")
			in.UniqueKey, in.UniqueTTL = key, time.Hour
			return in
		}
		first := in()
		f.add(first)
		// The key is held for the whole window, even after the task is done.
		tk := f.leaseOne("q")
		f.mustReport(store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded})
		f.clock.Advance(time.Hour - time.Second)
		f.sweep()
		if it := f.enqueue(in())[0]; !errors.Is(it.Err, store.ErrDuplicate) || it.ID != first.ID {
			t.Errorf("Enqueue 1s before the window ends: got (%q, %v), want (%q, %v)", it.ID, it.Err, first.ID, store.ErrDuplicate)
		}
		f.clock.Advance(time.Second)
		f.sweep()
		second := in()
		if it := f.enqueue(second)[0]; it.Err != nil || it.ID != second.ID {
			t.Errorf("Enqueue after the window: got (%q, %v), want (%q, nil)", it.ID, it.Err, second.ID)
		}
		// One batch: the second use of a fresh key is a duplicate of the first.
		key2 := newName("key")
		a, b := input("t", "q"), input("t", "q")
		a.UniqueKey, a.UniqueTTL = key2, time.Minute
		b.UniqueKey, b.UniqueTTL = key2, time.Minute
		items := f.enqueue(a, b)
		if items[0].Err != nil || !errors.Is(items[1].Err, store.ErrDuplicate) || items[1].ID != a.ID {
			t.Errorf("batch with one key twice: got (%v), (%q, %v); want (nil), (%q, %v)", items[0].Err, items[1].ID, items[1].Err, a.ID, store.ErrDuplicate)
		}
		f.check()
	})
}

// badInputs lists invalid task inputs, each with the sentinel it must give.
func badInputs(now time.Time) []struct {
	name string
	mod  func(*store.TaskInput)
	want error
} {
	long := strings.Repeat("a", store.MaxNameLen+1)
	return []struct {
		name string
		mod  func(*store.TaskInput)
		want error
	}{
		{"EmptyID", func(in *store.TaskInput) { in.ID = "" }, store.ErrInvalidName},
		{"IDWithSpace", func(in *store.TaskInput) { in.ID = "a b" }, store.ErrInvalidName},
		{"IDDot", func(in *store.TaskInput) { in.ID = "." }, store.ErrInvalidName},
		{"IDDotDot", func(in *store.TaskInput) { in.ID = ".." }, store.ErrInvalidName},
		{"IDSlash", func(in *store.TaskInput) { in.ID = "a/b" }, store.ErrInvalidName},
		{"IDTooLong", func(in *store.TaskInput) { in.ID = long }, store.ErrInvalidName},
		{"EmptyType", func(in *store.TaskInput) { in.Type = "" }, store.ErrInvalidName},
		{"TypeNonASCII", func(in *store.TaskInput) { in.Type = "émail" }, store.ErrInvalidName},
		{"TypeTooLong", func(in *store.TaskInput) { in.Type = long }, store.ErrInvalidName},
		{"QueueWithSpace", func(in *store.TaskInput) { in.Queue = "my queue" }, store.ErrInvalidName},
		{"QueueTooLong", func(in *store.TaskInput) { in.Queue = long }, store.ErrInvalidName},
		{"PayloadOverCap", func(in *store.TaskInput) { in.Payload = make([]byte, store.MaxPayloadBytesDefault+1) }, store.ErrPayloadTooLarge},
		{"NegativePriority", func(in *store.TaskInput) { in.Priority = -1 }, store.ErrInvalidOption},
		{"PriorityTooHigh", func(in *store.TaskInput) { in.Priority = store.MaxPriority + 1 }, store.ErrInvalidOption},
		{"NegativeRetries", func(in *store.TaskInput) { in.MaxRetries = -1 }, store.ErrInvalidOption},
		{"AbsurdRetries", func(in *store.TaskInput) { in.MaxRetries = store.MaxRetriesLimitDefault + 1 }, store.ErrInvalidOption},
		{"NegativeTimeout", func(in *store.TaskInput) { in.Timeout = -time.Second }, store.ErrInvalidOption},
		{"AbsurdTimeout", func(in *store.TaskInput) { in.Timeout = store.MaxTimeoutDefault + time.Second }, store.ErrInvalidOption},
		{"RunAtTooFar", func(in *store.TaskInput) { in.RunAt = now.Add(store.MaxScheduleAheadDefault + time.Second) }, store.ErrInvalidOption},
		{"DeadlinePast", func(in *store.TaskInput) { in.Deadline = now.Add(-time.Second) }, store.ErrInvalidOption},
		{"DeadlineNow", func(in *store.TaskInput) { in.Deadline = now }, store.ErrInvalidOption},
		{"DeadlineTooFar", func(in *store.TaskInput) { in.Deadline = now.Add(store.MaxScheduleAheadDefault + time.Second) }, store.ErrInvalidOption},
		{"UniqueKeyWithoutTTL", func(in *store.TaskInput) { in.UniqueKey = "k" }, store.ErrInvalidOption},
		{"UniqueTTLTooShort", func(in *store.TaskInput) { in.UniqueKey, in.UniqueTTL = "k", store.MinUniqueTTL-1 }, store.ErrInvalidOption},
		{"UniqueTTLTooLong", func(in *store.TaskInput) { in.UniqueKey, in.UniqueTTL = "k", store.MaxUniqueTTL+1 }, store.ErrInvalidOption},
		{"UniqueTTLWithoutKey", func(in *store.TaskInput) { in.UniqueTTL = time.Minute }, store.ErrInvalidOption},
		{"UniqueUntilSuccessWithoutKey", func(in *store.TaskInput) { in.UniqueUntilSuccess = true }, store.ErrInvalidOption},
		{"UniqueKeyTooLong", func(in *store.TaskInput) { in.UniqueKey, in.UniqueTTL = long, time.Minute }, store.ErrInvalidName},
		{"NegativeRetention", func(in *store.TaskInput) { in.Retention = -time.Second }, store.ErrInvalidOption},
		{"AbsurdRetention", func(in *store.TaskInput) { in.Retention = store.MaxRetentionDefault + time.Second }, store.ErrInvalidOption},
	}
}

// testBadInput enqueues each invalid input alone into its own namespace of a
// shared store and requires its sentinel and an unchanged store.
func testBadInput(t *testing.T, h Harness) {
	t.Parallel()
	base := h.setup(t)
	for _, tc := range badInputs(base.now()) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.in(t, newName("ns"))
			in := input("t", "q")
			tc.mod(&in)
			if err := in.Validate(store.Limits{}, f.now()); !errors.Is(err, tc.want) {
				t.Fatalf("suite bug: TaskInput.Validate = %v, want %v", err, tc.want)
			}
			it := f.enqueue(in)[0]
			if !errors.Is(it.Err, tc.want) {
				t.Errorf("Enqueue: got error %v, want %v", it.Err, tc.want)
			}
			f.wantEmpty()
		})
	}

	t.Run("LeaseParams", func(t *testing.T) {
		t.Parallel()
		f := base.in(t, newName("ns"))
		f.addN(1, "t", "q")
		valid := store.LeaseParams{Namespace: f.ns, Queues: []string{"q"}, Max: 1, Duration: time.Minute}
		for _, tc := range []struct {
			name string
			mod  func(*store.LeaseParams)
			want error
		}{
			{"EmptyNamespace", func(p *store.LeaseParams) { p.Namespace = "" }, store.ErrInvalidName},
			{"BadNamespace", func(p *store.LeaseParams) { p.Namespace = "a b" }, store.ErrInvalidName},
			{"NoQueues", func(p *store.LeaseParams) { p.Queues = nil }, store.ErrInvalidOption},
			{"BadQueue", func(p *store.LeaseParams) { p.Queues = []string{"q", "bad queue"} }, store.ErrInvalidName},
			{"WeightsCount", func(p *store.LeaseParams) { p.Weights = []int{1, 2} }, store.ErrInvalidOption},
			{"ZeroWeight", func(p *store.LeaseParams) { p.Weights = []int{0} }, store.ErrInvalidOption},
			{"BadType", func(p *store.LeaseParams) { p.Types = []string{"bad type"} }, store.ErrInvalidName},
			{"ZeroMax", func(p *store.LeaseParams) { p.Max = 0 }, store.ErrInvalidOption},
			{"MaxTooLarge", func(p *store.LeaseParams) { p.Max = store.MaxBatch + 1 }, store.ErrInvalidOption},
			{"ZeroDuration", func(p *store.LeaseParams) { p.Duration = 0 }, store.ErrInvalidOption},
			{"NegativeWait", func(p *store.LeaseParams) { p.Wait = -time.Second }, store.ErrInvalidOption},
		} {
			p := valid
			p.Queues = append([]string(nil), valid.Queues...)
			tc.mod(&p)
			res, err := f.s.Lease(f.ctx(), p)
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: Lease: got error %v, want %v", tc.name, err, tc.want)
			}
			if len(res.Tasks) != 0 {
				t.Errorf("%s: Lease: got %d tasks with invalid params, want none", tc.name, len(res.Tasks))
			}
		}
		if got := f.lease(valid); len(got) != 1 {
			t.Errorf("Lease with valid params after the invalid ones: got %d tasks, want 1", len(got))
		}
	})
}

// testNotFound names ids that do not exist in every call that takes ids.
func testNotFound(t *testing.T, h Harness) {
	t.Parallel()
	f := h.setup(t)
	known := f.addN(1, "t", "q")[0]
	unknown := newID()

	if got := f.gets(unknown, known); got[0] != nil || got[1] == nil || got[1].ID != known {
		t.Errorf("Get(unknown, known): got (%v, %v), want (nil, %s)", got[0], got[1], known)
	}
	for _, tc := range []struct {
		name string
		fn   func(...string) []store.AdminItem
	}{{"Cancel", f.cancel}, {"Retry", f.retry}, {"Delete", f.del}} {
		if it := tc.fn(unknown)[0]; !errors.Is(it.Err, store.ErrNotFound) {
			t.Errorf("%s(unknown): got error %v, want %v", tc.name, it.Err, store.ErrNotFound)
		}
	}
	if it := f.extend(time.Minute, store.ExtendLease{LeaseRef: store.LeaseRef{ID: unknown, LeaseID: 1}})[0]; !errors.Is(it.Err, store.ErrNotFound) {
		t.Errorf("Extend(unknown): got error %v, want %v", it.Err, store.ErrNotFound)
	}
	if err := f.report(store.Outcome{ID: unknown, LeaseID: 1, Kind: store.OutcomeSucceeded})[0]; !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Report(unknown): got error %v, want %v", err, store.ErrNotFound)
	}
	// Batches answer per item, in order.
	items := f.cancel(unknown, known)
	if !errors.Is(items[0].Err, store.ErrNotFound) || items[1].Err != nil || items[1].State != store.StateCancelled {
		t.Errorf("Cancel(unknown, known): got (%v), (%v, %s); want (%v), (nil, cancelled)", items[0].Err, items[1].Err, items[1].State, store.ErrNotFound)
	}
	f.check()
}
