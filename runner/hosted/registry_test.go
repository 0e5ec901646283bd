package hosted_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

// TestConcurrentUploads: uploads of one name at once make one package with
// distinct revisions, each with its own zip; Delete removes every record.
func TestConcurrentUploads(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	reg := hosted.NewRegistry(st, nil)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	revs := make([]int, n)
	codeIDs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, rev, err := reg.Upload(ctx, "p", hosted.Revision{Name: "pkg", FileName: "run.sh"}, bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 100_000)), 0)
			if err != nil {
				t.Error(err)
				return
			}
			revs[i], codeIDs[i] = rev.Rev, code.ID
		}()
	}
	wg.Wait()
	sorted := append([]int(nil), revs...)
	sort.Ints(sorted)
	for i, r := range sorted {
		if r != i+1 {
			t.Fatalf("revisions %v, want 1..%d once each", revs, n)
		}
	}
	for _, id := range codeIDs {
		if id != codeIDs[0] {
			t.Fatalf("code ids %v: want one package", codeIDs)
		}
	}
	code, err := reg.ByID(ctx, "p", codeIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range revs {
		rev, err := reg.Revision(ctx, "p", code.ID, r)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := reg.OpenZip(ctx, "p", rev)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rd)
		if err != nil || len(b) != 100_000 || b[0] != byte(i) {
			t.Errorf("revision %d holds %d bytes of %v (%v), want upload %d", r, len(b), b[:1], err, i)
		}
	}
	if idx, err := reg.Index(ctx); err != nil || len(idx) != 1 || idx[0].Project != "p" || idx[0].Name != "pkg" {
		t.Errorf("Index = %+v, %v", idx, err)
	}
	if err := reg.Delete(ctx, "p", code); err != nil {
		t.Fatal(err)
	}
	res, err := st.MetaList(ctx, store.MetaListParams{Namespace: "p", Prefix: "iron/"})
	if err != nil || len(res.Items) != 0 {
		t.Errorf("after Delete: %d records (%v)", len(res.Items), err)
	}
	if idx, _ := reg.Index(ctx); len(idx) != 0 {
		t.Errorf("Index after Delete = %+v", idx)
	}
	if _, err := reg.ByID(ctx, "p", code.ID); !errors.Is(err, hosted.ErrNotFound) {
		t.Errorf("ByID after Delete: %v", err)
	}
	for _, id := range []string{"", "../x", "nope"} {
		if _, err := reg.ByID(ctx, "p", id); !errors.Is(err, hosted.ErrNotFound) {
			t.Errorf("ByID(%q): %v", id, err)
		}
	}
}

func TestParseLastError(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]string{
		"timeout: timed out after 1s": {"timeout", "timed out after 1s"},
		"error: exit status 3":        {"error", "exit status 3"},
		"kiln: something else":        {"error", "kiln: something else"},
	} {
		if s, m := hosted.ParseLastError(in); s != want[0] || m != want[1] {
			t.Errorf("ParseLastError(%q) = %q, %q", in, s, m)
		}
	}
}

// TestCollect: the log and progress of a task the store no longer has are
// deleted; those of a task it has are kept.
func TestCollect(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	ctx := context.Background()
	h, err := hosted.New(&hosted.Config{Store: st, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	reg := h.Registry()
	if _, _, err := reg.Upload(ctx, "p", hosted.Revision{Name: "pkg", FileName: "run.sh"}, bytes.NewReader([]byte("zip")), 0); err != nil {
		t.Fatal(err)
	}
	res, err := st.Enqueue(ctx, store.EnqueueParams{Namespace: "p", Tasks: []store.TaskInput{{ID: "kept", Type: "code:pkg"}}})
	if err != nil || res.Items[0].Err != nil {
		t.Fatal(err, res.Items[0].Err)
	}
	for _, id := range []string{"kept", "gone"} {
		if err := reg.SetProgress(ctx, "p", id, hosted.Progress{Percent: 5}); err != nil {
			t.Fatal(err)
		}
		if err := reg.MarkTask(ctx, "p", id); err != nil {
			t.Fatal(err)
		}
		if _, err := st.MetaPut(ctx, store.MetaPutParams{Namespace: "p", Key: hosted.LogKey(id) + "/00000000", Value: []byte("log")}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := h.Collect(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Collect = %d, %v; want 1", n, err)
	}
	if _, found, _ := reg.ReadLog(ctx, "p", "gone"); found {
		t.Error("the log of a task that is gone is still there")
	}
	if _, found, _ := reg.Progress(ctx, "p", "gone"); found {
		t.Error("the progress of a task that is gone is still there")
	}
	if b, found, _ := reg.ReadLog(ctx, "p", "kept"); !found || string(b) != "log" {
		t.Error("the log of a task the store has was deleted")
	}
	if n, err := h.Collect(ctx); err != nil || n != 0 {
		t.Errorf("second Collect = %d, %v", n, err)
	}
}
