package runner

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func unpackBytes(t testing.TB, z []byte, lim Limits) (string, Manifest, error) {
	t.Helper()
	parent := t.TempDir()
	dst := filepath.Join(parent, "pkg")
	m, err := Unpack(bytes.NewReader(z), int64(len(z)), dst, lim)
	return dst, m, err
}

func TestUnpackValid(t *testing.T) {
	t.Parallel()
	inner := buildZip(t, entry{name: "inner.txt", data: []byte("inner")})
	z := buildZip(t,
		entry{name: "bin/", mode: fs.ModeDir | 0o755},
		entry{name: "bin/worker", data: []byte("#!/bin/sh\necho hi\n"), mode: 0o755, method: zip.Deflate},
		entry{name: "README.md", data: []byte("hello"), mode: 0o600},
		entry{name: "lib/deep/x.py", data: []byte("print(1)"), mode: 0o644, method: zip.Deflate},
		entry{name: "setuid", data: []byte("x"), attrs: (0o100000 | 0o4755) << 16},
		entry{name: "setgid-sticky", data: []byte("x"), attrs: (0o100000 | 0o3644) << 16},
		entry{name: "windows.txt", data: []byte("w"), creator: 0}, // MS-DOS creator: no Unix mode
		entry{name: "nested.zip", data: inner},                    // not unpacked
		entry{name: "spaces.txt", data: bytes.Repeat([]byte(" "), 100<<10), method: zip.Deflate},
		entry{name: "ünïcode-名前.txt", data: []byte("u")},
	)
	dst, m, err := unpackBytes(t, z, Limits{})
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	want := map[string]fs.FileMode{
		"bin":            fs.ModeDir | 0o755,
		"bin/worker":     0o755,
		"README.md":      0o644,
		"lib":            fs.ModeDir | 0o755,
		"lib/deep":       fs.ModeDir | 0o755,
		"lib/deep/x.py":  0o644,
		"setuid":         0o755,
		"setgid-sticky":  0o644,
		"windows.txt":    0o644,
		"nested.zip":     0o644,
		"spaces.txt":     0o644,
		"ünïcode-名前.txt": 0o644,
	}
	got := map[string]fs.FileMode{}
	err = filepath.WalkDir(dst, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		got[filepath.ToSlash(rel)] = info.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files and modes (-want +got):\n%s", diff)
	}
	data, err := os.ReadFile(filepath.Join(dst, "nested.zip"))
	if err != nil || !bytes.Equal(data, inner) {
		t.Errorf("nested.zip: got %d bytes, %v; want the inner archive unchanged", len(data), err)
	}
	if e, ok := m.Lookup("bin/worker"); !ok || e.Mode != 0o755 || e.Size != int64(len("#!/bin/sh\necho hi\n")) {
		t.Errorf("Lookup(bin/worker) = %+v, %v", e, ok)
	}
	if m.Files != 9 || m.TotalSize != int64(5+len("#!/bin/sh\necho hi\n")+8+1+1+1+len(inner)+100<<10+1) {
		t.Errorf("manifest: Files %d, TotalSize %d", m.Files, m.TotalSize)
	}
	info, err := os.Stat(dst)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("dst mode: %v, %v; want 0700", info.Mode(), err)
	}
	if left := dirContents(t, filepath.Dir(dst)); len(left) != len(want)+1 {
		t.Errorf("parent holds %d paths, want %d (no temporary left): %v", len(left), len(want)+1, left)
	}
}

// hostile is one row of reliability.md 5.2 for code packages.
type hostile struct {
	name string
	zip  func(t testing.TB) []byte
	lim  Limits
	want error
}

func hostileZips() []hostile {
	file := func(name string) func(t testing.TB) []byte {
		return func(t testing.TB) []byte {
			return buildZip(t, entry{name: "ok.txt", data: []byte("ok")}, entry{name: name, data: []byte("evil")})
		}
	}
	typed := func(unixMode uint32, creator uint16) func(t testing.TB) []byte {
		return func(t testing.TB) []byte {
			return buildZip(t, entry{name: "ok.txt", data: []byte("ok")},
				entry{name: "x", data: []byte("/"), attrs: unixMode << 16, creator: creator})
		}
	}
	stored := func(name string, data []byte) rawEntry {
		return rawEntry{h: zip.FileHeader{Name: name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(data),
			CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))}, data: data}
	}
	bomb := func(mib int, declared uint64) func(t testing.TB) []byte {
		return func(t testing.TB) []byte {
			stream, crc := zeroDeflate(t, mib)
			if declared == 0 {
				declared = uint64(mib) << 20
			}
			return buildRawZip(t, rawEntry{h: zip.FileHeader{Name: "zeros", Method: zip.Deflate, CRC32: crc,
				CompressedSize64: uint64(len(stream)), UncompressedSize64: declared}, data: stream})
		}
	}
	return []hostile{
		{"zip-slip ../evil", file("../evil"), Limits{}, ErrUnsafePath},
		{"zip-slip a/../../evil", file("a/../../evil"), Limits{}, ErrUnsafePath},
		{"zip-slip inner ..", file("a/../b"), Limits{}, ErrUnsafePath},
		{"absolute /etc/x", file("/etc/x"), Limits{}, ErrUnsafePath},
		{"absolute //server/share", file("//server/share/x"), Limits{}, ErrUnsafePath},
		{`drive C:\x`, file(`C:\x`), Limits{}, ErrUnsafePath},
		{"drive C:/x", file("C:/x"), Limits{}, ErrUnsafePath},
		{`backslash ..\x`, file(`..\x`), Limits{}, ErrUnsafePath},
		{`UNC \\server\share`, file(`\\server\share\x`), Limits{}, ErrUnsafePath},
		{"dot element", file("./x"), Limits{}, ErrUnsafePath},
		{"empty element", file("a//x"), Limits{}, ErrUnsafePath},
		{"NUL in name", file("a\x00.txt"), Limits{}, ErrUnsafePath},
		{"newline in name", file("a\n.txt"), Limits{}, ErrUnsafePath},
		{"RTL override", file("a\u202etxt.exe"), Limits{}, ErrUnsafePath},
		{"invalid UTF-8", file("a\xff.txt"), Limits{}, ErrUnsafePath},
		{"empty name", file(""), Limits{}, ErrUnsafePath},
		{"slash only", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "ok", data: []byte("ok")}, entry{name: "/"})
		}, Limits{}, ErrUnsafePath},
		{"path > 4096", file(strings.Repeat("d/", 2100) + "x"), Limits{}, ErrUnsafePath},
		{"element > 255", file(strings.Repeat("x", 256)), Limits{}, ErrUnsafePath},
		{"symlink (Unix creator)", typed(0o120777, creatorUnix), Limits{}, ErrLinkEntry},
		{"symlink bits, FAT creator", typed(0o120777, 0), Limits{}, ErrLinkEntry},
		{"symlink bits, NTFS creator", typed(0o120777, 11<<8), Limits{}, ErrLinkEntry},
		{"symlink via SetMode", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "ok", data: []byte("ok")}, entry{name: "root", data: []byte("/"), mode: fs.ModeSymlink | 0o777})
		}, Limits{}, ErrLinkEntry},
		{"char device", typed(0o020666, creatorUnix), Limits{}, ErrSpecialFile},
		{"block device", typed(0o060660, creatorUnix), Limits{}, ErrSpecialFile},
		{"FIFO", typed(0o010644, creatorUnix), Limits{}, ErrSpecialFile},
		{"socket", typed(0o140755, creatorUnix), Limits{}, ErrSpecialFile},
		{"unknown type", typed(0o070644, creatorUnix), Limits{}, ErrSpecialFile},
		{"hard link (two entries, one data)", func(t testing.TB) []byte {
			z := buildZip(t, entry{name: "a", data: []byte("shared data")}, entry{name: "b", data: []byte("other data!")})
			return setCentralOffset(t, z, 1, 0)
		}, Limits{}, ErrMalformed},
		{"duplicate name", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "a.txt", data: []byte("1")}, entry{name: "a.txt", data: []byte("2")})
		}, Limits{}, ErrDuplicate},
		{"duplicate by case", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "Worker", data: []byte("1")}, entry{name: "worker", data: []byte("2")})
		}, Limits{}, ErrDuplicate},
		{"duplicate directory", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "d/"}, entry{name: "d/"}, entry{name: "f", data: []byte("1")})
		}, Limits{}, ErrDuplicate},
		{"file used as directory", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "a", data: []byte("1")}, entry{name: "a/b", data: []byte("2")})
		}, Limits{}, ErrDuplicate},
		{"directory then file of its name", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "a/b", data: []byte("1")}, entry{name: "a", data: []byte("2")})
		}, Limits{}, ErrDuplicate},
		{"10,001 files", func(t testing.TB) []byte {
			es := make([]entry, 10_001)
			for i := range es {
				es[i] = entry{name: fmt.Sprintf("f%05d", i)}
			}
			return buildZip(t, es...)
		}, Limits{}, ErrTooManyFiles},
		{"far more records than MaxFiles (pre-scan)", func(t testing.TB) []byte {
			es := make([]entry, 1100)
			for i := range es {
				es[i] = entry{name: fmt.Sprintf("f%04d", i)}
			}
			return buildZip(t, es...)
		}, Limits{MaxFiles: 10}, ErrTooManyFiles},
		{"1 GiB of zeros, honest header", bomb(1024, 0), Limits{}, ErrTooLarge},
		{"400 MiB of zeros from 400 KiB (ratio)", bomb(400, 0), Limits{}, ErrRatio},
		{"1 GiB of zeros, header says 100 bytes", bomb(1024, 100), Limits{}, ErrMalformed},
		{"per-file cap", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "big", data: bytes.Repeat([]byte("ab"), 1<<20)})
		}, Limits{MaxFileSize: 1 << 20}, ErrTooLarge},
		{"total cap", func(t testing.TB) []byte {
			return buildZip(t, entry{name: "a", data: make([]byte, 600<<10)}, entry{name: "b", data: make([]byte, 600<<10)})
		}, Limits{MaxTotalSize: 1 << 20}, ErrTooLarge},
		{"lying size: less data than declared", func(t testing.TB) []byte {
			e := stored("a", []byte("short"))
			e.h.UncompressedSize64 = 10
			e.h.CompressedSize64 = 5
			return buildRawZip(t, e)
		}, Limits{}, ErrMalformed},
		{"bad checksum", func(t testing.TB) []byte {
			e := stored("a", []byte("data"))
			e.h.CRC32++
			return buildRawZip(t, e)
		}, Limits{}, ErrMalformed},
		{"unsupported method", func(t testing.TB) []byte {
			e := stored("a", []byte("data"))
			e.h.Method = 12 // bzip2
			return buildRawZip(t, e)
		}, Limits{}, ErrMalformed},
		{"encrypted", func(t testing.TB) []byte {
			return setCentralFlags(t, buildZip(t, entry{name: "a", data: []byte("data")}), 0, 1)
		}, Limits{}, ErrMalformed},
		{"directory with data", func(t testing.TB) []byte {
			z := buildRawZip(t, stored("f", []byte("x")), stored("dirX", []byte("data")))
			return bytes.ReplaceAll(z, []byte("dirX"), []byte("dir/"))
		}, Limits{}, ErrMalformed},
		{"data beyond the end", func(t testing.TB) []byte {
			e := stored("a", []byte("data"))
			e.h.CompressedSize64 = 1 << 40
			return buildRawZip(t, e)
		}, Limits{}, ErrMalformed},
		{"not a zip", func(testing.TB) []byte { return []byte("this is not a zip archive at all") }, Limits{}, ErrNotZip},
		{"empty input", func(testing.TB) []byte { return nil }, Limits{}, ErrNotZip},
		{"truncated zip", func(t testing.TB) []byte {
			z := buildZip(t, entry{name: "a", data: []byte("data")})
			return z[:len(z)-10]
		}, Limits{}, ErrNotZip},
		{"empty zip", func(t testing.TB) []byte { return buildZip(t) }, Limits{}, ErrEmpty},
		{"only directories", func(t testing.TB) []byte { return buildZip(t, entry{name: "a/"}, entry{name: "a/b/"}) }, Limits{}, ErrEmpty},
	}
}

func TestUnpackHostile(t *testing.T) {
	t.Parallel()
	for _, tc := range hostileZips() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			z := tc.zip(t)
			dst, _, err := unpackBytes(t, z, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unpack: got %v, want %v", err, tc.want)
			}
			t.Logf("rejected: %v", err)
			if left := dirContents(t, filepath.Dir(dst)); len(left) != 0 {
				t.Errorf("a rejected archive left %v", left)
			}
			var ee *EntryError
			if errors.As(err, &ee) && len(ee.Name) <= 128 && !strings.Contains(err.Error(), fmt.Sprintf("%q", ee.Name)) {
				t.Errorf("error %q does not name the entry %q", err, ee.Name)
			}
		})
	}
}

func TestUnpackDstExists(t *testing.T) {
	t.Parallel()
	z := buildZip(t, entry{name: "a", data: []byte("a")})
	parent := t.TempDir()
	dst := filepath.Join(parent, "pkg")
	if err := os.Mkdir(dst, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(bytes.NewReader(z), int64(len(z)), dst, Limits{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Unpack into an existing dir: got %v, want fs.ErrExist", err)
	}
	if left := dirContents(t, parent); len(left) != 1 {
		t.Errorf("parent holds %v, want only pkg", left)
	}
}

func TestUnpackLimitsValidate(t *testing.T) {
	t.Parallel()
	z := buildZip(t, entry{name: "a", data: []byte("a")})
	_, _, err := unpackBytes(t, z, Limits{MaxTotalSize: -1, MaxFiles: -1})
	if err == nil || !strings.Contains(err.Error(), "MaxTotalSize") || !strings.Contains(err.Error(), "MaxFiles") {
		t.Fatalf("got %v, want both problems reported", err)
	}
}

// The streaming guard counts the bytes produced, whatever the header says.
func TestGuard(t *testing.T) {
	t.Parallel()
	lim := Limits{MaxTotalSize: 100, MaxFileSize: 60, MaxRatio: 10, RatioMinSize: 20}.withDefaults()
	f := &zip.File{FileHeader: zip.FileHeader{Name: "x", UncompressedSize64: 1000}}
	tests := []struct {
		name                     string
		total, written, n, compr int64
		want                     error
	}{
		{"fine", 0, 0, 10, 10, nil},
		{"file cap", 0, 50, 11, 100, ErrTooLarge},
		{"total cap", 90, 0, 11, 100, ErrTooLarge},
		{"ratio under RatioMinSize", 0, 0, 19, 1, nil},
		{"ratio", 0, 10, 20, 2, ErrRatio},
		{"ratio at the limit", 0, 10, 10, 2, nil},
	}
	for _, tc := range tests {
		g := guard{lim: lim, total: tc.total}
		if err := g.admit(f, tc.written, tc.n, tc.compr); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	small := &zip.File{FileHeader: zip.FileHeader{Name: "x", UncompressedSize64: 5}}
	g := guard{lim: lim}
	if err := g.admit(small, 0, 6, 6); !errors.Is(err, ErrMalformed) {
		t.Errorf("more than declared: got %v, want ErrMalformed", err)
	}
}
