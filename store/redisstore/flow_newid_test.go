package redisstore

import (
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/store"
)

// TestFlowNewIDsNotLookedUp: the flow script looks up no id of a flow
// whose every task has an id made for the call (store.TaskInput.NewID, as
// a kiln Client marks a workflow whose id it made), in the compact format
// and the other; it looks them up otherwise. Either way every task is
// written.
func TestFlowNewIDsNotLookedUp(t *testing.T) {
	t.Parallel()
	s, c, opts := monitoredStore(t)
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
