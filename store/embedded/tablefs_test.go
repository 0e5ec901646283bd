package embedded

import (
	"bytes"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// countFS counts the writes to the files it creates.
type countFS struct {
	vfs.FS
	writes *int
}

func (fs countFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return countFile{File: f, writes: fs.writes}, nil
}

type countFile struct {
	vfs.File
	writes *int
}

func (f countFile) Write(p []byte) (int, error) {
	*f.writes++
	return f.File.Write(p)
}

// TestTableFS: a table's 4 KiB writes reach its file in writes of
// tableWriteBuf bytes, and every byte is there before the table is read,
// measured, synced or closed; the other files are written as they are.
func TestTableFS(t *testing.T) {
	t.Parallel()
	mem := vfs.NewMem()
	var writes int
	fs := tableFS{countFS{FS: mem, writes: &writes}}
	block := bytes.Repeat([]byte{7}, 4096)

	// 100 blocks of 4 KiB: two full buffers and the rest.
	f, err := fs.Create("000001.sst", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		block[0] = byte(i)
		if n, err := f.Write(block); n != len(block) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if want := 100 * 4096 / tableWriteBuf; writes != want {
		t.Fatalf("%d writes of the table before it is synced, want %d", writes, want)
	}
	// Every call that reads the file, or syncs it, finds every byte
	// written before it there, the last 100 bytes included.
	size := int64(100 * 4096)
	checks := []struct {
		name  string
		check func() error
	}{
		{"ReadAt", func() error {
			got := make([]byte, 100)
			_, err := f.ReadAt(got, size-100)
			if err == nil && got[0] != byte(size) {
				t.Errorf("ReadAt: the last bytes are %d, want %d", got[0], byte(size))
			}
			return err
		}},
		{"Stat", func() error {
			st, err := f.Stat()
			if err == nil && st.Size() != size {
				t.Errorf("Stat: size %d, want %d", st.Size(), size)
			}
			return err
		}},
		{"Sync", func() error {
			n := writes
			err := f.Sync()
			if writes != n+1 {
				t.Errorf("Sync: %d writes, want 1", writes-n)
			}
			return err
		}},
	}
	for _, c := range checks {
		size += 100
		if _, err := f.Write(bytes.Repeat([]byte{byte(size)}, 100)); err != nil {
			t.Fatal(err)
		}
		if err := c.check(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	if _, err := f.Write(block[:10]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := mem.Open("000001.sst")
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r)
	_ = r.Close()
	if err != nil || len(all) != 100*4096+300+10 || all[99*4096] != 99 {
		t.Fatalf("the table on disk: %d bytes, %v", len(all), err)
	}

	// A write-ahead log is written as Pebble writes it.
	writes = 0
	w, err := fs.Create("000002.log", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := w.Write(block[:100]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if writes != 3 {
		t.Fatalf("%d writes of the log, want 3", writes)
	}
}
