package resque

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
)

// Registry maps job classes to their handlers. It is safe for concurrent
// use. The package's functions Register, RegisterContext and RegisterTyped
// fill a default registry, which Work uses unless Config.Registry is set.
type Registry struct {
	mu       sync.RWMutex
	m        map[string]handler
	fallback handler
}

// handler runs one job; useNumber is Config.UseNumber.
type handler func(ctx context.Context, j *Job, useNumber bool) error

var defaultRegistry = NewRegistry()

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]handler{}} }

// set registers h, replacing a handler registered for class before.
func (r *Registry) set(class string, h handler) {
	if class == "" {
		panic("resque: Register with an empty class")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[class] = h
}

func (r *Registry) get(class string) handler {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if h := r.m[class]; h != nil {
		return h
	}
	return r.fallback
}

// RegisterFallback makes fn the handler of every class that has no handler
// of its own in r (without one, such a job fails with exception
// "UnregisteredClass"). fn gets the whole job; its context is that of
// RegisterContext. kiln resque --bridge uses it to move every job into
// kiln.
func (r *Registry) RegisterFallback(fn func(ctx context.Context, job *Job) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fallback = func(ctx context.Context, j *Job, _ bool) error { return fn(ctx, j) }
}

// Classes returns the registered classes, in no particular order.
func (r *Registry) Classes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for c := range r.m {
		out = append(out, c)
	}
	return out
}

// Register makes fn the handler of class in r: it gets the queue the job
// came from and the job's args (numbers as float64, or json.Number with
// Config.UseNumber). A returned error or a panic makes the job a failed job.
func (r *Registry) Register(class string, fn func(queue string, args ...any) error) {
	r.set(class, func(_ context.Context, j *Job, useNumber bool) error {
		args, err := j.Values(useNumber)
		if err != nil {
			return err
		}
		return fn(j.Queue, args...)
	})
}

// RegisterContext is Register with a context: it is cancelled when the
// worker's shutdown timeout runs out while the job still runs (the job then
// goes back to its queue), and JobFromContext gives the job.
func (r *Registry) RegisterContext(class string, fn func(ctx context.Context, queue string, args ...any) error) {
	r.set(class, func(ctx context.Context, j *Job, useNumber bool) error {
		args, err := j.Values(useNumber)
		if err != nil {
			return err
		}
		return fn(ctx, j.Queue, args...)
	})
}

// Register makes fn the handler of class in the default registry; the
// signature is goworker's.
func Register(class string, fn func(queue string, args ...any) error) {
	defaultRegistry.Register(class, fn)
}

// RegisterContext makes fn the handler of class in the default registry
// (see Registry.RegisterContext).
func RegisterContext(class string, fn func(ctx context.Context, queue string, args ...any) error) {
	defaultRegistry.RegisterContext(class, fn)
}

// RegisterTyped makes fn the handler of class in the default registry,
// decoding the args into a T (see RegisterTypedIn).
func RegisterTyped[T any](class string, fn func(ctx context.Context, queue string, args T) error) {
	RegisterTypedIn(defaultRegistry, class, fn)
}

// RegisterTypedIn makes fn the handler of class in r. When T is a slice, an
// array, an interface or implements json.Unmarshaler, the whole args array
// is decoded into it (a [2]int takes [1,2]); otherwise (a struct, a map, a
// string, a number) the args must hold exactly one element, decoded into T
// (a struct takes [{"id":1}], the usual shape of a Resque job with a hash
// argument). A decoding error fails the job with exception "InvalidArgs".
func RegisterTypedIn[T any](r *Registry, class string, fn func(ctx context.Context, queue string, args T) error) {
	whole := decodesWhole(reflect.TypeFor[T]())
	r.set(class, func(ctx context.Context, j *Job, useNumber bool) error {
		var v T
		src := []byte(j.Args)
		if !whole {
			var elems []json.RawMessage
			if err := json.Unmarshal(j.Args, &elems); err != nil {
				return &argsError{err: err}
			}
			if len(elems) != 1 {
				return &argsError{err: fmt.Errorf("want exactly 1 argument for %T, got %d", v, len(elems))}
			}
			src = elems[0]
		}
		d := json.NewDecoder(bytes.NewReader(src))
		if useNumber {
			d.UseNumber()
		}
		if err := d.Decode(&v); err != nil {
			return &argsError{err: err}
		}
		return fn(ctx, j.Queue, v)
	})
}

// decodesWhole reports whether the whole args array decodes into t.
func decodesWhole(t reflect.Type) bool {
	if k := t.Kind(); k == reflect.Slice || k == reflect.Array || k == reflect.Interface {
		return true
	}
	um := reflect.TypeFor[json.Unmarshaler]()
	return t.Implements(um) || reflect.PointerTo(t).Implements(um)
}

// argsError is a typed handler's args that do not decode.
type argsError struct{ err error }

func (e *argsError) Error() string { return "resque: args: " + e.err.Error() }
func (e *argsError) Unwrap() error { return e.err }

// panicError is a handler's panic.
type panicError struct {
	value any
	stack []string
}

func (e *panicError) Error() string { return fmt.Sprint(e.value) }

// call runs h, turning a panic into a *panicError.
func call(ctx context.Context, h handler, j *Job, useNumber bool) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: stackLines(debug.Stack())}
		}
	}()
	return h(ctx, j, useNumber)
}

// stackLines makes a goroutine stack into Resque's backtrace lines, one
// per frame ("file:line:in `function'"), without the frames of the panic
// machinery and of this package's caller.
func stackLines(stack []byte) []string {
	lines := strings.Split(strings.TrimSpace(string(stack)), "\n")
	var out []string
	// lines[0] is "goroutine N [running]:"; then pairs of function, file.
	for i := 1; i+1 < len(lines); i += 2 {
		fn := strings.TrimSpace(lines[i])
		file := strings.TrimSpace(lines[i+1])
		if sp := strings.LastIndex(file, " +0x"); sp >= 0 {
			file = file[:sp]
		}
		if p := strings.LastIndex(fn, "("); p > 0 {
			fn = fn[:p]
		}
		if strings.HasPrefix(fn, "runtime/debug.Stack") || strings.HasPrefix(fn, "panic") ||
			strings.HasPrefix(fn, "runtime.gopanic") || strings.Contains(fn, "resque.call.func") {
			continue
		}
		if strings.HasPrefix(fn, "github.com/kilnhq/kiln/resque.call") {
			break // the frames below are the worker's
		}
		out = append(out, file+":in `"+fn+"'")
	}
	return out
}

// jobKey is the context key of the running job.
type jobKey struct{}

// JobFromContext returns the job a RegisterContext or RegisterTyped
// handler runs.
func JobFromContext(ctx context.Context) (*Job, bool) {
	j, ok := ctx.Value(jobKey{}).(*Job)
	return j, ok
}
