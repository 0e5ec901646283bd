// Command fanout deploys the fan-out example to a running kiln server: a
// scheduled task that wakes up and queues hundreds of tasks of another code
// package (seed 003's marine forecast areas).
//
// It uploads two code packages with ironclient and schedules the first:
//
//   - "area" (area.sh): the worker, one task per forecast area;
//   - "fanout" (./fanout, compiled here with `go build`): queues count
//     "area" tasks at each run. It learns the server's URL, project and
//     token from its package config, which the runner hands it as the
//     -config file; the token is never printed.
//
// Run it from the repository root against `kiln server`:
//
//	IRON_TOKEN=<project token> go run ./examples/fanout -count 472 -every 10m
//
// (`kiln project token` makes a project token; prefer it to the admin
// token: the package config holds it, and whoever can read the project's
// packages can read it.) -every 0 runs the fan-out once, now.
package main

import (
	"archive/zip"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/kilnhq/kiln/ironclient"
)

//go:embed area.sh
var areaScript []byte

// Deploy says what to deploy and where.
type Deploy struct {
	// URL, ProjectID and Token are the server the fan-out task queues on,
	// written into the fanout package's config.
	URL, ProjectID, Token string
	// FanoutBinary is the compiled ./fanout program (see Build).
	FanoutBinary string
	// Count is how many "area" tasks each run queues.
	Count int
	// Every is the schedule's interval (at least a minute); 0 runs once,
	// now.
	Every time.Duration
	// Label tags the queued tasks.
	Label string
}

// Build compiles the fanout program for the runner (static, this
// machine's platform) into dir and returns its path. It runs `go build`
// in srcDir, the folder of this file.
func Build(ctx context.Context, srcDir, dir string) (string, error) {
	out := filepath.Join(dir, "fanout")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./fanout") //nolint:gosec // G204: a fixed program; out is a folder the caller made
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./fanout: %w\n%s", err, b)
	}
	return out, nil
}

// zipOne returns a zip holding one file.
func zipOne(name string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Run uploads the "area" and "fanout" packages and schedules "fanout";
// it returns the schedule's id.
func Run(ctx context.Context, c *ironclient.Client, d Deploy) (string, error) {
	if d.Count <= 0 {
		return "", errors.New("count must be positive")
	}
	areaZip, err := zipOne("area.sh", areaScript)
	if err != nil {
		return "", err
	}
	if _, err := c.UploadCode(ctx, ironclient.Code{Name: "area", FileName: "area.sh", Runtime: "sh"}, bytes.NewReader(areaZip)); err != nil {
		return "", fmt.Errorf("upload area: %w", err)
	}
	bin, err := os.ReadFile(d.FanoutBinary)
	if err != nil {
		return "", err
	}
	fanoutZip, err := zipOne("fanout", bin)
	if err != nil {
		return "", err
	}
	cfg, err := json.Marshal(map[string]string{"url": d.URL, "project_id": d.ProjectID, "token": d.Token})
	if err != nil {
		return "", err
	}
	code := ironclient.Code{Name: "fanout", FileName: "fanout", Runtime: "binary", Config: string(cfg), MaxConcurrency: 1}
	if _, err := c.UploadCode(ctx, code, bytes.NewReader(fanoutZip)); err != nil {
		return "", fmt.Errorf("upload fanout: %w", err)
	}
	payload := map[string]any{"code_name": "area", "count": d.Count, "label": d.Label}
	opts := ironclient.ScheduleOptions{Name: "fanout", RunEvery: d.Every, Timeout: 10 * time.Minute}
	id, err := c.Schedule(ctx, "fanout", payload, opts)
	if err != nil {
		return "", fmt.Errorf("schedule fanout: %w", err)
	}
	return id, nil
}

func main() {
	url := flag.String("url", os.Getenv("KILN_URL"), "kiln server URL (default: IRON_HOST etc., else http://127.0.0.1:7878)")
	project := flag.String("project", "", "project (default IRON_PROJECT_ID, else default)")
	count := flag.Int("count", 200, "tasks each run queues")
	every := flag.Duration("every", 10*time.Minute, "schedule interval (at least 1m; 0: run once now)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, err := ironclient.New(ironclient.Config{URL: *url, ProjectID: *project}) // the token: IRON_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kiln-fanout-")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin, err := Build(ctx, ".", dir)
	if err != nil && errors.Is(err, exec.ErrNotFound) {
		log.Fatal(err)
	}
	if err != nil { // run from the repository root
		if bin, err = Build(ctx, filepath.Join("examples", "fanout"), dir); err != nil {
			log.Fatal(err)
		}
	}
	base := c.BaseURL()
	server := base[:len(base)-len("/2/projects/"+c.ProjectID())]
	id, err := Run(ctx, c, Deploy{URL: server, ProjectID: c.ProjectID(), Token: os.Getenv("IRON_TOKEN"), FanoutBinary: bin, Count: *count, Every: *every})
	if err != nil {
		log.Fatal(err)
	}
	when := "once, now"
	if *every > 0 {
		when = "every " + every.String()
	}
	fmt.Printf("schedule %s: fanout queues %d area tasks %s\n", id, *count, when)
}
