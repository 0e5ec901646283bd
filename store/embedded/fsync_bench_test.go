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
// benchmarks keep their data folders) and fsyncs it, b.N times, and reports
// the p50, p99 and max of write+fsync. A commit of the store is at least one
// such write and fsync, so these bound its latency from below. Point TMPDIR
// at another file system to measure that one:
//
//	go test -run '^$' -bench BenchmarkDiskFsync -benchtime 2000x -count 2 ./store/embedded/
//
// gap=0 writes back to back; gap=2ms starts one write every 2 ms, as the
// root package's BenchmarkLatency enqueues its tasks (500 a second), so the
// disk idles between syncs as it does there. On a VM an fsync after an idle
// spell can take far longer at its tail than one of a busy stream (figures
// in docs/benchmarks.md): the latency benchmark's synced enqueue sees the
// spaced one.
func BenchmarkDiskFsync(b *testing.B) {
	for _, gap := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run("gap="+gap.String(), func(b *testing.B) { benchFsync(b, gap) })
	}
}

func benchFsync(b *testing.B, gap time.Duration) {
	f, err := os.Create(filepath.Join(b.TempDir(), "probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	block := make([]byte, 4096)
	for i := range block {
		block[i] = byte(i)
	}
	var tick <-chan time.Time
	if gap > 0 {
		t := time.NewTicker(gap)
		defer t.Stop()
		tick = t.C
	}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if tick != nil {
			<-tick
		}
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
