package metrics

import (
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// TestMain prints the load average and the CPU model beside the benchmarks.
func TestMain(m *testing.M) { testenv.BenchMain(m).Run() }
