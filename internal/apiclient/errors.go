package apiclient

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/kilnhq/kiln/internal/wire"
)

// Error is a failed answer of the server: its HTTP status and the error
// object of the catalogue. errors.Is matches the store sentinel of its code
// (store.ErrNotFound for "not_found", ...) and errors.As finds the
// *store.ValidationError of a validation code that names a field.
type Error struct {
	// Status is the HTTP status of the answer.
	Status int
	// Method and Path name the request.
	Method, Path string
	// Obj is the server's error object; for an answer without one (a proxy's
	// error page), a code derived from Status and the start of the body.
	Obj *wire.Error
}

// Error returns the server's message with its code.
func (e *Error) Error() string {
	if e.Obj.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Obj.Field, e.Obj.Message, e.Obj.Code)
	}
	return fmt.Sprintf("%s (%s)", e.Obj.Message, e.Obj.Code)
}

// Unwrap returns the error the object stands for (see wire.Error.Err).
func (e *Error) Unwrap() error { return e.Obj.Err() }

// Code returns the catalogue code.
func (e *Error) Code() string { return e.Obj.Code }

// CodeOf returns the catalogue code of err when it is (or wraps) an answer
// of the server, else "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Obj.Code
	}
	return ""
}

func decodeError(r Request, status int, body io.Reader) error {
	raw, _ := io.ReadAll(io.LimitReader(body, 64<<10)) // a short read leaves a shorter message
	_, _ = io.Copy(io.Discard, body)                   // drain so the connection is reused
	var eb wire.ErrorBody
	if err := json.Unmarshal(raw, &eb); err == nil && eb.Error != nil && eb.Error.Code != "" {
		return &Error{Status: status, Method: r.Method, Path: r.Path, Obj: eb.Error}
	}
	// /readyz answers a wire.Health that names its code.
	var h wire.Health
	if err := json.Unmarshal(raw, &h); err == nil && h.Code != "" && h.Status != "ok" {
		return &Error{Status: status, Method: r.Method, Path: r.Path, Obj: &wire.Error{Code: h.Code, Message: h.Error}}
	}
	// Not the API's error object: a proxy, or a server of another kind.
	msg := strings.TrimSpace(string(raw))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Status: status, Method: r.Method, Path: r.Path, Obj: &wire.Error{Code: codeForStatus(status), Message: fmt.Sprintf("HTTP %d: %s", status, msg)}}
}

// codeForStatus guesses the catalogue code of an answer without an error
// object.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return wire.CodeBadRequest
	case http.StatusUnauthorized:
		return wire.CodeUnauthorized
	case http.StatusForbidden:
		return wire.CodeForbidden
	case http.StatusNotFound:
		return wire.CodeNotFound
	case http.StatusMethodNotAllowed:
		return wire.CodeMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return wire.CodeBodyTooLarge
	case http.StatusTooManyRequests:
		return wire.CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		// A proxy whose kiln server is down or slow: worth retrying, as
		// when the server's own store does not answer.
		return wire.CodeStoreUnavailable
	default:
		return wire.CodeInternal
	}
}

// CertError is a request that failed because the server's TLS certificate
// did not verify: it names the problem (Reason) and keeps the cause, so
// errors.As still finds the x509 error.
type CertError struct {
	// Reason says what is wrong, for people: "signed by an unknown
	// authority", "name mismatch", "expired or not yet valid".
	Reason string
	// Host is the host name of the URL the certificate was checked against.
	Host string
	// Err is the cause (a *tls.CertificateVerificationError, an
	// x509.HostnameError, ...).
	Err error
}

// The reasons of CertError.
const (
	CertUnknownAuthority = "signed by an unknown authority"
	CertNameMismatch     = "name mismatch"
	CertInvalid          = "not valid"
)

// Error names the problem, then the cause.
func (e *CertError) Error() string {
	switch e.Reason {
	case CertUnknownAuthority:
		return "the server's TLS certificate is signed by an unknown authority: " + e.Err.Error()
	case CertNameMismatch:
		return "name mismatch: the server's TLS certificate is not valid for " + e.Host + ": " + e.Err.Error()
	default:
		return "the server's TLS certificate is not valid: " + e.Err.Error()
	}
}

// Unwrap returns the cause.
func (e *CertError) Unwrap() error { return e.Err }

// WrapCertError wraps err, an error of an http.Client's Do for a URL of
// host, in a *CertError when it is a failed verification of the server's
// certificate, else returns it as it is. Client.Do does it already.
func WrapCertError(host string, err error) error {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return &CertError{Reason: CertUnknownAuthority, Host: host, Err: err}
	case errors.As(err, &he):
		return &CertError{Reason: CertNameMismatch, Host: host, Err: err}
	case errors.As(err, &ie):
		return &CertError{Reason: CertInvalid, Host: host, Err: err}
	}
	return err
}
