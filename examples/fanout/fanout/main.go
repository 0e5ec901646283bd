// Command fanout is a code package program for kiln's hosted runner: run
// on a schedule, it queues many tasks of another package, one per item of
// work (seed 003: a scheduled task that wakes up and queues a worker task
// per marine forecast area).
//
// The runner starts it with -d <dir> -payload <file> -config <file> -id
// <task id>. The config file is the package's config (set at upload): the
// JSON {"url", "project_id", "token"} of the kiln server to queue on. The
// payload file is the schedule's payload: {"code_name", "count", "label"},
// the package to queue, how many tasks, and an optional label. Each task
// gets the payload {"area": i, "of": count}.
//
// The token is never printed. It should be a project token (kiln project
// token), not an admin token: anyone who can read the project's packages
// can read their config.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kilnhq/kiln/ironclient"
)

// Config is the package config: where to queue.
type Config struct {
	URL       string `json:"url"`
	ProjectID string `json:"project_id"`
	Token     string `json:"token"`
}

// Payload is the schedule's payload: what to queue.
type Payload struct {
	CodeName string `json:"code_name"`
	Count    int    `json:"count"`
	Label    string `json:"label"`
}

// Area is the payload of each queued task.
type Area struct {
	Area int `json:"area"`
	Of   int `json:"of"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	fs.String("d", ".", "task directory")
	payloadFile := fs.String("payload", os.Getenv("PAYLOAD_FILE"), "payload file")
	configFile := fs.String("config", os.Getenv("CONFIG_FILE"), "config file")
	id := fs.String("id", os.Getenv("TASK_ID"), "task id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg Config
	if err := readJSON(*configFile, &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var p Payload
	if err := readJSON(*payloadFile, &p); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if p.CodeName == "" || p.Count <= 0 {
		return errors.New("payload: code_name and a positive count are required")
	}
	c, err := ironclient.New(ironclient.Config{URL: cfg.URL, ProjectID: cfg.ProjectID, Token: cfg.Token})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tasks := make([]ironclient.TaskRequest, p.Count)
	for i := range tasks {
		tasks[i] = ironclient.TaskRequest{CodeName: p.CodeName, Payload: Area{Area: i + 1, Of: p.Count},
			TaskOptions: ironclient.TaskOptions{Label: p.Label, Timeout: 5 * time.Minute}}
	}
	ids, err := c.QueueBatch(ctx, tasks)
	fmt.Printf("task %s queued %d tasks of %s\n", *id, len(ids), p.CodeName)
	if err != nil {
		return err
	}
	// Progress is shown in the task's info (best effort).
	_ = c.SetProgress(ctx, *id, 100, fmt.Sprintf("queued %d tasks", len(ids)))
	return nil
}

func readJSON(name string, v any) error {
	if name == "" {
		return errors.New("no file (-config/-payload)")
	}
	b, err := os.ReadFile(name) //nolint:gosec // G304: the runner names the file
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
