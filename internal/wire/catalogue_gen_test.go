package wire_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/kilnhq/kiln/internal/catalogue"
)

// TestCatalogueGenerated fails when catalogue_gen.go is not what go generate
// writes from server/api/errors.json and events.json today: edit the JSON,
// then run go generate ./internal/wire.
func TestCatalogueGenerated(t *testing.T) {
	t.Parallel()
	errorsJSON, err := os.ReadFile("../../server/api/errors.json")
	if err != nil {
		t.Fatal(err)
	}
	eventsJSON, err := os.ReadFile("../../server/api/events.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := catalogue.Generate(errorsJSON, eventsJSON)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("catalogue_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("catalogue_gen.go is not current: run go generate ./internal/wire")
	}
}
