package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "30", want: 30 * time.Second},
		{in: "1.5", want: 1500 * time.Millisecond},
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "0.5d", want: 12 * time.Hour},
		{in: "0", want: 0},
		{in: " 2m ", want: 2 * time.Minute},
		{in: "", bad: true},
		{in: "-1s", bad: true},
		{in: "-3", bad: true},
		{in: "d", bad: true},
		{in: "1e3d", bad: true},
		{in: "NaNd", bad: true},
		{in: "infd", bad: true},
		{in: "1..2", bad: true},
		{in: "abc", bad: true},
		{in: "99999999999999999999", bad: true},
		{in: "999999999d", bad: true},
	} {
		got, err := parseDuration(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseDuration(%q) = %s, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseDuration(%q) = (%s, %v), want (%s, nil)", tt.in, got, err, tt.want)
		}
	}
}

func TestParsePayload(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, arg, stdin, format string
		want                     string
		bad                      string // substring of the error
	}{
		{name: "raw", arg: "hello world", format: formatRaw, want: "hello world"},
		{name: "raw default", arg: "x", format: "", want: "x"},
		{name: "stdin", arg: "-", stdin: "from\nstdin", format: formatRaw, want: "from\nstdin"},
		{name: "json compacted", arg: "{ \"a\" : [1, 2] }", format: formatJSON, want: `{"a":[1,2]}`},
		{name: "json stdin", arg: "-", stdin: " \"s\"\n", format: formatJSON, want: `"s"`},
		{name: "json invalid", arg: "{a:1}", format: formatJSON, bad: "not valid JSON"},
		{name: "json trailing", arg: `{"a":1} x`, format: formatJSON, bad: "not valid JSON"},
		{name: "json two values", arg: `1 2`, format: formatJSON, bad: "not valid JSON"},
		{name: "json empty", arg: "  ", format: formatJSON, bad: "empty"},
		{name: "base64", arg: "AAH/", format: formatBase64, want: "\x00\x01\xff"},
		{name: "base64 invalid", arg: "***", format: formatBase64, bad: "not valid base64"},
		{name: "unknown format", arg: "x", format: "yaml", bad: "want auto, raw, json or base64"},
		{name: "auto JSON", arg: ` {"to": 1} `, format: formatAuto, want: ` {"to": 1} `},
		{name: "auto text", arg: "hello", format: formatAuto, want: "hello"},
		{name: "auto number", arg: "42", format: formatAuto, want: "42"},
		{name: "auto broken object", arg: `{"to":`, format: formatAuto, bad: "looks like JSON but is not valid JSON"},
		{name: "auto broken array", arg: `[1,`, format: formatAuto, bad: "--raw sends it as it is"},
		{name: "auto broken stdin", arg: "-", stdin: `"unterminated`, format: formatAuto, bad: "looks like JSON"},
		{name: "raw broken JSON", arg: `{"to":`, format: formatRaw, want: `{"to":`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, _, err := parsePayload(tt.arg, strings.NewReader(tt.stdin), tt.format)
			if tt.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tt.bad) {
					t.Fatalf("parsePayload: got (%q, %v), want an error with %q", got, err, tt.bad)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("parsePayload: got (%q, %v), want %q", got, err, tt.want)
			}
		})
	}
}

// FuzzParseArgs checks the command line's parsers on any input: they never
// panic, a JSON payload they accept is valid JSON, and a duration they
// accept is not negative.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"90s", "7d", "1.5", `{"a":1}`, "AAH/", "-", "1e309d", "0.0000000001d", "[1,2", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseDuration(s); err == nil && d < 0 {
			t.Errorf("parseDuration(%q) = %s: negative", s, d)
		}
		if b, _, err := parsePayload(s, strings.NewReader(s), formatJSON); err == nil && !json.Valid(b) {
			t.Errorf("parsePayload(%q, json) = %q: not valid JSON", s, b)
		}
		if b, _, err := parsePayload(s, strings.NewReader(s), formatRaw); err != nil || (s != "-" && !bytes.Equal(b, []byte(s))) {
			t.Errorf("parsePayload(%q, raw) = (%q, %v)", s, b, err)
		}
		_, _, _ = parsePayload(s, strings.NewReader(s), formatBase64) // must not panic
		if b, as, err := parsePayload(s, strings.NewReader(s), formatAuto); err == nil && looksLikeJSON(b) && (as != formatJSON || !json.Valid(bytes.TrimSpace(b))) {
			t.Errorf("parsePayload(%q, auto) = %q taken as %s: looks like JSON, is not valid JSON", s, b, as)
		}
	})
}

func TestResolveConn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "data", cliFileName)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"url":"http://127.0.0.1:9999","project":"fromfile","token":"kiln_file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	xdg := filepath.Join(dir, "xdg")
	if err := os.MkdirAll(filepath.Join(xdg, "kiln"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(xdg, "kiln", cliFileName), []byte(`{"url":"http://xdg:1","project":"xdg","token":"kiln_xdg"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) getenvFunc { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		name                string
		flags               connFlags
		env                 map[string]string
		url, project, token string
		tokenFrom           string
		wantErr             string
	}{
		{name: "defaults", env: map[string]string{"HOME": filepath.Join(dir, "nohome")}, url: defaultURL, project: defaultProject},
		{name: "data folder file", env: map[string]string{envData: filepath.Join(dir, "data")}, url: "http://127.0.0.1:9999", project: "fromfile", token: "kiln_file", tokenFrom: file},
		{name: "xdg file", env: map[string]string{"XDG_CONFIG_HOME": xdg}, url: "http://xdg:1", project: "xdg", token: "kiln_xdg"},
		{name: "env beats file", env: map[string]string{envData: filepath.Join(dir, "data"), envToken: "kiln_env", envURL: "localhost:7000"}, url: "http://localhost:7000", project: "fromfile", token: "kiln_env", tokenFrom: envToken},
		{name: "flags beat env", flags: connFlags{token: "kiln_flag", project: "p", url: "https://h/x/"}, env: map[string]string{envToken: "kiln_env", envProject: "q"}, url: "https://h/x", project: "p", token: "kiln_flag", tokenFrom: "--token"},
		{name: "explicit config", flags: connFlags{config: file}, url: "http://127.0.0.1:9999", project: "fromfile", token: "kiln_file"},
		{name: "explicit config missing", flags: connFlags{config: filepath.Join(dir, "nope.json")}, wantErr: "no such file"},
		{name: "bad url", flags: connFlags{url: "ftp://x"}, wantErr: "scheme must be http or https"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cn, err := tt.flags.resolve(env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolve: got %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			if cn.url != tt.url || cn.project != tt.project || cn.token != tt.token {
				t.Errorf("resolve: got (%s, %s, %s), want (%s, %s, %s)", cn.url, cn.project, cn.token, tt.url, tt.project, tt.token)
			}
			if tt.tokenFrom != "" && cn.tokenFrom != tt.tokenFrom {
				t.Errorf("resolve: token from %q, want %q", cn.tokenFrom, tt.tokenFrom)
			}
		})
	}
}
