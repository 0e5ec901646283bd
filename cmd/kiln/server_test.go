package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
)

func TestServerOptionsPrecedence(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "kiln.json")
	if err := os.WriteFile(file, []byte(`{"addr":"file:1","sweep-interval":"5s","session-ttl":"2h","log-level":"debug"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KILN_CONFIG": file, "KILN_SWEEP_INTERVAL": "7s", "KILN_ADDR": "env:1"}
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	o, err := parseServerOptions(std, serverCommand(), []string{"--addr", "flag:1"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.addr != "flag:1" || o.sweepInterval != 7*time.Second || o.sessionTTL != 2*time.Hour || o.logLevel != "debug" || o.handshakeTimeout != 30*time.Second || o.data != "kiln-data" {
		t.Errorf("options = %+v: want flag > env > file > default", o)
	}
	if err := os.WriteFile(file, []byte(`{"adress":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseServerOptions(std, serverCommand(), nil, func(k string) string { return env[k] }); err == nil {
		t.Error("an unknown key of the config file was accepted")
	}
	if _, err := parseServerOptions(std, serverCommand(), []string{"--session-ttl", "soon"}, func(string) string { return "" }); err == nil {
		t.Error("a bad duration was accepted")
	}
}

func TestServerSandboxOptions(t *testing.T) {
	t.Parallel()
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	none := func(string) string { return "" }
	o, err := parseServerOptions(std, serverCommand(), nil, none)
	if err != nil {
		t.Fatal(err)
	}
	if o.sandbox != runner.SandboxAuto || o.sandboxLimits != runner.LimiterAuto || !o.sandboxNetwork || o.sandboxUIDBase != hosted.UIDBaseDefault || o.sandboxUIDCount != hosted.UIDCountDefault || o.sandboxCgroup != runner.CgroupAuto || o.linkPackages {
		t.Errorf("defaults: %+v", o)
	}
	env := map[string]string{"KILN_SANDBOX": "user", "KILN_SANDBOX_UID_BASE": "5000000", "KILN_SANDBOX_CGROUP": "/sys/fs/cgroup/kiln"}
	o, err = parseServerOptions(std, serverCommand(), []string{"--sandbox", "bwrap", "--sandbox-limits", "trampoline", "--sandbox-network=false", "--sandbox-uid-count", "10", "--link-packages=true"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.sandbox != runner.SandboxBwrap || o.sandboxLimits != runner.LimiterTrampoline || o.sandboxNetwork || o.sandboxUIDBase != 5_000_000 || o.sandboxUIDCount != 10 || o.sandboxCgroup != "/sys/fs/cgroup/kiln" || !o.linkPackages {
		t.Errorf("flags and environment: %+v", o)
	}
	for _, args := range [][]string{{"--sandbox", "docker"}, {"--sandbox-limits", "cgroup"}, {"--sandbox-uid-base", "0"}, {"--sandbox-network", "maybe"}, {"--sandbox-cgroup", "kiln"}, {"--link-packages=sometimes"}} {
		if _, err := parseServerOptions(std, serverCommand(), args, none); err == nil {
			t.Errorf("%q was accepted", args)
		}
	}
	// What tasks must not see: the data folder, an embedded store elsewhere,
	// the config file, as absolute paths.
	wd, _ := os.Getwd()
	got := secretPaths(&serverOptions{data: "kiln-data", store: "embedded:///var/lib/kiln-store", config: "/etc/kiln.json"})
	want := []string{filepath.Join(wd, "kiln-data"), "/etc/kiln.json", "/var/lib/kiln-store"}
	if !slices.Equal(got, want) {
		t.Errorf("secretPaths = %q, want %q", got, want)
	}
	if got := secretPaths(&serverOptions{data: "/d", store: "redis://h:6379/0"}); !slices.Equal(got, []string{"/d"}) {
		t.Errorf("secretPaths with Redis = %q", got)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	if got := redactURL("redis://user:pw@host:6379/0"); got != "redis://host:6379/0" {
		t.Errorf("redactURL = %q", got)
	}
}

func TestServerOptionsTLS(t *testing.T) {
	t.Parallel()
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	env := map[string]string{"KILN_TLS_CERT": "env.crt", "KILN_TLS_KEY": "env.key", "KILN_ALLOW_INSECURE_WORKERS": "true"}
	o, err := parseServerOptions(std, serverCommand(), []string{"--tls-cert", "flag.crt"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.tlsCert != "flag.crt" || o.tlsKey != "env.key" || !o.allowInsecureWorkers {
		t.Errorf("options = %+v", o)
	}
	file := filepath.Join(t.TempDir(), "kiln.json")
	if err := os.WriteFile(file, []byte(`{"tls-cert":"file.crt","allow-insecure-workers":false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = parseServerOptions(std, serverCommand(), []string{"--config", file}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "tls-cert and tls-key go together") {
		t.Errorf("a certificate without a key: got %v", err)
	}
	if _, err := parseServerOptions(std, serverCommand(), []string{"--allow-insecure-workers", "maybe"}, func(string) string { return "" }); err == nil {
		t.Error("a bad boolean was accepted")
	}
}

func TestServerOptionsHandshakeLimits(t *testing.T) {
	t.Parallel()
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	none := func(string) string { return "" }
	o, err := parseServerOptions(std, serverCommand(), nil, none)
	if err != nil {
		t.Fatal(err)
	}
	if o.handshakeRate != 10 || o.handshakeBurst != 20 || o.projectRate != 100 || o.projectBurst != 200 || o.maxOpenHandshakes != 1000 {
		t.Errorf("defaults = %+v", o)
	}
	env := map[string]string{"KILN_HANDSHAKE_RATE": "2.5", "KILN_MAX_OPEN_HANDSHAKES": "-1", "KILN_PROJECT_HANDSHAKE_BURST": "7"}
	o, err = parseServerOptions(std, serverCommand(), []string{"--handshake-burst", "3", "--project-handshake-rate", "-1"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.handshakeRate != 2.5 || o.handshakeBurst != 3 || o.projectRate != -1 || o.projectBurst != 7 || o.maxOpenHandshakes != -1 {
		t.Errorf("from env and flags = %+v", o)
	}
	for _, bad := range [][]string{
		{"--handshake-rate", "0"}, {"--handshake-rate", "fast"}, {"--handshake-rate", "NaN"},
		{"--handshake-burst", "0"}, {"--project-handshake-burst", "-5"}, {"--max-open-handshakes", "0"},
	} {
		if _, err := parseServerOptions(std, serverCommand(), bad, none); err == nil {
			t.Errorf("%v was accepted", bad)
		}
	}
}

func TestServerOptionsStreamsAndReserve(t *testing.T) {
	t.Parallel()
	std := stdio{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	none := func(string) string { return "" }
	o, err := parseServerOptions(std, serverCommand(), nil, none)
	if err != nil {
		t.Fatal(err)
	}
	if o.maxStreams != 1000 || o.maxProjectStreams != 100 || o.streamWriteTimeout != 10*time.Second || o.diskReserve != 32<<20 {
		t.Errorf("defaults = %+v", o)
	}
	env := map[string]string{"KILN_MAX_STREAMS": "50", "KILN_DISK_RESERVE": "-1"}
	o, err = parseServerOptions(std, serverCommand(), []string{"--max-project-streams", "5", "--stream-write-timeout", "2s"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.maxStreams != 50 || o.maxProjectStreams != 5 || o.streamWriteTimeout != 2*time.Second || o.diskReserve != -1 {
		t.Errorf("from env and flags = %+v", o)
	}
	for _, bad := range [][]string{
		{"--max-streams", "0"}, {"--max-project-streams", "-3"}, {"--stream-write-timeout", "0s"},
		{"--stream-write-timeout", "soon"}, {"--disk-reserve", "0"}, {"--disk-reserve", "lots"},
	} {
		if _, err := parseServerOptions(std, serverCommand(), bad, none); err == nil {
			t.Errorf("%v was accepted", bad)
		}
	}
}
