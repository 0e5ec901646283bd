package resque_test

import (
	"context"
	"fmt"
	"log"
	"os/signal"
	"syscall"

	"github.com/kilnhq/kiln/resque"
)

// A worker for the jobs that Ruby pushes with
// Resque.enqueue(MyClass, 'hi', 'there') onto the queue "myqueue".
func Example() {
	resque.Register("MyClass", func(queue string, args ...any) error {
		fmt.Printf("from %s: %v\n", queue, args)
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := resque.Work(ctx, resque.Config{
		URI:         "redis://localhost:6379/",
		Queues:      []string{"myqueue"},
		Concurrency: 10,
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A job with one hash argument, Resque.enqueue(SendInvoice, id: 7,
// email: "a@example.com"), decoded into a struct.
func ExampleRegisterTyped() {
	type invoice struct {
		ID    int    `json:"id"`
		Email string `json:"email"`
	}
	resque.RegisterTyped("SendInvoice", func(_ context.Context, _ string, inv invoice) error {
		fmt.Println("invoice", inv.ID, "to", inv.Email)
		return nil
	})
}
