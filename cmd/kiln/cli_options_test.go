package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
)

// The command line follows the one rule of option defaults: a flag left
// out gives the server's default, a flag given its value, 0 included, for
// enqueue and schedule create alike (docs/decisions/005-option-defaults.md).
func TestCLIOptionDefaults(t *testing.T) {
	t.Parallel()
	s := startScheduleServer(t)
	task := func(args ...string) wire.Task {
		t.Helper()
		id := strings.Fields(mustKiln(t, s, append([]string{"enqueue", "t"}, args...)...))[0]
		var tk wire.Task
		if err := json.Unmarshal([]byte(mustKiln(t, s, "task", "get", id, "--json")), &tk); err != nil {
			t.Fatal(err)
		}
		return tk
	}
	if tk := task(); tk.MaxRetries != 25 || tk.TimeoutMS != 1800000 {
		t.Errorf("no flags: max_retries %d, timeout_ms %d; want 25, 1800000", tk.MaxRetries, tk.TimeoutMS)
	}
	if tk := task("--max-retries", "0", "--timeout", "0"); tk.MaxRetries != 0 || tk.TimeoutMS != 0 {
		t.Errorf("zeros: max_retries %d, timeout_ms %d; want 0, 0", tk.MaxRetries, tk.TimeoutMS)
	}
	if tk := task("--unique-key", "k", "--unique-ttl", "1h", "--unique-until-success"); tk.UniqueKey != "k" || !tk.UniqueUntilSuccess {
		t.Errorf("--unique-until-success: %+v", tk)
	}
	wantExit(t, s, 2, "--unique-until-success needs --unique-key", "enqueue", "t", "--unique-until-success")

	sc := scheduleJSON(t, s, "schedule", "create", "t", "--every", "1h", "--max-retries", "0", "--timeout", "0")
	if o := sc.Task.Options; o == nil || o.MaxRetries == nil || *o.MaxRetries != 0 || o.TimeoutMS == nil || *o.TimeoutMS != 0 {
		t.Errorf("schedule with zeros: options %+v", sc.Task.Options)
	}
	sc = scheduleJSON(t, s, "schedule", "create", "t", "--every", "1h")
	if o := sc.Task.Options; o != nil && (o.MaxRetries != nil || o.TimeoutMS != nil) {
		t.Errorf("schedule without flags: options %+v, want none set", o)
	}
}
