package server_test

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
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

// TestOpenAPITaskFields checks that the Task and AttemptError schemas of
// docs/openapi.yaml name every field of the JSON the API returns
// (wire.Task, wire.AttemptError), and no other.
func TestOpenAPITaskFields(t *testing.T) {
	t.Parallel()
	spec, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]reflect.Type{"Task": reflect.TypeFor[wire.Task](), "AttemptError": reflect.TypeFor[wire.AttemptError]()} {
		var line string
		for l := range strings.SplitSeq(string(spec), "\n") {
			if strings.HasPrefix(l, "    "+name+": {") {
				line = l
			}
		}
		if line == "" {
			t.Errorf("docs/openapi.yaml has no schema %s", name)
			continue
		}
		_, props, _ := strings.Cut(line, "properties: {")
		var fields []string
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields = append(fields, tag)
			if !strings.Contains(props, " "+tag+": {") && !strings.HasPrefix(props, tag+": {") {
				t.Errorf("docs/openapi.yaml's %s schema does not list field %q", name, tag)
			}
		}
		// Every property at the top level of the schema is a field.
		depth := 0
		for i, start := 0, 0; i < len(props); i++ {
			switch props[i] {
			case '{', '[':
				if depth == 0 {
					key := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(props[start:i]), ":"))
					if !slices.Contains(fields, key) {
						t.Errorf("docs/openapi.yaml's %s schema lists %q, which the API does not return", name, key)
					}
				}
				depth++
			case '}', ']':
				depth--
			case ',':
				if depth == 0 {
					start = i + 1
				}
			}
			if depth < 0 {
				break
			}
		}
	}
}
