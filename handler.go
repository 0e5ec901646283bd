package kiln

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// Handler runs tasks of one type. ProcessTask returns nil when the task
// succeeded; an error fails the attempt, and the task is retried or goes
// dead (see SkipRetry and RetryAfter). A panic fails the attempt with a
// *PanicError.
//
// ctx is cancelled when the task's timeout or deadline passes (cause
// ErrTaskTimeout), when the task is cancelled (ErrTaskCancelled), when the
// worker loses the lease (ErrLeaseLost) or when a Shutdown runs out of time
// (ErrShutdown); context.Cause(ctx) tells which. Handlers must return soon
// after ctx is done: the worker waits for them.
//
// A Handler is called from many goroutines at once.
type Handler interface {
	ProcessTask(ctx context.Context, t *Task) error
}

// HandlerFunc adapts an ordinary function to a Handler.
type HandlerFunc func(ctx context.Context, t *Task) error

// ProcessTask calls f(ctx, t).
func (f HandlerFunc) ProcessTask(ctx context.Context, t *Task) error { return f(ctx, t) }

// Middleware wraps a Handler with behaviour that runs around it (logging,
// metrics, tracing). Middlewares registered with Worker.Use run in the order
// they were added: the first one added is the outermost.
type Middleware func(Handler) Handler

// Func adapts a function of one argument to a Handler. The task's payload is
// decoded from JSON into the argument and the function's result is encoded
// as JSON and stored as the task's result, where Result.Get decodes it. The
// argument may be a struct to carry several values. An empty (or nil)
// payload gives the argument's zero value, as JSON null does, so a task of a
// Func(func(struct{}) ...) handler can be enqueued without a payload. A
// payload that does not decode fails the task for good (SkipRetry).
//
//	func Say(name string) (string, error) { return "Hello " + name + "!", nil }
//	w.Handle("Say", kiln.Func(Say))
func Func[A, R any](fn func(A) (R, error)) Handler {
	return FuncCtx(func(_ context.Context, a A) (R, error) { return fn(a) })
}

// FuncCtx is Func for a function that takes the handler's context first.
func FuncCtx[A, R any](fn func(context.Context, A) (R, error)) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) error {
		var a A
		if len(t.Payload) > 0 { // no payload: the zero argument, as for "null"
			if err := json.Unmarshal(t.Payload, &a); err != nil {
				return fmt.Errorf("kiln: decode %s arguments: %w (%w)", t.Type, err, SkipRetry)
			}
		}
		r, err := fn(ctx, a)
		if err != nil {
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("kiln: encode %s result: %w (%w)", t.Type, err, SkipRetry)
		}
		t.SetResult(b)
		return nil
	})
}

// RetryDelayDefault is the default WorkerConfig.RetryDelayFunc: 1 s after
// the first attempt, doubling with each attempt up to 1 h, each delay
// multiplied by a random factor in [0.75, 1.25) so that tasks that failed
// together do not retry together. It is safe for concurrent use.
//
// Attempt 1 failed: 0.75..1.25 s; attempt 2: 1.5..2.5 s; attempt n:
// 2^(n-1) s ± 25 %, and from attempt 13 on 1 h ± 25 %. With the default 25
// retries the pauses add up to about 14 hours (68 minutes for the first
// twelve, then an hour each).
func RetryDelayDefault(attempt int, _ error, _ *Task) time.Duration {
	const base, maxDelay = time.Second, time.Hour
	d := maxDelay
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 12 { // 2^12 s > 1 h
		d = min(base<<(attempt-1), maxDelay)
	}
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2)) //nolint:gosec // G404: jitter needs no cryptographic randomness

}
