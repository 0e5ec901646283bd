package embedded

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/storetest"
)

func TestMain(m *testing.M) {
	if crashChild() || lockChild() || flowCrashChild() || leaseCrashChild() {
		return
	}
	goleak.VerifyTestMain(testenv.BenchMain(m))
}

func mustOpen(t testing.TB, dir string, cfg *Config) *Store {
	t.Helper()
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func harness(engine string) storetest.Harness {
	return storetest.Harness{New: func(t testing.TB, clock store.Clock) (store.Store, func() store.Store) {
		t.Helper()
		dir := t.TempDir()
		cfg := &Config{Clock: clock, engine: engine}
		cur := mustOpen(t, dir, cfg)
		t.Cleanup(func() { _ = cur.Close() })
		return cur, func() store.Store {
			if err := cur.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			cur = mustOpen(t, dir, cfg)
			return cur
		}
	}}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, harness(enginePebble))
}

// The bbolt engine is kept for the engine comparison; it must be correct too.
func TestConformanceBolt(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("bbolt engine: covered by the full run")
	}
	storetest.Run(t, harness(engineBolt))
}

func BenchmarkStore(b *testing.B) {
	b.Run("engine=pebble", func(b *testing.B) { storetest.Bench(b, harness(enginePebble)) })
	b.Run("engine=bbolt", func(b *testing.B) { storetest.Bench(b, harness(engineBolt)) })
}
