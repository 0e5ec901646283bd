package resque

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Job is one Resque job as a worker read it from a queue.
type Job struct {
	// Queue is the queue the job was taken from.
	Queue string
	// Class is the job's "class": the name its handler is registered by.
	Class string
	// Args is the job's "args" array as it is in the job (empty array when
	// the job has none).
	Args json.RawMessage
	// Payload is the job exactly as it was in the queue.
	Payload []byte
}

// InvalidJobError tells why a queue entry is not a Resque job.
type InvalidJobError struct {
	// Reason says what is wrong, e.g. `"args" is not an array`.
	Reason string
}

func (e *InvalidJobError) Error() string { return "resque: invalid job: " + e.Reason }

// maxShown bounds the part of a bad job quoted in an error.
const maxShown = 64

// DecodeJob decodes one queue entry. The entry must be valid UTF-8, a JSON
// object with a non-empty string "class" and, if present and not null, an
// array "args"; other fields (node-resque's "queue", for one) are ignored.
// Any other entry gives an *InvalidJobError.
func DecodeJob(queue string, payload []byte) (*Job, error) {
	if !utf8.Valid(payload) {
		return nil, &InvalidJobError{Reason: "not valid UTF-8"}
	}
	if !json.Valid(payload) {
		return nil, &InvalidJobError{Reason: fmt.Sprintf("not valid JSON: %q", shorten(payload))}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil || fields == nil {
		return nil, &InvalidJobError{Reason: fmt.Sprintf("not a JSON object: %q", shorten(payload))}
	}
	j := &Job{Queue: queue, Payload: payload, Args: json.RawMessage("[]")}
	rawClass, ok := fields["class"]
	if !ok {
		return nil, &InvalidJobError{Reason: `no "class"`}
	}
	if err := json.Unmarshal(rawClass, &j.Class); err != nil || isNull(rawClass) {
		return nil, &InvalidJobError{Reason: fmt.Sprintf(`"class" is not a string: %s`, shorten(rawClass))}
	}
	if j.Class == "" {
		return nil, &InvalidJobError{Reason: `"class" is empty`}
	}
	if rawArgs, ok := fields["args"]; ok && !isNull(rawArgs) {
		if t := bytes.TrimSpace(rawArgs); len(t) == 0 || t[0] != '[' {
			return nil, &InvalidJobError{Reason: fmt.Sprintf(`"args" is not an array: %s`, shorten(rawArgs))}
		}
		j.Args = rawArgs
	}
	return j, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// shorten returns b, cut to maxShown bytes (on a rune boundary).
func shorten(b []byte) string {
	if len(b) <= maxShown {
		return string(b)
	}
	n := maxShown
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// Values decodes the args into Go values: JSON numbers become float64, or
// json.Number with useNumber.
func (j *Job) Values(useNumber bool) ([]any, error) {
	d := json.NewDecoder(bytes.NewReader(j.Args))
	if useNumber {
		d.UseNumber()
	}
	var args []any
	if err := d.Decode(&args); err != nil {
		return nil, &InvalidJobError{Reason: fmt.Sprintf(`"args": %v`, err)}
	}
	if args == nil {
		args = []any{}
	}
	return args, nil
}
