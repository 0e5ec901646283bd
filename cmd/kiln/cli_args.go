package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseDuration reads a duration of the command line: Go's syntax ("90s",
// "1h30m", "250ms"), a number of days ("7d", "1.5d"), or a bare number of
// seconds ("30"). Negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		f, err := strconv.ParseFloat(n, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(n, "eEpPxX_") {
			return 0, fmt.Errorf("duration %q: want a number of days like 7d", s)
		}
		return floatDuration(s, f*24*float64(time.Hour))
	}
	if isDecimal(s) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		return floatDuration(s, f*float64(time.Second))
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a Go duration (90s, 1h30m), a number of days (7d) or of seconds (30)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

func floatDuration(s string, ns float64) (time.Duration, error) {
	if ns < 0 || ns >= math.MaxInt64 {
		return 0, fmt.Errorf("duration %q is out of range", s)
	}
	return time.Duration(ns), nil
}

// isDecimal reports whether s is digits with at most one '.' among them.
func isDecimal(s string) bool {
	dot, digits := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// durationFlag is a flag.Value for parseDuration; set tells whether the flag
// was given.
type durationFlag struct {
	d   time.Duration
	set bool
}

func (f *durationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

// Payload formats of `kiln enqueue --format`.
const (
	formatAuto   = "auto"
	formatRaw    = "raw"
	formatJSON   = "json"
	formatBase64 = "base64"
)

// maxPayloadRead caps what enqueue reads from stdin: one byte more than the
// largest payload a server accepts by default is enough to let the server
// say "payload_too_large" with its own cap, without reading a huge input.
const maxPayloadRead = 64 << 20

// payloadFlags are the flags that say how to read a payload (enqueue,
// schedule create).
type payloadFlags struct {
	format string
	raw    bool
}

func (p *payloadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.format, "format", formatAuto, "how to read the payload: auto (JSON when it is or looks like JSON, else raw), raw, json (checked, compacted) or base64")
	fs.BoolVar(&p.raw, "raw", false, "send the payload byte for byte, even when it looks like JSON (--format raw)")
}

// check validates the flags and returns the format they choose.
func (p *payloadFlags) check() (string, error) {
	switch {
	case p.raw && p.format != formatAuto && p.format != formatRaw:
		return "", fmt.Errorf("--raw and --format %s disagree", p.format)
	case p.raw:
		return formatRaw, nil
	}
	switch p.format {
	case formatAuto, formatRaw, formatJSON, formatBase64:
		return p.format, nil
	}
	return "", fmt.Errorf("--format %q: want auto, raw, json or base64", p.format)
}

// read reads the payload argument (see parsePayload). When auto took a
// payload that is not JSON as raw bytes, it says so on w, so that a typo in
// a JSON payload does not pass unseen.
func (p *payloadFlags) read(arg string, in io.Reader, w io.Writer) ([]byte, error) {
	format, err := p.check()
	if err != nil {
		return nil, err
	}
	b, as, err := parsePayload(arg, in, format)
	if err != nil {
		return nil, err
	}
	if format == formatAuto && as == formatRaw && len(b) > 0 {
		_, _ = fmt.Fprintf(w, "note: the payload is not JSON: sent as %d raw bytes (--raw: the same, without this note; --format json: refuse what is not JSON)\n", len(b)) // a note: a failed write is no failure
	}
	return b, nil
}

// looksLikeJSON reports whether b starts like a JSON object, array or
// string: a payload that does is meant as JSON.
func looksLikeJSON(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && (b[0] == '{' || b[0] == '[' || b[0] == '"')
}

// parsePayload turns the payload argument into bytes: "-" reads stdin, and
// format says how to read the text: auto ("" too: valid JSON or anything
// that does not start like JSON is sent as is; what starts like JSON must
// be valid JSON), raw (as is), json (must be one valid JSON value; sent
// compacted) or base64 (standard alphabet, decoded). as is how it was
// taken: formatJSON, formatRaw or formatBase64.
func parsePayload(arg string, stdin io.Reader, format string) (b []byte, as string, err error) {
	var raw []byte
	if arg == "-" {
		if stdin == nil {
			return nil, "", errors.New("payload: no standard input")
		}
		b, err := io.ReadAll(io.LimitReader(stdin, maxPayloadRead+1))
		if err != nil {
			return nil, "", fmt.Errorf("payload: read standard input: %w", err)
		}
		if len(b) > maxPayloadRead {
			return nil, "", fmt.Errorf("payload: standard input is larger than %d bytes", maxPayloadRead)
		}
		raw = b
	} else {
		raw = []byte(arg)
	}
	switch format {
	case formatAuto, "":
		trimmed := bytes.TrimSpace(raw)
		switch {
		case len(trimmed) > 0 && json.Valid(trimmed):
			return raw, formatJSON, nil
		case looksLikeJSON(trimmed):
			return nil, "", fmt.Errorf("payload: looks like JSON but is not valid JSON: %w (--raw sends it as it is)", jsonError(trimmed))
		}
		return raw, formatRaw, nil
	case formatRaw:
		return raw, formatRaw, nil
	case formatJSON:
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) == 0 {
			return nil, "", errors.New("payload: empty, want a JSON value (--format json)")
		}
		if !json.Valid(trimmed) {
			return nil, "", fmt.Errorf("payload: not valid JSON (--format json): %w", jsonError(trimmed))
		}
		var b bytes.Buffer
		if err := json.Compact(&b, trimmed); err != nil {
			return nil, "", fmt.Errorf("payload: %w", err)
		}
		return b.Bytes(), formatJSON, nil
	case formatBase64:
		b, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(raw)))
		if err != nil {
			return nil, "", fmt.Errorf("payload: not valid base64 (--format base64): %w", err)
		}
		return b, formatBase64, nil
	default:
		return nil, "", fmt.Errorf("--format %q: want auto, raw, json or base64", format)
	}
}

// jsonError is why b is not one JSON value.
func jsonError(b []byte) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("it ends too soon (unexpected end of JSON input)")
		}
		return err
	}
	return fmt.Errorf("more after the first JSON value, at byte %d", dec.InputOffset())
}
