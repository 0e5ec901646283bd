package runner

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Defaults of Limits.
const (
	// MaxTotalSizeDefault is the default cap on the bytes of all files together: 512 MiB.
	MaxTotalSizeDefault = 512 << 20
	// MaxFilesDefault is the default cap on the number of entries, directories included.
	MaxFilesDefault = 10_000
	// MaxRatioDefault is the default cap on an entry's compression ratio: 200:1.
	MaxRatioDefault = 200
	// RatioMinSizeDefault is how many bytes an entry may produce before its
	// ratio is checked: 1 MiB, so small, very compressible files (a page of
	// spaces) pass.
	RatioMinSizeDefault = 1 << 20
	// MaxPathLenDefault is the default cap on an entry name's length in bytes: 1024.
	MaxPathLenDefault = 1024
)

// maxElemLen is the longest path element Linux file systems accept.
const maxElemLen = 255

// Limits bound what Unpack accepts. The zero value means all defaults; a
// zero field means that field's default; negative values are invalid.
type Limits struct {
	// MaxTotalSize caps the bytes of all files together. Default MaxTotalSizeDefault.
	MaxTotalSize int64
	// MaxFileSize caps the bytes of one file. Default MaxTotalSize.
	MaxFileSize int64
	// MaxFiles caps the number of entries, directories included. Default MaxFilesDefault.
	MaxFiles int
	// MaxRatio caps, for each entry, the bytes produced per compressed byte
	// consumed. Default MaxRatioDefault.
	MaxRatio int64
	// RatioMinSize is how many bytes an entry may produce before MaxRatio is
	// enforced. Default RatioMinSizeDefault.
	RatioMinSize int64
	// MaxPathLen caps an entry name's length in bytes. Default MaxPathLenDefault.
	MaxPathLen int
}

func (l Limits) withDefaults() Limits {
	if l.MaxTotalSize == 0 {
		l.MaxTotalSize = MaxTotalSizeDefault
	}
	if l.MaxFileSize == 0 {
		l.MaxFileSize = l.MaxTotalSize
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = MaxFilesDefault
	}
	if l.MaxRatio == 0 {
		l.MaxRatio = MaxRatioDefault
	}
	if l.RatioMinSize == 0 {
		l.RatioMinSize = RatioMinSizeDefault
	}
	if l.MaxPathLen == 0 {
		l.MaxPathLen = MaxPathLenDefault
	}
	return l
}

func (l Limits) validate() error {
	var errs []error
	if l.MaxTotalSize < 0 {
		errs = append(errs, errors.New("runner: Limits.MaxTotalSize is negative"))
	}
	if l.MaxFileSize < 0 {
		errs = append(errs, errors.New("runner: Limits.MaxFileSize is negative"))
	}
	if l.MaxFiles < 0 {
		errs = append(errs, errors.New("runner: Limits.MaxFiles is negative"))
	}
	if l.MaxRatio < 0 {
		errs = append(errs, errors.New("runner: Limits.MaxRatio is negative"))
	}
	if l.RatioMinSize < 0 {
		errs = append(errs, errors.New("runner: Limits.RatioMinSize is negative"))
	}
	if l.MaxPathLen < 0 {
		errs = append(errs, errors.New("runner: Limits.MaxPathLen is negative"))
	}
	return errors.Join(errs...)
}

// Manifest lists what Unpack wrote.
type Manifest struct {
	// Entries are the archive's entries in archive order, with cleaned names
	// (slash-separated, no trailing slash for directories).
	Entries []Entry
	// Files is the number of regular files.
	Files int
	// TotalSize is the bytes of all files together.
	TotalSize int64
}

// Entry is one unpacked file or directory.
type Entry struct {
	// Name is the cleaned, slash-separated path inside the package.
	Name string
	// Size is the file's size in bytes (0 for a directory).
	Size int64
	// Mode is 0644 or 0755 for a file, fs.ModeDir|0755 for a directory.
	Mode fs.FileMode
}

// Lookup returns the entry with the given name, cleaned the same way.
func (m Manifest) Lookup(name string) (Entry, bool) {
	name = strings.TrimSuffix(name, "/")
	for _, e := range m.Entries {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// entryKind says how a path is used, to find conflicts.
type entryKind uint8

const (
	kindFile entryKind = iota + 1
	kindDir
	kindImplicitDir // a parent of another entry, with no entry of its own
)

type plannedEntry struct {
	f    *zip.File
	name string // cleaned
	dir  bool
	exec bool
}

// Unpack extracts the zip archive r (size bytes) into the directory dst,
// which must not exist yet; its parent is created if needed.
//
// Only regular files and directories are extracted, with modes 0644 (0755 if
// the archive gives the file any execute bit) and 0755 for directories; set-id
// and sticky bits are dropped. Entry names must be plain relative paths (see
// ErrUnsafePath); two names that differ only in letter case are rejected as
// duplicates (ErrDuplicate), so a package unpacks the same on a
// case-insensitive file system. Symbolic links, devices, FIFOs and sockets are
// rejected, and so are entries whose data overlap (the zip analogue of a hard
// link, and the trick behind non-recursive zip bombs). A nested archive is an
// ordinary file: it is not unpacked.
//
// Sizes are checked twice: against the headers before anything is written,
// to fail fast, and against the bytes actually produced while streaming
// (total, per file, compression ratio, and the size the header declared), so
// a lying header cannot get past the limits.
//
// dst itself gets mode 0700: only the runner's user reads a package (Run
// copies it into each task directory).
//
// Unpack writes into a temporary directory beside dst and renames it to dst
// only when the whole archive has passed: when it returns an error, dst does
// not exist and nothing is left behind. Errors caused by the archive are
// *EntryError values or wrap ErrNotZip, ErrEmpty or ErrTooManyFiles.
//
// Memory use is bounded by the entry count (the central directory is read
// into memory; a pre-scan rejects archives with far more than MaxFiles
// directory records first) and a 32 KiB copy buffer. Unpack is safe for
// concurrent use with different dst.
func Unpack(r io.ReaderAt, size int64, dst string, lim Limits) (Manifest, error) {
	if err := lim.validate(); err != nil {
		return Manifest{}, err
	}
	lim = lim.withDefaults()
	if size < 0 {
		return Manifest{}, fmt.Errorf("%w: negative size", ErrNotZip)
	}

	// Memory guard: every central directory record zip.NewReader reads
	// starts with this signature, so counting it anywhere in the archive
	// bounds the records (and the memory) zip.NewReader will take. The
	// exact count is checked afterwards.
	if n, err := countSignature(r, size, sigCentral, 4*lim.MaxFiles+1024); err != nil {
		return Manifest{}, fmt.Errorf("%w: %w", ErrNotZip, err)
	} else if n > 4*lim.MaxFiles+1024 {
		return Manifest{}, fmt.Errorf("%w: more than %d directory records", ErrTooManyFiles, lim.MaxFiles)
	}

	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return Manifest{}, fmt.Errorf("%w: %w", ErrNotZip, err)
	}
	if len(zr.File) > lim.MaxFiles {
		return Manifest{}, fmt.Errorf("%w: %d entries, at most %d", ErrTooManyFiles, len(zr.File), lim.MaxFiles)
	}

	plan, err := planEntries(zr.File, size, lim)
	if err != nil {
		return Manifest{}, err
	}

	if _, err := os.Lstat(dst); err == nil {
		return Manifest{}, fmt.Errorf("runner: unpack: %w: %s", fs.ErrExist, dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("runner: unpack: %w", err)
	}
	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return Manifest{}, fmt.Errorf("runner: unpack: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".unpack-"+filepath.Base(dst)+"-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("runner: unpack: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			_ = os.RemoveAll(tmp)
		}
	}()

	m, err := extract(tmp, plan, lim)
	if err != nil {
		return Manifest{}, err
	}
	if err := renameNoReplace(tmp, dst); err != nil {
		return Manifest{}, fmt.Errorf("runner: unpack: %w", err)
	}
	keep = true
	return m, nil
}

// Signatures of zip records.
var sigCentral = []byte("PK\x01\x02")

// countSignature counts the occurrences of sig in r, stopping early once the
// count passes stop.
func countSignature(r io.ReaderAt, size int64, sig []byte, stop int) (int, error) {
	const bufSize = 64 << 10
	buf := make([]byte, bufSize+len(sig)-1)
	n, carry := 0, 0
	for off := int64(0); off < size; {
		want := int64(bufSize)
		if rest := size - off; rest < want {
			want = rest
		}
		got, err := r.ReadAt(buf[carry:carry+int(want)], off)
		if got < int(want) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		off += want
		chunk := buf[:carry+got]
		n += bytes.Count(chunk, sig)
		if n > stop {
			return n, nil
		}
		// Keep the last len(sig)-1 bytes, in case a signature straddles.
		carry = min(len(sig)-1, len(chunk))
		copy(buf, chunk[len(chunk)-carry:])
	}
	return n, nil
}

// planEntries checks every header before anything is written.
func planEntries(files []*zip.File, size int64, lim Limits) ([]plannedEntry, error) {
	plan := make([]plannedEntry, 0, len(files))
	used := make(map[string]entryKind, len(files))
	type span struct {
		start, end int64
		name       string
	}
	var spans []span
	var declared int64
	regular := 0
	for _, f := range files {
		name, dir, err := cleanName(f.Name, lim.MaxPathLen)
		if err != nil {
			return nil, &EntryError{Name: f.Name, Err: err}
		}
		isDir, exec, err := entryType(f, dir)
		if err != nil {
			return nil, err
		}
		if err := claim(used, name, isDir); err != nil {
			return nil, &EntryError{Name: f.Name, Err: err}
		}
		plan = append(plan, plannedEntry{f: f, name: name, dir: isDir, exec: exec})
		if isDir {
			if f.UncompressedSize64 > 0 {
				return nil, entryErr(f.Name, ErrMalformed, "directory entry with data")
			}
			continue
		}
		regular++
		if f.Flags&0x1 != 0 {
			return nil, entryErr(f.Name, ErrMalformed, "encrypted entries are not supported")
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, entryErr(f.Name, ErrMalformed, "compression method %d is not supported (only store and deflate)", f.Method)
		}
		sz := size64(f.UncompressedSize64)
		if sz > lim.MaxFileSize {
			return nil, entryErr(f.Name, ErrTooLarge, "declares %d bytes, at most %d per file", f.UncompressedSize64, lim.MaxFileSize)
		}
		if sz > lim.MaxTotalSize-declared {
			return nil, entryErr(f.Name, ErrTooLarge, "archive declares more than %d bytes in total", lim.MaxTotalSize)
		}
		declared += sz
		off, err := f.DataOffset()
		if err != nil {
			return nil, entryErr(f.Name, ErrMalformed, "bad local header: %v", err)
		}
		comp := size64(f.CompressedSize64)
		if off < 0 || off > size || comp > size-off {
			return nil, entryErr(f.Name, ErrMalformed, "data beyond the end of the archive")
		}
		if comp > 0 {
			spans = append(spans, span{start: off, end: off + comp, name: f.Name})
		}
	}
	if regular == 0 {
		return nil, ErrEmpty
	}
	slices.SortFunc(spans, func(a, b span) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return nil, entryErr(spans[i].name, ErrMalformed, "data overlaps entry %q", spans[i-1].name)
		}
	}
	return plan, nil
}

// cleanName checks an entry name and returns it without a trailing slash,
// and whether it had one.
func cleanName(name string, maxLen int) (string, bool, error) {
	if name == "" {
		return "", false, fmt.Errorf("%w: empty name", ErrUnsafePath)
	}
	if len(name) > maxLen {
		return "", false, fmt.Errorf("%w: name longer than %d bytes", ErrUnsafePath, maxLen)
	}
	if !utf8.ValidString(name) {
		return "", false, fmt.Errorf("%w: invalid UTF-8", ErrUnsafePath)
	}
	for _, c := range name {
		switch {
		case c == 0:
			return "", false, fmt.Errorf("%w: NUL character", ErrUnsafePath)
		case c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0):
			return "", false, fmt.Errorf("%w: control character", ErrUnsafePath)
		case c == '\\':
			return "", false, fmt.Errorf("%w: backslash (use / as the separator)", ErrUnsafePath)
		case (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069):
			return "", false, fmt.Errorf("%w: bidirectional control character", ErrUnsafePath)
		}
	}
	if name[0] == '/' {
		return "", false, fmt.Errorf("%w: absolute path", ErrUnsafePath)
	}
	if len(name) >= 2 && name[1] == ':' && (name[0]|0x20 >= 'a' && name[0]|0x20 <= 'z') {
		return "", false, fmt.Errorf("%w: drive letter", ErrUnsafePath)
	}
	dir := strings.HasSuffix(name, "/")
	clean := strings.TrimSuffix(name, "/")
	if clean == "" {
		return "", false, fmt.Errorf("%w: empty name", ErrUnsafePath)
	}
	for elem := range strings.SplitSeq(clean, "/") {
		switch {
		case elem == "":
			return "", false, fmt.Errorf("%w: empty path element", ErrUnsafePath)
		case elem == "." || elem == "..":
			return "", false, fmt.Errorf("%w: %q element", ErrUnsafePath, elem)
		case len(elem) > maxElemLen:
			return "", false, fmt.Errorf("%w: path element longer than %d bytes", ErrUnsafePath, maxElemLen)
		}
	}
	// Belt and braces: the checks above imply it.
	if !filepath.IsLocal(clean) {
		return "", false, fmt.Errorf("%w: not a local path", ErrUnsafePath)
	}
	return clean, dir, nil
}

// Unix file types in the high 16 bits of ExternalAttrs.
const (
	sIFMT  = 0o170000
	sIFREG = 0o100000
	sIFDIR = 0o040000
	sIFLNK = 0o120000
)

// entryType classifies an entry. The Unix type bits are checked whatever
// the archive says its creator system was, so a symlink cannot hide behind
// a non-Unix creator.
func entryType(f *zip.File, slash bool) (dir, exec bool, err error) {
	unixMode := f.ExternalAttrs >> 16
	switch unixMode & sIFMT {
	case 0: // no Unix type: the name decides
	case sIFREG:
		if slash {
			return false, false, entryErr(f.Name, ErrMalformed, "regular file with a directory name")
		}
	case sIFDIR:
		slash = true
	case sIFLNK:
		return false, false, entryErr(f.Name, ErrLinkEntry, "symbolic links are not allowed")
	default:
		return false, false, entryErr(f.Name, ErrSpecialFile, "type %#o is not a regular file or directory", unixMode&sIFMT)
	}
	m := f.Mode()
	if m&fs.ModeSymlink != 0 {
		return false, false, entryErr(f.Name, ErrLinkEntry, "symbolic links are not allowed")
	}
	if m&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0 {
		return false, false, entryErr(f.Name, ErrSpecialFile, "mode %v is not a regular file or directory", m)
	}
	return slash || m.IsDir(), m&0o111 != 0, nil
}

// claim records name (and its parents) in used, or reports a conflict.
// Keys are lower-cased: names that differ only in case conflict.
func claim(used map[string]entryKind, name string, dir bool) error {
	key := strings.ToLower(name)
	// Parents: each must be (or become) a directory.
	for i := 0; i < len(key); i++ {
		if key[i] != '/' {
			continue
		}
		parent := key[:i]
		switch used[parent] {
		case kindFile:
			return fmt.Errorf("%w: %q is a file", ErrDuplicate, name[:i])
		case 0:
			used[parent] = kindImplicitDir
		case kindDir, kindImplicitDir:
		}
	}
	switch used[key] {
	case 0:
	case kindImplicitDir:
		if !dir {
			return fmt.Errorf("%w: also a directory", ErrDuplicate)
		}
	case kindFile, kindDir:
		return fmt.Errorf("%w: the name (or one differing only in case) appears twice", ErrDuplicate)
	}
	if dir {
		used[key] = kindDir
	} else {
		used[key] = kindFile
	}
	return nil
}

// extract writes the planned entries under tmp through an os.Root, so no
// path can leave it even if the checks above had a gap.
func extract(tmp string, plan []plannedEntry, lim Limits) (Manifest, error) {
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return Manifest{}, fmt.Errorf("runner: unpack: %w", err)
	}
	defer func() { _ = root.Close() }()

	m := Manifest{Entries: make([]Entry, 0, len(plan))}
	g := guard{lim: lim}
	buf := make([]byte, 32<<10)
	for _, p := range plan {
		if p.dir {
			if err := root.MkdirAll(p.name, 0o755); err != nil {
				return Manifest{}, fmt.Errorf("runner: unpack %q: %w", p.name, err)
			}
			if err := root.Chmod(p.name, 0o755); err != nil {
				return Manifest{}, fmt.Errorf("runner: unpack %q: %w", p.name, err)
			}
			m.Entries = append(m.Entries, Entry{Name: p.name, Mode: fs.ModeDir | 0o755})
			continue
		}
		n, err := extractFile(root, p, &g, buf)
		if err != nil {
			return Manifest{}, err
		}
		mode := fs.FileMode(0o644)
		if p.exec {
			mode = 0o755
		}
		m.Entries = append(m.Entries, Entry{Name: p.name, Size: n, Mode: mode})
		m.Files++
		m.TotalSize += n
	}
	return m, nil
}

func extractFile(root *os.Root, p plannedEntry, g *guard, buf []byte) (int64, error) {
	if dir := filepath.Dir(p.name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("runner: unpack %q: %w", p.name, err)
		}
	}
	raw, err := p.f.OpenRaw()
	if err != nil {
		return 0, entryErr(p.f.Name, ErrMalformed, "%v", err)
	}
	cr := &countingReader{r: raw}
	var src io.Reader = cr
	if p.f.Method == zip.Deflate {
		fr := flate.NewReader(cr)
		defer func() { _ = fr.Close() }()
		src = fr
	}
	out, err := root.OpenFile(p.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("runner: unpack %q: %w", p.name, err)
	}
	defer func() { _ = out.Close() }()

	crc := crc32.NewIEEE()
	var written int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if err := g.admit(p.f, written, int64(n), cr.n); err != nil {
				return 0, err
			}
			if _, err := out.Write(buf[:n]); err != nil {
				return 0, fmt.Errorf("runner: unpack %q: %w", p.name, err)
			}
			_, _ = crc.Write(buf[:n])
			written += int64(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return 0, entryErr(p.f.Name, ErrMalformed, "%v", rerr)
		}
	}
	if uint64(written) != p.f.UncompressedSize64 {
		return 0, entryErr(p.f.Name, ErrMalformed, "%d bytes of data, the header declares %d", written, p.f.UncompressedSize64)
	}
	if crc.Sum32() != p.f.CRC32 {
		return 0, entryErr(p.f.Name, ErrMalformed, "checksum mismatch")
	}
	mode := fs.FileMode(0o644)
	if p.exec {
		mode = 0o755
	}
	if err := out.Chmod(mode); err != nil {
		return 0, fmt.Errorf("runner: unpack %q: %w", p.name, err)
	}
	if err := out.Close(); err != nil {
		return 0, fmt.Errorf("runner: unpack %q: %w", p.name, err)
	}
	return written, nil
}

// guard enforces the limits on the bytes actually produced, never on what
// the headers say.
type guard struct {
	lim   Limits
	total int64
}

// admit is called before n more bytes of entry f are written, when written
// bytes of it have been written so far and consumed compressed bytes read.
func (g *guard) admit(f *zip.File, written, n, consumed int64) error {
	next := written + n
	if g.total+n > g.lim.MaxTotalSize {
		return entryErr(f.Name, ErrTooLarge, "more than %d bytes in total", g.lim.MaxTotalSize)
	}
	if next > g.lim.MaxFileSize {
		return entryErr(f.Name, ErrTooLarge, "more than %d bytes", g.lim.MaxFileSize)
	}
	if next > g.lim.RatioMinSize && next/max(consumed, 1) > g.lim.MaxRatio {
		return entryErr(f.Name, ErrRatio, "%d bytes from %d compressed bytes, at most %d:1", next, consumed, g.lim.MaxRatio)
	}
	if next > size64(f.UncompressedSize64) {
		return entryErr(f.Name, ErrMalformed, "more data than the %d bytes the header declares", f.UncompressedSize64)
	}
	g.total += n
	return nil
}

// size64 converts a size from a zip header, saturating at MaxInt64.
func size64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
