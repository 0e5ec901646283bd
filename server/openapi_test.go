package server_test

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIListsEveryRoute checks docs/openapi.yaml against the routes
// registered in the server's mux, both ways.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var documented []string
	inPaths, path := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "paths:":
			inPaths = true
		case inPaths && line != "" && !strings.HasPrefix(line, " "):
			inPaths = false
		case inPaths && strings.HasPrefix(line, "  /") && strings.HasSuffix(line, ":"):
			path = strings.TrimSuffix(strings.TrimSpace(line), ":")
		case inPaths && len(line) > 4 && line[:4] == "    " && line[4] != ' ' && strings.HasSuffix(line, ":"):
			method := strings.ToUpper(strings.TrimSuffix(strings.TrimSpace(line), ":"))
			documented = append(documented, method+" "+path)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	b := setup(t)
	var registered []string
	for _, rt := range b.srv.API().Routes() {
		registered = append(registered, rt.Method+" "+rt.Path)
	}
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in docs/openapi.yaml", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("docs/openapi.yaml lists %s, which the server does not serve", d)
		}
	}
	if len(documented) != len(registered) {
		t.Errorf("docs/openapi.yaml has %d operations, the server %d routes", len(documented), len(registered))
	}
}
