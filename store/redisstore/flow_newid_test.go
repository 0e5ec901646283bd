package redisstore

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
)

// TestFlowNewIDsNotLookedUp: the flow script looks up no id of a flow
// whose every task has an id made for the call (store.TaskInput.NewID, as
// a kiln Client marks a workflow whose id it made), in the compact format
// and the other; it looks them up otherwise. Either way every task is
// written.
func TestFlowNewIDsNotLookedUp(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	opts := must(redis.ParseURL(url))
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	for _, tc := range []struct {
		name  string
		n     int // ready tasks: more than flowPart are written in the compact format
		newID bool
	}{
		{"small/new", 3, true}, {"small/checked", 3, false},
		{"parts/new", flowPart + 5, true}, {"parts/checked", flowPart + 5, false},
	} {
		p := fanIn(tc.n)
		p.Namespace = strings.ReplaceAll(tc.name, "/", "-")
		for i := range p.Tasks {
			p.Tasks[i].NewID = tc.newID
		}
		p.Held[0].Task.NewID = tc.newID
		mon := startMonitor(t, opts.Addr)
		if err := s.EnqueueFlow(t.Context(), p); err != nil {
			t.Fatalf("%s: EnqueueFlow: %v", tc.name, err)
		}
		lookups := 0
		for _, args := range mon.stop(t, c, "end-"+p.Namespace) {
			if strings.EqualFold(args[0], "EXISTS") && slices.ContainsFunc(args[1:], func(k string) bool { return strings.Contains(k, ":t:f.") }) {
				lookups++
			}
		}
		if tc.newID && lookups != 0 {
			t.Errorf("%s: the flow script looked up task ids %d times; want none", tc.name, lookups)
		}
		if !tc.newID && lookups == 0 {
			t.Errorf("%s: the flow script looked up no task id", tc.name)
		}
		ids := make([]string, 0, tc.n)
		for i := range p.Tasks {
			ids = append(ids, p.Tasks[i].ID)
		}
		got, err := s.Get(t.Context(), store.GetParams{Namespace: p.Namespace, IDs: ids})
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.Index(got.Tasks, nil); i >= 0 {
			t.Errorf("%s: task %s was not written", tc.name, ids[i])
		}
	}
}

// TestFlowUpstreamCounts: a released held task is leased with the counts of
// the tasks it waited for that succeeded, and succeeded without a result
// (store.Task.Upstream); a task that failed, was cancelled or deleted
// before it finished counts in neither.
func TestFlowUpstreamCounts(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	s := mustOpen(t, url, &Config{Prefix: newPrefix()})
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		kinds []store.OutcomeKind // per member; OutcomeRelease: deleted before it ran
		want  store.Upstream
	}{
		{"none", []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeSucceeded, store.OutcomeSucceeded}, store.Upstream{OK: 3, NoResult: 3}},
		{"result", []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeSucceeded, store.OutcomeSucceeded}, store.Upstream{OK: 3, NoResult: 2}},
		{"dead", []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeDead, store.OutcomeCancelled}, store.Upstream{OK: 1, NoResult: 1}},
		{"deleted", []store.OutcomeKind{store.OutcomeSucceeded, store.OutcomeSucceeded, store.OutcomeRelease}, store.Upstream{OK: 2, NoResult: 2}},
	} {
		p := fanIn(3)
		p.Namespace = tc.name
		if err := s.EnqueueFlow(ctx, p); err != nil {
			t.Fatal(err)
		}
		kind := map[string]store.OutcomeKind{}
		for i, k := range tc.kinds {
			kind[p.Tasks[i].ID] = k
			if k == store.OutcomeRelease {
				if r, err := s.Delete(ctx, store.IDsParams{Namespace: tc.name, IDs: []string{p.Tasks[i].ID}}); err != nil || r.Items[0].Err != nil {
					t.Fatalf("%s: Delete: %v %+v", tc.name, err, r)
				}
			}
		}
		l, err := s.Lease(ctx, store.LeaseParams{Namespace: tc.name, Queues: []string{"m"}, Max: 3, Duration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var outs []store.Outcome
		for _, tk := range l.Tasks {
			o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: kind[tk.ID]}
			switch {
			case tc.name == "result" && tk.ID == "f.1":
				o.Result = []byte("1")
			case o.Kind != store.OutcomeSucceeded:
				o.Error = "e"
			}
			outs = append(outs, o)
		}
		if _, err := s.Report(ctx, store.ReportParams{Namespace: tc.name, Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
		cb, err := s.Lease(ctx, store.LeaseParams{Namespace: tc.name, Queues: []string{"cb"}, Max: 1, Duration: time.Minute})
		if err != nil || len(cb.Tasks) != 1 {
			t.Fatalf("%s: Lease of the callback = %d tasks, %v", tc.name, len(cb.Tasks), err)
		}
		if u := cb.Tasks[0].Upstream; u == nil || *u != tc.want {
			t.Errorf("%s: callback leased with Upstream %+v, want %+v", tc.name, u, tc.want)
		}
	}
}
