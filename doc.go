// Package kiln is a task processing library: register Go functions as named
// task types, enqueue tasks from anywhere, run them in workers with retries,
// timeouts, progress and graceful shutdown, and read their results.
//
// Tasks live in a [store.Store]: the embedded store (package store/embedded,
// a local data folder) by default, or Redis, PostgreSQL or a kiln server.
// The same code and the same guarantees hold on every store.
//
// # Quick start
//
//	s, _ := embedded.Open("./kiln-data", nil)
//	defer s.Close()
//
//	w, _ := kiln.NewWorker(s, nil)
//	w.Handle("Say", kiln.Func(func(name string) (string, error) {
//		return "Hello " + name + "!", nil
//	}))
//	go w.Run(ctx)
//	defer w.Shutdown(context.Background())
//
//	c, _ := kiln.NewClient(s, nil)
//	res, _ := c.EnqueueJSON(ctx, "Say", "kiln", nil)
//	var out string
//	err := res.Get(ctx, &out) // out == "Hello kiln!"
//
// # Tasks and options
//
// A task has a type (the name its handler is registered under), a payload of
// bytes, and [TaskOptions]: queue, priority, a delay, retries, a timeout, a
// deadline, a unique key and a retention. Options are plain data with JSON
// tags, and one rule holds for them here, over HTTP and in the command line:
// an option left out takes its default, an option given takes its value,
// zero included, so MaxRetries: new(0) means no retries and Timeout:
// new(time.Duration(0)) means no timeout. [Client.Enqueue] and [Client.EnqueueMany] validate them before they
// call the store: bad input gives a [*ValidationError] that matches
// [ErrInvalidName], [ErrInvalidOption] or [ErrPayloadTooLarge] and changes
// nothing.
//
// # Results
//
// Every enqueue returns a [*Result]. [Result.Get] waits for the task to finish
// and decodes its JSON result; [Result.Wait] returns the final [TaskInfo];
// both return a [*TaskError] matching [ErrTaskDead] or [ErrTaskCancelled] when
// the task ended badly. The store has no result notifications, so waiting
// polls, from every millisecond slowing to every 100 ms.
//
// # Inspecting and administering
//
// [Client.Inspector] returns an [*Inspector] for the client's namespace:
// counts per queue and state ([Inspector.Queues], [Inspector.Queue]),
// listing with filters and a cursor ([Inspector.List], or [Inspector.All]
// to range over every match), cancel, retry and delete of tasks by id or by
// filter, and pausing and resuming queues. It is what an asynq user knows as
// the Inspector, in kiln's states: dead is asynq's archived, succeeded its
// completed, and retry of a dead task its "run".
//
// # Handlers
//
// A [Handler] runs one attempt of a task. [Func] and [FuncCtx] adapt typed
// functions: the payload is JSON-decoded into the argument, and the result is
// JSON-encoded and stored. [HandlerFunc] adapts a plain function that works on
// the raw [*Task]. [Middleware] wraps handlers.
//
// A handler steers what happens after a failure: returning an error that
// wraps [SkipRetry] makes the task dead at once, [RetryAfter] chooses the
// delay, and any other error retries the task after
// [WorkerConfig.RetryDelayFunc] until its retries run out (25 by default,
// [MaxRetriesDefault]). The default, [RetryDelayDefault], is an exponential
// backoff with jitter: about 1 s before the second attempt, then 2 s, 4 s,
// ... doubling up to 1 h, each pause drawn within ±25 % of its value, so a
// task with the default retries keeps trying for about 14 hours. A panic is
// recovered into a [*PanicError].
//
// [Fn] adapts a function with several typed arguments and results, as
// machinery registers them, and [Define] makes a task type's argument and
// result types part of its definition. [TaskFromContext] gives a typed
// handler its [*Task].
//
// # Workflows
//
// [Chain], [Group] and [Chord] build workflows of [*Signature] steps, with
// OnSuccess and OnError callbacks; [Client.EnqueueWorkflow] writes one to
// the store at once, and the workers drive it: the store enqueues each
// step in the same atomic step that records the outcome of the task before
// it. [WorkflowResult] reads it by id from any process. See
// docs/workflows.md.
//
// # Workers
//
// A [Worker] leases batches of tasks of the types it handles from its queues
// (weighted or strict priority), runs up to Concurrency handlers at once,
// renews its leases with heartbeats, and reports outcomes to the store in
// batches. The handler's context ends when the task's timeout or deadline
// passes, when the task is cancelled ([Client.Cancel]; the store pushes the
// request to the worker, so the handler learns of it within milliseconds),
// when the lease is lost, or when a shutdown runs out of time;
// [context.Cause] says which ([ErrTaskTimeout], [ErrTaskCancelled],
// [ErrLeaseLost], [ErrShutdown]). An idle worker waits in the store, which
// wakes it when a task is enqueued or when a delayed task or a retry
// becomes due, so these start on time.
//
// # Delivery and shutdown
//
// Delivery is at least once: a task leaves the store's live set only when a
// worker reports its outcome, and a worker that dies loses its leases when
// they expire, after which the task runs again. Handlers are told the attempt
// number so they can be idempotent.
//
// [Worker.Shutdown] stops leasing, hands back the tasks it leased but did not
// start (their attempt is not counted), lets running handlers finish until
// shortly before its context's deadline, then cancels them and hands their
// tasks back. It returns by the deadline even when the store refuses the
// outcomes: what it could not report is left to the leases' expiry (the log
// says how many), so nothing is lost, and nothing runs twice because of a
// graceful stop that the store accepted. The library
// never handles signals: wire SIGINT and SIGTERM to the context given to
// [Worker.Run] (for example with signal.NotifyContext).
//
// # Events
//
// [ClientConfig.EventFunc] and [WorkerConfig.EventFunc] receive an [Event] for
// every step of a task: enqueued, started, succeeded, failed, retrying, dead,
// timed out, cancelled, lease lost and released.
package kiln
