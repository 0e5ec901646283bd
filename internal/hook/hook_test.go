package hook_test

import (
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/hook"
	"github.com/kilnhq/kiln/store"
)

// TestTaskInput: package kiln registers its conversion, which applies the
// client's defaults and validation.
func TestTaskInput(t *testing.T) {
	t.Parallel()
	in, err := hook.TaskInput(&kiln.TaskOptions{Queue: "q"}, "t", nil, store.Limits{}, time.Now())
	if err != nil || in.Queue != "q" || in.ID == "" || in.Type != "t" {
		t.Fatalf("TaskInput = %+v, %v", in, err)
	}
	if _, err := hook.TaskInput(&kiln.TaskOptions{Priority: -1}, "t", nil, store.Limits{}, time.Now()); err == nil {
		t.Fatal("a negative priority passed")
	}
}

// TestWrongType: a call with a type nobody registered panics, naming it.
func TestWrongType(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("no panic")
		}
	}()
	_, _ = hook.TaskInput(&struct{}{}, "t", nil, store.Limits{}, time.Now())
}
