package kilntest

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/runner"
)

// Main runs a package's tests; call it as the whole of TestMain:
//
//	func TestMain(m *testing.M) { kilntest.Main(m) }
//
// First it lets the test binary serve as the code runner's trampoline
// (runner.Main: a server started with [ServerOptions].Runner starts its task
// processes through the binary itself). Then it runs the tests and, when
// they passed, fails the run if goroutines were left running (goleak; the
// runner's spawner, which lives as long as the process, excepted). When
// the binary runs benchmarks (-test.bench), it prints the load average and
// the CPU model before them and the load average after them.
// Last it removes the programs the tests compiled and the cgroups its
// Runners made for their tasks (runner.RemoveCgroups), and exits.
func Main(m *testing.M) {
	runner.Main()
	goleak.VerifyTestMain(testenv.BenchMain(m), goleak.IgnoreAnyFunction(runner.SpawnLoopFunc), goleak.IgnoreAnyFunction(runner.SandboxHelperFunc), goleak.Cleanup(func(code int) {
		testenv.RemoveBuilt()
		runner.RemoveCgroups()
		os.Exit(code) //nolint:forbidigo // Main is the body of TestMain, which ends the test binary with the tests' exit code
	}))
}
