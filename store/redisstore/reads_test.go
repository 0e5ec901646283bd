package redisstore

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// TestReportReads: the report script reads only the state and the lease id
// of a task whose lease this Store noted (see hints.go), the nine fields
// otherwise: when another Store leased the task, or when the task has a
// retention, a unique key, dependents or a flow. Every outcome is recorded
// as before, the counts and the change feed (queue, type, attempt)
// included.
func TestReportReads(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	ctx := t.Context()
	prefix := newPrefix()
	a := mustOpen(t, url, &Config{Prefix: prefix})
	t.Cleanup(func() { _ = a.Close() })
	b := mustOpen(t, url, &Config{Prefix: prefix})
	t.Cleanup(func() { _ = b.Close() })
	const ns, q, ty = "n", "q", "t"
	tasks := []store.TaskInput{
		{ID: "ok", Queue: q, Type: ty, MaxRetries: 3},
		{ID: "retry", Queue: q, Type: ty, MaxRetries: 3},
		{ID: "dead", Queue: q, Type: ty},
		{ID: "other", Queue: q, Type: ty},
		{ID: "kept", Queue: q, Type: ty, Retention: time.Hour},
		{ID: "uniq", Queue: q, Type: ty, UniqueKey: "u", UniqueTTL: time.Hour, UniqueUntilSuccess: true},
	}
	if _, err := a.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: tasks}); err != nil {
		t.Fatal(err)
	}
	feed, err := a.Changes(ctx, store.ChangesParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	opts := must(redis.ParseURL(url))
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	mon := startMonitor(t, opts.Addr)
	res, err := a.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{q}, Max: 10, Duration: time.Hour, WorkerID: "w"})
	if err != nil || len(res.Tasks) != len(tasks) {
		t.Fatalf("Lease = %d tasks, %v", len(res.Tasks), err)
	}
	lid := map[string]uint64{}
	for _, tk := range res.Tasks {
		if tk.State != store.StateActive || tk.Attempt != 1 || tk.LeaseID == 0 || tk.WorkerID != "w" || tk.StartedAt.IsZero() || !tk.LeaseExpiresAt.After(tk.StartedAt) {
			t.Errorf("leased %s: state %v attempt %d lease %d worker %q started %v expires %v", tk.ID, tk.State, tk.Attempt, tk.LeaseID, tk.WorkerID, tk.StartedAt, tk.LeaseExpiresAt)
		}
		lid[tk.ID] = tk.LeaseID
	}
	outs := []store.Outcome{
		{ID: "ok", LeaseID: lid["ok"], Kind: store.OutcomeSucceeded, Result: []byte("r")},
		{ID: "retry", LeaseID: lid["retry"], Kind: store.OutcomeRetry, Error: "e1"},
		{ID: "dead", LeaseID: lid["dead"], Kind: store.OutcomeDead, Error: "e2"},
		{ID: "kept", LeaseID: lid["kept"], Kind: store.OutcomeSucceeded},
		{ID: "uniq", LeaseID: lid["uniq"], Kind: store.OutcomeSucceeded},
	}
	if rep, err := a.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: outs}); err != nil || slices.ContainsFunc(rep.Errs, func(e error) bool { return e != nil }) {
		t.Fatalf("Report = %v, %v", rep.Errs, err)
	}
	if rep, err := b.Report(ctx, store.ReportParams{Namespace: ns, Outcomes: []store.Outcome{{ID: "other", LeaseID: lid["other"], Kind: store.OutcomeSucceeded}}}); err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report through another Store = %v, %v", rep.Errs, err)
	}
	short, full := reportReads(mon.stop(t, c, "end"))
	// ok, retry, dead and kept (its retention in the note) with the note;
	// uniq (unique key) and other (leased by a) without.
	if short != 4 || full != 2 {
		t.Errorf("report scripts read state and lease id only %d times, all nine fields %d times; want 4 and 2", short, full)
	}

	got, err := a.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{"ok", "retry", "dead", "other", "kept", "uniq"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.State{store.StateSucceeded, store.StatePending, store.StateDead, store.StateSucceeded, store.StateSucceeded, store.StateSucceeded}
	for i, tk := range got.Tasks {
		if tk == nil || tk.State != want[i] {
			t.Fatalf("task %d = %+v, want state %v", i, tk, want[i])
		}
	}
	if string(got.Tasks[0].Result) != "r" || got.Tasks[1].LastError != "e1" || got.Tasks[2].LastError != "e2" || len(got.Tasks[2].Errors) != 1 {
		t.Errorf("result %q, errors %q %q %v", got.Tasks[0].Result, got.Tasks[1].LastError, got.Tasks[2].LastError, got.Tasks[2].Errors)
	}
	if k := got.Tasks[4]; k.ExpiresAt.Sub(k.FinishedAt) != time.Hour {
		t.Errorf("kept: expires %v after it finished, want its retention of 1h", k.ExpiresAt.Sub(k.FinishedAt))
	}
	if r, err := a.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "uniq2", Queue: q, Type: ty, UniqueKey: "u", UniqueTTL: time.Hour, UniqueUntilSuccess: true}}}); err != nil || r.Items[0].Err != nil {
		t.Errorf("the unique key was not released on success: %+v, %v", r, err)
	}
	st, err := a.Stats(ctx, store.StatsParams{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	for _, qs := range st.Queues {
		if qs.Queue == q && (qs.Counts[store.StateSucceeded] != 4 || qs.Counts[store.StatePending] != 2 || qs.Counts[store.StateDead] != 1 || qs.Counts[store.StateActive] != 0) {
			t.Errorf("counts %v", qs.Counts)
		}
	}
	ch, err := a.Changes(ctx, store.ChangesParams{Namespace: ns, Cursor: feed.Cursor})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string][]store.ChangeKind{}
	for _, e := range ch.Changes {
		if e.ID == "uniq2" {
			continue
		}
		kinds[e.ID] = append(kinds[e.ID], e.Kind)
		if e.Queue != q || e.Type != ty || e.Attempt != 1 {
			t.Errorf("change %+v: want queue %q, type %q, attempt 1", e, q, ty)
		}
	}
	wantKinds := map[string][]store.ChangeKind{
		"ok":    {store.ChangeStarted, store.ChangeSucceeded},
		"retry": {store.ChangeStarted, store.ChangeFailed, store.ChangeRetrying},
		"dead":  {store.ChangeStarted, store.ChangeFailed, store.ChangeDead},
		"other": {store.ChangeStarted, store.ChangeSucceeded},
		"kept":  {store.ChangeStarted, store.ChangeSucceeded},
		"uniq":  {store.ChangeStarted, store.ChangeSucceeded},
	}
	for id, w := range wantKinds {
		if !slices.Equal(kinds[id], w) {
			t.Errorf("changes of %s = %v, want %v", id, kinds[id], w)
		}
	}
}

// TestReportReadsFlowMembers checks that the members of a workflow take
// the lease note too: the note carries their dependents (dp) and workflow
// (fl), the report script reads only their state and lease id, and the
// chord's callback is released once the last member is reported, exactly
// as with the full read (one member reported through another Store, which
// has no note, takes the full read).
func TestReportReadsFlowMembers(t *testing.T) {
	t.Parallel()
	url := ownServerURL(t)
	ctx := t.Context()
	prefix := newPrefix()
	a := mustOpen(t, url, &Config{Prefix: prefix})
	t.Cleanup(func() { _ = a.Close() })
	b := mustOpen(t, url, &Config{Prefix: prefix})
	t.Cleanup(func() { _ = b.Close() })
	p := fanIn(4)
	for i := range p.Tasks[:2] {
		p.Tasks[i].Retention = 2 * time.Hour // as a kiln Client's members have
	}
	if err := a.EnqueueFlow(ctx, p); err != nil {
		t.Fatal(err)
	}
	opts := must(redis.ParseURL(url))
	c := redis.NewClient(opts)
	defer func() { _ = c.Close() }()
	mon := startMonitor(t, opts.Addr)
	res, err := a.Lease(ctx, store.LeaseParams{Namespace: "ns", Queues: []string{"m"}, Max: 10, Duration: time.Hour})
	if err != nil || len(res.Tasks) != 4 {
		t.Fatalf("Lease = %d tasks, %v; want 4", len(res.Tasks), err)
	}
	var outs []store.Outcome
	var other store.Outcome
	for _, tk := range res.Tasks {
		o := store.Outcome{ID: tk.ID, LeaseID: tk.LeaseID, Kind: store.OutcomeSucceeded, Result: []byte(`"` + tk.ID + `"`)}
		if tk.ID == "f.3" {
			other = o
			continue
		}
		outs = append(outs, o)
	}
	if rep, err := a.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: outs}); err != nil || slices.ContainsFunc(rep.Errs, func(e error) bool { return e != nil }) {
		t.Fatalf("Report = %v, %v", rep.Errs, err)
	}
	if ids := succeedIn(t, a, "cb", 10); len(ids) != 0 {
		t.Fatalf("callback leased %v before its last member ended", ids)
	}
	if rep, err := b.Report(ctx, store.ReportParams{Namespace: "ns", Outcomes: []store.Outcome{other}}); err != nil || rep.Errs[0] != nil {
		t.Fatalf("Report through another Store = %v, %v", rep.Errs, err)
	}
	short, full := reportReads(mon.stop(t, c, "end"))
	if short != 3 || full != 1 {
		t.Errorf("report scripts read state and lease id only %d times, all nine fields %d times; want 3 and 1", short, full)
	}
	if ids := succeedIn(t, a, "cb", 10); len(ids) != 1 || ids[0] != "f.cb" {
		t.Fatalf("callback leased %v, want [f.cb]", ids)
	}
	for _, id := range []string{"f.0", "f.1", "f.2", "f.3"} {
		if dp, _ := c.HGet(ctx, a.tag("ns")+":t:"+id, "dp").Result(); dp != "" {
			t.Errorf("%s: dp %q after its report, want it emptied", id, dp)
		}
	}
	got, err := a.Get(ctx, store.GetParams{Namespace: "ns", IDs: []string{"f.0", "f.3"}})
	if err != nil || got.Tasks[0] == nil || got.Tasks[0].State != store.StateSucceeded || string(got.Tasks[0].Result) != `"f.0"` || got.Tasks[1].State != store.StateSucceeded {
		t.Fatalf("members after their reports: %+v, %v", got.Tasks, err)
	}
	// f.0's retention came from its note: it expires 2h after it finished
	// (its own expiry, its score in T:x; the flow's may be later).
	if ea, _ := c.ZScore(ctx, a.tag("ns")+":x", "f.0").Result(); time.UnixMicro(int64(ea)).Sub(got.Tasks[0].FinishedAt) != 2*time.Hour {
		t.Errorf("f.0 expires %v after it finished, want its retention of 2h", time.UnixMicro(int64(ea)).Sub(got.Tasks[0].FinishedAt))
	}
}

// reportReads counts, among the commands MONITOR saw, the report script's
// reads of a task's state and lease id only (short) and of all nine fields
// (full).
func reportReads(cmds [][]string) (short, full int) {
	for _, args := range cmds {
		if !strings.EqualFold(args[0], "HMGET") {
			continue
		}
		switch strings.Join(args[2:], " ") {
		case "st l":
			short++
		case "st l q rtu uk dp fl ty a":
			full++
		}
	}
	return short, full
}
