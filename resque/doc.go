// Package resque runs Resque jobs in Go: the jobs that Ruby Resque,
// node-resque, goworker or redis-cli push onto Redis lists, with the Redis
// records Ruby tools read (resque-web, Resque::Failure, node-resque's queue
// API), and without losing a job when a worker process is killed.
//
// A program registers a Go function per job class and calls [Work]:
//
//	resque.Register("MyClass", func(queue string, args ...any) error {
//		fmt.Println(queue, args)
//		return nil
//	})
//	err := resque.Work(ctx, resque.Config{Queues: []string{"high", "low"}})
//
// [Register] has goworker's signature; [RegisterContext] adds a context that
// ends when the worker's shutdown timeout runs out, and [RegisterTyped]
// decodes the arguments into a Go value. [BindFlags] gives a program
// goworker's command-line flags.
//
// # Queues and order
//
// A job is a JSON object {"class": ..., "args": [...]} in the Redis list
// <namespace>queue:<name> (namespace "resque:" by default). Queues listed
// plainly ("high", "low") are strict: a job of "low" runs only when "high"
// is empty. Queues with weights ("high=2", "low=1") are tried in a random
// order on every pass, each weighted queue being as many times as likely to
// come first as its weight says, as goworker does.
//
// # Reliable mode (the default)
//
// A job moves from its queue to a processing list of the worker process
// and queue (one script for a batch of jobs, or BLMOVE while idle) in one
// atomic step, and leaves that list in the same script that records its
// outcome (the processed counter, or the failed record). Every process
// writes a heartbeat; any live worker returns the jobs of a process whose
// heartbeat is older than Config.DeadAfter to the head of the queue they
// came from. A SIGKILL therefore never loses a job: a job the killed
// process had taken runs again on another worker (at least once). With
// Config.Plain, jobs are taken with LPOP/BLPOP as goworker does (at most
// once: a killed process loses its running jobs).
//
// # Registry
//
// Each of a process's Concurrency slots is a Resque worker: its id is
// host:pid:queues (with ":<slot>" after the queues when Concurrency is more
// than 1), it is in <namespace>workers, has its :started time, its
// processed and failed counters and a <namespace>workers:heartbeat entry,
// and <namespace>worker:<id> holds {queue, run_at, payload} while it runs a
// job. A failed job is appended to <namespace>failed in Ruby Resque's
// record format. docs/resque.md describes every key.
//
// # Enqueueing
//
// [Client.Enqueue] (or [Enqueue] with the default namespace) writes a job
// that Ruby Resque, node-resque, goworker and this package run, and adds
// its queue to <namespace>queues. [Client.EnqueueAt] and [Client.EnqueueIn]
// write resque-scheduler's delayed layout; a [Scheduler] (or a worker with
// Config.Scheduler, or Ruby's or node-resque's scheduler) moves each due job
// to its queue exactly once, however many schedulers run.
package resque
