package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/kilnhq/kiln/store"
)

// maxLeases bounds the leases an instrumented store remembers between a
// lease and its report (for the labels and the duration of outcomes).
const maxLeases = 1 << 16

// Store returns s with its calls counted in the set: enqueued tasks,
// started attempts with their wait, outcomes (succeeded, failed, retried,
// dead) with the time from lease to report as their handler duration,
// lease expiries found by sweeps and failed calls. The server uses it,
// since remote workers report through it; a Worker records its own tasks
// and must not be given a store wrapped here by the same set.
//
// The result implements store.Meta and store.Flows when s does.
func (set *Set) Store(s store.Store) store.Store {
	is := &instrumented{Store: s, set: set, leases: make(map[store.LeaseRef]leaseInfo)}
	meta, isMeta := s.(store.Meta)
	fl, isFlows := s.(store.Flows)
	switch {
	case isMeta && isFlows:
		return &metaFlowsStore{instrumented: is, Meta: meta, fl: fl}
	case isMeta:
		return &metaStore{instrumented: is, Meta: meta}
	case isFlows:
		return &flowsStore{instrumented: is, fl: fl}
	}
	return is
}

type leaseInfo struct {
	ser *Series
	at  time.Time
}

type instrumented struct {
	store.Store
	set *Set

	mu     sync.Mutex
	leases map[store.LeaseRef]leaseInfo
}

func (s *instrumented) Enqueue(ctx context.Context, p store.EnqueueParams) (store.EnqueueResult, error) {
	res, err := s.Store.Enqueue(ctx, p)
	if err != nil {
		s.set.StoreError(OpEnqueue)
		return res, err
	}
	for i, it := range res.Items {
		if it.Err == nil && i < len(p.Tasks) {
			s.set.Series(p.Tasks[i].Queue, p.Tasks[i].Type).Enqueued.Inc()
		}
	}
	return res, nil
}

func (s *instrumented) Lease(ctx context.Context, p store.LeaseParams) (store.LeaseResult, error) {
	res, err := s.Store.Lease(ctx, p)
	if err != nil {
		s.set.StoreError(OpLease)
		return res, err
	}
	if len(res.Tasks) == 0 {
		return res, nil
	}
	now := time.Now()
	s.mu.Lock()
	for _, t := range res.Tasks {
		ser := s.set.Series(t.Queue, t.Type)
		ser.Started.Inc()
		ObserveWait(ser, t)
		if len(s.leases) >= maxLeases {
			for k := range s.leases { // forget one: leases that expired are never reported
				delete(s.leases, k)
				break
			}
		}
		s.leases[store.LeaseRef{ID: t.ID, LeaseID: t.LeaseID}] = leaseInfo{ser: ser, at: now}
	}
	s.mu.Unlock()
	return res, nil
}

// ObserveWait records the wait of a task just leased: from when it was due
// (RunAt, or CreatedAt when later) to the lease (StartedAt), both by the
// store's clock.
func ObserveWait(ser *Series, t *store.Task) {
	due := t.RunAt
	if t.CreatedAt.After(due) {
		due = t.CreatedAt
	}
	if due.IsZero() || t.StartedAt.IsZero() {
		return
	}
	ser.Wait.Observe(max(t.StartedAt.Sub(due), 0).Seconds())
}

func (s *instrumented) Extend(ctx context.Context, p store.ExtendParams) (store.ExtendResult, error) {
	res, err := s.Store.Extend(ctx, p)
	if err != nil {
		s.set.StoreError(OpExtend)
	}
	return res, err
}

func (s *instrumented) Report(ctx context.Context, p store.ReportParams) (store.ReportResult, error) {
	res, err := s.Store.Report(ctx, p)
	if err != nil {
		s.set.StoreError(OpReport)
		return res, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range p.Outcomes {
		ref := store.LeaseRef{ID: o.ID, LeaseID: o.LeaseID}
		li, ok := s.leases[ref]
		delete(s.leases, ref)
		if i < len(res.Errs) && res.Errs[i] != nil {
			continue
		}
		if !ok {
			li.ser = s.set.Series(OtherLabel, OtherLabel)
		}
		switch o.Kind {
		case store.OutcomeSucceeded:
			li.ser.Succeeded.Inc()
		case store.OutcomeRetry:
			li.ser.Failed.Inc()
			li.ser.Retried.Inc()
		case store.OutcomeDead:
			li.ser.Failed.Inc()
			li.ser.Dead.Inc()
		case store.OutcomeCancelled, store.OutcomeRelease:
			continue // started, but neither succeeded nor failed
		}
		if ok {
			li.ser.Handler.Observe(now.Sub(li.at).Seconds())
		}
	}
	return res, nil
}

func (s *instrumented) WaitCancels(ctx context.Context, p store.WaitCancelsParams) (store.WaitCancelsResult, error) {
	res, err := s.Store.WaitCancels(ctx, p)
	if err != nil && ctx.Err() == nil {
		s.set.StoreError(OpWaitCancels)
	}
	return res, err
}

func (s *instrumented) Sweep(ctx context.Context, p store.SweepParams) (store.SweepResult, error) {
	res, err := s.Store.Sweep(ctx, p)
	if err != nil {
		s.set.StoreError(OpSweep)
		return res, err
	}
	s.set.LeaseExpiries(res.Recovered + res.Dead + res.Cancelled)
	return res, nil
}

func (s *instrumented) enqueueFlow(ctx context.Context, fl store.Flows, p store.FlowParams) error {
	if err := fl.EnqueueFlow(ctx, p); err != nil {
		s.set.StoreError(OpEnqueue)
		return err
	}
	for _, t := range p.Tasks {
		s.set.Series(t.Queue, t.Type).Enqueued.Inc()
	}
	for _, h := range p.Held {
		s.set.Series(h.Task.Queue, h.Task.Type).Enqueued.Inc()
	}
	return nil
}

type metaStore struct {
	*instrumented
	store.Meta
}

type flowsStore struct {
	*instrumented
	fl store.Flows
}

func (s *flowsStore) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	return s.enqueueFlow(ctx, s.fl, p)
}

func (s *flowsStore) GetFlow(ctx context.Context, p store.FlowGetParams) (*store.Flow, error) {
	return s.fl.GetFlow(ctx, p)
}

func (s *flowsStore) ListFlows(ctx context.Context, p store.FlowListParams) (store.FlowListResult, error) {
	return s.fl.ListFlows(ctx, p)
}

type metaFlowsStore struct {
	*instrumented
	store.Meta
	fl store.Flows
}

func (s *metaFlowsStore) EnqueueFlow(ctx context.Context, p store.FlowParams) error {
	return s.enqueueFlow(ctx, s.fl, p)
}

func (s *metaFlowsStore) GetFlow(ctx context.Context, p store.FlowGetParams) (*store.Flow, error) {
	return s.fl.GetFlow(ctx, p)
}

func (s *metaFlowsStore) ListFlows(ctx context.Context, p store.FlowListParams) (store.FlowListResult, error) {
	return s.fl.ListFlows(ctx, p)
}
