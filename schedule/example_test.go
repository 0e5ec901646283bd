package schedule_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/schedule"
	"github.com/kilnhq/kiln/store/embedded"
	"github.com/kilnhq/kiln/store/storetest"
)

// A cron schedule on the embedded store, with the library alone: a report
// at 09:00 on weekdays, London time. The example moves a fake clock and
// calls FireDue; a program calls Run instead (go s.Run(ctx)), and a
// kiln.Worker on the same store runs the tasks.
func Example() {
	dir, err := os.MkdirTemp("", "kiln-schedule-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		log.Fatal(err)
	}
	clock := storetest.NewFakeClock(time.Date(2030, 3, 29, 8, 0, 0, 0, london)) // a Friday
	st, err := embedded.Open(dir, &embedded.Config{Clock: clock})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = st.Close() }()

	s, err := schedule.New(st, &schedule.Config{Clock: clock})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	sch, err := s.Create(ctx, &schedule.Schedule{
		ID:       "daily-report",
		Task:     schedule.Task{Type: "report:send", Payload: []byte(`{"to":"team"}`), Options: kiln.TaskOptions{Queue: "reports"}},
		Cron:     "0 9 * * mon-fri",
		TimeZone: "Europe/London",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("next run:", sch.NextStart.In(london).Format(time.RFC1123))

	clock.Advance(time.Hour) // 09:00
	n, err := s.FireDue(ctx)
	if err != nil {
		log.Fatal(err)
	}
	sch, err = s.Get(ctx, "default", "daily-report")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("enqueued:", n, sch.LastTaskID)
	fmt.Println("runs:", sch.RunCount)
	// Monday is after the clocks went forward: 09:00 BST.
	fmt.Println("next run:", sch.NextStart.In(london).Format(time.RFC1123))

	c, err := kiln.NewClient(st, nil)
	if err != nil {
		log.Fatal(err)
	}
	info, err := c.Info(ctx, sch.LastTaskID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("task:", info.Type, info.Queue, string(info.Payload))
	// Output:
	// next run: Fri, 29 Mar 2030 09:00:00 GMT
	// enqueued: 1 sched.daily-report.1901005200
	// runs: 1
	// next run: Mon, 01 Apr 2030 09:00:00 BST
	// task: report:send reports {"to":"team"}
}
