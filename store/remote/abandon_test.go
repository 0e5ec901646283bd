package remote_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/apiclient"
	"github.com/kilnhq/kiln/store"
	"github.com/kilnhq/kiln/store/remote"
)

// cancelOnAnswer cancels the caller's context as soon as the answer of a
// lease arrives, before its body is read. Its body fails once the request's
// context has ended, as net/http's bodies do (deterministically here:
// net/http notices the end in another goroutine).
type cancelOnAnswer struct {
	next   http.RoundTripper
	cancel context.CancelFunc
}

func (c *cancelOnAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil || !strings.HasSuffix(r.URL.Path, "/lease") {
		return resp, err
	}
	c.cancel()
	resp.Body = &ctxBody{ReadCloser: resp.Body, ctx: r.Context()}
	return resp, nil
}

type ctxBody struct {
	io.ReadCloser
	ctx context.Context //nolint:containedctx // the request's context, checked on every read as net/http does
}

func (b *ctxBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	return b.ReadCloser.Read(p)
}

// TestLeaseAnswerKeptWhenCancelled: the caller's context ends after the
// server sent a lease's answer but before the store read it. The tasks
// the server leased are returned, not dropped (which would leave them
// active, their attempt counted, until their lease expired), in binary and
// in JSON.
func TestLeaseAnswerKeptWhenCancelled(t *testing.T) {
	t.Parallel()
	for _, jsonOnly := range []bool{false, true} {
		name := "binary"
		if jsonOnly {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, store.SystemClock{}, nil)
			hc := apiclient.NewHTTPClient()
			t.Cleanup(hc.CloseIdleConnections)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s := ts.open(t, &remote.Config{Token: adminToken, JSONOnly: jsonOnly, HTTPClient: &http.Client{Transport: &cancelOnAnswer{next: hc.Transport, cancel: cancel}}})
			if _, err := s.Enqueue(t.Context(), store.EnqueueParams{Namespace: "p", Tasks: []store.TaskInput{{ID: "a", Type: "t", Queue: "q"}}}); err != nil {
				t.Fatal(err)
			}
			res, err := s.Lease(ctx, store.LeaseParams{Namespace: "p", Queues: []string{"q"}, Max: 1, Duration: time.Hour, Wait: 10 * time.Second})
			if ctx.Err() == nil {
				t.Fatal("the transport did not cancel the context")
			}
			if err != nil || len(res.Tasks) != 1 || res.Tasks[0].ID != "a" {
				got, gerr := s.Get(t.Context(), store.GetParams{Namespace: "p", IDs: []string{"a"}})
				if gerr != nil {
					t.Fatal(gerr)
				}
				t.Fatalf("Lease whose answer arrived before its context ended = %d tasks, %v; the task is now %v attempt %d",
					len(res.Tasks), err, got.Tasks[0].State, got.Tasks[0].Attempt)
			}
		})
	}
}
