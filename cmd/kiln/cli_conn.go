package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/internal/wire"
)

// The environment variables the client commands read.
const (
	envURL     = "KILN_URL"
	envToken   = "KILN_TOKEN"
	envProject = "KILN_PROJECT"
	// envCACert names a PEM file of CA certificates to trust for an
	// https:// server instead of the system's roots.
	envCACert = "KILN_CA_CERT"
	// envCLIConfig names a cli.json file to read instead of searching.
	envCLIConfig = "KILN_CLI_CONFIG"
	// envData is the server's data folder (its --data flag): the CLI
	// looks for <data>/cli.json there first.
	envData = "KILN_DATA"
)

// Defaults of the connection.
const (
	defaultURL     = "http://127.0.0.1:7878"
	defaultProject = "default"
	defaultDataDir = "kiln-data"
	cliFileName    = "cli.json"
)

// cliFile is what `kiln server` writes to <data folder>/cli.json on first
// start (docs/api.md, "Authentication").
type cliFile = wire.CLIConfig

// connFlags are the flags every client command takes.
type connFlags struct {
	url, token, project, config string
	caCert                      string
	json                        bool
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", "", "server URL (env "+envURL+"; default from cli.json, else "+defaultURL+")")
	fs.StringVar(&c.token, "token", "", "API token (env "+envToken+"; default from cli.json)")
	fs.StringVar(&c.project, "project", "", "project id (env "+envProject+"; default: cli.json's with its token, else a project token's own, else cli.json's, else "+defaultProject+")")
	fs.StringVar(&c.caCert, "ca-cert", "", "PEM file of the CA certificates to trust for an https:// server, instead of the system's (env "+envCACert+"; default from cli.json)")
	fs.StringVar(&c.config, "config", "", "cli.json to read (env "+envCLIConfig+"; default: the first that exists of $"+envData+"/"+cliFileName+", ./"+defaultDataDir+"/"+cliFileName+", $XDG_CONFIG_HOME/kiln/"+cliFileName+" or ~/.config/kiln/"+cliFileName+")")
	fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
}

// conn is a resolved connection: where the server is, how to authenticate,
// which project, and where each value came from (for error hints).
type conn struct {
	url, token, project string
	tokenFrom           string // "--token", "KILN_TOKEN", a file path, or ""
	projectFrom         string // "flag", "KILN_PROJECT", a file path, or "" (the default)
	caCert              string // the CA file trusted, or ""
	file                string // the cli.json read, or ""
	api                 *apiclient.Client
	json                bool
}

// getenv is os.Getenv; tests replace the environment through it.
type getenvFunc func(string) string

// resolve picks each value from the flag, else the environment, else the
// cli.json file, else the default.
func (c *connFlags) resolve(getenv getenvFunc) (*conn, error) {
	out := &conn{json: c.json}
	file, path, err := findCLIFile(c.config, getenv)
	if err != nil {
		return nil, err
	}
	out.file = path
	pick := func(flagVal, env, fileVal, def string) (string, string) {
		switch {
		case flagVal != "":
			return flagVal, "flag"
		case getenv(env) != "":
			return getenv(env), env
		case fileVal != "":
			return fileVal, path
		}
		return def, ""
	}
	out.url, _ = pick(c.url, envURL, file.URL, defaultURL)
	out.project, out.projectFrom = pick(c.project, envProject, file.Project, defaultProject)
	out.token, out.tokenFrom = pick(c.token, envToken, file.Token, "")
	if out.tokenFrom == "flag" {
		out.tokenFrom = "--token"
	}
	var caFrom string
	out.caCert, caFrom = pick(c.caCert, envCACert, file.CACert, "")
	if caFrom == path && path != "" && !filepath.IsAbs(out.caCert) {
		out.caCert = filepath.Join(filepath.Dir(path), out.caCert) // relative to the cli.json that names it
	}
	base, err := apiclient.ParseBaseURL(out.url)
	if err != nil {
		return nil, usagef("%v", err)
	}
	out.url = base
	var hc *http.Client
	if out.caCert != "" {
		tc, err := apiclient.LoadCAFile(out.caCert)
		if err != nil {
			return nil, &cliError{code: exitUsage, err: err, hint: "--ca-cert, " + envCACert + " or \"ca_cert\" in cli.json names a PEM file of CA certificates"}
		}
		hc = apiclient.NewHTTPClientTLS(tc)
	}
	out.api, err = apiclient.New(base, &apiclient.Config{HTTPClient: hc, Token: out.token, UserAgent: "kiln-cli/" + kilnVersion()})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// cliFileCandidates lists where cli.json may be, in order.
func cliFileCandidates(getenv getenvFunc) []string {
	var c []string
	if d := getenv(envData); d != "" {
		c = append(c, filepath.Join(d, cliFileName))
	}
	c = append(c, filepath.Join(defaultDataDir, cliFileName))
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		c = append(c, filepath.Join(x, "kiln", cliFileName))
	} else if h := getenv("HOME"); h != "" {
		c = append(c, filepath.Join(h, ".config", "kiln", cliFileName))
	}
	return c
}

// findCLIFile reads the cli.json named by --config or KILN_CLI_CONFIG (which
// must exist), or else the first of the usual places that exists. No file
// is not an error: the values then come from flags, environment and
// defaults.
func findCLIFile(explicit string, getenv getenvFunc) (cliFile, string, error) {
	if explicit == "" {
		explicit = getenv(envCLIConfig)
	}
	if explicit != "" {
		f, err := readCLIFile(explicit)
		if err != nil {
			return cliFile{}, "", err
		}
		return f, explicit, nil
	}
	for _, p := range cliFileCandidates(getenv) {
		f, err := readCLIFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return cliFile{}, "", err
		}
		return f, p, nil
	}
	return cliFile{}, "", nil
}

func readCLIFile(path string) (cliFile, error) {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the user names the file, or it is one of the documented places
	if err != nil {
		return cliFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	var f cliFile
	if err := json.Unmarshal(b, &f); err != nil {
		return cliFile{}, fmt.Errorf("read %s: not the cli.json kiln server writes: %w", path, err)
	}
	return f, nil
}

// needToken fails early, with a hint, when no token was found anywhere.
func (c *conn) needToken() error {
	if c.token != "" {
		return nil
	}
	return &cliError{
		code: exitUnauthorized,
		msg:  "no token",
		hint: "run `kiln server` first (it writes " + filepath.Join(defaultDataDir, cliFileName) + "), or set " + envToken + " or --token",
	}
}

// tokenProject makes a project token's own project the project when none
// was chosen for it: a project token alone works, instead of failing with
// project "default" not found. The project is the token's unless --project
// or KILN_PROJECT names one, or the project and the token come from the
// same cli.json; GET /v1/whoami tells the token's project. An admin token
// keeps the project it has (default "default").
func (c *conn) tokenProject(ctx context.Context, what string) error {
	switch {
	case c.projectFrom == "flag" || c.projectFrom == envProject:
		return nil // chosen by the user
	case c.projectFrom != "" && c.projectFrom == c.tokenFrom:
		return nil // the pair kiln server wrote, or the user put together
	}
	var who wire.Whoami
	err := c.api.Do(ctx, apiclient.Request{Method: http.MethodGet, Path: apiclient.Path("v1", "whoami")}, &who)
	switch {
	case err == nil && !who.Admin && who.Project != "":
		c.project, c.projectFrom = who.Project, "token"
		return nil
	case err == nil || apiclient.CodeOf(err) == wire.CodeNotFound:
		// An admin token, or a server older than the route: keep the
		// project, the command's own call says what is wrong with it.
		return nil
	}
	return c.explain(what, err)
}

// Exit codes of the client commands (docs/cli.md).
const (
	exitOK           = 0
	exitFailure      = 1
	exitUsage        = 2
	exitNotFound     = 3
	exitUnauthorized = 4
	exitTaskFailed   = 5
	exitUnreachable  = 6
	exitNotFinished  = 7
)

// cliError is a failure with its exit code and a hint for the user.
type cliError struct {
	code int
	msg  string
	hint string
	err  error
}

func (e *cliError) Error() string {
	var b strings.Builder
	b.WriteString(e.msg)
	if e.err != nil {
		if e.msg != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.err.Error())
	}
	if e.hint != "" {
		b.WriteString("\nhint: " + e.hint)
	}
	return b.String()
}

func (e *cliError) Unwrap() error { return e.err }

// ExitCode is the process's exit code for this error.
func (e *cliError) ExitCode() int { return e.code }
