package ironapi_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// buildSeedProgram builds testdata/seed000/<name>/main.go.txt with the
// IronWorker host replaced by host, and returns the binary.
func buildSeedProgram(t *testing.T, name, host string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "seed000", name, "main.go.txt"))
	if err != nil {
		t.Fatal(err)
	}
	const ironHost = "worker-aws-us-east-1.iron.io"
	if !strings.Contains(string(src), ironHost) {
		t.Fatalf("%s does not name %s", name, ironHost)
	}
	return testenv.BuildGo(t, strings.ReplaceAll(string(src), ironHost, host))
}

// TestSeed000 runs seed 000 end to end: its Go worker and __runner__.sh
// zipped as worker.zip, its upload program, its queue program (token in
// the query string), then the task's status and log through the API.
func TestSeed000(t *testing.T) {
	t.Parallel()
	b := setup(t)
	upload := buildSeedProgram(t, "upload", b.host)
	enqueue := buildSeedProgram(t, "enqueue", b.host)

	work := t.TempDir()
	cfg, _ := json.Marshal(map[string]string{"token": b.token, "project_id": project})
	if err := os.WriteFile(filepath.Join(work, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "worker.zip"), seedZip(t), 0o600); err != nil {
		t.Fatal(err)
	}
	runProg := func(bin string) []byte {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Dir = work
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", filepath.Base(bin), err, out)
		}
		return out
	}

	var up struct {
		ID         string `json:"id"`
		Msg        string `json:"msg"`
		StatusCode int    `json:"status_code"`
	}
	out := runProg(upload)
	if err := json.Unmarshal(out, &up); err != nil || up.Msg != "Upload successful." || up.StatusCode != 200 || up.ID == "" {
		t.Fatalf("upload printed %s (%v); want {\"msg\":\"Upload successful.\",\"status_code\":200,...}", out, err)
	}

	var q struct {
		Msg   string `json:"msg"`
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	out = runProg(enqueue)
	if err := json.Unmarshal(out, &q); err != nil || q.Msg != "Queued up" || len(q.Tasks) != 1 {
		t.Fatalf("enqueue printed %s (%v); want {\"msg\":\"Queued up\",\"tasks\":[{\"id\":...}]}", out, err)
	}
	id := q.Tasks[0].ID

	ti := b.wait(id)
	if ti.Status != "complete" {
		t.Fatalf("status %q (%s), want complete; log:\n%s", ti.Status, ti.Msg, b.log(id))
	}
	if ti.CodeName != "GoWorker" || ti.CodeID != up.ID || ti.CodeRev != "1" || ti.ProjectID != project {
		t.Errorf("task = %+v; want code GoWorker %s rev 1 in %s", ti, up.ID, project)
	}
	if ti.StartTime.IsZero() || ti.EndTime.Before(ti.StartTime) || ti.CreatedAt.IsZero() {
		t.Errorf("times: created %v start %v end %v", ti.CreatedAt, ti.StartTime, ti.EndTime)
	}
	log := b.log(id)
	for _, want := range []string{"Hello, playground\n", "map[another_arg:[apples oranges] arg1:Test]\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log %q does not hold %q", log, want)
		}
	}
	// The token went in the query string: it must not reach the logs.
	if strings.Contains(b.ks.Logs(), b.token) {
		t.Error("the oauth token appears in the server log")
	}
	if !strings.Contains(b.ks.Logs(), fmt.Sprintf(`"path":"/2/projects/%s/codes"`, project)) {
		t.Error("the upload request was not logged")
	}
}
