package kiln_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kilnhq/kiln"
)

// Look at a queue, pause it, list its tasks and cancel, retry and delete
// some, from Go, in the client's namespace.
func ExampleInspector() {
	s, cleanup := openStore()
	defer cleanup()
	ctx := context.Background()

	client, err := kiln.NewClient(s, nil)
	if err != nil {
		log.Fatal(err)
	}
	var ids []string
	for _, to := range []string{"ann", "bob", "cy"} {
		r, err := client.EnqueueJSON(ctx, "email:send", to, &kiln.TaskOptions{Queue: "mail"})
		if err != nil {
			log.Fatal(err)
		}
		ids = append(ids, r.ID())
	}

	insp := client.Inspector()
	if err := insp.PauseQueue(ctx, "mail"); err != nil {
		log.Fatal(err)
	}
	q, err := insp.Queue(ctx, "mail")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %d pending, paused %v\n", q.Queue, q.Pending, q.Paused)

	if err := insp.Cancel(ctx, ids[0]); err != nil {
		log.Fatal(err)
	}
	for t, err := range insp.All(ctx, &kiln.ListOptions{Queue: "mail", WithPayload: true}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s %s\n", t.Payload, t.State)
	}

	if err := insp.Retry(ctx, ids[0]); err != nil {
		log.Fatal(err)
	}
	n, err := insp.DeleteAll(ctx, &kiln.ListOptions{Queue: "mail"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("deleted", n)
	// Output:
	// mail: 3 pending, paused true
	// "ann" cancelled
	// "bob" pending
	// "cy" pending
	// deleted 3
}
