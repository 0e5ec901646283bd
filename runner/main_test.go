package runner

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
	"go.uber.org/goleak"
)

// testSecretEnv is set in the test process; no task may see it.
const testSecretEnv = "KILN_RUNNER_TEST_SECRET"

func TestMain(m *testing.M) {
	// The test binary is the trampoline of its own Run calls.
	Main()
	if err := os.Setenv(testSecretEnv, "hunter2"); err != nil {
		panic(err)
	}
	code := testenv.BenchMain(m).Run()
	testenv.RemoveBuilt()
	RemoveCgroups()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreAnyFunction(SpawnLoopFunc), goleak.IgnoreAnyFunction(SandboxHelperFunc)); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// entry describes one zip entry for buildZip.
type entry struct {
	name    string
	data    []byte
	mode    fs.FileMode // used with SetMode when attrs is 0
	attrs   uint32      // raw ExternalAttrs (Unix mode in the high 16 bits)
	creator uint16      // CreatorVersion; 0 means Unix (3<<8)
	method  uint16
}

const creatorUnix = 3 << 8

// buildZip writes entries with archive/zip.
func buildZip(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: e.method}
		if e.mode != 0 {
			h.SetMode(e.mode)
		}
		if e.attrs != 0 {
			h.ExternalAttrs = e.attrs
			h.CreatorVersion = creatorUnix
		}
		if e.creator != 0 {
			h.CreatorVersion = e.creator
		}
		fw, err := w.CreateHeader(h)
		if err != nil {
			t.Fatalf("CreateHeader(%q): %v", e.name, err)
		}
		if len(e.data) > 0 {
			if _, err := fw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawEntry is an entry written with CreateRaw: every header field as given.
type rawEntry struct {
	h    zip.FileHeader
	data []byte // already compressed
}

func buildRawZip(t testing.TB, entries ...rawEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		fw, err := w.CreateRaw(&h)
		if err != nil {
			t.Fatalf("CreateRaw(%q): %v", h.Name, err)
		}
		if _, err := fw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zeroDeflate returns a deflate stream of mib MiB of zeros and its CRC-32,
// cheaply: one MiB is compressed once (ending with a sync flush, so it is
// byte-aligned and refers to nothing before it) and repeated.
func zeroDeflate(t testing.TB, mib int) ([]byte, uint32) {
	t.Helper()
	zeros := make([]byte, 1<<20)
	var block bytes.Buffer
	fw, err := flate.NewWriter(&block, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(zeros); err != nil {
		t.Fatal(err)
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	one := bytes.Clone(block.Bytes())
	block.Reset()
	if err := fw.Close(); err != nil { // the final, empty block
		t.Fatal(err)
	}
	final := block.Bytes()
	stream := append(bytes.Repeat(one, mib), final...)
	crc := crc32.NewIEEE()
	for range mib {
		_, _ = crc.Write(zeros)
	}
	return stream, crc.Sum32()
}

// setCentralOffset points the central directory record of entry i at the
// local header offset off (a raw header trick: two entries sharing data).
func setCentralOffset(t testing.TB, z []byte, i int, off uint32) []byte {
	t.Helper()
	z = bytes.Clone(z)
	pos := -1
	for n := 0; n <= i; n++ {
		next := bytes.Index(z[pos+1:], []byte("PK\x01\x02"))
		if next < 0 {
			t.Fatalf("no central record %d", i)
		}
		pos += 1 + next
	}
	binary.LittleEndian.PutUint32(z[pos+42:], off)
	return z
}

// setCentralFlags ORs flags into the general-purpose flags of central
// directory record i.
func setCentralFlags(t testing.TB, z []byte, i int, flags uint16) []byte {
	t.Helper()
	z = bytes.Clone(z)
	pos := -1
	for n := 0; n <= i; n++ {
		next := bytes.Index(z[pos+1:], []byte("PK\x01\x02"))
		if next < 0 {
			t.Fatalf("no central record %d", i)
		}
		pos += 1 + next
	}
	binary.LittleEndian.PutUint16(z[pos+8:], binary.LittleEndian.Uint16(z[pos+8:])|flags)
	return z
}

// dirContents lists everything under dir (relative names), for "nothing
// written" checks.
func dirContents(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
