package dashboard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

// browserEnv turns the browser test on; `make test` sets it in its own
// step, after installing Chromium and playwright-core.
const browserEnv = "KILN_TEST_BROWSER"

// TestBrowser runs the dashboard's browser tests (testdata/e2e/test.mjs)
// in headless Chromium against a real server with a worker and the code
// runner: sign in, enqueue and watch a task succeed live, page the task
// list, pause and resume a queue, re-drive a dead task, upload a code
// package and follow its log live, HTML from a payload, an error and a
// log shown as text only, a request without the CSRF token refused, the
// CSP, a schedule paused, resumed and edited in place. With KILN_DASHBOARD_SHOTS=dir it writes screenshots of the pages
// there (docs/dashboard/ holds the committed ones).
func TestBrowser(t *testing.T) {
	t.Parallel()
	if os.Getenv(browserEnv) != "1" {
		t.Skipf("the browser tests run with %s=1 (make test does, in its own step)", browserEnv)
	}
	chromium := os.Getenv("KILN_TEST_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil { //nolint:gosec // G703: the browser's path is the operator's choice
		testenv.Missing(t, "Chromium is not installed ("+chromium+"): scripts/services.sh installs it")
		return
	}
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node is not installed")
		return
	}
	e2e, err := filepath.Abs(filepath.Join("testdata", "e2e"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core")); err != nil {
		testenv.Missing(t, "playwright-core is not installed: run npm ci in "+e2e)
		return
	}

	ts := kilntest.StartServer(t, &kilntest.ServerOptions{Runner: true})
	ctx := testenv.Context(t)
	rs := ts.Remote(t)
	ns := ts.Project

	// A worker: "echo" reports progress and succeeds; "failonce" fails its
	// first run with an error holding HTML; the workflow's steps.
	w, err := kiln.NewWorker(rs, &kiln.WorkerConfig{Namespace: ns, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("echo", kiln.HandlerFunc(func(ctx context.Context, tk *kiln.Task) error {
		tk.SetProgress(50, "halfway")
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		tk.SetProgress(100, "done")
		tk.SetResult(tk.Payload)
		return nil
	}))
	var failed sync.Map
	w.Handle("failonce", kiln.HandlerFunc(func(_ context.Context, tk *kiln.Task) error {
		if _, again := failed.LoadOrStore(tk.ID, true); again {
			return nil
		}
		return errors.New(`boom <img src=x onerror="window.__xss=4">`)
	}))
	w.Handle("add", kiln.MustFn(func(args ...int64) (int64, error) {
		var sum int64
		for _, a := range args {
			sum += a
		}
		return sum, nil
	}))
	w.Handle("multiply", kiln.MustFn(func(a, b int64) (int64, error) { return a * b, nil }))
	w.Handle("sum_ints", kiln.MustFn(func(xs []int64) (int64, error) {
		var sum int64
		for _, x := range xs {
			sum += x
		}
		return sum, nil
	}))
	kilntest.RunWorker(t, w)

	c, err := kiln.NewClient(rs, &kiln.ClientConfig{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	// A dead task with an HTML error, for the dead set.
	zero := 0
	dead, err := c.Enqueue(ctx, "failonce", nil, &kiln.TaskOptions{MaxRetries: &zero})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the task is dead", func() bool {
		res, err := rs.Get(ctx, store.GetParams{Namespace: ns, IDs: []string{dead.ID()}})
		return err == nil && res.Tasks[0] != nil && res.Tasks[0].State == store.StateDead
	})
	// A queue no worker serves, to pause and resume, with 120 tasks: the
	// task list has more than one page.
	later := make([]kiln.TaskRequest, 120)
	for i := range later {
		later[i] = kiln.TaskRequest{Type: "later", Payload: []byte(fmt.Sprint(i)), Options: kiln.TaskOptions{Queue: "pausable"}}
	}
	if _, err := c.EnqueueMany(ctx, later); err != nil {
		t.Fatal(err)
	}
	// A workflow to draw.
	wf := kiln.Chain(
		kiln.NewSignature("add", 1, 1),
		kiln.Chord(kiln.Group(kiln.NewSignature("multiply", 3), kiln.NewSignature("add", 5)), kiln.NewSignature("sum_ints")),
		kiln.NewSignature("multiply", 10),
	)
	if _, err := c.EnqueueWorkflow(ctx, wf, nil); err != nil {
		t.Fatal(err)
	}
	// A code package that logs slowly, with HTML in a line.
	zip := filepath.Join(t.TempDir(), "logger.zip")
	script := "echo 'line 1'\nsleep 2\necho '<script>window.__xss=3</script>'\necho 'line 2'\nsleep 1\necho 'line 3'\n"
	if err := os.WriteFile(zip, testenv.Zip(t, map[string]string{"run.sh": script}), 0o600); err != nil {
		t.Fatal(err)
	}

	// The script's own waits are bounded (20 s a step); this bounds the
	// whole run.
	nctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(nctx, node, "test.mjs")
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"KILN_URL="+ts.URL, "KILN_TOKEN="+ts.AdminToken, "KILN_PROJECT="+ns, "KILN_DEAD_ID="+dead.ID(),
		"KILN_CODE_ZIP="+zip, "KILN_SHOTS="+os.Getenv("KILN_DASHBOARD_SHOTS"), "CHROMIUM="+chromium)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	t.Logf("node test.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("the browser tests failed: %v", err)
	}
}
