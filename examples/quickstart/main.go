// Quickstart runs a kiln worker and client in one program on the embedded
// store: it registers the Say task, enqueues it with the argument "kiln",
// waits for the result, prints it and shuts down cleanly.
//
//	go run ./examples/quickstart            # data in a temporary folder
//	go run ./examples/quickstart -data ./kiln-data
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/store/embedded"
)

// Say says hello. kiln.Func turns it into a handler: the task's payload is
// decoded from JSON into name, and the result is encoded and stored.
func Say(name string) (string, error) {
	return "Hello " + name + "!", nil
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	dataDir := flag.String("data", "", "data folder of the embedded store (default: a temporary folder)")
	flag.Parse()

	// Signals belong to the program, not the library.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := *dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kiln-quickstart-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		dir = tmp
	}
	s, err := embedded.Open(dir, nil)
	if err != nil {
		return err
	}
	defer func() { _ = s.Close() }()

	// The worker.
	w, err := kiln.NewWorker(s, nil)
	if err != nil {
		return err
	}
	w.Handle("Say", kiln.Func(Say))
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(ctx) }()

	// The client.
	c, err := kiln.NewClient(s, nil)
	if err != nil {
		return err
	}
	res, err := c.EnqueueJSON(ctx, "Say", "kiln", nil)
	if err != nil {
		return err
	}
	var greeting string
	if err := res.Get(ctx, &greeting); err != nil {
		return err
	}
	fmt.Println(greeting)

	// Stop the worker: running tasks get up to 10 seconds to finish.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		return err
	}
	return <-runErr
}
