package ironapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store"
)

func TestMain(m *testing.M) { kilntest.Main(m) }

const (
	adminToken = "kiln_test-admin-token-0123456789abcdef"
	project    = "default"
)

// bundle is one test's server with a runner.
type bundle struct {
	t     testing.TB
	st    metaStore
	srv   *server.Server
	url   string // http://127.0.0.1:port
	host  string // 127.0.0.1:port
	token string // a project token of "default"
	ks    *kilntest.Server

	evMu   sync.Mutex
	events []server.Event
}

// eventKinds returns the kinds of the events of task id, in order.
func (b *bundle) eventKinds(id string) []string {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	var out []string
	for _, e := range b.events {
		if e.TaskID == id {
			out = append(out, e.Kind)
		}
	}
	return out
}

// setup serves a fresh server on the embedded store, with a runner of
// two processes, on a loopback port.
func setup(t *testing.T) *bundle {
	t.Helper()
	return setupOn(t, kilntest.Embedded(t, nil), true)
}

// metaStore is a store with store.Meta (every kiln store).
type metaStore = kilntest.MetaStore

// setupOn serves a server on st (which the caller closes), with a runner
// (kilntest's test settings) or without.
func setupOn(t testing.TB, st metaStore, withRunner bool) *bundle {
	t.Helper()
	return serve(t, &kilntest.ServerOptions{Store: st, Runner: withRunner})
}

// setupWith serves a server on st with runner configuration rc (nil: no
// runner).
func setupWith(t testing.TB, st metaStore, rc *hosted.Config) *bundle {
	t.Helper()
	return serve(t, &kilntest.ServerOptions{Store: st, Configure: func(c *server.Config) { c.Runner = rc }})
}

// serve starts a kilntest server with the admin token adminToken and an
// event log, and returns its bundle.
func serve(t testing.TB, opts *kilntest.ServerOptions) *bundle {
	t.Helper()
	b := &bundle{t: t, st: opts.Store}
	configure := opts.Configure
	opts.Configure = func(c *server.Config) {
		c.BootstrapToken = adminToken
		c.EventFunc = func(e server.Event) {
			b.evMu.Lock()
			b.events = append(b.events, e)
			b.evMu.Unlock()
		}
		if configure != nil {
			configure(c)
		}
	}
	ks := kilntest.StartServer(t, opts)
	b.ks, b.srv, b.url, b.host, b.token = ks, ks.Server, ks.URL, ks.Addr, ks.Token
	return b
}

// do sends a request with the project token in the OAuth header and
// returns the status and body.
func (b *bundle) do(method, path, contentType string, body io.Reader) (int, []byte) {
	b.t.Helper()
	h := http.Header{"Authorization": {"OAuth " + b.token}}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return b.ks.Do(b.t, method, path, h, body)
}

// json sends v as JSON (nil: no body) and decodes a 200 answer into out;
// it fails the test on another status.
func (b *bundle) json(method, path string, v, out any) {
	b.t.Helper()
	var body io.Reader
	if v != nil {
		j, err := json.Marshal(v)
		if err != nil {
			b.t.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	status, resp := b.do(method, path, "application/json", body)
	if status != http.StatusOK {
		b.t.Fatalf("%s %s: status %d: %s", method, path, status, resp)
	}
	if out != nil {
		if err := json.Unmarshal(resp, out); err != nil {
			b.t.Fatalf("%s %s: %v in %s", method, path, err, resp)
		}
	}
}

// upload posts a code package: data as JSON, the zip as "file".
func (b *bundle) upload(data map[string]any, zipData []byte) (int, []byte) {
	b.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	j, _ := json.Marshal(data)
	if err := mw.WriteField("data", string(j)); err != nil {
		b.t.Fatal(err)
	}
	if zipData != nil {
		fw, err := mw.CreateFormFile("file", "worker.zip")
		if err != nil {
			b.t.Fatal(err)
		}
		_, _ = fw.Write(zipData)
	}
	if err := mw.Close(); err != nil {
		b.t.Fatal(err)
	}
	return b.do(http.MethodPost, "/2/projects/"+project+"/codes", mw.FormDataContentType(), &body)
}

// mustUpload uploads and returns the code id.
func (b *bundle) mustUpload(data map[string]any, zipData []byte) string {
	b.t.Helper()
	status, body := b.upload(data, zipData)
	if status != http.StatusOK {
		b.t.Fatalf("upload: status %d: %s", status, body)
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.ID == "" {
		b.t.Fatalf("upload: %v: %s", err, body)
	}
	return r.ID
}

// queue queues tasks and returns their ids.
func (b *bundle) queue(tasks ...map[string]any) []string {
	b.t.Helper()
	var r struct {
		Msg   string `json:"msg"`
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
	}
	b.json(http.MethodPost, "/2/projects/"+project+"/tasks", map[string]any{"tasks": tasks}, &r)
	if len(r.Tasks) != len(tasks) {
		b.t.Fatalf("queue: %d ids for %d tasks", len(r.Tasks), len(tasks))
	}
	out := make([]string, len(r.Tasks))
	for i, t := range r.Tasks {
		out[i] = t.ID
	}
	return out
}

// taskInfo is what the tests read of a task (the fields iron_go3 decodes).
type taskInfo struct {
	ID            string    `json:"id"`
	CodeID        string    `json:"code_id"`
	CodeName      string    `json:"code_name"`
	CodeRev       string    `json:"code_rev"`
	CodeHistoryID string    `json:"code_history_id"`
	ProjectID     string    `json:"project_id"`
	Status        string    `json:"status"`
	Msg           string    `json:"msg"`
	Payload       string    `json:"payload"`
	Duration      int       `json:"duration"`
	RunTimes      int       `json:"run_times"`
	Timeout       int       `json:"timeout"`
	Percent       int       `json:"percent"`
	Priority      int       `json:"priority"`
	Label         string    `json:"label"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	StartTime     time.Time `json:"start_time"`
	EndTime       time.Time `json:"end_time"`
}

func (b *bundle) task(id string) taskInfo {
	b.t.Helper()
	var ti taskInfo
	b.json(http.MethodGet, "/2/projects/"+project+"/tasks/"+id, nil, &ti)
	return ti
}

// wait polls the task until its status is final (not queued or running),
// for at most a minute.
func (b *bundle) wait(id string) taskInfo {
	b.t.Helper()
	return b.waitFor(id, func(ti taskInfo) bool { return ti.Status != "queued" && ti.Status != "running" })
}

func (b *bundle) waitFor(id string, done func(taskInfo) bool) taskInfo {
	b.t.Helper()
	var ti taskInfo
	kilntest.Eventually(b.t, "task "+id, func() bool {
		ti = b.task(id)
		return done(ti)
	})
	return ti
}

func (b *bundle) log(id string) string {
	b.t.Helper()
	status, body := b.do(http.MethodGet, "/2/projects/"+project+"/tasks/"+id+"/log", "", nil)
	if status != http.StatusOK {
		b.t.Fatalf("log of %s: status %d: %s", id, status, body)
	}
	return string(body)
}

// snapshot returns every meta record of the project and every task id, for
// "nothing written" checks.
func (b *bundle) snapshot() string {
	b.t.Helper()
	ctx := context.Background()
	var sb strings.Builder
	for _, ns := range []string{project, hosted.IndexNamespace} {
		res, err := b.st.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: "iron/"})
		if err != nil {
			b.t.Fatal(err)
		}
		for _, it := range res.Items {
			sb.WriteString(ns + " " + it.Key + "\n")
		}
		res, err = b.st.MetaList(ctx, store.MetaListParams{Namespace: ns, Prefix: "pkg/"})
		if err != nil {
			b.t.Fatal(err)
		}
		for _, it := range res.Items {
			sb.WriteString(ns + " " + it.Key + "\n")
		}
	}
	lr, err := b.st.List(ctx, store.ListParams{Namespace: project})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, t := range lr.Tasks {
		sb.WriteString("task " + t.ID + "\n")
	}
	return sb.String()
}

// seedWorkerSource is the Go worker of seed 000 ("Payload Example"), with
// a greeting, compiled as the package's program.
const seedWorkerSource = `package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	fmt.Println("Hello, playground")
	payloadIndex := 0
	for index, arg := range os.Args {
		if arg == "-payload" {
			payloadIndex = index + 1
		}
	}
	if payloadIndex >= len(os.Args) {
		panic("No payload value.")
	}
	payload := os.Args[payloadIndex]
	var data interface{}
	raw, err := os.ReadFile(payload)
	if err != nil {
		panic(err.Error())
	}
	err = json.Unmarshal(raw, &data)
	if err != nil {
		panic(err.Error())
	}
	fmt.Printf("%v\n", data)
}
`

// seedRunnerScript is seed 000's __runner__.sh, byte for byte.
const seedRunnerScript = `#!/bin/sh

root() {
  while [ $# -gt 0 ]; do
    if [ "$1" = "-d" ]; then
      printf "%s\n" "$2"
      break
    fi
  done
}

cd "$(root "$@")"

chmod +x "worker"

./"worker" "$@"
`

// seedZip returns worker.zip of seed 000: the compiled worker and
// __runner__.sh at the root.
func seedZip(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(testenv.BuildGo(t, seedWorkerSource))
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Zip(t, map[string][]byte{"worker": data, "__runner__.sh": []byte(seedRunnerScript)})
}
