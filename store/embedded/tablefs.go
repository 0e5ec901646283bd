package embedded

import (
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// tableWriteBuf is the size of the writes of a table to its file.
const tableWriteBuf = 256 << 10

// tableFS is the file system Pebble writes through, with the tables
// (".sst") it creates written in writes of tableWriteBuf bytes: Pebble
// writes a table a block at a time through a 4 KiB buffer, one system call
// per 4 KiB. Every other file, the write-ahead log included, is written as
// Pebble writes it. A table's bytes reach its file before anything else is
// done with it (a sync, a read, its size, closing it), so what Pebble
// syncs, and when, is unchanged.
type tableFS struct{ vfs.FS }

// Unwrap returns the file system under fs.
func (fs tableFS) Unwrap() vfs.FS { return fs.FS }

func (fs tableFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || !strings.HasSuffix(name, ".sst") {
		return f, err
	}
	return &tableFile{File: f}, nil
}

// tableFile is a table being written: its writes are gathered in buf and
// written together.
type tableFile struct {
	vfs.File
	buf []byte
}

func (f *tableFile) Write(p []byte) (int, error) {
	if len(f.buf)+len(p) > tableWriteBuf {
		if err := f.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= tableWriteBuf {
		return f.File.Write(p)
	}
	if f.buf == nil {
		f.buf = make([]byte, 0, tableWriteBuf)
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

// flush writes what buf holds.
func (f *tableFile) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	_, err := f.File.Write(f.buf)
	f.buf = f.buf[:0]
	return err
}

func (f *tableFile) Close() error {
	err := f.flush()
	f.buf = nil
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *tableFile) Read(p []byte) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *tableFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *tableFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *tableFile) Stat() (vfs.FileInfo, error) {
	if err := f.flush(); err != nil {
		return nil, err
	}
	return f.File.Stat()
}

func (f *tableFile) Sync() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *tableFile) SyncData() error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *tableFile) SyncTo(length int64) (bool, error) {
	if err := f.flush(); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}
