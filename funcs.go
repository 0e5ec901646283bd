package kiln

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"github.com/kilnhq/kiln/internal/flowspec"
)

// taskKey is the context key of the running *Task.
type taskKey struct{}

// TaskFromContext returns the task a handler runs, from the handler's
// context: typed handlers (Func, FuncCtx, Fn, Def.Handler) reach its id,
// attempt, progress and result with it.
func TaskFromContext(ctx context.Context) (*Task, bool) {
	t, ok := ctx.Value(taskKey{}).(*Task)
	return t, ok
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
)

// Fn adapts a Go function with any number of typed arguments and results
// to a Handler, as machinery registers functions:
//
//	func(args ...int64) (int64, error)
//	func(s string) ([]string, error)
//	func(ctx context.Context, a, b int) (int, error)
//
// The function may take a context.Context first, and must return an error
// last. The task's payload is its positional arguments: a JSON array of
// them (what NewSignature("add", 1, 2) and a workflow send), or a single
// JSON value for a function of one argument. Its results are stored as
// the task's result: JSON null for none, the value for one, a JSON array
// for several.
//
// Fn checks fn when called and returns an error for an unsupported
// signature; a payload that does not fit fails the task for good with an
// error naming the argument.
func Fn(fn any) (Handler, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, fmt.Errorf("kiln: Fn: %T is not a function: %w", fn, ErrInvalidOption)
	}
	ft := v.Type()
	withCtx := ft.NumIn() > 0 && ft.In(0) == ctxType
	if ft.NumOut() == 0 || ft.Out(ft.NumOut()-1) != errType {
		return nil, fmt.Errorf("kiln: Fn: %s must return an error last: %w", ft, ErrInvalidOption)
	}
	first := 0
	if withCtx {
		first = 1
	}
	params := make([]reflect.Type, 0, ft.NumIn()-first)
	for i := first; i < ft.NumIn(); i++ {
		p := ft.In(i)
		if p.Kind() == reflect.Func || p.Kind() == reflect.Chan || p == ctxType {
			return nil, fmt.Errorf("kiln: Fn: %s: argument %d of type %s cannot come from JSON: %w", ft, i-first+1, p, ErrInvalidOption)
		}
		params = append(params, p)
	}
	variadic := ft.IsVariadic()
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		args, err := fnArgs(t.Payload, params, variadic)
		if err != nil {
			return fmt.Errorf("kiln: %s: %w (%w)", t.Type, err, SkipRetry)
		}
		in := make([]reflect.Value, 0, len(args)+1)
		if withCtx {
			in = append(in, reflect.ValueOf(ctx))
		}
		in = append(in, args...)
		var out []reflect.Value
		if variadic {
			out = v.CallSlice(in)
		} else {
			out = v.Call(in)
		}
		if e := out[len(out)-1]; !e.IsNil() {
			return e.Interface().(error)
		}
		var res any
		switch n := len(out) - 1; n {
		case 0:
			res = nil
		case 1:
			res = out[0].Interface()
		default:
			vals := make([]any, n)
			for i := range n {
				vals[i] = out[i].Interface()
			}
			res = vals
		}
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("kiln: encode %s result: %w (%w)", t.Type, err, SkipRetry)
		}
		t.SetResult(b)
		return nil
	}), nil
}

// MustFn is Fn that panics on an unsupported function, for registrations
// at start-up.
func MustFn(fn any) Handler {
	h, err := Fn(fn)
	if err != nil {
		panic(err)
	}
	return h
}

// fnArgs decodes a payload into the arguments of a function with params
// (the last a slice when variadic; CallSlice takes it whole).
func fnArgs(payload []byte, params []reflect.Type, variadic bool) ([]reflect.Value, error) {
	raw, err := positional(payload, params, variadic)
	if err != nil {
		return nil, err
	}
	fixed := len(params)
	if variadic {
		fixed--
	}
	switch {
	case len(raw) < fixed:
		return nil, fmt.Errorf("%d arguments given, %d wanted", len(raw), fixed)
	case !variadic && len(raw) > fixed:
		return nil, fmt.Errorf("%d arguments given, %d wanted", len(raw), fixed)
	}
	out := make([]reflect.Value, 0, len(params))
	for i := range fixed {
		p := reflect.New(params[i])
		if err := json.Unmarshal(raw[i], p.Interface()); err != nil {
			return nil, fmt.Errorf("argument %d (%s): %w", i+1, params[i], err)
		}
		out = append(out, p.Elem())
	}
	if variadic {
		st := params[len(params)-1]
		rest := reflect.MakeSlice(st, 0, len(raw)-fixed)
		for i := fixed; i < len(raw); i++ {
			p := reflect.New(st.Elem())
			if err := json.Unmarshal(raw[i], p.Interface()); err != nil {
				return nil, fmt.Errorf("argument %d (%s): %w", i+1, st.Elem(), err)
			}
			rest = reflect.Append(rest, p.Elem())
		}
		out = append(out, rest)
	}
	return out, nil
}

// positional splits a payload into positional arguments: null or empty is
// none, a JSON array its elements, anything else one argument. A function
// of exactly one (non-variadic) argument takes the whole payload when it is
// not an array of one.
func positional(payload []byte, params []reflect.Type, variadic bool) ([]json.RawMessage, error) {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 || string(p) == "null" {
		if len(params) == 1 && !variadic {
			return []json.RawMessage{json.RawMessage("null")}, nil
		}
		return nil, nil
	}
	if p[0] != '[' {
		return []json.RawMessage{p}, nil
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(p, &arr); err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	if len(params) == 1 && !variadic && len(arr) != 1 {
		return []json.RawMessage{p}, nil
	}
	if len(params) == 1 && !variadic && len(arr) == 1 && params[0].Kind() == reflect.Slice {
		// [x] for func(xs []T): the slice itself, unless x is one too.
		if len(bytes.TrimSpace(arr[0])) > 0 && bytes.TrimSpace(arr[0])[0] != '[' {
			return []json.RawMessage{p}, nil
		}
	}
	return arr, nil
}

// Send enqueues the task sig describes (machinery's SendTask): its
// payload is its arguments as positional arguments (see Signature). A
// signature with callbacks is a workflow: enqueue it with EnqueueWorkflow.
func (c *Client) Send(ctx context.Context, sig *Signature) (*Result, error) {
	if sig == nil {
		return nil, fmt.Errorf("kiln: send: nil signature: %w", ErrInvalidOption)
	}
	if len(sig.OnSuccess) > 0 || len(sig.OnError) > 0 {
		return nil, fmt.Errorf("kiln: send %s: a signature with callbacks is a workflow (use EnqueueWorkflow): %w", sig.Type, ErrInvalidOption)
	}
	args := make([]json.RawMessage, len(sig.Args))
	for i, a := range sig.Args {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("kiln: send %s: argument %d: %w", sig.Type, i+1, err)
		}
		args[i] = b
	}
	o := sig.Options
	return c.Enqueue(ctx, sig.Type, flowspec.Payload(args, nil), &o)
}

// Def is a typed task definition: the name of a task type with the Go
// types of its argument and result, so that a mismatch between the code
// that sends the task and the code that runs it is a compile error.
//
//	type AddArgs struct{ A, B int64 }
//	var add = kiln.Define[AddArgs, int64]("add")
//
//	add.Handle(w, func(ctx context.Context, a AddArgs) (int64, error) { return a.A + a.B, nil })
//	r, err := add.Enqueue(ctx, client, AddArgs{1, 2}, nil)
//	sum, err := add.Get(ctx, r)
type Def[A, R any] struct {
	typ string
}

// Define returns the definition of the task type typ.
func Define[A, R any](typ string) Def[A, R] { return Def[A, R]{typ: typ} }

// Type returns the task type's name.
func (d Def[A, R]) Type() string { return d.typ }

// Handler returns the Handler that runs fn for this type (FuncCtx).
func (d Def[A, R]) Handler(fn func(context.Context, A) (R, error)) Handler { return FuncCtx(fn) }

// Handle registers fn on w for this type; it panics like Worker.Handle.
func (d Def[A, R]) Handle(w *Worker, fn func(context.Context, A) (R, error)) {
	w.Handle(d.typ, d.Handler(fn))
}

// Enqueue enqueues a task of this type with args; nil opts means the
// defaults.
func (d Def[A, R]) Enqueue(ctx context.Context, c *Client, args A, opts *TaskOptions) (*Result, error) {
	return c.EnqueueJSON(ctx, d.typ, args, opts)
}

// Signature returns a workflow step of this type with args as its only
// argument (immutable: a typed step takes no result from the step before
// it, which could not be checked at compile time).
func (d Def[A, R]) Signature(args A) *Signature {
	return &Signature{Type: d.typ, Args: []any{args}, Immutable: true}
}

// Get waits for the task of r and returns its result, typed.
func (d Def[A, R]) Get(ctx context.Context, r *Result) (R, error) {
	var out R
	if r == nil {
		return out, errors.New("kiln: Get: nil result")
	}
	err := r.Get(ctx, &out)
	return out, err
}
