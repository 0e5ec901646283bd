package embedded

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkDiskFsync measures the disk under the store, not the store: it
// appends 4 KiB to a file in a fresh folder under $TMPDIR (where the other
// benchmarks keep their data folders) and fsyncs it, b.N times in a row,
// and reports the p50, p99 and max of write+fsync. A commit of the store
// is at least one such write and fsync, so these bound its latency from
// below. Point TMPDIR at another file system to measure that one:
//
//	go test -run '^$' -bench BenchmarkDiskFsync -benchtime 2000x -count 2 ./store/embedded/
func BenchmarkDiskFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	block := make([]byte, 4096)
	for i := range block {
		block[i] = byte(i)
	}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	at := func(q float64) float64 {
		return float64(took[min(int(q*float64(len(took))), len(took)-1)]) / float64(time.Microsecond)
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
	b.ReportMetric(at(1), "max-µs")
}
