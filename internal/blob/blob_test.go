package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/blob"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) *embedded.Store {
	t.Helper()
	st := kilntest.Embedded(t, nil)
	return st
}

func keys(t *testing.T, st store.Meta, prefix string) []string {
	t.Helper()
	res, err := st.MetaList(context.Background(), store.MetaListParams{Namespace: "ns", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range res.Items {
		out = append(out, it.Key)
	}
	return out
}

func TestPutOpenDelete(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	for _, size := range []int{0, 1, blob.ChunkSize, blob.ChunkSize + 1, 3*blob.ChunkSize + 17} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		key := "b/" + string(rune('a'+size%26)) + "x"
		info, err := blob.Put(ctx, st, "ns", key, bytes.NewReader(data), 0)
		if err != nil {
			t.Fatalf("Put(%d bytes): %v", size, err)
		}
		if info.Size != int64(size) || info.Chunks != (size+blob.ChunkSize-1)/blob.ChunkSize {
			t.Errorf("Put(%d bytes) = %+v", size, info)
		}
		rd, _, err := blob.Open(ctx, st, "ns", key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rd)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("read back %d bytes (%v), want %d", len(got), err, size)
		}
		if _, err := blob.Put(ctx, st, "ns", key, bytes.NewReader(data), 0); err == nil {
			t.Error("a second Put under the same key succeeded")
		}
		if err := blob.Delete(ctx, st, "ns", key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := blob.Open(ctx, st, "ns", key); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Open after Delete: %v", err)
		}
		if k := keys(t, st, key); len(k) != 0 {
			t.Errorf("Delete left %v", k)
		}
	}
}

// failingReader fails after n bytes: the upload breaks half way.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func TestHalfWrittenIsInvisibleAndRemoved(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	if _, err := blob.Put(ctx, st, "ns", "half", &failingReader{n: 2*blob.ChunkSize + 5}, 0); err == nil {
		t.Fatal("Put of a broken stream succeeded")
	}
	if _, _, err := blob.Open(ctx, st, "ns", "half"); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open: %v, want ErrNotFound", err)
	}
	if k := keys(t, st, "half"); len(k) != 0 {
		t.Errorf("a failed Put left %v", k)
	}
	_, err := blob.Put(ctx, st, "ns", "big", bytes.NewReader(make([]byte, 3*blob.ChunkSize)), 2*blob.ChunkSize)
	if !errors.Is(err, blob.ErrTooLarge) {
		t.Errorf("Put over the cap: %v", err)
	}
	if k := keys(t, st, "big"); len(k) != 0 {
		t.Errorf("a refused Put left %v", k)
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	if _, err := blob.Put(ctx, st, "ns", "c", bytes.NewReader(bytes.Repeat([]byte("x"), 2*blob.ChunkSize)), 0); err != nil {
		t.Fatal(err)
	}
	k := keys(t, st, "c/")
	if _, err := st.MetaPut(ctx, store.MetaPutParams{Namespace: "ns", Key: k[1], Value: []byte("tampered")}); err != nil {
		t.Fatal(err)
	}
	rd, _, err := blob.Open(ctx, st, "ns", "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rd); !errors.Is(err, blob.ErrCorrupt) {
		t.Errorf("reading a tampered blob: %v, want ErrCorrupt", err)
	}
}

func TestLog(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	l, err := blob.OpenLog(ctx, st, "ns", "log/1", blob.LogConfig{Cap: 3*blob.ChunkSize + 10, Flush: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Live: a small write becomes readable without Close.
	if _, err := io.WriteString(l, "started\n"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the log to hold the first line", func() bool {
		b, found, err := blob.ReadLog(ctx, st, "ns", "log/1")
		if err != nil {
			t.Fatal(err)
		}
		return found && string(b) == "started\n"
	})
	// Past the cap: truncated with a marker.
	big := bytes.Repeat([]byte("y"), 4*blob.ChunkSize)
	if n, err := l.Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := l.Write([]byte("dropped")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b, _, err := blob.ReadLog(ctx, st, "ns", "log/1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "started\nyyy") || !strings.HasSuffix(string(b), "[kiln: log truncated at 184330 bytes]\n") || strings.Contains(string(b), "dropped") {
		t.Errorf("log of %d bytes ends %q", len(b), b[max(len(b)-60, 0):])
	}
	if len(b) > 3*blob.ChunkSize+10+64 {
		t.Errorf("log is %d bytes, more than the cap and a marker", len(b))
	}
	// A second writer appends (a retried task).
	l2, err := blob.OpenLog(ctx, st, "ns", "log/1", blob.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(l2, "attempt 2\n")
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b2, _, _ := blob.ReadLog(ctx, st, "ns", "log/1")
	if !bytes.HasPrefix(b2, b) || !strings.HasSuffix(string(b2), "attempt 2\n") {
		t.Errorf("appended log ends %q", b2[max(len(b2)-60, 0):])
	}
}

// TestLogBeforeFirstPut: the hook runs once, before the first chunk is
// written, never for a log nothing was written to, and its error fails the
// write without a chunk reaching the store.
func TestLogBeforeFirstPut(t *testing.T) {
	t.Parallel()
	st := open(t)
	ctx := context.Background()
	var calls []int // chunks in the store at each call
	hook := func(context.Context) error {
		calls = append(calls, len(keys(t, st, "log/h/")))
		return nil
	}
	silent, err := blob.OpenLog(ctx, st, "ns", "log/s", blob.LogConfig{BeforeFirstPut: hook})
	if err != nil {
		t.Fatal(err)
	}
	if err := silent.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Fatalf("the hook ran %d times for a log nothing was written to", len(calls))
	}
	l, err := blob.OpenLog(ctx, st, "ns", "log/h", blob.LogConfig{BeforeFirstPut: hook})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write(bytes.Repeat([]byte("x"), 2*blob.ChunkSize+1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != 0 {
		t.Fatalf("hook calls (chunks stored at each) = %v, want one before the first chunk", calls)
	}
	if n := len(keys(t, st, "log/h/")); n != 3 {
		t.Errorf("%d chunks stored, want 3", n)
	}

	boom := errors.New("boom")
	failing, err := blob.OpenLog(ctx, st, "ns", "log/f", blob.LogConfig{BeforeFirstPut: func(context.Context) error { return boom }})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(failing, "lost\n")
	if err := failing.Close(ctx); !errors.Is(err, boom) {
		t.Errorf("Close after a failing hook: %v, want %v", err, boom)
	}
	if _, found, _ := blob.ReadLog(ctx, st, "ns", "log/f"); found {
		t.Error("a chunk was written although the hook failed")
	}
}
