package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"
)

// The "exception" of the failed records the worker writes for jobs that
// never reached a handler, or whose handler did not return an error.
const (
	// ExceptionInvalidJob: the queue entry is not a Resque job (not UTF-8,
	// not JSON, no class, args not an array).
	ExceptionInvalidJob = "InvalidJob"
	// ExceptionUnregisteredClass: no handler is registered for the class.
	ExceptionUnregisteredClass = "UnregisteredClass"
	// ExceptionInvalidArgs: a typed handler's args do not decode.
	ExceptionInvalidArgs = "InvalidArgs"
	// ExceptionPanic: the handler panicked; the backtrace is its stack.
	ExceptionPanic = "Panic"
	// ExceptionError: the handler returned an error (goworker writes the
	// same). An error with a method ResqueException() string names its
	// own exception.
	ExceptionError = "Error"
)

// failure is what a failed record says about the failure.
type failure struct {
	exception string
	msg       string
	backtrace []string
}

// classify turns a job's error into its failure.
func classify(err error) failure {
	var (
		ij *InvalidJobError
		ae *argsError
		pe *panicError
		ue *unregisteredError
		ne interface{ ResqueException() string }
	)
	switch {
	case errors.As(err, &pe):
		return failure{exception: ExceptionPanic, msg: pe.Error(), backtrace: pe.stack}
	case errors.As(err, &ij):
		return failure{exception: ExceptionInvalidJob, msg: ij.Error()}
	case errors.As(err, &ue):
		return failure{exception: ExceptionUnregisteredClass, msg: ue.Error()}
	case errors.As(err, &ae):
		return failure{exception: ExceptionInvalidArgs, msg: ae.Error()}
	case errors.As(err, &ne):
		return failure{exception: ne.ResqueException(), msg: err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return failure{exception: "Timeout", msg: err.Error()}
	default:
		return failure{exception: ExceptionError, msg: err.Error()}
	}
}

// unregisteredError is a job of a class no handler is registered for.
type unregisteredError struct{ class, queue string }

func (e *unregisteredError) Error() string {
	return "resque: no handler is registered for class " + quote(e.class) + " (queue " + quote(e.queue) + ")"
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// failedAtLayout is Ruby's strftime("%Y/%m/%d %H:%M:%S %Z").
const failedAtLayout = "2006/01/02 15:04:05 MST"

// failedRecord is one entry of <ns>failed, keys in Ruby Resque's order.
type failedRecord struct {
	FailedAt  string          `json:"failed_at"`
	Payload   json.RawMessage `json:"payload"`
	Exception string          `json:"exception"`
	Error     string          `json:"error"`
	Backtrace []string        `json:"backtrace"`
	Worker    string          `json:"worker"`
	Queue     string          `json:"queue"`
}

// encodeFailure encodes the failed record of a job: compact JSON, keys in
// Ruby Resque's order, failed_at in its format (local time), backtrace an
// array. A payload that is not JSON is recorded as a JSON string.
func encodeFailure(now time.Time, payload []byte, f failure, worker, queue string) []byte {
	var p bytes.Buffer
	if !json.Valid(payload) || json.Compact(&p, payload) != nil {
		p.Reset()
		p.WriteString(quote(string(payload)))
	}
	rec := failedRecord{
		FailedAt: now.Format(failedAtLayout), Payload: p.Bytes(), Exception: f.exception,
		Error: f.msg, Backtrace: f.backtrace, Worker: worker, Queue: queue,
	}
	if rec.Backtrace == nil {
		rec.Backtrace = []string{}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		// Every field is a string or valid JSON: unreachable.
		panic("resque: encode failed record: " + err.Error())
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
}
