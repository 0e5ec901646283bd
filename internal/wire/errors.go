package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/kilnhq/kiln/store"
)

//go:generate go run ../catalogue/gencatalogue -errors ../../server/api/errors.json -events ../../server/api/events.json -out catalogue_gen.go

// StorageFullMessage is the message of every storage_full error.
const StorageFullMessage = "the store's disk is full: writes are refused until space is freed; reads still work"

// Code is one entry of the error catalogue.
type Code struct {
	// Code is the stable name sent in Error.Code.
	Code string
	// Status is the HTTP status of an answer that fails with this code as a
	// whole.
	Status int
	// Sentinel is the store error that errors.Is matches, or nil.
	Sentinel error
	// RetryAfter is the Retry-After header's seconds of an answer that
	// fails with this code, or 0 for none.
	RetryAfter int
}

// RetryAfter returns the seconds of the Retry-After header of an answer
// that fails with code, or 0 for none: the store's outages and a full event
// stream are worth retrying soon.
func RetryAfter(code string) int {
	c, _ := lookup(code)
	return c.RetryAfter
}

// StoreUnavailableMessage is the message of every store_unavailable
// object the server sends: the store's own error names addresses, so it
// goes to the server's log instead.
const StoreUnavailableMessage = "the store does not answer (it is down, unreachable or failing over); retry later"

func lookup(code string) (Code, bool) {
	for _, c := range Codes {
		if c.Code == code {
			return c, true
		}
	}
	return Code{}, false
}

// Status returns the HTTP status of code; 500 for a code not in the
// catalogue.
func Status(code string) int {
	if c, ok := lookup(code); ok {
		return c.Status
	}
	return http.StatusInternalServerError
}

// Error is the error object of the API: the body of a failed answer is
// {"error": Error}, and batch answers carry one per item (or null). It is
// also an error value: errors.Is matches the store sentinel of its code.
type Error struct {
	// Code is a stable code of the catalogue.
	Code string `json:"code"`
	// Message says what went wrong, for people.
	Message string `json:"message"`
	// Field names the input field at fault, when one is.
	Field string `json:"field,omitempty"`
	// ID is, with "duplicate", the id of the task that holds the unique key.
	ID string `json:"id,omitempty"`
}

// ErrorBody is the body of a failed answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Err returns an error with the given code and message.
func Err(code, msg string) error { return &Error{Code: code, Message: msg} }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error returns "kiln: <code>: <message>".
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("kiln: %s: %s: %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("kiln: %s: %s", e.Code, e.Message)
}

// Unwrap returns the store sentinel of e's code, or nil.
func (e *Error) Unwrap() error {
	c, _ := lookup(e.Code)
	return c.Sentinel
}

// Err turns an error object received from the API into the error a store
// returns: nil for nil; a *store.ValidationError (Field, Message and the
// sentinel, so its text is the server's) when e names a field of a
// validation code; else e itself.
func (e *Error) Err() error {
	if e == nil {
		return nil
	}
	switch e.Code {
	case CodeInvalidName, CodeInvalidOption, CodePayloadTooLarge:
		if e.Field != "" {
			return &store.ValidationError{Field: e.Field, Reason: e.Message, Err: e.Unwrap()}
		}
	}
	return e
}

// ErrorFor maps an error to its HTTP status and error object. It never
// puts the text of an unknown (internal) error into the object: that text
// may hold paths or addresses; the server logs it instead.
func ErrorFor(err error) (int, *Error) {
	e := Object(err)
	if e == nil {
		return http.StatusOK, nil
	}
	return Status(e.Code), e
}

// Object maps an error to its error object, or nil for nil (see ErrorFor).
func Object(err error) *Error {
	if err == nil {
		return nil
	}
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Code: CodeBodyTooLarge, Message: fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit)}
	}
	var ve *store.ValidationError
	if errors.As(err, &ve) {
		e := &Error{Code: codeOf(ve.Err), Message: err.Error()}
		// A single validation error round-trips exactly; a joined list
		// keeps the whole text.
		if j, ok := err.(interface{ Unwrap() []error }); !ok || len(j.Unwrap()) == 1 {
			e.Field, e.Message = ve.Field, ve.Reason
		}
		return e
	}
	if errors.Is(err, store.ErrStorageFull) {
		// The store's text names its data folder; the server logs it.
		return &Error{Code: CodeStorageFull, Message: StorageFullMessage}
	}
	if code := codeOf(err); code == CodeStoreUnavailable {
		return &Error{Code: code, Message: StoreUnavailableMessage}
	} else if code != CodeInternal {
		return &Error{Code: code, Message: err.Error()}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: CodeUnavailable, Message: "the request was cancelled or timed out"}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

func codeOf(err error) string {
	for _, s := range sentinelOrder {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return CodeInternal
}
