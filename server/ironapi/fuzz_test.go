package ironapi

import (
	"errors"
	"testing"

	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
)

// FuzzDecodeCodeData feeds the decoder of an upload's data field: it never
// panics, every refusal is a 400 with a message, and what it accepts is
// within the documented bounds.
func FuzzDecodeCodeData(f *testing.F) {
	for _, seed := range []string{
		`{"name":"GoWorker","file_name":"__runner__.sh","runtime":"sh"}`,
		`{"name":"x","runtime":"sh","file_name":"run.sh","stack":"","image":"","command":"","env_vars":null,"config":"c","max_concurrency":3,"retries":2,"retries_delay":1.5,"default_priority":2}`,
		`{"name":"x","command":"./bin/app -v","env_vars":{"A":"b"}}`,
		`{"name":"../x","file_name":"/etc/passwd","runtime":"cobol","retries":11}`,
		`{"name":"x","file_name":"a","retries":"3"}`,
		`{"name":"x","file_name":"a"} {}`,
		`{`, ``, `null`, `[]`, `{"name":null}`,
		`{"name":"x","file_name":"a","env_vars":{"TASK_ID":"1","":"x","A=B":"c"}}`,
		`{"name":"x","file_name":"a","max_concurrency":-1,"retries_delay":1e400}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rev, err := decodeCodeData(data)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 400 || ae.msg == "" {
				t.Fatalf("refusal %v is not a 400 with a message", err)
			}
			return
		}
		if hosted.CheckName(rev.Name) != nil {
			t.Fatalf("accepted name %q", rev.Name)
		}
		if (rev.FileName == "") == (rev.Command == "") {
			t.Fatalf("accepted file_name %q with command %q", rev.FileName, rev.Command)
		}
		if _, ok := runner.Runtimes()[rev.Runtime]; !ok {
			t.Fatalf("accepted runtime %q", rev.Runtime)
		}
		if rev.Retries < 0 || rev.Retries > MaxRetries || rev.RetriesDelay < 0 || rev.RetriesDelay > MaxRetriesDelay ||
			rev.DefaultPriority < 0 || rev.DefaultPriority > 2 || rev.MaxConcurrency < 0 || len(rev.Config) > MaxPayloadBytes {
			t.Fatalf("accepted out-of-bounds settings %+v", rev)
		}
		if err := runner.ValidateEnv(rev.EnvVars); err != nil {
			t.Fatalf("accepted env_vars: %v", err)
		}
	})
}
