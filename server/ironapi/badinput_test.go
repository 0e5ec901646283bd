package ironapi_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testenv"
)

// rawZip builds a zip with raw headers (for hostile entries).
func rawZip(t *testing.T, entries ...*zip.FileHeader) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, h := range entries {
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("x"))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBadUploads: every bad upload is a 400 (or 413) with a message that
// says what is wrong, and nothing is written.
func TestBadUploads(t *testing.T) {
	t.Parallel()
	b := setup(t)
	good := testenv.Zip(t, map[string][]byte{"run.sh": []byte("echo hi\n")})
	sym := &zip.FileHeader{Name: "link"}
	sym.SetMode(0o777 | 1<<27) // fs.ModeSymlink
	data := func(kv ...any) map[string]any {
		m := map[string]any{"name": "pkg", "file_name": "run.sh", "runtime": "sh"}
		for i := 0; i+1 < len(kv); i += 2 {
			k, v := kv[i].(string), kv[i+1]
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name string
		data map[string]any
		zip  []byte
		want string // in the message
	}{
		{"zip slip", data("file_name", "x"), rawZip(t, &zip.FileHeader{Name: "../evil"}, &zip.FileHeader{Name: "x"}), `"../evil"`},
		{"absolute path", data("file_name", "x"), rawZip(t, &zip.FileHeader{Name: "/etc/x"}, &zip.FileHeader{Name: "x"}), `"/etc/x"`},
		{"backslash", data("file_name", "x"), rawZip(t, &zip.FileHeader{Name: `..\x`}, &zip.FileHeader{Name: "x"}), `..\\x`},
		{"symlink", data("file_name", "x"), rawZip(t, sym, &zip.FileHeader{Name: "x"}), `"link"`},
		{"duplicate", data("file_name", "x"), rawZip(t, &zip.FileHeader{Name: "x"}, &zip.FileHeader{Name: "x"}), "duplicate"},
		{"not a zip", data(), []byte("this is not a zip"), "Invalid zip"},
		{"empty zip", data(), rawZip(t), "Invalid zip"},
		{"file_name not in zip", data("file_name", "missing.sh"), good, `"missing.sh"`},
		{"file_name escapes", data("file_name", "../run.sh"), good, "file_name"},
		{"no file", data(), nil, "file field"},
		{"no name", data("name", nil), good, "name is required"},
		{"empty name", data("name", ""), good, "code name"},
		{"slash in name", data("name", "a/b"), good, "code name"},
		{"newline in name", data("name", "a\nb"), good, "code name"},
		{"dot-dot name", data("name", ".."), good, "code name"},
		{"long name", data("name", strings.Repeat("a", 300)), good, "code name"},
		{"NUL in name", data("name", "a\x00b"), good, "code name"},
		{"RTL override in name", data("name", "a\u202eb"), good, "code name"},
		{"zero-width in name", data("name", "a\u200bb"), good, "code name"},
		{"space in name", data("name", "My Worker"), good, "code name"},
		{"unknown runtime", data("runtime", "cobol"), good, "runtime"},
		{"no program", data("file_name", nil), good, "file_name"},
		{"image", data("image", "busybox"), good, "Docker"},
		{"retries", data("retries", 11), good, "retries 11"},
		{"negative retries", data("retries", -1), good, "retries -1"},
		{"retries type", data("retries", "3"), good, `"retries"`},
		{"retries_delay", data("retries_delay", -5), good, "retries_delay"},
		{"priority", data("default_priority", 3), good, "default_priority"},
		{"max_concurrency", data("max_concurrency", -5), good, "max_concurrency"},
		{"reserved env", data("env_vars", map[string]string{"TASK_ID": "x"}), good, "TASK_ID"},
		{"env type", data("env_vars", map[string]any{"A": 1}), good, `"env_vars`},
		{"config too large", data("config", strings.Repeat("c", 64<<10+1)), good, "config"},
	}
	// A bomb (20 MiB of zeros: far above the 200:1 ratio) and too many
	// entries.
	cases = append(cases, struct {
		name string
		data map[string]any
		zip  []byte
		want string
	}{"zip bomb", data(), testenv.Zip(t, map[string][]byte{"run.sh": []byte("true"), "zeros": make([]byte, 20<<20)}), "ratio"})
	many := map[string][]byte{"run.sh": []byte("true")}
	for i := range 10_001 {
		many[fmt.Sprintf("f%05d", i)] = nil
	}
	cases = append(cases, struct {
		name string
		data map[string]any
		zip  []byte
		want string
	}{"too many files", data(), testenv.Zip(t, many), "too many files"})
	before := b.snapshot()
	for _, tc := range cases {
		status, body := b.upload(tc.data, tc.zip)
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", tc.name, status, body)
			continue
		}
		var e struct {
			Msg string `json:"msg"`
		}
		if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%s: msg %q (%v), want it to mention %s", tc.name, e.Msg, err, tc.want)
		}
	}
	// Malformed multipart and data.
	for name, body := range map[string]string{
		"data not JSON":   "{",
		"trailing":        `{"name":"x"} {}`,
		"data not object": `[1]`,
	} {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("data", body)
		fw, _ := mw.CreateFormFile("file", "w.zip")
		_, _ = fw.Write(good)
		_ = mw.Close()
		if status, resp := b.do(http.MethodPost, "/2/projects/"+project+"/codes", mw.FormDataContentType(), &buf); status != http.StatusBadRequest {
			t.Errorf("%s: status %d: %s", name, status, resp)
		}
	}
	if status, _ := b.do(http.MethodPost, "/2/projects/"+project+"/codes", "application/json", strings.NewReader(`{"name":"x"}`)); status != http.StatusBadRequest {
		t.Errorf("JSON upload: status %d, want 400", status)
	}
	if after := b.snapshot(); after != before {
		t.Errorf("bad uploads wrote records:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestBadTasks: every bad queue request is a 400 (404 for an unknown
// package) naming the problem, and nothing is queued, also when only one
// task of a batch is bad.
func TestBadTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh"}, testenv.Zip(t, map[string][]byte{"run.sh": []byte("true\n")}))
	good := `{"code_name":"ok","payload":"p"}`
	cases := []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"unknown code", `{"tasks":[{"code_name":"nope","payload":""}]}`, 404, "nope"},
		{"no code_name", `{"tasks":[{"payload":""}]}`, 400, "code_name"},
		{"bad code_name", `{"tasks":[{"code_name":"a/b","payload":""}]}`, 400, "code name"},
		{"no payload", `{"tasks":[{"code_name":"ok"}]}`, 400, "payload"},
		{"payload object", `{"tasks":[{"code_name":"ok","payload":{"a":1}}]}`, 400, "payload"},
		{"payload too large", `{"tasks":[{"code_name":"ok","payload":"` + strings.Repeat("p", 64<<10+1) + `"}]}`, 400, "payload"},
		{"priority 3", `{"tasks":[{"code_name":"ok","payload":"","priority":3}]}`, 400, "priority"},
		{"priority -1", `{"tasks":[{"code_name":"ok","payload":"","priority":-1}]}`, 400, "priority"},
		{"priority type", `{"tasks":[{"code_name":"ok","payload":"","priority":"2"}]}`, 400, "priority"},
		{"timeout 0", `{"tasks":[{"code_name":"ok","payload":"","timeout":0}]}`, 400, "timeout"},
		{"timeout negative", `{"tasks":[{"code_name":"ok","payload":"","timeout":-1}]}`, 400, "timeout"},
		{"timeout too long", `{"tasks":[{"code_name":"ok","payload":"","timeout":3601}]}`, 400, "timeout"},
		{"delay negative", `{"tasks":[{"code_name":"ok","payload":"","delay":-1}]}`, 400, "delay"},
		{"delay too long", `{"tasks":[{"code_name":"ok","payload":"","delay":604801}]}`, 400, "delay"},
		{"one bad of a batch", `{"tasks":[` + good + `,{"code_name":"ok","payload":"","priority":9}]}`, 400, "tasks[1]"},
		{"no tasks", `{"tasks":[]}`, 400, "tasks"},
		{"tasks missing", `{}`, 400, "tasks"},
		{"malformed", `{`, 400, "JSON"},
		{"trailing garbage", `{"tasks":[` + good + `]}x`, 400, "JSON"},
		{"two objects", `{"tasks":[` + good + `]}{}`, 400, "JSON"},
		{"too many", `{"tasks":[` + strings.Repeat(good+",", 1000) + good + `]}`, 413, "1000"},
	}
	before := b.snapshot()
	for _, tc := range cases {
		status, body := b.do(http.MethodPost, "/2/projects/"+project+"/tasks", "application/json", strings.NewReader(tc.body))
		var e struct {
			Msg string `json:"msg"`
		}
		_ = json.Unmarshal(body, &e)
		if status != tc.status || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%s: status %d msg %q; want %d mentioning %q", tc.name, status, e.Msg, tc.status, tc.want)
		}
	}
	// Webhook options are checked the same way.
	for _, q := range []string{"code_name=nope", "code_name=ok&priority=5", "code_name=ok&timeout=x", "code_name=ok&delay=-2"} {
		if status, body := b.do(http.MethodPost, "/2/projects/"+project+"/tasks/webhook?"+q, "text/plain", strings.NewReader("x")); status == http.StatusOK {
			t.Errorf("webhook %s: status %d: %s", q, status, body)
		}
	}
	// Ids: another form, traversal, too long: 404.
	for _, id := range []string{"..%2fx", "%2e%2e", strings.Repeat("A", 10000), "nope"} {
		if status, _ := b.do(http.MethodGet, "/2/projects/"+project+"/tasks/"+id, "", nil); status != http.StatusNotFound {
			t.Errorf("task id %.20q: status %d, want 404", id, status)
		}
	}
	if after := b.snapshot(); after != before {
		t.Errorf("bad requests wrote:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestAuth: the OAuth header and the oauth query parameter; no token or a
// wrong one is 401; another project's token gets 404, like a missing
// project; answers are errors as {"msg"} and never compressed.
func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, _, err := b.srv.API().CreateProject(ctx, "other", "other"); err != nil {
		t.Fatal(err)
	}
	other, err := b.srv.API().CreateToken(ctx, "other", "t")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, header map[string]string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, b.url+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		// As iron_go3 does: Accept-Encoding set by hand.
		req.Header.Set("Accept-Encoding", "gzip/deflate")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var e struct {
			Msg string `json:"msg"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Msg, resp.Header
	}
	codes := "/2/projects/" + project + "/codes"
	cases := []struct {
		name   string
		path   string
		header map[string]string
		want   int
	}{
		{"header", codes, map[string]string{"Authorization": "OAuth " + b.token}, 200},
		{"header lower case", codes, map[string]string{"Authorization": "oauth " + b.token}, 200},
		{"query", codes + "?oauth=" + b.token, nil, 200},
		{"admin token", codes, map[string]string{"Authorization": "OAuth " + adminToken}, 200},
		{"none", codes, nil, 401},
		{"empty", codes, map[string]string{"Authorization": "OAuth "}, 401},
		{"wrong scheme", codes, map[string]string{"Authorization": "Basic " + b.token}, 401},
		{"wrong token", codes, map[string]string{"Authorization": "OAuth kiln_nope-nope-nope-nope-nope-nope"}, 401},
		{"token with trailing text", codes, map[string]string{"Authorization": "OAuth " + b.token + "x"}, 401},
		{"other project's token", codes, map[string]string{"Authorization": "OAuth " + other.Token}, 404},
		{"missing project", "/2/projects/nope/codes", map[string]string{"Authorization": "OAuth " + adminToken}, 404},
		{"unknown route", "/2/projects/" + project + "/nothing", map[string]string{"Authorization": "OAuth " + b.token}, 404},
	}
	for _, tc := range cases {
		status, msg, h := get(tc.path, tc.header)
		if status != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, status, msg, tc.want)
		}
		if status != 200 && msg == "" {
			t.Errorf("%s: no msg in the error", tc.name)
		}
		if h.Get("Content-Encoding") != "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Errorf("%s: Content-Encoding %q, Content-Type %q", tc.name, h.Get("Content-Encoding"), h.Get("Content-Type"))
		}
	}
	// Another project's token reaches nothing of this project, whatever the
	// route; an admin token on another project's URL sees that project's
	// (empty) namespace, not this one's.
	code := b.mustUpload(map[string]any{"name": "ok", "file_name": "run.sh", "runtime": "sh"}, testenv.Zip(t, map[string][]byte{"run.sh": []byte("true\n")}))
	task := b.queue(map[string]any{"code_name": "ok", "payload": ""})[0]
	b.wait(task)
	pp := "/2/projects/" + project
	for _, r := range [][2]string{
		{"GET", pp + "/tasks/" + task}, {"GET", pp + "/tasks/" + task + "/log"}, {"POST", pp + "/tasks/" + task + "/cancel"},
		{"POST", pp + "/tasks/" + task + "/retry"}, {"GET", pp + "/tasks"}, {"GET", pp + "/codes/" + code + "/download"},
		{"DELETE", pp + "/codes/" + code}, {"GET", pp + "/schedules"},
	} {
		req, _ := http.NewRequest(r[0], b.url+r[1], nil)
		req.Header.Set("Authorization", "OAuth "+other.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s with another project's token: status %d, want 404", r[0], r[1], resp.StatusCode)
		}
	}
	for _, path := range []string{"/2/projects/other/tasks/" + task, "/2/projects/other/tasks/" + task + "/log", "/2/projects/other/codes/" + code} {
		if status, _, _ := get(path, map[string]string{"Authorization": "OAuth " + adminToken}); status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, status)
		}
	}
	if status, _ := b.do(http.MethodPut, codes, "application/json", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("PUT codes: status %d, want 405", status)
	}
	if strings.Contains(b.ks.Logs(), b.token) {
		t.Error("a token reached the server log")
	}
}

// TestEveryRouteNeedsAToken: deny by default, route by route.
func TestEveryRouteNeedsAToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	patterns := b.srv.IronAPI().Patterns()
	if len(patterns) < 20 {
		t.Fatalf("only %d routes", len(patterns))
	}
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		path = strings.NewReplacer("{pid}", project, "{cid}", "c", "{tid}", "t", "{sid}", "s").Replace(path)
		for _, auth := range []string{"", "OAuth nope-nope-nope-nope-nope-nope-nope-nope"} {
			req, _ := http.NewRequest(method, b.url+path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s (auth %q): status %d, want 401", method, path, auth, resp.StatusCode)
			}
		}
	}
}
