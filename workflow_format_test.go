package kiln

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/flowspec"
	"github.com/kilnhq/kiln/store"
)

// TestWorkflowFullFormat checks that a workflow stored in the full format
// (spec version 1 and envelopes naming every id: what kiln wrote before
// the compact format) still runs to its result, and that the compact
// format is what EnqueueWorkflow writes.
func TestWorkflowFullFormat(t *testing.T) {
	t.Parallel()
	wfStores(t, func(t *testing.T, open func(t *testing.T) (store.Store, func() store.Store)) {
		t.Helper()
		s, _ := open(t)
		e := newEnv(t, s)
		members := make([]Step, 20)
		want := 0
		for i := range members {
			members[i] = NewSignature("add", i, 1)
			want += i + 1
		}
		wf := Chain(Chord(Group(members...), NewSignature("sum")), NewSignature("double"))
		p, err := compileWorkflow(wf, "old-wf", time.Hour, e.client.limits, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(p.Spec), `"v":2`) || len(p.Spec) > 200 {
			t.Fatalf("compiled spec is not compact: %s", p.Spec)
		}
		// Back to the full format.
		spec, err := flowspec.DecodeSpec("old-wf", p.Spec)
		if err != nil {
			t.Fatal(err)
		}
		spec.V = flowspec.VersionFull
		if p.Spec, err = json.Marshal(spec); err != nil {
			t.Fatal(err)
		}
		for i := range p.Held {
			env, err := flowspec.DecodeEnvelope(p.Held[i].Task.Payload)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(env)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"after":["old-wf.`) {
				t.Fatalf("full envelope %s", b)
			}
			p.Held[i].Task.Payload = append([]byte(flowspec.Magic), b...)
		}
		p.Namespace = e.client.ns
		if err := s.(store.Flows).EnqueueFlow(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		e.startWorker(t, s, 4)
		var got int
		if err := e.client.Workflow("old-wf").Get(waitCtx(t), &got); err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got != 2*want {
			t.Fatalf("result = %d, want %d", got, 2*want)
		}
		st, err := e.client.Workflow("old-wf").State(t.Context())
		if err != nil || st.State != "succeeded" || len(st.Members) != 22 {
			t.Fatalf("State = %+v, %v", st, err)
		}
	})
}
