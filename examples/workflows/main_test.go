package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExample(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t.TempDir(), "", 200, f); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	for _, want := range []string{
		"add(1, 1) = 2",
		"chain: (5 + 5 + (1 + 1)) * 4 = 48",
		"group: [2 10 9]",
		"chord: sum_ints([2, 10]) = 12",
		`concat(split("the quick brown fox")) = "thequickbrownfox"`,
		"callbacks: workflow failed, caused by fail (no disk",
		"fan-out: 200 tasks, sum = 39800 (want 39800)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
