// Command gencatalogue writes internal/wire's generated catalogue file from
// server/api/errors.json and server/api/events.json. go generate runs it in
// internal/wire:
//
//	gencatalogue -errors ../../server/api/errors.json -events ../../server/api/events.json -out catalogue_gen.go
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kilnhq/kiln/internal/catalogue"
)

func main() {
	errorsPath := flag.String("errors", "", "path of errors.json")
	eventsPath := flag.String("events", "", "path of events.json")
	out := flag.String("out", "", "path of the Go file to write")
	flag.Parse()
	if err := run(*errorsPath, *eventsPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gencatalogue:", err)
		os.Exit(1) //nolint:forbidigo // a go generate program: its exit status fails go generate
	}
}

func run(errorsPath, eventsPath, out string) error {
	if errorsPath == "" || eventsPath == "" || out == "" {
		return fmt.Errorf("-errors, -events and -out are required")
	}
	errorsJSON, err := os.ReadFile(errorsPath) //nolint:gosec // G304: the path is go generate's own argument
	if err != nil {
		return err
	}
	eventsJSON, err := os.ReadFile(eventsPath) //nolint:gosec // G304: the path is go generate's own argument
	if err != nil {
		return err
	}
	src, err := catalogue.Generate(errorsJSON, eventsJSON)
	if err != nil {
		return err
	}
	return os.WriteFile(out, src, 0o644) //nolint:gosec // G306: a source file of the repository, readable by all like the others
}
