// Package hosted runs uploaded code packages as kiln tasks: the IronWorker
// model on any kiln store.
//
// A Registry keeps packages in the store's store.Meta so that every server
// and runner sharing the store sees them: per project, a record per
// package name, a record per revision (its settings: runtime, file_name or
// command, config, env_vars, max_concurrency, retries, retries_delay) and
// the revision's zip as a blob (package internal/blob), plus an index of
// every project's packages in IndexNamespace. It also keeps each task's log
// (written live by the runner) and the progress a task reports.
//
// A task of package "name" is a kiln task of type and queue "code:name"
// whose payload is an Envelope (the IronWorker payload string, the package
// revision, timeout, label, ...). Pausing the queue pauses the package.
//
// Hosted is the runner: it reads the index, serves every package with a
// kiln.Worker of its own (concurrency min(max_concurrency, the runner's)),
// and runs each task with runner.Run in a fresh task directory holding the
// package, unpacked once per project and checksum into a local cache
// (private to the runner: tasks get a copy, or read-only links with
// runner.Config.LinkPackage). Tasks run in the runner's sandbox
// (runner.SandboxAuto unless Config.Runner says otherwise, with WorkDir
// hidden from them) and, when the runner is root, each project's as a user
// of its own: Config.UIDBase + n, n allocated once per project in the store
// so that every runner sharing it agrees (docs/sandbox.md). Output goes to
// the task's log as it is written. The outcome becomes the kiln outcome:
// exit 0 succeeds; any other exit fails the attempt with "error: exit
// status N", a timeout with "timeout: ..." (the IronWorker status is kept
// in LastError, see ParseLastError); retries follow the package's retries
// and retries_delay; a kiln cancel kills the process group and the task is
// cancelled. A binary that uses Hosted must call runner.Main first thing in
// main.
//
// A package's max_concurrency holds across every runner sharing the store:
// a running task holds one of max_concurrency slots, meta records taken
// with put-if-absent and renewed while the task runs; the slots of a runner
// that dies expire after Config.SlotTTL (an expired slot is freed with
// compare-and-delete, so two runners never take it both).
package hosted
