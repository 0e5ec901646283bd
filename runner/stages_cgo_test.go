//go:build linux && cgo

package runner

import (
	"testing"

	"github.com/kilnhq/kiln/runner/internal/zygote"
)

// The ns sandbox's helper, written in C, reports a failed start stage by
// the trampoline's numbers: the two lists must agree, or a failure would be
// named (and classed as ErrSandbox or ErrStart) wrongly.
func TestHelperStagesMatchTrampoline(t *testing.T) {
	t.Parallel()
	want := map[string]byte{
		"rlimit": stageRlimit, "setgroups": stageSetgroups, "setgid": stageSetgid, "setuid": stageSetuid,
		"nonewprivs": stageNoNewPrivs, "exec": stageExec, "namespaces": stageNamespaces, "mount": stageMount,
		"fork": stageFork, "chdir": stageChdir, "network": stageNetwork, "stdin": stageStdin,
	}
	if len(zygote.Stages) != len(want) {
		t.Errorf("the helper has %d stages, the runner knows %d", len(zygote.Stages), len(want))
	}
	for name, n := range zygote.Stages {
		if w, ok := want[name]; !ok || n != w {
			t.Errorf("stage %s: the helper's %d, the runner's %d (known %v)", name, n, w, ok)
		}
		if _, ok := stageNames[n]; !ok {
			t.Errorf("stage %s (%d) has no name in the runner", name, n)
		}
	}
}
