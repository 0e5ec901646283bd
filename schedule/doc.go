// Package schedule is kiln's one schedule engine, for the library and the
// server: rules that enqueue a task at run times, by a cron expression in
// a time zone or at an interval, bounded by a start, an end and a number
// of runs. Each run is enqueued once, however many Schedulers share the
// store.
//
// # Schedules
//
// A Schedule is plain data. Scheduler.Create validates it (every problem
// at once, as *store.ValidationError values) and stores it; Get, List,
// Update, Pause, Resume, Cancel and Delete manage it. A schedule is
// active until it has made MaxRuns runs, passed EndAt or been cancelled;
// a paused one fires nothing until it is resumed, and the run times that
// pass meanwhile are skipped, not made up on Resume. Update changes a
// schedule in place (same id, runs kept); a done or cancelled schedule
// cannot be paused, resumed or updated (ErrFinished).
//
// Cron expressions have five fields (minute hour day-of-month month
// day-of-week) or six with a seconds field first, or are one of @yearly,
// @annually, @monthly, @weekly, @daily, @midnight and @hourly; they are
// read on the wall clock of Schedule.TimeZone (UTC by default). A
// "TZ=" or "CRON_TZ=" prefix is refused in favour of TimeZone, and an
// expression with no run time within five years (such as "0 0 30 2 *")
// is refused at creation. Intervals ("90s", "1h") are whole seconds of at
// least Config.MinEvery (1 s by default) and run at StartAt, StartAt +
// Every, and so on.
//
// # Daylight saving time
//
// A cron expression with fixed minute and hour fields ("30 2 * * *") runs
// once on a day with a clock change: a run time in a spring-forward gap
// runs once right after the gap, and a run time in the repeated hour of a
// fall-back runs once, at its first occurrence. An expression with '*' at
// the start of its minute or hour field ("*/15 * * * *", "0 * * * *")
// follows the clock as it is, so it keeps its real-time spacing: nothing
// runs in the gap, and the repeated hour runs again. This is ISC cron's
// behaviour; Rule.Next has the details.
//
// # Firing once across many instances
//
// Schedules are store.Meta records in their namespace. A schedule is a
// chain of versions ("schedule/<id>/<version>"): a change writes the next
// version with put-if-absent, so of two concurrent changes exactly one
// wins and run_count is exact. At a run time every Scheduler that knows
// the schedule claims the run with put-if-absent on
// "schedule-fire/<id>/<run time in unix nanoseconds>"; the winner enqueues
// the task with the id TaskID(id, run time) ("sched.<id>.<unix seconds>"),
// marks the claim, and advances the schedule. An instance that dies
// between claim and advance leaves the claim; after Config.RepairAfter
// another instance finishes the run, and the deterministic task id makes
// the store refuse a second task (store.ErrTaskExists). Claims and the
// tombstones of deleted schedules are deleted after Config.Retain.
//
// A Scheduler's Run lists the schedules every Config.RescanInterval (to
// see those that other instances created) and sleeps until the earliest
// run time it knows. After a downtime longer than Config.MissedGrace a
// schedule fires once, for the latest run time that passed, and counts the
// others in MissedRuns; late runs within the grace all run.
//
// The index "schedule-ns/<namespace>" in Config.IndexNamespace (the
// server's "_kiln") lists the namespaces that have schedules, so that one
// Scheduler serves them all.
package schedule
