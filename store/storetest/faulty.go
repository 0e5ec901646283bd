package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/kilnhq/kiln/store"
)

// Methods lists the method names FaultyStore can fail, as they are spelled in
// store.Store.
var Methods = []string{
	"Enqueue", "Lease", "Extend", "Report", "WaitCancels",
	"Get", "List", "Stats",
	"Cancel", "Retry", "Delete", "SetQueuePaused",
	"Sweep", "Ping", "Close",
}

// FaultyStore wraps a store.Store and makes chosen methods fail, so that tests
// can prove that nothing is lost when the store errors. It is safe for
// concurrent use. Methods are named as in store.Store ("Report", "Lease",
// ...); naming any other method panics, as a programmer error.
//
// An injected failure either happens before the call (the wrapped store is not
// called, nothing changes) or after it (the wrapped store does the work, but
// the caller sees only the error, as when a reply is lost on the network).
// Close always closes the wrapped store, then returns an injected error if
// there is one.
type FaultyStore struct {
	s store.Store

	mu    sync.Mutex
	next  map[string][]fault // one-shot faults, in order
	all   map[string]error   // standing faults
	calls map[string]int
}

type fault struct {
	err   error
	after bool
}

var _ store.Store = (*FaultyStore)(nil)

// Faulty returns a FaultyStore around s that fails nothing until told to.
func Faulty(s store.Store) *FaultyStore {
	return &FaultyStore{
		s:     s,
		next:  make(map[string][]fault),
		all:   make(map[string]error),
		calls: make(map[string]int),
	}
}

func checkMethod(method string) {
	if !slices.Contains(Methods, method) {
		panic(fmt.Sprintf("storetest: FaultyStore has no method %q", method))
	}
}

// FailNext makes the next call of method return err without calling the
// wrapped store. Calls queue up: FailNext twice fails the next two calls.
func (f *FaultyStore) FailNext(method string, err error) {
	checkMethod(method)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next[method] = append(f.next[method], fault{err: err})
}

// FailNextAfter makes the next call of method reach the wrapped store and then
// return err instead of the result: the change is made but not acknowledged.
func (f *FaultyStore) FailNextAfter(method string, err error) {
	checkMethod(method)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next[method] = append(f.next[method], fault{err: err, after: true})
}

// FailAll makes every call of method return err, without calling the wrapped
// store, until Reset or Heal. One-shot faults queued by FailNext go first.
func (f *FaultyStore) FailAll(method string, err error) {
	checkMethod(method)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all[method] = err
}

// Heal removes every fault of method.
func (f *FaultyStore) Heal(method string) {
	checkMethod(method)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.next, method)
	delete(f.all, method)
}

// Reset removes every fault of every method. Call counts are kept.
func (f *FaultyStore) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.next)
	clear(f.all)
}

// Calls returns how many times method was called, failed calls included.
func (f *FaultyStore) Calls(method string) int {
	checkMethod(method)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// Unwrap returns the wrapped store.
func (f *FaultyStore) Unwrap() store.Store { return f.s }

// take counts a call of method and returns the fault to apply, if any.
func (f *FaultyStore) take(method string) (fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[method]++
	if q := f.next[method]; len(q) > 0 {
		ft := q[0]
		if len(q) == 1 {
			delete(f.next, method)
		} else {
			f.next[method] = q[1:]
		}
		return ft, true
	}
	if err, ok := f.all[method]; ok {
		return fault{err: err}, true
	}
	return fault{}, false
}

// call runs fn under the fault plan of method.
func call[R any](f *FaultyStore, method string, fn func() (R, error)) (R, error) {
	ft, ok := f.take(method)
	if !ok {
		return fn()
	}
	var zero R
	if ft.after {
		_, _ = fn()
	}
	return zero, ft.err
}

// Enqueue calls the wrapped store's Enqueue unless a fault says otherwise.
func (f *FaultyStore) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	return call(f, "Enqueue", func() (store.EnqueueResult, error) { return f.s.Enqueue(ctx, p) })
}

// Lease calls the wrapped store's Lease unless a fault says otherwise. With
// FailNextAfter the leased tasks are lost to the caller and come back only
// when their leases expire.
func (f *FaultyStore) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	return call(f, "Lease", func() (store.LeaseResult, error) { return f.s.Lease(ctx, p) })
}

// Extend calls the wrapped store's Extend unless a fault says otherwise.
func (f *FaultyStore) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	return call(f, "Extend", func() (store.ExtendResult, error) { return f.s.Extend(ctx, p) })
}

// Report calls the wrapped store's Report unless a fault says otherwise.
func (f *FaultyStore) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	return call(f, "Report", func() (store.ReportResult, error) { return f.s.Report(ctx, p) })
}

// WaitCancels calls the wrapped store's WaitCancels unless a fault says
// otherwise.
func (f *FaultyStore) WaitCancels(ctx context.Context, p store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	return call(f, "WaitCancels", func() (store.WaitCancelsResult, error) { return f.s.WaitCancels(ctx, p) })
}

// Get calls the wrapped store's Get unless a fault says otherwise.
func (f *FaultyStore) Get(ctx context.Context, p store.GetParams) (store.GetResult, error) {
	return call(f, "Get", func() (store.GetResult, error) { return f.s.Get(ctx, p) })
}

// List calls the wrapped store's List unless a fault says otherwise.
func (f *FaultyStore) List(ctx context.Context, p store.ListParams) (store.ListResult, error) {
	return call(f, "List", func() (store.ListResult, error) { return f.s.List(ctx, p) })
}

// Stats calls the wrapped store's Stats unless a fault says otherwise.
func (f *FaultyStore) Stats(ctx context.Context, p store.StatsParams) (store.StatsResult, error) {
	return call(f, "Stats", func() (store.StatsResult, error) { return f.s.Stats(ctx, p) })
}

// Cancel calls the wrapped store's Cancel unless a fault says otherwise.
func (f *FaultyStore) Cancel(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return call(f, "Cancel", func() (store.AdminResult, error) { return f.s.Cancel(ctx, p) })
}

// Retry calls the wrapped store's Retry unless a fault says otherwise.
func (f *FaultyStore) Retry(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return call(f, "Retry", func() (store.AdminResult, error) { return f.s.Retry(ctx, p) })
}

// Delete calls the wrapped store's Delete unless a fault says otherwise.
func (f *FaultyStore) Delete(ctx context.Context, p store.IDsParams) (store.AdminResult, error) {
	return call(f, "Delete", func() (store.AdminResult, error) { return f.s.Delete(ctx, p) })
}

// SetQueuePaused calls the wrapped store's SetQueuePaused unless a fault says
// otherwise.
func (f *FaultyStore) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	_, err := call(f, "SetQueuePaused", func() (struct{}, error) { return struct{}{}, f.s.SetQueuePaused(ctx, p) })
	return err
}

// Sweep calls the wrapped store's Sweep unless a fault says otherwise.
func (f *FaultyStore) Sweep(ctx context.Context, p store.SweepParams) (store.SweepResult, error) {
	return call(f, "Sweep", func() (store.SweepResult, error) { return f.s.Sweep(ctx, p) })
}

// Ping calls the wrapped store's Ping unless a fault says otherwise.
func (f *FaultyStore) Ping(ctx context.Context) error {
	_, err := call(f, "Ping", func() (struct{}, error) { return struct{}{}, f.s.Ping(ctx) })
	return err
}

// Close closes the wrapped store and returns its error, or the injected one.
func (f *FaultyStore) Close() error {
	ft, ok := f.take("Close")
	err := f.s.Close()
	if ok {
		return ft.err
	}
	return err
}
