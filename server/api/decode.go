package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"github.com/kilnhq/kiln/internal/wire"
)

// maxDepth bounds the nesting of a request body; kiln's requests nest at
// most four levels.
const maxDepth = 32

// readBody reads r's body, capped at limit bytes before anything is read
// (http.MaxBytesReader), and answers body_too_large beyond it. A declared
// Content-Length beyond the cap is refused before a byte is read, so that
// a client waiting on "Expect: 100-continue" gets the 413 instead of a
// "100 Continue" and then a connection reset.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, wire.Errorf(wire.CodeBodyTooLarge, "the request body is %d bytes, more than %d", r.ContentLength, limit)
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, wire.Errorf(wire.CodeBodyTooLarge, "the request body is larger than %d bytes", mbe.Limit)
		}
		return nil, wire.Errorf(wire.CodeBadRequest, "reading the request body: %v", err)
	}
	return b, nil
}

// Decode decodes one JSON object from data into v, strictly: the text must
// be a single object (nothing but white space after it), without duplicate
// keys (compared the way encoding/json matches field names, so "Queue" and
// "queue" are duplicates), without unknown fields, with the right types,
// nested at most 32 levels. An empty body is accepted only when
// allowEmpty is set, and leaves v unchanged. Every failure is a
// bad_request *wire.Error.
func Decode(data []byte, v any, allowEmpty bool) error {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		if allowEmpty {
			return nil
		}
		return wire.Errorf(wire.CodeBadRequest, "the request body is empty; a JSON object is required")
	}
	if trimmed[0] != '{' {
		return wire.Errorf(wire.CodeBadRequest, "the request body must be a JSON object")
	}
	if err := checkKeys(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return wire.Errorf(wire.CodeBadRequest, "unexpected data after the JSON object")
	}
	return nil
}

// decodeError turns an encoding/json error into a bad_request object that
// names the field when it can.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if te.Type != nil && te.Type.Kind() == reflect.Slice && te.Type.Elem().Kind() == reflect.Uint8 {
			msg := fmt.Sprintf("%s: a JSON %s where bytes go: bytes are a base64 string", field, te.Value)
			if field == "payload" || strings.HasSuffix(field, ".payload") {
				msg += "; to send a JSON payload as it is, use payload_json"
			}
			return &wire.Error{Code: wire.CodeBadRequest, Field: field, Message: msg}
		}
		return &wire.Error{Code: wire.CodeBadRequest, Field: field,
			Message: fmt.Sprintf("%s: a JSON %s cannot be a %s", field, te.Value, te.Type)}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return wire.Errorf(wire.CodeBadRequest, "malformed JSON at byte %d: %v", se.Offset, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return wire.Errorf(wire.CodeBadRequest, "malformed JSON: unexpected end of the body")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return wire.Errorf(wire.CodeBadRequest, "%s", msg)
}

// checkKeys scans data once and rejects duplicate keys in any object and
// nesting deeper than maxDepth. It reads only structure and object keys (no
// values are built), so it costs little next to the decode that follows. It
// trusts nothing: on malformed JSON it stops without error and leaves the
// report to the decoder, which checks the syntax fully.
func checkKeys(data []byte) error {
	type frame struct {
		object    bool
		expectKey bool // the next string of this object is a key
		keys      map[string]struct{}
	}
	var stack []frame
	for i, n := 0, len(data); i < n; {
		switch c := data[i]; c {
		case '{', '[':
			if len(stack) >= maxDepth {
				return wire.Errorf(wire.CodeBadRequest, "JSON nested deeper than %d levels", maxDepth)
			}
			stack = append(stack, frame{object: c == '{', expectKey: c == '{'})
			i++
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			i++
		case ',':
			if top := len(stack) - 1; top >= 0 && stack[top].object {
				stack[top].expectKey = true
			}
			i++
		case '"':
			j, escaped := i+1, false
			for j < n && data[j] != '"' {
				if data[j] == '\\' {
					escaped = true
					j++
				}
				j++
			}
			if j >= n {
				return nil // unterminated string: the decoder reports it
			}
			if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].expectKey {
				f := &stack[top]
				f.expectKey = false
				key := string(data[i+1 : j])
				if escaped {
					if err := json.Unmarshal(data[i:j+1], &key); err != nil {
						return nil // malformed escape: the decoder reports it
					}
				}
				k := foldKey(key)
				if f.keys == nil {
					f.keys = make(map[string]struct{}, 8)
				}
				if _, dup := f.keys[k]; dup {
					return &wire.Error{Code: wire.CodeBadRequest, Field: key, Message: fmt.Sprintf("duplicate key %q", key)}
				}
				f.keys[k] = struct{}{}
			}
			i = j + 1
		default:
			i++
		}
	}
	return nil
}

// foldKey maps a key to a canonical case-folded form: two keys that
// encoding/json would match to the same field fold alike. Each rune
// becomes the smallest rune of its case-folding orbit, and ASCII upper
// case then lower case.
func foldKey(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		ascii = ascii && s[i] < 0x80
	}
	if ascii {
		return strings.ToLower(s)
	}
	var b strings.Builder
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < m {
				m = f
			}
		}
		if m >= 'A' && m <= 'Z' {
			m += 'a' - 'A'
		}
		b.WriteRune(m)
	}
	return b.String()
}

// accepts reports whether r's Accept header names mediaType (without a
// q=0 parameter). Anything else, or no Accept at all, means JSON.
func accepts(r *http.Request, mediaType string) bool {
	for _, h := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || !strings.EqualFold(mt, mediaType) {
				continue
			}
			if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q <= 0 {
				continue
			}
			return true
		}
	}
	return false
}

// isContentType reports whether r's body is declared as mediaType.
func isContentType(r *http.Request, mediaType string) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == mediaType
}
