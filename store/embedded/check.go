package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/wal"

	krecord "github.com/kilnhq/kiln/internal/record"
	"github.com/kilnhq/kiln/store"
)

// This file is `kiln store check` and `kiln store recover`: reading a data
// folder that may be damaged, without changing it.

// Problem is one thing Check or Recover found wrong in a data folder.
type Problem struct {
	// File is the damaged file, relative to the data folder, when known.
	File string
	// Key names the damaged or inconsistent record, when known.
	Key string
	// Err says what is wrong.
	Err string
}

// String returns "file: key: err" without the parts that are empty.
func (p Problem) String() string {
	var parts []string
	for _, s := range []string{p.File, p.Key, p.Err} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ": ")
}

// Report is what Check found in a data folder, or what Recover copied.
type Report struct {
	// Tasks counts the readable tasks by namespace and state.
	Tasks map[string]*[store.NumStates + 1]int64
	// Meta counts the readable meta records (projects, tokens, schedules
	// and the like, for a kiln server), by namespace.
	Meta map[string]int
	// Problems lists what is damaged or inconsistent; empty when the
	// folder is sound.
	Problems []Problem
}

func newReport() *Report {
	return &Report{Tasks: make(map[string]*[store.NumStates + 1]int64), Meta: make(map[string]int)}
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(file, key string, err error) {
	r.Problems = append(r.Problems, Problem{File: file, Key: key, Err: errText(err)})
}

// errText is err's text on one line, without the lines Pebble's errors
// repeat.
func errText(err error) string {
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && l != "<corruption detail carrier>" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

func (r *Report) count(ns string, st store.State) {
	c := r.Tasks[ns]
	if c == nil {
		c = new([store.NumStates + 1]int64)
		r.Tasks[ns] = c
	}
	c[st]++
}

// Check verifies the data folder dir without changing it: the checksums
// of every table of the engine, its MANIFEST and its WAL, then, opening
// the engine read-only, that every record decodes and that the id index,
// payloads and tasks agree, as do the task indexes and queue counts
// (index.go). The error is for a folder that is not a data
// folder, is in use, or cannot be read at all; damage is in the report.
func Check(dir string) (*Report, error) {
	if err := isDataFolder(dir); err != nil {
		return nil, err
	}
	rep := newReport()
	verifyFiles(dir, rep)
	eng, err := openEngine(enginePebble, dir, true, engineHooks{})
	if isLockError(err) {
		return nil, fmt.Errorf("%s is in use: stop the server (or program) that has it open first: %w", dir, err)
	}
	if err != nil {
		rep.problem("", "", fmt.Errorf("the engine does not open: %w", err))
		return rep, nil
	}
	defer func() { _ = eng.close() }()
	readAll(eng, rep, nil)
	return rep, nil
}

// isDataFolder checks that dir holds an embedded store.
func isDataFolder(dir string) error {
	fi, err := os.Stat(filepath.Join(dir, "pebble"))
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a data folder of the embedded store (no pebble folder in it)", dir)
	}
	return nil
}

// verifyFiles checks every table's block checksums and every MANIFEST's
// and WAL's records, and reports the damaged files.
func verifyFiles(dir string, rep *Report) {
	rep.Problems = append(rep.Problems, damagedFiles(dir, true)...)
}

// damagedFiles returns a problem for each engine file of dir that fails
// its checksums: tables, MANIFEST and, withWAL, WAL files.
func damagedFiles(dir string, withWAL bool) []Problem {
	var out []Problem
	pdir := filepath.Join(dir, "pebble")
	entries, err := os.ReadDir(pdir)
	if err != nil {
		return []Problem{{File: "pebble", Err: err.Error()}}
	}
	for _, e := range entries {
		name := e.Name()
		rel := filepath.Join("pebble", name)
		var err error
		switch {
		case strings.HasSuffix(name, ".sst"):
			err = verifyTable(filepath.Join(pdir, name))
			if err != nil {
				// The reader does not know the table's number.
				err = errors.New(strings.ReplaceAll(err.Error(), "000000", strings.TrimSuffix(name, ".sst")))
			}
		case strings.HasPrefix(name, "MANIFEST-"):
			err = verifyManifest(filepath.Join(pdir, name))
		case strings.HasSuffix(name, ".log") && withWAL:
			err = verifyWAL(filepath.Join(pdir, name))
		default:
			continue
		}
		if err != nil {
			out = append(out, Problem{File: rel, Err: errText(err)})
		}
	}
	return out
}

// verifyTable checks the checksum of every block of the table at path.
func verifyTable(path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("unreadable table: %v", r)
		}
	}()
	f, err := vfs.Default.Open(path)
	if err != nil {
		return err
	}
	readable, err := sstable.NewSimpleReadable(f)
	if err != nil {
		return errors.Join(err, f.Close())
	}
	r, err := sstable.NewReader(context.Background(), readable, sstable.ReaderOptions{})
	if err != nil {
		return errors.Join(err, readable.Close())
	}
	defer func() { _ = r.Close() }()
	return r.ValidateBlockChecksums()
}

// verifyManifest reads every record of the MANIFEST at path.
func verifyManifest(path string) error {
	f, err := os.Open(path) //nolint:gosec // G304: a file of the data folder being checked
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	rr := record.NewReader(f, 0)
	for n := 0; ; n++ {
		r, err := rr.Next()
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("record %d (offset %d) is damaged: %w", n, rr.Offset(), err)
		}
	}
}

// verifyWAL reads the WAL at path. The engine reads a WAL up to its first
// damaged record and takes the rest for the unwritten tail of a crash; a
// damaged record followed by readable ones means records were lost.
func verifyWAL(path string) error {
	num, _, ok := wal.ParseLogFilename(filepath.Base(path))
	if !ok {
		return nil
	}
	// record.NewReader wants the log number in a type Pebble keeps
	// internal; WALCreateInfo.FileNum has it.
	logNum := pebble.WALCreateInfo{}.FileNum
	reflect.ValueOf(&logNum).Elem().SetUint(uint64(num))
	f, err := os.Open(path) //nolint:gosec // G304: a file of the data folder being checked
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rr := record.NewReader(f, logNum)
	var bad int64
	for {
		bad = rr.Offset()
		r, err := rr.Next()
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			break
		}
	}
	// Is there a readable record in a later block?
	const block = 32 << 10
	for at := (bad/block + 1) * block; at < fi.Size(); at += block {
		rr := record.NewReader(io.NewSectionReader(f, at, fi.Size()-at), logNum)
		if r, err := rr.Next(); err == nil {
			if _, err := io.Copy(io.Discard, r); err == nil {
				return fmt.Errorf("damaged at offset %d, and readable records follow from offset %d: the engine stops at the damage and drops them (after a power loss this can also be a torn write of records never acknowledged)", bad, at)
			}
		}
	}
	return nil
}

// keyName prints a key of the engine for people: its kind, namespace and
// the rest (a sequence number for tasks and payloads).
func keyName(k []byte) string {
	if len(k) == 0 {
		return "(empty key)"
	}
	kind := map[byte]string{kTask: "task", kPayload: "payload", kID: "id", kQueue: "queue", kUnique: "unique", kMeta: "meta",
		kReady: "ready index", kDelayed: "delayed index", kLeased: "lease index", kExpiry: "expiry index", kCounts: "counts"}[k[0]]
	ns, rest, ok := splitKey(k)
	if kind == "" || !ok {
		return strconv.Quote(string(k))
	}
	if (k[0] == kTask || k[0] == kPayload || k[0] == kLeased) && len(rest) == 8 {
		return fmt.Sprintf("%s %s/%d", kind, ns, binary.BigEndian.Uint64(rest))
	}
	return fmt.Sprintf("%s %s/%s", kind, ns, strconv.Quote(string(rest)))
}

// sink receives what readAll finds; nil methods are not called.
type sink struct {
	task    func(ns string, seq uint64, rec []byte, t *store.Task)
	payload func(ns string, seq uint64, v []byte)
	other   func(k, v []byte) // queue, unique and meta records that decode
}

// readAll reads every record of eng, going around damaged parts, checks
// that each decodes and that tasks, payloads and the id index agree, and
// counts what it reads into rep.
func readAll(eng engine, rep *Report, out *sink) {
	type taskRef struct {
		id      string
		inline  bool // its record holds its payload
		hasPay  bool
		ikey    []byte // the index key the record needs (nil: finished)
		indexed bool   // an index key names it
		state   store.State
		queue   string
	}
	tasks := make(map[string]map[uint64]*taskRef) // ns -> seq -> task
	ref := func(ns string, seq uint64) *taskRef {
		if tasks[ns] == nil {
			return nil
		}
		return tasks[ns][seq]
	}
	scanAround(eng, []byte{kTask}, rep, func(k, v []byte) {
		ns, rest, ok := splitKey(k)
		if !ok || len(rest) != 8 {
			rep.problem("", keyName(k), errors.New("a task key of the wrong form"))
			return
		}
		seq := binary.BigEndian.Uint64(rest)
		t := &store.Task{Namespace: ns}
		got, err := krecord.Decode(v, t)
		if err == nil && got != seq {
			err = fmt.Errorf("the record says sequence number %d", got)
		}
		if err != nil {
			rep.problem("", keyName(k), err)
			return
		}
		if tasks[ns] == nil {
			tasks[ns] = make(map[uint64]*taskRef)
		}
		r := &taskRef{id: t.ID, state: t.State, queue: t.Queue, inline: t.Payload != nil, hasPay: t.Payload != nil}
		if !t.State.Terminal() {
			r.ikey = indexKey(ns, t, seq)
		}
		tasks[ns][seq] = r
		rep.count(ns, t.State)
		if out != nil && out.task != nil {
			out.task(ns, seq, v, t)
		}
	})
	scanAround(eng, []byte{kPayload}, rep, func(k, v []byte) {
		ns, rest, ok := splitKey(k)
		if !ok || len(rest) != 8 {
			rep.problem("", keyName(k), errors.New("a payload key of the wrong form"))
			return
		}
		seq := binary.BigEndian.Uint64(rest)
		r := ref(ns, seq)
		switch {
		case r == nil:
			rep.problem("", keyName(k), errors.New("a payload of no (readable) task"))
			return
		case r.inline:
			rep.problem("", keyName(k), fmt.Errorf("a payload of task %q, whose record holds its payload", r.id))
			return
		}
		r.hasPay = true
		if out != nil && out.payload != nil {
			out.payload(ns, seq, v)
		}
	})
	indexed := make(map[string]map[uint64]bool)
	scanAround(eng, []byte{kID}, rep, func(k, v []byte) {
		ns, rest, ok := splitKey(k)
		switch {
		case !ok:
			rep.problem("", keyName(k), errors.New("an id key of the wrong form"))
		case len(v) != 8:
			rep.problem("", keyName(k), fmt.Errorf("an id index value of %d bytes, not 8", len(v)))
		default:
			seq := binary.BigEndian.Uint64(v)
			r := ref(ns, seq)
			switch {
			case r == nil:
				rep.problem("", keyName(k), fmt.Errorf("the id index points to task record %d, which is missing or unreadable", seq))
			case r.id != string(rest):
				rep.problem("", keyName(k), fmt.Errorf("the id index points to task record %d, which is task %q", seq, r.id))
			default:
				if indexed[ns] == nil {
					indexed[ns] = make(map[uint64]bool)
				}
				indexed[ns][seq] = true
			}
		}
	})
	for _, ns := range slices.Sorted(maps.Keys(tasks)) {
		seqs := slices.Sorted(maps.Keys(tasks[ns]))
		for _, seq := range seqs {
			r := tasks[ns][seq]
			k := keyName(seqKey(kTask, ns, seq))
			if !indexed[ns][seq] {
				rep.problem("", k, fmt.Errorf("task %q is not in the id index", r.id))
			}
			if !r.hasPay {
				rep.problem("", k, fmt.Errorf("task %q has no payload record", r.id))
			}
		}
	}
	// The indexes: each key names a task record of its state (a finished
	// task's key may be at its flow's expiry rather than its own), and
	// each live task has its key.
	for _, kind := range indexKinds {
		scanAround(eng, []byte{kind}, rep, func(k, v []byte) {
			ns, _, ok := splitKey(k)
			if !ok || len(k) < 9 {
				rep.problem("", keyName(k), errors.New("an index key of the wrong form"))
				return
			}
			seq := keySeq(k)
			r := ref(ns, seq)
			switch {
			case r == nil:
				rep.problem("", keyName(k), fmt.Errorf("the index names task record %d, which is missing or unreadable", seq))
			case r.id != string(v):
				rep.problem("", keyName(k), fmt.Errorf("the index names task %q at record %d, which is task %q", v, seq, r.id))
			case r.ikey == nil && kind == kExpiry, bytes.Equal(r.ikey, k):
				r.indexed = true
			default:
				rep.problem("", keyName(k), fmt.Errorf("the index key of task %q does not match its record (state %s)", r.id, r.state))
			}
		})
	}
	counted := make(map[[2]string][store.NumStates + 1]int64)
	for ns, m := range tasks {
		for _, r := range m {
			c := counted[[2]string{ns, r.queue}]
			c[r.state]++
			counted[[2]string{ns, r.queue}] = c
			if r.ikey != nil && !r.indexed {
				rep.problem("", keyName(r.ikey), fmt.Errorf("task %q (state %s) is not in its index", r.id, r.state))
			}
		}
	}
	scanAround(eng, []byte{kCounts}, rep, func(k, v []byte) {
		ns, rest, ok := splitKey(k)
		var got [store.NumStates + 1]int64
		for i := range got {
			x, w := binary.Varint(v)
			if w <= 0 {
				ok = false
				break
			}
			got[i], v = x, v[w:]
		}
		if !ok {
			rep.problem("", keyName(k), errors.New("a counts record of the wrong form"))
			return
		}
		if want := counted[[2]string{ns, string(rest)}]; got != want && len(rep.Problems) == 0 {
			rep.problem("", keyName(k), fmt.Errorf("the counts %v do not match the task records %v", got, want))
		}
	})
	scanAround(eng, []byte{kQueue}, rep, func(k, v []byte) {
		if _, _, ok := splitKey(k); !ok || len(v) != 1 || v[0] != 1 {
			rep.problem("", keyName(k), fmt.Errorf("a queue record of the wrong form (%d bytes)", len(v)))
			return
		}
		if out != nil && out.other != nil {
			out.other(k, v)
		}
	})
	scanAround(eng, []byte{kUnique}, rep, func(k, v []byte) {
		_, w := binary.Varint(v)
		if _, _, ok := splitKey(k); !ok || w <= 0 {
			rep.problem("", keyName(k), errors.New("a unique key record of the wrong form"))
			return
		}
		if out != nil && out.other != nil {
			out.other(k, v)
		}
	})
	scanAround(eng, []byte{kMeta}, rep, func(k, v []byte) {
		ns, _, ok := splitKey(k)
		if !ok {
			rep.problem("", keyName(k), errors.New("a meta key of the wrong form"))
			return
		}
		rep.Meta[ns]++
		if out != nil && out.other != nil {
			out.other(k, v)
		}
	})
	for _, kind := range flowKinds {
		scanAround(eng, []byte{kind}, rep, func(k, v []byte) {
			if out != nil && out.other != nil {
				out.other(k, v)
			}
		})
	}
	// Anything else is not kiln's.
	known := append([]byte{kID, kMeta, kPayload, kQueue, kTask, kUnique, kCounts, kVersion}, flowKinds...)
	known = append(known, indexKinds...)
	scanAround(eng, nil, rep, func(k, _ []byte) {
		if len(k) == 0 || !slices.Contains(known, k[0]) {
			rep.problem("", keyName(k), errors.New("a key of no known kind"))
		}
	})
}

// maxSkips bounds the attempts to get past one damaged part of the engine.
const maxSkips = 200

// scanAround calls fn for every record with the prefix that can be read.
// When the engine fails in the middle (a damaged block of a table), it
// reports the failure and goes on after the damage: it seeks further and
// further past the last key it read until a seek succeeds.
func scanAround(eng engine, prefix []byte, rep *Report, fn func(k, v []byte)) {
	var last []byte
	start := prefix
	if len(start) == 0 {
		start = nil
	}
	for skip := 0; ; {
		err := eng.scan(prefix, start, false, func(k, v []byte) bool {
			last = append(last[:0], k...)
			fn(k, v)
			skip = 0
			return true
		})
		if err == nil {
			return
		}
		if skip == 0 {
			where := "at the start"
			if last != nil {
				where = "after " + keyName(last)
			}
			rep.Problems = append(rep.Problems, Problem{File: fileOf(err), Key: where, Err: "unreadable: " + errText(err)})
		}
		skip++
		if skip > maxSkips {
			rep.problem("", keyName(prefix), errors.New("gave up reading past the damage"))
			return
		}
		next := skipPast(last, prefix, skip)
		if next == nil {
			return
		}
		start = next
	}
}

// skipPast returns a key after last, further the larger n: for a task or
// payload key it adds 2^(n-1) to the sequence number; for other keys it
// increments a byte nearer the start of the key each time.
func skipPast(last, prefix []byte, n int) []byte {
	n = max(n, 1)
	if last == nil {
		last = prefix
	}
	_, rest, ok := splitKey(last)
	if ok && len(rest) == 8 && len(last) > 0 && (last[0] == kTask || last[0] == kPayload) {
		seq := binary.BigEndian.Uint64(rest)
		step := uint64(1) << min(n-1, 63)
		if seq+step < seq {
			return nil
		}
		out := bytes.Clone(last[:len(last)-8])
		return binary.BigEndian.AppendUint64(out, seq+step)
	}
	// A byte string: first just past last, then past ever shorter prefixes
	// of it.
	if n == 1 {
		return append(bytes.Clone(last), 0)
	}
	cut := len(last) - (n - 2)
	if cut <= len(prefix) {
		return nil
	}
	return prefixEnd(last[:cut])
}

// tableRef matches how Pebble's errors name a table: "file 000015",
// "table 000015", "000015.sst".
var tableRef = regexp.MustCompile(`(?:(?:file|table) ([0-9]{6,})\b)|(?:\b([0-9]{6,})\.sst\b)`)

// fileOf finds the table an error of the engine names, or "".
func fileOf(err error) string {
	m := tableRef.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	return filepath.Join("pebble", m[1]+m[2]+".sst")
}

// Recover copies every readable task, with its payload, and every readable
// queue, unique key and meta record of the data folder src into a new data
// folder dst (which must not exist, or be empty), and rebuilds the id
// index; the task indexes and queue counts are built by the Open that
// checks the copy. src is not changed. A task whose record or payload cannot be read
// is left out, and reported. The report counts what was copied.
func Recover(src, dst string) (*Report, error) {
	if err := isDataFolder(src); err != nil {
		return nil, err
	}
	if abs1, abs2 := absPath(src), absPath(dst); abs1 == abs2 {
		return nil, errors.New("the new data folder must not be the damaged one")
	}
	if entries, err := os.ReadDir(dst); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty: recover writes into a new data folder", dst)
	}
	rep := newReport()
	verifyFiles(src, rep)
	in, err := openEngine(enginePebble, src, true, engineHooks{})
	if isLockError(err) {
		return nil, fmt.Errorf("%s is in use: stop the server (or program) that has it open first: %w", src, err)
	}
	if err != nil {
		return rep, fmt.Errorf("the engine of %s does not open, so nothing can be read through it: %w", src, err)
	}
	defer func() { _ = in.close() }()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return rep, err
	}
	out, err := openEngine(enginePebble, dst, false, engineHooks{})
	if err != nil {
		return rep, err
	}
	w := &copier{eng: out}
	payloads := make(map[string]map[uint64][]byte)
	type kept struct {
		ns, id string
		seq    uint64
		rec    []byte
		state  store.State
		inline bool // rec holds the payload
	}
	var tasks []kept
	got := newReport() // what readAll reads; the copy's counts go in rep
	readAll(in, got, &sink{
		task: func(ns string, seq uint64, rec []byte, t *store.Task) {
			tasks = append(tasks, kept{ns: ns, id: t.ID, seq: seq, rec: bytes.Clone(rec), state: t.State, inline: t.Payload != nil})
		},
		payload: func(ns string, seq uint64, v []byte) {
			if payloads[ns] == nil {
				payloads[ns] = make(map[uint64][]byte)
			}
			payloads[ns][seq] = bytes.Clone(v)
		},
		other: func(k, v []byte) {
			if k[0] == kMeta {
				ns, _, _ := splitKey(k)
				rep.Meta[ns]++
			}
			w.put(k, v)
		},
	})
	rep.Problems = append(rep.Problems, got.Problems...)
	// One task per id: the newest readable record wins (the index may be
	// what was damaged).
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].seq > tasks[j].seq })
	seen := make(map[string]bool)
	for _, t := range tasks {
		pay, ok := payloads[t.ns][t.seq]
		switch {
		case seen[hiddenKey(t.ns, t.id)]:
			continue
		case !ok && !t.inline:
			rep.problem("", keyName(seqKey(kTask, t.ns, t.seq)), fmt.Errorf("task %q left out: its payload cannot be read", t.id))
			continue
		}
		seen[hiddenKey(t.ns, t.id)] = true
		w.put(seqKey(kTask, t.ns, t.seq), t.rec)
		if !t.inline {
			w.put(seqKey(kPayload, t.ns, t.seq), pay)
		}
		w.put(nameKey(kID, t.ns, t.id), binary.BigEndian.AppendUint64(nil, t.seq))
		rep.count(t.ns, t.state)
	}
	err = errors.Join(w.flush(), out.close())
	if err != nil {
		return rep, fmt.Errorf("writing %s: %w", dst, err)
	}
	// The copy must open as a store.
	s, err := Open(dst, &Config{ReserveBytes: -1})
	if err != nil {
		return rep, fmt.Errorf("the copy in %s does not open: %w", dst, err)
	}
	return rep, s.Close()
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return filepath.Clean(a)
	}
	return filepath.Clean(p)
}

// copier writes records in batches.
type copier struct {
	eng engine
	ops []op
	n   int
	err error
}

func (c *copier) put(k, v []byte) {
	c.ops = append(c.ops, op{key: bytes.Clone(k), val: bytes.Clone(v)})
	c.n += len(k) + len(v)
	if c.n >= 4<<20 {
		c.err = errors.Join(c.err, c.flush())
	}
}

func (c *copier) flush() error {
	if len(c.ops) > 0 && c.err == nil {
		c.err = c.eng.apply(c.ops, true)
	}
	c.ops, c.n = c.ops[:0], 0
	return c.err
}
