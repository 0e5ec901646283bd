// Package catalogue generates the Go side of kiln's HTTP error catalogue
// and event kinds from their one source, server/api/errors.json and
// server/api/events.json: the Code* and Event* constants of internal/wire,
// the table wire.Codes and the order in which a Go error is matched
// against the store's sentinels.
//
// go generate in internal/wire runs it (through gencatalogue); a test of
// internal/wire runs [Generate] again and fails when the file it wrote is
// not current.
package catalogue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/format"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// Entry is one code of errors.json.
type Entry struct {
	// Code is the stable name sent in an error object's "code".
	Code string `json:"code"`
	// Status is the HTTP status of an answer that fails with the code.
	Status int `json:"status"`
	// Sentinel names the store error (a variable of package store) that
	// errors.Is matches for the code, or is empty.
	Sentinel string `json:"sentinel"`
	// Match orders the codes that have a sentinel: a Go error is given the
	// code of the first sentinel it matches, in increasing Match.
	Match int `json:"match"`
	// RetryAfter is the Retry-After header's seconds of an answer that
	// fails with the code, or 0 for none.
	RetryAfter int `json:"retry_after"`
	// Message describes the code, for people.
	Message string `json:"message"`
}

// statusNames are the net/http names of the HTTP error statuses.
var statusNames = map[int]string{
	http.StatusBadRequest:                  "http.StatusBadRequest",
	http.StatusUnauthorized:                "http.StatusUnauthorized",
	http.StatusPaymentRequired:             "http.StatusPaymentRequired",
	http.StatusForbidden:                   "http.StatusForbidden",
	http.StatusNotFound:                    "http.StatusNotFound",
	http.StatusMethodNotAllowed:            "http.StatusMethodNotAllowed",
	http.StatusNotAcceptable:               "http.StatusNotAcceptable",
	http.StatusRequestTimeout:              "http.StatusRequestTimeout",
	http.StatusConflict:                    "http.StatusConflict",
	http.StatusGone:                        "http.StatusGone",
	http.StatusLengthRequired:              "http.StatusLengthRequired",
	http.StatusPreconditionFailed:          "http.StatusPreconditionFailed",
	http.StatusRequestEntityTooLarge:       "http.StatusRequestEntityTooLarge",
	http.StatusUnsupportedMediaType:        "http.StatusUnsupportedMediaType",
	http.StatusUnprocessableEntity:         "http.StatusUnprocessableEntity",
	http.StatusLocked:                      "http.StatusLocked",
	http.StatusPreconditionRequired:        "http.StatusPreconditionRequired",
	http.StatusTooManyRequests:             "http.StatusTooManyRequests",
	http.StatusRequestHeaderFieldsTooLarge: "http.StatusRequestHeaderFieldsTooLarge",
	http.StatusInternalServerError:         "http.StatusInternalServerError",
	http.StatusNotImplemented:              "http.StatusNotImplemented",
	http.StatusBadGateway:                  "http.StatusBadGateway",
	http.StatusServiceUnavailable:          "http.StatusServiceUnavailable",
	http.StatusGatewayTimeout:              "http.StatusGatewayTimeout",
	http.StatusInsufficientStorage:         "http.StatusInsufficientStorage",
}

// Event is one kind of events.json.
type Event struct {
	// Kind is the event's name, such as "task.enqueued".
	Kind string `json:"kind"`
	// Doc says when the event is raised.
	Doc string `json:"doc"`
}

var (
	codeRe     = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	kindRe     = regexp.MustCompile(`^(task|worker)\.[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	sentinelRe = regexp.MustCompile(`^Err[A-Z][A-Za-z0-9]*$`)
)

// acronyms are written in capitals in Go names (tls_required ->
// CodeTLSRequired).
var acronyms = map[string]string{"tls": "TLS", "id": "ID", "http": "HTTP"}

// GoName turns a snake_case name into its CamelCase Go form.
func GoName(name string) string {
	var b strings.Builder
	for _, w := range strings.FieldsFunc(name, func(r rune) bool { return r == '_' || r == '.' }) {
		if a, ok := acronyms[w]; ok {
			b.WriteString(a)
			continue
		}
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}

// Parse decodes and checks the two catalogues. It returns every problem it
// finds at once.
func Parse(errorsJSON, eventsJSON []byte) ([]Entry, []Event, error) {
	var entries []Entry
	if err := decodeStrict(errorsJSON, &entries); err != nil {
		return nil, nil, fmt.Errorf("errors.json: %w", err)
	}
	var events []Event
	if err := decodeStrict(eventsJSON, &events); err != nil {
		return nil, nil, fmt.Errorf("events.json: %w", err)
	}
	var errs []error
	seen := map[string]bool{}
	matches := map[int]string{}
	for i, e := range entries {
		where := fmt.Sprintf("errors.json[%d] (%q)", i, e.Code)
		if !codeRe.MatchString(e.Code) {
			errs = append(errs, fmt.Errorf("%s: the code must be snake_case", where))
		}
		if seen[e.Code] {
			errs = append(errs, fmt.Errorf("%s: the code appears twice", where))
		}
		seen[e.Code] = true
		if statusNames[e.Status] == "" {
			errs = append(errs, fmt.Errorf("%s: status %d is not an HTTP error status", where, e.Status))
		}
		if e.Message == "" {
			errs = append(errs, fmt.Errorf("%s: the message is empty", where))
		}
		if e.RetryAfter < 0 {
			errs = append(errs, fmt.Errorf("%s: retry_after %d is negative", where, e.RetryAfter))
		}
		switch {
		case e.Sentinel == "" && e.Match != 0:
			errs = append(errs, fmt.Errorf("%s: match %d without a sentinel", where, e.Match))
		case e.Sentinel != "" && !sentinelRe.MatchString(e.Sentinel):
			errs = append(errs, fmt.Errorf("%s: sentinel %q is not a store error name (ErrXxx)", where, e.Sentinel))
		case e.Sentinel != "" && e.Match <= 0:
			errs = append(errs, fmt.Errorf("%s: a sentinel needs a positive match order", where))
		case e.Sentinel != "":
			if other, ok := matches[e.Match]; ok {
				errs = append(errs, fmt.Errorf("%s: match %d is also %q's", where, e.Match, other))
			}
			matches[e.Match] = e.Code
		}
	}
	seen = map[string]bool{}
	for i, ev := range events {
		where := fmt.Sprintf("events.json[%d] (%q)", i, ev.Kind)
		if !kindRe.MatchString(ev.Kind) {
			errs = append(errs, fmt.Errorf("%s: the kind must be task.name or worker.name in snake_case", where))
		}
		if seen[ev.Kind] {
			errs = append(errs, fmt.Errorf("%s: the kind appears twice", where))
		}
		seen[ev.Kind] = true
		if ev.Doc == "" {
			errs = append(errs, fmt.Errorf("%s: the doc is empty", where))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return entries, events, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the array")
	}
	return nil
}

// Generate returns the gofmt'ed Go source of package wire's generated file
// for the two catalogues.
func Generate(errorsJSON, eventsJSON []byte) ([]byte, error) {
	entries, events, err := Parse(errorsJSON, eventsJSON)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("// Code generated by internal/catalogue/gencatalogue from server/api/errors.json and server/api/events.json. DO NOT EDIT.\n\n")
	p("package wire\n\n")
	p("import (\n\t\"net/http\"\n\n\t\"github.com/kilnhq/kiln/store\"\n)\n\n")

	p("// The error codes of the catalogue (server/api/errors.json).\nconst (\n")
	for _, e := range entries {
		p("\t// Code%s: %s\n\tCode%s = %q\n", GoName(e.Code), e.Message, GoName(e.Code), e.Code)
	}
	p(")\n\n")

	p("// Codes is the error catalogue, in the order of server/api/errors.json. It\n// must not be modified.\nvar Codes = []Code{\n")
	for _, e := range entries {
		sentinel := "nil"
		if e.Sentinel != "" {
			sentinel = "store." + e.Sentinel
		}
		p("\t{Code: Code%s, Status: %s, Sentinel: %s, RetryAfter: %d},\n", GoName(e.Code), statusNames[e.Status], sentinel, e.RetryAfter)
	}
	p("}\n\n")

	ordered := slices.Clone(entries)
	ordered = slices.DeleteFunc(ordered, func(e Entry) bool { return e.Sentinel == "" })
	slices.SortFunc(ordered, func(a, b Entry) int { return a.Match - b.Match })
	p("// sentinelOrder is the order in which ErrorFor tries the sentinels\n// (\"match\" in errors.json).\nvar sentinelOrder = []struct {\n\terr  error\n\tcode string\n}{\n")
	for _, e := range ordered {
		p("\t{store.%s, Code%s},\n", e.Sentinel, GoName(e.Code))
	}
	p("}\n\n")

	p("// The kinds of events (server/api/events.json): the Kind of an Event.\nconst (\n")
	for _, ev := range events {
		p("\t// Event%s (%q): %s\n\tEvent%s = %q\n", GoName(ev.Kind), ev.Kind, ev.Doc, GoName(ev.Kind), ev.Kind)
	}
	p(")\n\n")
	p("// EventKinds lists every event kind, in the order of server/api/events.json.\n// It must not be modified.\nvar EventKinds = []string{\n")
	for _, ev := range events {
		p("\tEvent%s,\n", GoName(ev.Kind))
	}
	p("}\n")

	out, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("catalogue: the generated source does not parse: %w", err)
	}
	return out, nil
}
