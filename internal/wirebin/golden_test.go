package wirebin_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/kilnhq/kiln/internal/wirebin"
	"github.com/kilnhq/kiln/store"
)

// The bytes of the sample bodies, as servers and workers of version 1 of
// the binary encoding send them. A change here is a protocol change: it
// needs a new Version or TaskVersion, never an edit of these strings. The
// embedded store's disk record (internal/record) has golden bytes of its
// own; changing it must not change these.
const (
	goldenTasks    = "0103630100016101740764656661756c74050a80e0ba84bf03acb4c4a0b5d6d8ea31000000030287808080808080808001acdcd5cef684d7ea310577726b5f3103acb4ff94ef84d7ea31acb4ff94ef84d7ea31acb4ff94ef84d7ea3100000000640468616c66040001021e01000162017401710000000000000002000000000000000000000000000001200100016301740171000000000000000500000000020000000900026f6b00000000"
	goldenOutcomes = "0105016101010172000000016280808080808080808001020004626f6f6d8ec889c7ecb4a0c7340001630005000000010164000300017800000165000400000000"
	goldenEnqueue  = "01040174000001750200010100000000000000017601701f0269640171078cc8a1a1d2a9a5b7350d00b8178cc8a1a1d2a9a5b735016bc0a907020177001f01780171008cc8a1a1d2a9a5b7350006d00f8cc8a1a1d2a9a5b735000000"
)

func TestGoldenBytes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		got    []byte
		golden string
	}{
		{"tasks", wirebin.AppendTasks(nil, sampleTasks()), goldenTasks},
		{"outcomes", wirebin.AppendOutcomes(nil, sampleOutcomes()), goldenOutcomes},
		{"enqueue", wirebin.AppendEnqueue(nil, sampleEnqueue()), goldenEnqueue},
	} {
		want, err := hex.DecodeString(tc.golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s: encoding changed (a protocol change):\n got %x\nwant %x", tc.name, tc.got, want)
		}
	}
	// And the golden bytes still decode to the samples.
	b, _ := hex.DecodeString(goldenTasks)
	if _, err := wirebin.DecodeTasks(b, "p"); err != nil {
		t.Errorf("golden tasks: %v", err)
	}
}

// TestTaskVersion checks that a task of an unknown version, or with the
// reserved field set, is refused.
func TestTaskVersion(t *testing.T) {
	t.Parallel()
	one := wirebin.AppendTasks(nil, []*store.Task{{ID: "a", Type: "t", Queue: "q", State: store.StatePending}})
	// one = Version, count 1, task length, TaskVersion, reserved, ...; the
	// state byte is 15 bytes before the end (14 small fields and a nil payload).
	if one[3] != wirebin.TaskVersion || one[4] != 0 {
		t.Fatalf("layout: % x", one)
	}
	for name, change := range map[string]func(b []byte){
		"task version 2": func(b []byte) { b[3] = 2 },
		"reserved 1":     func(b []byte) { b[4] = 1 },
		"state 0":        func(b []byte) { b[len(b)-16] = 0 },
		"state 8":        func(b []byte) { b[len(b)-16] = 8 },
	} {
		b := bytes.Clone(one)
		change(b)
		if _, err := wirebin.DecodeTasks(b, "p"); !errors.Is(err, wirebin.ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	if wirebin.Encodable([]*store.Task{{ID: "a", State: store.State(99)}}) {
		t.Error("state 99 is encodable")
	}
}
