package resque_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/resque"
)

// Jobs written by a Client run on Ruby Resque, node-resque, goworker and
// kiln's resque.Work alike; delayed ones need a scheduler (here kiln's, which
// may run on every machine at once).
func ExampleClient() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer func() { _ = rdb.Close() }()

	c, err := resque.NewClient(rdb, &resque.ClientConfig{Namespace: "myapp"}) // keys myapp:...
	if err != nil {
		log.Fatal(err)
	}
	// RPUSH myapp:queue:mail {"class":"SendWelcome","args":[42,"en"]}
	if err := c.Enqueue(ctx, "mail", "SendWelcome", 42, "en"); err != nil {
		log.Fatal(err)
	}
	// resque-scheduler's layout: myapp:delayed_queue_schedule, myapp:delayed:<ts>.
	if err := c.EnqueueIn(ctx, 10*time.Minute, "mail", "Reminder", 42); err != nil {
		log.Fatal(err)
	}

	// Move due delayed jobs to their queues until ctx is done.
	go func() {
		if err := resque.RunScheduler(ctx, rdb, &resque.SchedulerConfig{Namespace: "myapp"}); err != nil {
			log.Print(err)
		}
	}()
}
