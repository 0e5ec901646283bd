package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/testenv"
)

func TestResqueFlags(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCLI(t, "resque", "-h")
	if code != 0 {
		t.Fatalf("resque -h: exit %d: %s", code, errOut)
	}
	// goworker's flags, kiln's own, the bridge's connection.
	for _, f := range []string{"-queues", "-concurrency", "-connections", "-interval", "-namespace", "-uri",
		"-exit-on-complete", "-use-number", "-insecure-tls", "-tls-cert", "-plain", "-shutdown-timeout", "-bridge", "-url", "-token"} {
		if !strings.Contains(out, "  "+f+"\t") {
			t.Errorf("resque -h does not list %s:\n%s", f, out)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"resque", "-queues", "q"}, "has no Go job classes"},
		{[]string{"resque", "--bridge"}, "you must specify at least one queue"},
		{[]string{"resque", "--bridge", "-queues", "high=x,low=1"}, "the weight must be a positive integer"},
		{[]string{"resque", "--bridge", "-queues", "q", "-interval", "0"}, "-interval 0"},
		{[]string{"resque", "--bridge", "-queues", "q", "extra"}, "takes no arguments"},
		{[]string{"resque", "-nope"}, "flag provided but not defined: -nope"},
	} {
		code, _, errOut := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("kiln %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(c.args, " "), code, errOut, c.want)
		}
	}
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testenv.WaitLimit)
	defer cancel()
	var stdout, stderr strings.Builder
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestResqueBridge pushes Resque jobs with a plain RPUSH and runs kiln
// resque --bridge: every job becomes a kiln task of type resque:<Class> in
// the queue of the same name, its payload the args.
func TestResqueBridge(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	ns := testenv.RedisPrefix(t, url) + ":"
	if err := rdb.RPush(t.Context(), ns+"queue:mail", `{"class":"SendMail","args":["a@b.c",{"n":1}]}`, `{"class":"SendMail","args":[]}`).Err(); err != nil {
		t.Fatal(err)
	}
	s := startCLIServer(t)
	mustKiln(t, s, "resque", "--bridge", "-queues", "mail", "-exit-on-complete", "-uri", url, "-namespace", ns, "-concurrency", "2")
	out := mustKiln(t, s, "task", "ls", "--queue", "mail", "--type", "resque:SendMail", "--json")
	var tasks []struct {
		ID, Type, Queue string
	}
	if err := json.Unmarshal([]byte(out), &tasks); err != nil {
		// Some listings wrap the tasks in an object.
		var wrapped struct {
			Tasks []struct {
				ID, Type, Queue string
			}
		}
		if err2 := json.Unmarshal([]byte(out), &wrapped); err2 != nil {
			t.Fatalf("task ls --json: %v / %v: %s", err, err2, out)
		}
		tasks = wrapped.Tasks
	}
	var payloads []string
	for _, tk := range tasks {
		if tk.Type != "resque:SendMail" || tk.Queue != "mail" {
			t.Errorf("task %+v", tk)
		}
		var full struct{ Payload []byte }
		if err := json.Unmarshal([]byte(mustKiln(t, s, "task", "get", tk.ID, "--json")), &full); err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, string(full.Payload))
	}
	if len(tasks) != 2 || !strings.Contains(strings.Join(payloads, " "), `["a@b.c",{"n":1}]`) {
		t.Errorf("tasks %d with payloads %q, want 2 with the args", len(tasks), payloads)
	}
	if n := rdb.LLen(t.Context(), ns+"queue:mail").Val(); n != 0 {
		t.Errorf("%d jobs left in the Resque queue", n)
	}
	if n, _ := rdb.Get(t.Context(), ns+"stat:processed").Int(); n != 2 {
		t.Errorf("stat:processed = %d, want 2", n)
	}
}

// TestResqueSignals runs the real kiln binary (the test binary as main) as
// kiln resque --bridge and stops it with each of QUIT, TERM and INT: it
// exits 0 and leaves Resque's worker registry.
func TestResqueSignals(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	s := startCLIServer(t)
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ns := testenv.RedisPrefix(t, url) + ":"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "resque", "--bridge", "-queues", "q", "-uri", url,
				"-namespace", ns, "--url", s.url, "--token", testAdminToken)
			cmd.Env = append(os.Environ(), runMainEnv+"=1", "GORACE=atexit_sleep_ms=0")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			deadline := time.Now().Add(testenv.WaitLimit)
			for rdb.SCard(t.Context(), ns+"workers").Val() == 0 {
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					if err := <-done; err == nil {
						t.Log("exited by itself before the kill")
					}
					t.Fatalf("the worker did not register: %s", &out)
				}
				time.Sleep(10 * time.Millisecond)
			}
			_ = cmd.Process.Signal(sig)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("after %v: %v\n%s", sig, err, &out)
				}
			case <-time.After(testenv.WaitLimit):
				_ = cmd.Process.Kill()
				if err := <-done; err == nil {
					t.Log("exited by itself before the kill")
				}
				t.Fatalf("still running %v after %v:\n%s", testenv.WaitLimit, sig, &out)
			}
			if n := rdb.SCard(t.Context(), ns+"workers").Val(); n != 0 {
				t.Errorf("%d workers still registered", n)
			}
			if keys := rdb.Keys(t.Context(), ns+"worker:*").Val(); len(keys) != 0 {
				t.Errorf("worker keys left: %v", keys)
			}
		})
	}
}

// TestResqueBridgeMetrics: kiln resque --bridge -metrics-listen serves the
// worker's jobs by queue and class, and the process's Go figures, at GET
// /metrics for Prometheus.
func TestResqueBridgeMetrics(t *testing.T) {
	t.Parallel()
	url := testenv.RedisURL(t)
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	ns := testenv.RedisPrefix(t, url) + ":"
	if err := rdb.RPush(t.Context(), ns+"queue:mail", `{"class":"SendMail","args":["a@b.c"]}`, `{"class":"SendMail","args":[]}`).Err(); err != nil {
		t.Fatal(err)
	}
	s := startCLIServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr bytes.Buffer // written by run only, read after it returns
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"resque", "--bridge", "-queues", "mail", "-uri", url, "-namespace", ns,
			"-metrics-listen", addr, "--url", s.url, "--token", testAdminToken}, io.Discard, &stderr)
	}()
	want := []string{
		`kiln_tasks_started_total{queue="mail",type="SendMail"} 2`,
		`kiln_tasks_succeeded_total{queue="mail",type="SendMail"} 2`,
		`go_goroutines `,
	}
	deadline := time.Now().Add(testenv.WaitLimit)
	var body string
	for !containsAll(body, want) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("GET /metrics never had %q; last:\n%s\nstderr: %s", want, body, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue // not listening yet
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		body = string(b)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("kiln resque exited %d after its context ended: %s", code, stderr.String())
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
