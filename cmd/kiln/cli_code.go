package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
)

// codeCommand is `kiln code`: code packages through the IronWorker API
// (docs/ironworker.md).
func codeCommand() *command {
	return &command{
		name:    "code",
		args:    "upload|ls|rm [flags] [zip|dir|name]",
		summary: "upload, list and delete code packages (programs the server runs)",
		help: "Subcommands:\n\n" +
			"  code upload <zip|dir> --name N (--file F [--runtime R] | --command C) [flags]\n" +
			"                          upload a zip (or a folder, zipped) as a new revision of package N\n" +
			"  code ls                 list the project's packages\n" +
			"  code rm <name|id>       delete a package and cancel its unfinished tasks\n\n" +
			"Tasks of a package are queued with the IronWorker API (POST /2/projects/<p>/tasks);\n" +
			"`kiln task log <id> --follow` prints a task's output as it runs. See docs/ironworker.md.",
		run: runCode,
	}
}

func runCode(ctx context.Context, std stdio, args []string) error {
	return dispatchSub(ctx, std, "code", args, map[string]func(context.Context, stdio, []string) error{
		"upload": runCodeUpload,
		"ls":     runCodeList,
		"rm":     runCodeRemove,
	})
}

// iron calls the IronWorker API of the server: path is below
// /2/projects/<project>; a 200 answer is decoded into out (when not nil and
// JSON) or copied to w (when not nil).
func (c *conn) iron(ctx context.Context, what, method, path, contentType string, body io.Reader, out any, w io.Writer) error {
	u := c.url + "/2/projects/" + url.PathEscape(c.project) + path
	req, err := http.NewRequestWithContext(ctx, method, u, body) //nolint:gosec // G704: the server URL is the user's own setting
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "OAuth "+c.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.api.HTTPClient().Do(req) //nolint:gosec // G704: the server URL is the user's own setting
	if err != nil {
		var ce *apiclient.CertError
		if errors.As(apiclient.WrapCertError(req.URL.Hostname(), err), &ce) {
			return c.explain(what, ce)
		}
		return &cliError{code: exitUnreachable, msg: what, err: err, hint: "is `kiln server` running at " + c.url + "?"}
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Msg string `json:"msg"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Msg == "" {
			e.Msg = strings.TrimSpace(string(b))
		}
		code := exitFailure
		switch resp.StatusCode {
		case http.StatusNotFound:
			code = exitNotFound
		case http.StatusUnauthorized:
			code = exitUnauthorized
		}
		return &cliError{code: code, msg: what, err: fmt.Errorf("%s (HTTP %d)", e.Msg, resp.StatusCode)}
	}
	switch {
	case w != nil:
		_, err = io.Copy(w, resp.Body)
	case out != nil:
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return &cliError{code: exitFailure, msg: what, err: err}
	}
	return nil
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runCodeUpload(ctx context.Context, std stdio, args []string) error {
	c := subcommand("code", "upload", "<zip|dir> --name N (--file F [--runtime R] | --command C) [flags]",
		"Upload sends a zip (or a folder, zipped on the fly) as a new revision of a code package.\n"+
			"--file names the program in the zip and --runtime its interpreter (sh, bash, python,\n"+
			"ruby, php, node, perl, java; binary or empty runs the file itself); or --command gives\n"+
			"the program's command line (split on spaces, no shell).")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	name := fs.String("name", "", "the package's name (required)")
	file := fs.String("file", "", "the program in the zip (IronWorker's file_name)")
	runtime := fs.String("runtime", "", "the interpreter of --file")
	cmdLine := fs.String("command", "", "the program's command line instead of --file")
	configFile := fs.String("config-file", "", "a file whose content every task gets as its -config file")
	retries := fs.Int("retries", 0, "how many times a failed task runs again (0-10)")
	retriesDelay := fs.Int("retries-delay", 0, "seconds between a failure and the next run (0: kiln's default backoff, 1 s doubling up to 1 h)")
	maxConc := fs.Int("max-concurrency", 0, "how many of the package's tasks run at once at most (0: no cap)")
	priority := fs.Int("priority", 0, "default priority of its tasks (0-2)")
	var envs multiFlag
	fs.Var(&envs, "env", "KEY=VALUE added to the tasks' environment (repeatable)")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	if *name == "" {
		return usagef("%s: --name is required", c.name)
	}
	data := map[string]any{"name": *name, "runtime": *runtime}
	if *file != "" {
		data["file_name"] = *file
	}
	if *cmdLine != "" {
		data["command"] = *cmdLine
	}
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return err
		}
		data["config"] = string(b)
	}
	if len(envs) > 0 {
		env := make(map[string]string, len(envs))
		for _, kv := range envs {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usagef("%s: --env %q: want KEY=VALUE", c.name, kv)
			}
			env[k] = v
		}
		data["env_vars"] = env
	}
	for k, v := range map[string]int{"retries": *retries, "retries_delay": *retriesDelay, "max_concurrency": *maxConc, "default_priority": *priority} {
		if v != 0 {
			data[k] = v
		}
	}
	zipData, err := readPackage(pos[0])
	if err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	j, err := json.Marshal(data)
	if err != nil {
		return err
	}
	if err := mw.WriteField("data", string(j)); err != nil {
		return err
	}
	fw, err := mw.CreateFormFile("file", "code.zip")
	if err != nil {
		return err
	}
	if _, err := fw.Write(zipData); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return err
	}
	var res struct {
		ID  string `json:"id"`
		Rev int    `json:"rev"`
	}
	if err := cn.iron(ctx, "code upload", http.MethodPost, "/codes", mw.FormDataContentType(), &body, &res, nil); err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, map[string]any{"id": res.ID, "name": *name, "rev": res.Rev})
	}
	_, err = fmt.Fprintf(std.stdout, "%s revision %d (id %s)\n", *name, res.Rev, res.ID)
	return err
}

// readPackage reads a zip, or zips a folder's regular files.
func readPackage(path string) ([]byte, error) {
	fi, err := os.Stat(path) //nolint:gosec // G703: the user names the file or folder to upload
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return os.ReadFile(path) //nolint:gosec // G304: the user names the file to upload
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if err := zw.AddFS(os.DirFS(path)); err != nil {
		return nil, fmt.Errorf("zip %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// codeInfo is what the CLI shows of a package.
type codeInfo struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Rev            int       `json:"rev"`
	Runtime        string    `json:"runtime,omitempty"`
	FileName       string    `json:"file_name,omitempty"`
	Command        string    `json:"command,omitempty"`
	MaxConcurrency int       `json:"max_concurrency"`
	Retries        int       `json:"retries"`
	Size           int64     `json:"code_size"`
	Paused         bool      `json:"paused"`
	LatestChange   time.Time `json:"latest_change"`
}

func (c *conn) codes(ctx context.Context) ([]codeInfo, error) {
	var all []codeInfo
	for page := 0; page <= 100; page++ {
		var res struct {
			Codes []codeInfo `json:"codes"`
		}
		if err := c.iron(ctx, "code ls", http.MethodGet, "/codes?per_page=100&page="+strconv.Itoa(page), "", nil, &res, nil); err != nil {
			return nil, err
		}
		all = append(all, res.Codes...)
		if len(res.Codes) < 100 {
			break
		}
	}
	return all, nil
}

func runCodeList(ctx context.Context, std stdio, args []string) error {
	c := subcommand("code", "ls", "", "Ls lists the project's code packages.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 0, 0); err != nil {
		return err
	}
	codes, err := cn.codes(ctx)
	if err != nil {
		return err
	}
	if cn.json {
		return printJSON(std.stdout, map[string]any{"codes": nonNil(codes)})
	}
	tb := newTable(std.stdout, "NAME", "REV", "RUN", "SIZE", "MAX", "RETRIES", "PAUSED", "UPDATED", "ID")
	for _, k := range codes {
		run := strings.TrimSpace(k.Runtime + " " + k.FileName)
		if k.Command != "" {
			run = k.Command
		}
		maxConc := "-"
		if k.MaxConcurrency > 0 {
			maxConc = strconv.Itoa(k.MaxConcurrency)
		}
		tb.row(k.Name, strconv.Itoa(k.Rev), run, strconv.FormatInt(k.Size, 10), maxConc, strconv.Itoa(k.Retries),
			yesNo(k.Paused), k.LatestChange.UTC().Format(time.RFC3339), k.ID)
	}
	return tb.flush()
}

func runCodeRemove(ctx context.Context, std stdio, args []string) error {
	c := subcommand("code", "rm", "<name|id>", "Rm deletes a code package (every revision) and cancels its unfinished tasks.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	codes, err := cn.codes(ctx)
	if err != nil {
		return err
	}
	id := ""
	for _, k := range codes {
		if k.Name == pos[0] || k.ID == pos[0] {
			id = k.ID
		}
	}
	if id == "" {
		return &cliError{code: exitNotFound, msg: "code rm", err: fmt.Errorf("no code package %q in project %s", pos[0], cn.project)}
	}
	if err := cn.iron(ctx, "code rm", http.MethodDelete, "/codes/"+url.PathEscape(id), "", nil, nil, nil); err != nil {
		return err
	}
	_, err = fmt.Fprintf(std.stdout, "deleted %s\n", pos[0])
	return err
}

// runTaskLog is `kiln task log`: a code package task's output.
func runTaskLog(ctx context.Context, std stdio, args []string) error {
	c := subcommand("task", "log", "<id> [--follow]",
		"Log prints the output of a code package's task (docs/ironworker.md). With --follow it\n"+
			"prints the output as the task writes it until the task ends, and exits 5 if the\n"+
			"task did not complete.")
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	var cf connFlags
	follow := fs.Bool("follow", false, "print the output as it comes until the task ends")
	interval := fs.Duration("interval", 500*time.Millisecond, "how often --follow asks")
	cn, pos, err := start(ctx, std, c, fs, &cf, args)
	if err != nil {
		return helpOK(err)
	}
	if err := nargs(c, pos, 1, 1); err != nil {
		return err
	}
	if *interval <= 0 {
		return usagef("%s: --interval must be positive", c.name)
	}
	id := url.PathEscape(pos[0])
	if !*follow {
		return cn.iron(ctx, "task log", http.MethodGet, "/tasks/"+id+"/log", "", nil, nil, std.stdout)
	}
	t := time.NewTicker(*interval)
	defer t.Stop()
	printed := 0
	for {
		// The status first: a final status means the log is complete.
		var ti struct {
			Status string `json:"status"`
			Msg    string `json:"msg"`
		}
		if err := cn.iron(ctx, "task log", http.MethodGet, "/tasks/"+id, "", nil, &ti, nil); err != nil {
			return err
		}
		var buf bytes.Buffer
		err := cn.iron(ctx, "task log", http.MethodGet, "/tasks/"+id+"/log", "", nil, nil, &buf)
		var ce *cliError
		if err != nil && (!errors.As(err, &ce) || ce.code != exitNotFound) { // 404: no output yet
			return err
		}
		if buf.Len() > printed {
			if _, err := std.stdout.Write(buf.Bytes()[printed:]); err != nil {
				return err
			}
			printed = buf.Len()
		}
		switch ti.Status {
		case "queued", "running", "preparing":
		case "complete":
			return nil
		default:
			return &cliError{code: exitTaskFailed, msg: "task " + pos[0] + " " + ti.Status, err: errors.New(ti.Msg)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
