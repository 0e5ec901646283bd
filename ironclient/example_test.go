package ironclient_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kilnhq/kiln/ironclient"
)

// Queue a task of the code package "task", wait for it and print its log
// (seed 003). The token comes from IRON_TOKEN.
func ExampleClient_Queue() {
	ctx := context.Background()
	c, err := ironclient.New(ironclient.Config{URL: "http://127.0.0.1:7878", ProjectID: "default"})
	if err != nil {
		log.Fatal(err)
	}
	id, err := c.Queue(ctx, "task", map[string]string{"x": "abc", "y": "def"}, ironclient.TaskOptions{Timeout: 120 * time.Second})
	if err != nil {
		log.Fatal(err) // an *ironclient.Error carries the server's status and msg
	}
	t, err := c.WaitForTask(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	out, err := c.Log(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Status, out)
}

// Schedule the package "fanout" every ten minutes, with a payload.
func ExampleClient_Schedule() {
	ctx := context.Background()
	c, err := ironclient.New(ironclient.Config{}) // IRON_HOST, IRON_PROJECT_ID, IRON_TOKEN...
	if err != nil {
		log.Fatal(err)
	}
	id, err := c.Schedule(ctx, "fanout", map[string]any{"code_name": "area", "count": 472},
		ironclient.ScheduleOptions{RunEvery: 10 * time.Minute, StartAt: time.Now().Add(time.Minute)})
	if err != nil {
		log.Fatal(err)
	}
	s, err := c.ScheduleInfo(ctx, id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Status, s.NextStart)
}
