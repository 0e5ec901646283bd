package runner

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzUnpack: Unpack never panics, never writes outside dst, writes nothing
// when it fails, and writes only regular files and directories with masked
// modes, matching its Manifest, when it succeeds.
func FuzzUnpack(f *testing.F) {
	f.Add(buildZip(f, entry{name: "a.txt", data: []byte("hello")}, entry{name: "d/b.sh", data: []byte("#!/bin/sh\n"), mode: 0o755}))
	f.Add(buildZip(f, entry{name: "x", data: bytes.Repeat([]byte("z"), 5000), method: 8}))
	for _, h := range hostileZips() {
		switch {
		case strings.Contains(h.name, "GiB"), strings.Contains(h.name, "MiB"), strings.Contains(h.name, "files"), strings.Contains(h.name, "records"):
			continue // large seeds slow every fuzz iteration down
		}
		f.Add(h.zip(f))
	}
	lim := Limits{MaxTotalSize: 1 << 20, MaxFiles: 64, RatioMinSize: 64 << 10}
	f.Fuzz(func(t *testing.T, z []byte) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "pkg")
		m, err := Unpack(bytes.NewReader(z), int64(len(z)), dst, lim)
		if err != nil {
			if left := dirContents(t, parent); len(left) != 0 {
				t.Fatalf("Unpack failed (%v) but left %v", err, left)
			}
			return
		}
		// Everything under parent is under dst.
		for _, p := range dirContents(t, parent) {
			if p != "pkg" && !strings.HasPrefix(p, "pkg"+string(filepath.Separator)) {
				t.Fatalf("wrote %q outside dst", p)
			}
		}
		seen := 0
		err = filepath.WalkDir(dst, func(p string, _ fs.DirEntry, err error) error {
			if err != nil || p == dst {
				return err
			}
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dst, p)
			mode := info.Mode()
			switch {
			case mode.IsDir():
				if mode.Perm() != 0o755 || mode&^(fs.ModeDir|fs.ModePerm) != 0 {
					t.Errorf("%s: directory mode %v", rel, mode)
				}
			case mode.IsRegular():
				if mode != 0o644 && mode != 0o755 {
					t.Errorf("%s: file mode %v", rel, mode)
				}
				e, ok := m.Lookup(filepath.ToSlash(rel))
				if !ok || e.Size != info.Size() || e.Mode != mode {
					t.Errorf("%s: %v %d bytes on disk, manifest %+v %v", rel, mode, info.Size(), e, ok)
				}
				seen++
			default:
				t.Errorf("%s: not a regular file or directory: %v", rel, mode)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen != m.Files || m.Files == 0 {
			t.Errorf("%d files on disk, manifest says %d", seen, m.Files)
		}
		if m.TotalSize > lim.MaxTotalSize {
			t.Errorf("TotalSize %d above the limit", m.TotalSize)
		}
	})
}
