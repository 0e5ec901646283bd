//go:build linux && cgo

package runner

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// In a build with cgo the trampoline runs in C before the Go runtime
// starts: the runtime's own start-up trace (GODEBUG=inittrace=1, written to
// the task's log by a runtime that starts) is empty; Main's Go trampoline
// (goTrampoline) writes it.
func TestTrampolineBeforeRuntime(t *testing.T) {
	t.Parallel()
	for _, goTramp := range []bool{false, true} {
		r := newRunner(t, Config{Sandbox: SandboxOff, Limiter: LimiterTrampoline, goTrampoline: goTramp})
		var log syncBuffer
		res := run(context.Background(), t, r, Spec{Command: []string{"true"}, Env: map[string]string{"GODEBUG": "inittrace=1"}, Log: &log})
		if res.Status != StatusComplete {
			t.Fatalf("go trampoline %v: %+v; log:\n%s", goTramp, res, log.String())
		}
		if traced := strings.Contains(log.String(), "init "); traced != goTramp {
			t.Errorf("go trampoline %v: the Go runtime's start-up trace in the log: %v\n%s", goTramp, traced, log.String())
		}
	}
}

// The C trampoline's parser takes nothing the Go one would not, reads it
// alike, and takes everything trampolineSpec.encode writes.
func FuzzTrampolineSpecC(f *testing.F) {
	for _, t := range []trampolineSpec{
		{limits: [6]int64{3600, 1024, 256, 1 << 30, 512 << 20, -1}, uid: 65534, gid: 65534},
		{limits: [6]int64{-1, -1, -1, -1, -1, -1}, uid: -1, gid: -1, unsetPWD: true},
		{limits: [6]int64{0, 0, 0, 0, 0, 0}, uid: 1000, gid: 1000, groups: []int{1, 2, 4294967294}},
	} {
		f.Add(t.encode())
	}
	for _, s := range []string{"", "1", "1 ", "1 -1 -1 -1 -1 -1 -1 -1 -1 - -x", "1 -1 -1 -1 -1 -1 -1 -1 -1 , -", "1 -1 -1 -1 -1 -1 -1 -1 -1 1, -",
		"1  -1 -1 -1 -1 -1 -1 -1 -1 - -", "1 -2 -1 -1 -1 -1 -1 -1 -1 - -", "1 99999999999999999999 -1 -1 -1 -1 -1 -1 -1 - -",
		"1 -1 -1 -1 -1 -1 -1 4294967295 -1 - -", "2 -1 -1 -1 -1 -1 -1 -1 -1 - -", "1 +1 -1 -1 -1 -1 -1 -1 -1 - p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsRune(s, 0) {
			return // an environment value holds no NUL
		}
		c, cok := cParseTrampolineSpec(s)
		g, gok := parseTrampolineSpec(s)
		if cok && (!gok || !reflect.DeepEqual(c, g)) {
			t.Fatalf("%q: C %+v, Go %+v (%v)", s, c, g, gok)
		}
		if gok && g.encode() == s && !cok {
			t.Fatalf("%q, as encode writes it: the C parser refused it", s)
		}
	})
}
