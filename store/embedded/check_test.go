package embedded

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// fillStore makes a data folder with n tasks in namespace "c" (payload
// "payload-<i>" padded to 300 bytes), closed. With flushed, the tasks are
// in a table of the engine (reopening it replays the WAL into one).
func fillStore(t *testing.T, n int, flushed bool) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	cfg := &Config{ReserveBytes: -1}
	s := mustOpen(t, dir, cfg)
	var ids []string
	for i := 0; i < n; i += store.MaxBatch {
		var in []store.TaskInput
		for j := i; j < min(n, i+store.MaxBatch); j++ {
			id := fmt.Sprintf("task-%05d", j)
			ids = append(ids, id)
			in = append(in, store.TaskInput{ID: id, Type: "x", Payload: payloadOf(id)})
		}
		if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "c", Tasks: in}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.MetaPut(t.Context(), store.MetaPutParams{Namespace: "c", Key: "project", Value: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if flushed {
		if err := mustOpen(t, dir, cfg).Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dir, ids
}

func payloadOf(id string) []byte {
	return []byte(id + strings.Repeat(".", 300))
}

// flip inverts n bytes of the file at path from offset off (negative: from
// the end).
func flip(t *testing.T, path string, off int64, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	for i := off; i < off+int64(n) && i < int64(len(b)); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil { //nolint:gosec // G703: a file in the test's own temporary folder
		t.Fatal(err)
	}
}

// engineFiles returns the engine's files of dir matching pattern.
func engineFiles(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "pebble", pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in %s (%v)", pattern, dir, err)
	}
	sort.Strings(m)
	return m
}

// openFails opens dir, which must fail without panicking, with an error that
// says each of want.
func openFails(t *testing.T, dir string, want ...string) {
	t.Helper()
	var s *Store
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Open panicked on a damaged folder: %v", r)
			}
		}()
		s, err = Open(dir, &Config{ReserveBytes: -1})
	}()
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a damaged folder succeeded")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Open's error %q does not say %q", err, w)
		}
	}
}

func hasProblem(rep *Report, match func(Problem) bool) bool {
	return slices.ContainsFunc(rep.Problems, match)
}

// checkRecovered opens the recovered folder and checks it holds every id of
// want with its payload, no other task, and the meta record.
func checkRecovered(t *testing.T, dir string, want []string) {
	t.Helper()
	s := mustOpen(t, dir, &Config{ReserveBytes: -1})
	defer func() { _ = s.Close() }()
	got := getAll(t, s, "c", want)
	for _, id := range want {
		if got[id] == nil || !bytes.Equal(got[id].Payload, payloadOf(id)) {
			t.Fatalf("recovered folder: task %s is %+v", id, got[id])
		}
	}
	st, err := s.Stats(t.Context(), store.StatsParams{Namespace: "c"})
	if err != nil || len(st.Queues) != 1 || st.Queues[0].Total() != int64(len(want)) {
		t.Fatalf("recovered folder: stats %+v, %v; want %d tasks", st, err, len(want))
	}
	m, err := s.MetaGet(t.Context(), store.MetaGetParams{Namespace: "c", Key: "project"})
	if err != nil || string(m.Value) != "p" {
		t.Fatalf("recovered folder: meta %q, %v", m.Value, err)
	}
	storetest.CheckInvariants(t, s, "c")
}

// TestCorruptRecord damages one task record (kiln's encoding): Open fails
// naming the record and what to do, Check reports it by key, Recover keeps
// every other task.
func TestCorruptRecord(t *testing.T) {
	t.Parallel()
	dir, ids := fillStore(t, 50, false)
	eng, err := openEngine(enginePebble, dir, false, engineHooks{})
	if err != nil {
		t.Fatal(err)
	}
	// Task 7 has sequence number 8: a record of a version that does not
	// exist.
	if err := eng.apply([]op{{key: seqKey(kTask, "c", 8), val: []byte{99, 1, 2, 3}}}, true); err != nil {
		t.Fatal(err)
	}
	if err := eng.close(); err != nil {
		t.Fatal(err)
	}
	openFails(t, dir, `task record 8 of namespace "c"`, "kiln store check "+dir, "kiln store recover")

	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, func(p Problem) bool { return p.Key == "task c/8" && strings.Contains(p.Err, "unknown version 99") }) {
		t.Fatalf("Check does not report task c/8: %v", rep.Problems)
	}
	if rep.OK() || rep.Tasks["c"][store.StatePending] != 49 {
		t.Fatalf("Check counts %v pending, want 49", rep.Tasks["c"])
	}

	out := filepath.Join(t.TempDir(), "recovered")
	if _, err := Recover(dir, out); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, out, slices.Delete(slices.Clone(ids), 7, 8))
	if rep, err := Check(out); err != nil || !rep.OK() {
		t.Fatalf("Check of the recovered folder: %v, %v", rep.Problems, err)
	}
	// The damaged folder is left as it was.
	if rep2, err := Check(dir); err != nil || len(rep2.Problems) != len(rep.Problems) {
		t.Fatalf("Recover changed the damaged folder: %v, %v", rep2.Problems, err)
	}
}

// TestCorruptTable damages a block in the middle of a table of the engine:
// Open fails naming the file, Check reports it, Recover keeps the tasks of
// every other block.
func TestCorruptTable(t *testing.T) {
	t.Parallel()
	dir, ids := fillStore(t, 3000, true)
	tables := engineFiles(t, dir, "*.sst")
	sst := tables[len(tables)-1]
	fi, err := os.Stat(sst)
	if err != nil {
		t.Fatal(err)
	}
	flip(t, sst, fi.Size()/3, 8)
	name := filepath.Join("pebble", filepath.Base(sst))
	// Open reads the indexes, not every task: it fails when what it
	// reads is damaged, else the first read of the damaged block does.
	if s, err := Open(dir, &Config{ReserveBytes: -1}); err == nil {
		_, lerr := s.List(t.Context(), store.ListParams{Namespace: "c", Limit: store.MaxListLimit, WithPayload: true})
		for c := ""; lerr == nil; {
			var res store.ListResult
			res, lerr = s.List(t.Context(), store.ListParams{Namespace: "c", Limit: store.MaxListLimit, WithPayload: true, Cursor: c})
			if res.NextCursor == "" {
				break
			}
			c = res.NextCursor
		}
		_ = s.Close()
		if lerr == nil {
			t.Fatal("a damaged folder opened and read without an error")
		}
	} else {
		openFails(t, dir, name, "fails its checksums", "kiln store check "+dir)
	}

	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, func(p Problem) bool { return p.File == name && strings.Contains(p.Err, "checksum") }) {
		t.Fatalf("Check does not name %s: %v", name, rep.Problems)
	}
	out := filepath.Join(t.TempDir(), "recovered")
	rec, err := Recover(dir, out)
	if err != nil {
		t.Fatal(err)
	}
	kept := rec.Tasks["c"][store.StatePending]
	if kept == 0 || kept >= int64(len(ids)) || kept < int64(len(ids))*9/10 {
		t.Fatalf("Recover kept %d of %d tasks; want all but those of the damaged block", kept, len(ids))
	}
	// What was kept is intact, and every task left out is reported.
	s := mustOpen(t, out, &Config{ReserveBytes: -1})
	got := getAll(t, s, "c", ids)
	_ = s.Close()
	for _, id := range ids {
		task := got[id]
		switch {
		case task != nil && !bytes.Equal(task.Payload, payloadOf(id)):
			t.Fatalf("recovered task %s has payload %q", id, task.Payload)
		case task == nil && !hasProblem(rec, func(p Problem) bool { return strings.Contains(p.Err, fmt.Sprintf("%q", id)) }):
			t.Fatalf("task %s was left out without a word", id)
		}
	}
	if int64(len(got)) != kept {
		t.Fatalf("the recovered folder has %d tasks, Recover says %d", len(got), kept)
	}
}

// TestCorruptManifest damages the engine's MANIFEST: Open fails, without
// panicking, naming it and what to do.
func TestCorruptManifest(t *testing.T) {
	t.Parallel()
	dir, _ := fillStore(t, 3000, true)
	manifests := engineFiles(t, dir, "MANIFEST-*")
	m := manifests[len(manifests)-1]
	flip(t, m, 20, 16)
	name := filepath.Join("pebble", filepath.Base(m))
	openFails(t, dir, name, "kiln store check "+dir)
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, func(p Problem) bool { return p.File == name }) {
		t.Fatalf("Check does not name %s: %v", name, rep.Problems)
	}
}

// TestCorruptWAL damages a record in the middle of the WAL: the engine
// would drop every record after it at the next open; Check reports it.
func TestCorruptWAL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := mustOpen(t, dir, &Config{ReserveBytes: -1})
	for i := 0; i < 300; i++ { // one WAL record each, about 100 KiB in all
		id := fmt.Sprintf("w%d", i)
		if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "c", Tasks: []store.TaskInput{{ID: id, Type: "x", Payload: payloadOf(id)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The WAL that holds them is the largest.
	var wal string
	var size int64
	for _, f := range engineFiles(t, dir, "*.log") {
		if fi, err := os.Stat(f); err == nil && fi.Size() > size {
			wal, size = f, fi.Size()
		}
	}
	flip(t, wal, size/4, 8)
	rep, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join("pebble", filepath.Base(wal))
	if !hasProblem(rep, func(p Problem) bool { return p.File == name && strings.Contains(p.Err, "readable records follow") }) {
		t.Fatalf("Check does not report the damaged WAL %s: %v", name, rep.Problems)
	}
}

// TestCheckSound checks a sound folder: no problem, the right counts.
func TestCheckSound(t *testing.T) {
	t.Parallel()
	dir, ids := fillStore(t, 120, true)
	rep, err := Check(dir)
	if err != nil || !rep.OK() {
		t.Fatalf("Check of a sound folder: %v, %v", rep.Problems, err)
	}
	if rep.Tasks["c"][store.StatePending] != int64(len(ids)) || rep.Meta["c"] != 1 {
		t.Fatalf("Check counts %v tasks and %v meta records", rep.Tasks["c"], rep.Meta)
	}
	if _, err := Check(t.TempDir()); err == nil {
		t.Fatal("Check of an empty folder: no error")
	}
	if _, err := Recover(dir, dir); err == nil {
		t.Fatal("Recover into the damaged folder itself: no error")
	}
	s := mustOpen(t, dir, &Config{ReserveBytes: -1})
	defer func() { _ = s.Close() }()
	if _, err := Check(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Check of a folder in use: %v, want an error that says so", err)
	}
}
