package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/testcert"
	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/internal/wire"
)

// TestCLIWithTLS runs `kiln server --tls-cert --tls-key` and the CLI
// against it: with the CA (--ca-cert, or ca_cert in cli.json) the commands
// work; without it they fail naming the unknown authority; plain http://
// gets a hint.
func TestCLIWithTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "cli test CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	cert, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	ca.Leaf(t, 1, "127.0.0.1", "localhost").Write(t, cert, key)
	data := filepath.Join(dir, "data")

	ctx, cancel := context.WithCancel(context.Background())
	var srvOut, srvErr testenv.Buffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"server", "--addr", "127.0.0.1:0", "--data", data, "--runner=false", "--sweep-interval=-1s",
			"--tls-cert", cert, "--tls-key", key}, &srvOut, &srvErr)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if code := <-exited; code != 0 {
			t.Errorf("kiln server exited %d:\n%s", code, srvErr.String())
		}
	}
	defer stop()
	serving := regexp.MustCompile(`msg=serving addr=(127\.0\.0\.1:\d+) tls=true`)
	var addr string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's log:\n%s", srvErr.String())
		}
	})
	testenv.Eventually(t, "kiln server to serve", func() bool {
		if m := serving.FindStringSubmatch(srvErr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	url := "https://" + addr
	cliFile := filepath.Join(data, cliFileName)
	var saved wire.CLIConfig
	if b, err := os.ReadFile(cliFile); err != nil || json.Unmarshal(b, &saved) != nil || !strings.HasPrefix(saved.URL, "https://127.0.0.1:") {
		t.Fatalf("cli.json = %+v (%v), want an https:// URL", saved, err)
	}

	kiln := func(args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
		defer cancel()
		var stdout, stderr bytes.Buffer
		code := run(ctx, args, &stdout, &stderr)
		return code, stderr.String()
	}
	if code, errOut := kiln("queue", "ls", "--config", cliFile, "--url", url, "--ca-cert", caFile); code != exitOK {
		t.Errorf("queue ls with --ca-cert: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{{"queue", "ls"}, {"code", "ls"}} {
		code, errOut := kiln(append(args, "--config", cliFile, "--url", url)...)
		if code != exitUnreachable || !strings.Contains(errOut, "unknown authority") || !strings.Contains(errOut, "--ca-cert") {
			t.Errorf("%s without the CA: exit %d, stderr %q; want exit %d naming the unknown authority and --ca-cert", args, code, errOut, exitUnreachable)
		}
	}
	// ca_cert in cli.json, relative to the file.
	saved.URL, saved.CACert = url, "../ca.pem"
	b, err := json.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	withCA := filepath.Join(dir, "conf", "cli.json")
	if err := os.MkdirAll(filepath.Dir(withCA), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(withCA, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, errOut := kiln("queue", "ls", "--config", withCA); code != exitOK {
		t.Errorf("queue ls with ca_cert in cli.json: exit %d: %s", code, errOut)
	}
	if code, errOut := kiln("queue", "ls", "--config", cliFile, "--url", "http://"+addr); code != exitFailure || !strings.Contains(errOut, "use an https:// URL") {
		t.Errorf("queue ls over http://: exit %d, stderr %q; want exit 1 and a hint", code, errOut)
	}
	if code, errOut := kiln("queue", "ls", "--config", cliFile, "--url", url, "--ca-cert", filepath.Join(dir, "none.pem")); code != exitUsage || !strings.Contains(errOut, "none.pem") {
		t.Errorf("queue ls with a missing --ca-cert: exit %d, stderr %q; want exit 2", code, errOut)
	}
	stop()
	if strings.Contains(srvErr.String(), "PRIVATE KEY") {
		t.Error("the server logged key material")
	}
}

func TestResolveCACert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "resolve CA").WriteCA(t, dir, "ca.pem")
	file := filepath.Join(dir, cliFileName)
	if err := os.WriteFile(file, []byte(`{"url":"https://h:1","token":"kiln_x","ca_cert":"ca.pem"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cf := connFlags{config: file}
	cn, err := cf.resolve(getenv)
	if err != nil || cn.caCert != ca {
		t.Errorf("ca_cert of cli.json: got %q (%v), want %q (relative to the file)", cn.caCert, err, ca)
	}
	env[envCACert] = filepath.Join(dir, "env.pem")
	if _, err := cf.resolve(getenv); err == nil || !strings.Contains(err.Error(), "env.pem") {
		t.Errorf("%s beats cli.json: got %v, want an error reading env.pem", envCACert, err)
	}
	cf.caCert = ca
	if cn, err := cf.resolve(getenv); err != nil || cn.caCert != ca {
		t.Errorf("--ca-cert beats %s: got %v", envCACert, err)
	}
}
