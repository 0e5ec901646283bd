//go:build linux

package runner

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// Every thread of the spawner pool gives its programs the same state: with
// the pool grown to its bound and more tasks in flight than threads, each
// task has no_new_privs, an empty signal mask and its limits (and, as root,
// its own user), and the pool never grows past maxSpawners.
func TestSpawnerPool(t *testing.T) {
	t.Parallel()
	cfg := Config{Sandbox: SandboxOff, Limiter: LimiterPtrace, Limits: ProcLimits{OpenFiles: 77, FileSize: 3 << 20}}
	if os.Geteuid() == 0 {
		cfg.Credential = &syscall.Credential{Uid: NobodyID, Gid: NobodyID}
		cfg.WorkDir = testenv.SharedDir(t)
	}
	r := newRunner(t, cfg)
	for range maxSpawners + 3 {
		spawner.grow()
	}
	spawner.mu.Lock()
	n := spawner.n
	spawner.mu.Unlock()
	if n != maxSpawners {
		t.Fatalf("%d spawner threads, want the bound %d", n, maxSpawners)
	}
	script := `id -u; ulimit -n; ulimit -f; grep -E '^(NoNewPrivs|SigBlk):' /proc/self/status`
	want := []string{fmt.Sprint(os.Geteuid()), "77", "6144", "SigBlk:", "0000000000000000", "NoNewPrivs:", "1"}
	if cfg.Credential != nil {
		want[0] = fmt.Sprint(NobodyID)
	}
	pkg := shPkg(t, script)
	var wg sync.WaitGroup
	for i := range 3 * maxSpawners {
		wg.Go(func() {
			var log syncBuffer
			res, err := r.Run(context.Background(), Spec{TaskID: fmt.Sprint("pool", i), PackageDir: pkg, Runtime: "sh", File: "run.sh", Log: &log})
			if err != nil || res.Status != StatusComplete {
				t.Errorf("task %d: %v, %+v; log %q", i, err, res, log.String())
				return
			}
			if got := strings.Fields(log.String()); !slices.Equal(got, want) {
				t.Errorf("task %d: %q, want %q", i, got, want)
			}
		})
	}
	wg.Wait()
}
