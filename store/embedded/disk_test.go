package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/tmpfs"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

// fullDiskConfig is the configuration of the full-disk tests: a small
// reserve for a small disk, and a quick monitor.
func fullDiskConfig(watermark bool) *Config {
	cfg := &Config{ReserveBytes: 4 << 20, retryEvery: 20 * time.Millisecond}
	if !watermark {
		// Never check the free space: the disk fills up under the engine,
		// which must then give back the reserve and stop.
		cfg.spaceEvery = -1
	}
	return cfg
}

// ledger records what a stream of enqueues was told.
type ledger struct {
	mu     sync.Mutex
	acked  []string
	failed []string
}

func (l *ledger) add(ids []string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.acked = append(l.acked, ids...)
	} else {
		l.failed = append(l.failed, ids...)
	}
}

// getAll reads ids in chunks and returns the tasks found, by id.
func getAll(t *testing.T, s store.Store, ns string, ids []string) map[string]*store.Task {
	t.Helper()
	out := make(map[string]*store.Task, len(ids))
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), store.MaxBatch)]
		ids = ids[len(chunk):]
		g, err := s.Get(t.Context(), store.GetParams{Namespace: ns, IDs: chunk})
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		for i, task := range g.Tasks {
			if task != nil {
				out[chunk[i]] = task
			}
		}
	}
	return out
}

// TestFullDisk fills a small disk (a tmpfs) during a stream of enqueues:
// writes must fail with store.ErrStorageFull, reads keep working, nothing
// panics; once space is freed, writes work again without a restart; after
// a restart every acknowledged task is there, and no task whose enqueue
// failed ever runs. Before the fix the process died on the first failed
// WAL write ("pebble: fatal commit error: ... no space left on device").
func TestFullDisk(t *testing.T) { //nolint:paralleltest // it fills 64 MiB tmpfs disks, which are memory: one at a time
	for _, watermark := range []bool{true, false} {
		t.Run(fmt.Sprintf("watermark=%v", watermark), func(t *testing.T) {
			testFullDisk(t, watermark)
		})
	}
}

func testFullDisk(t *testing.T, watermark bool) {
	mnt := tmpfs.Mount(t, 64<<20)
	dir := filepath.Join(mnt, "data")
	cfg := fullDiskConfig(watermark)
	s := mustOpen(t, dir, cfg)
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	const ns = "full"
	var l ledger
	var seenFull atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := 0; p < 2; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in := make([]store.TaskInput, 10)
				ids := make([]string, len(in))
				for j := range in {
					ids[j] = fmt.Sprintf("p%d-%d-%d", p, i, j)
					in[j] = store.TaskInput{ID: ids[j], Type: "fill", Payload: []byte(strings.Repeat("x", 2000)), UniqueKey: "u-" + ids[j], UniqueTTL: time.Hour}
				}
				_, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in})
				l.add(ids, err)
				switch {
				case errors.Is(err, store.ErrStorageFull):
					seenFull.Add(1)
					time.Sleep(time.Millisecond)
				case err != nil:
					t.Errorf("Enqueue: %v, want nil or ErrStorageFull", err)
					return
				}
			}
		}()
	}
	// Fill the disk while the enqueues run.
	for {
		l.mu.Lock()
		n := len(l.acked)
		l.mu.Unlock()
		if n >= 2000 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	tmpfs.Fill(t, mnt, "filler")
	deadline := time.Now().Add(time.Minute)
	for seenFull.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if seenFull.Load() == 0 {
		t.Fatal("no enqueue failed with ErrStorageFull on a full disk")
	}
	if !watermark {
		s.mu.Lock()
		fault := s.fault
		s.mu.Unlock()
		if fault == nil {
			t.Fatal("the engine never found the disk full: the test missed the reserve")
		}
	}

	// Writes fail with the sentinel; reads work.
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "while-full", Type: "fill"}}}); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Enqueue on a full disk: %v, want ErrStorageFull", err)
	}
	if _, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1, Duration: time.Minute}); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Lease on a full disk: %v, want ErrStorageFull", err)
	}
	if _, err := s.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: "k", Value: []byte("v")}); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("MetaPut on a full disk: %v, want ErrStorageFull", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Ping on a full disk: %v, want ErrStorageFull", err)
	}
	if got := getAll(t, s, ns, l.acked); len(got) != len(l.acked) {
		t.Fatalf("on a full disk, Get finds %d of %d acknowledged tasks", len(got), len(l.acked))
	}
	if got := getAll(t, s, ns, l.failed); len(got) != 0 {
		t.Fatalf("on a full disk, Get finds %d tasks whose enqueue failed", len(got))
	}
	st, err := s.Stats(ctx, store.StatsParams{Namespace: ns})
	if err != nil || len(st.Queues) != 1 || st.Queues[0].Counts[store.StatePending] != int64(len(l.acked)) {
		t.Fatalf("Stats on a full disk: %+v, %v; want %d pending", st, err, len(l.acked))
	}
	if ls, err := s.List(ctx, store.ListParams{Namespace: ns, Limit: 10}); err != nil || len(ls.Tasks) != 10 {
		t.Fatalf("List on a full disk: %d tasks, %v", len(ls.Tasks), err)
	}
	if _, err := s.MetaList(ctx, store.MetaListParams{Namespace: ns}); err != nil {
		t.Fatalf("MetaList on a full disk: %v", err)
	}
	t.Logf("%d tasks acknowledged, %d refused", len(l.acked), len(l.failed))

	// Free the space: writes work again, without a restart.
	tmpfs.Free(t, mnt, "filler")
	waitWritable(t, s, ns)
	if fi, err := os.Stat(filepath.Join(dir, reserveFile)); err != nil || fi.Size() != cfg.ReserveBytes {
		t.Fatalf("the disk reserve is not back once writable: %v", err)
	}
	if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "after", Type: "fill"}}}); err != nil {
		t.Fatalf("Enqueue after space came back: %v", err)
	}
	l.acked = append(l.acked, "after")
	// Workers run every acknowledged task and none whose enqueue failed.
	failed := make(map[string]bool, len(l.failed))
	for _, id := range l.failed {
		failed[id] = true
	}
	leased := 0
	for {
		r, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 1000, Duration: time.Hour})
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		if len(r.Tasks) == 0 {
			break
		}
		for _, task := range r.Tasks {
			if failed[task.ID] {
				t.Fatalf("task %s was leased, but its enqueue failed", task.ID)
			}
		}
		leased += len(r.Tasks)
	}
	if leased != len(l.acked) {
		t.Fatalf("leased %d tasks, want the %d acknowledged", leased, len(l.acked))
	}

	// Restart: every acknowledged task is there, no refused one.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = mustOpen(t, dir, cfg)
	if got := getAll(t, s, ns, l.acked); len(got) != len(l.acked) {
		t.Fatalf("after a restart, %d of %d acknowledged tasks are there", len(got), len(l.acked))
	}
	if got := getAll(t, s, ns, l.failed); len(got) != 0 {
		t.Fatalf("after a restart, %d tasks whose enqueue failed are there", len(got))
	}
	storetest.CheckInvariants(t, s, ns)
}

// waitWritable waits until the store accepts writes again.
func waitWritable(t *testing.T, s *Store, ns string) {
	t.Helper()
	testenv.Eventually(t, "writes to be accepted after space was freed", func() bool {
		_, err := s.MetaPut(t.Context(), store.MetaPutParams{Namespace: ns, Key: "probe", Value: []byte("1")})
		if err != nil && !errors.Is(err, store.ErrStorageFull) {
			t.Fatalf("MetaPut while space comes back: %v", err)
		}
		return err == nil
	})
}

// openWithin opens the store in dir, failing the test if Open takes longer
// than a minute (it used to hang on a full disk).
func openWithin(t *testing.T, dir string, cfg *Config) (*Store, error) {
	t.Helper()
	type res struct {
		s   *Store
		err error
	}
	c := make(chan res, 1)
	go func() {
		s, err := Open(dir, cfg)
		c <- res{s, err}
	}()
	select {
	case r := <-c:
		return r.s, r.err
	case <-time.After(time.Minute):
		t.Fatal("Open hangs on a full disk")
		return nil, nil
	}
}

// TestRestartOnFullDisk restarts the store on a full disk, then on an
// almost full one: it starts, serves reads, refuses writes, and accepts
// them again by itself once there is room. Before the fix, Open hung
// (Pebble retried the flush of its WAL without end).
func TestRestartOnFullDisk(t *testing.T) { //nolint:paralleltest // it fills a 64 MiB tmpfs, which is memory: one at a time
	mnt := tmpfs.Mount(t, 64<<20)
	dir := filepath.Join(mnt, "data")
	cfg := fullDiskConfig(true)
	s := mustOpen(t, dir, cfg)
	ctx := t.Context()
	const ns = "restart"
	var ids []string
	for i := 0; i < 50; i++ {
		in := make([]store.TaskInput, 100)
		for j := range in {
			in[j] = store.TaskInput{ID: fmt.Sprintf("t%d-%d", i, j), Type: "x", Payload: []byte(strings.Repeat("y", 1000))}
			ids = append(ids, in[j].ID)
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: in}); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tmpfs.Fill(t, mnt, "filler")
	for round, free := range []int64{0, 2 << 20} {
		if free > 0 {
			// Free a little space: still too little to write.
			fi, err := os.Stat(filepath.Join(mnt, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filepath.Join(mnt, "filler"), fi.Size()-free); err != nil {
				t.Fatal(err)
			}
		}
		s, err := openWithin(t, dir, cfg)
		if err != nil {
			t.Fatalf("round %d: Open on a full disk: %v", round, err)
		}
		if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "no", Type: "x"}}}); !errors.Is(err, store.ErrStorageFull) {
			t.Fatalf("round %d: Enqueue after a restart on a full disk: %v, want ErrStorageFull", round, err)
		}
		if got := getAll(t, s, ns, ids); len(got) != len(ids) {
			t.Fatalf("round %d: %d of %d tasks readable after a restart on a full disk", round, len(got), len(ids))
		}
		if round == 1 {
			tmpfs.Free(t, mnt, "filler")
			waitWritable(t, s, ns)
			if _, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{{ID: "yes", Type: "x"}}}); err != nil {
				t.Fatalf("Enqueue once space is back: %v", err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s = mustOpen(t, dir, cfg)
	defer func() { _ = s.Close() }()
	if got := getAll(t, s, ns, append(ids, "yes")); len(got) != len(ids)+1 {
		t.Fatalf("%d of %d tasks there after the last restart", len(got), len(ids)+1)
	}
	storetest.CheckInvariants(t, s, ns)
}

// failingEngine writes batches and then, while fail is set, reports them
// failed: a WAL write that reached the disk whole, but whose sync failed.
type failingEngine struct {
	engine
	fail *atomic.Bool
}

func (f failingEngine) apply(ops []op, sync bool) error {
	if err := f.engine.apply(ops, sync); err != nil || !f.fail.Load() {
		return err
	}
	return fmt.Errorf("sync: %w", errNoSpace)
}

// TestFailedEnqueueNeverRuns checks that the tasks of an enqueue whose
// commit failed are not seen and never leased, even when the failed batch
// did reach the disk: hidden while the store is read-only, deleted before
// writes resume, gone after a restart (their ids and unique keys free).
func TestFailedEnqueueNeverRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var fail atomic.Bool
	cfg := &Config{ReserveBytes: 1 << 20, retryEvery: time.Hour, wrapEngine: func(e engine) engine {
		return failingEngine{engine: e, fail: &fail}
	}}
	s := mustOpen(t, dir, cfg)
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()
	const ns = "hide"
	enqueue := func(id, unique, payload string) error {
		_, err := s.Enqueue(ctx, store.EnqueueParams{Namespace: ns, Tasks: []store.TaskInput{
			{ID: id, Type: "x", Payload: []byte(payload), UniqueKey: unique, UniqueTTL: time.Hour},
		}})
		return err
	}
	if err := enqueue("a", "ua", "A"); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if err := enqueue("b", "ub", "B"); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Enqueue with a failing disk: %v, want ErrStorageFull", err)
	}
	fail.Store(false)
	// The failed batch is on disk: the test means something.
	if v, err := s.d.get(nameKey(kID, ns, "b")); err != nil || v == nil {
		t.Fatalf("the failed enqueue did not reach the disk (%v): the test needs it there", err)
	}
	if got := getAll(t, s, ns, []string{"a", "b"}); got["a"] == nil || got["b"] != nil {
		t.Fatalf("while read-only, Get finds %v; want a and not b", got)
	}
	ls, err := s.List(ctx, store.ListParams{Namespace: ns})
	if err != nil || len(ls.Tasks) != 1 || ls.Tasks[0].ID != "a" {
		t.Fatalf("while read-only, List: %v, %v; want a alone", ls.Tasks, err)
	}
	if _, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 10, Duration: time.Minute}); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("Lease while read-only: %v, want ErrStorageFull", err)
	}

	s.retry() // the monitor's check, now
	if err := enqueue("b", "ub", "B2"); err != nil {
		t.Fatalf("enqueue of the failed id and unique key once writable: %v", err)
	}
	r, err := s.Lease(ctx, store.LeaseParams{Namespace: ns, Queues: []string{store.DefaultQueue}, Max: 10, Duration: time.Minute})
	if err != nil || len(r.Tasks) != 2 {
		t.Fatalf("Lease: %d tasks, %v; want a and the new b", len(r.Tasks), err)
	}
	for _, task := range r.Tasks {
		if task.ID == "b" && string(task.Payload) != "B2" {
			t.Fatalf("leased the failed enqueue of b (payload %q)", task.Payload)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, nil)
	if got := getAll(t, s, ns, []string{"b"}); got["b"] == nil || string(got["b"].Payload) != "B2" {
		t.Fatalf("after a restart, b is %+v; want the second enqueue", got["b"])
	}
	storetest.CheckInvariants(t, s, ns)
}
