package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

// replyError is an error reply of Redis, as go-redis returns it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// TestWrapUnavailable checks which errors wrap says are an outage
// (store.ErrUnavailable, with the cause kept) and which it leaves alone.
func TestWrapUnavailable(t *testing.T) {
	t.Parallel()
	s := &Store{closed: make(chan struct{})}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{io.EOF, true},
		{io.ErrUnexpectedEOF, true},
		{redis.ErrPoolTimeout, true},
		{replyError("LOADING Redis is loading the dataset in memory"), true},
		{replyError("BUSY Redis is busy running a script."), true},
		{replyError("CLUSTERDOWN The cluster is down"), true},
		{replyError("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{replyError("READONLY You can't write against a read only replica."), true},
		{replyError("MASTERDOWN Link with MASTER is down"), true},
		{replyError("NOREPLICAS Not enough good replicas to write."), true},
		{replyError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), true},
		{replyError("OOM command not allowed when used memory > 'maxmemory'."), true},
		{replyError("ERR max number of clients reached"), true},
		{replyError("ERR Error running script: attempt to compare nil with number"), false},
		{replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{replyError("NOPERM this user has no permissions"), false},
		{errors.New("unexpected script reply"), false},
	} {
		got := s.wrap("op", tc.err)
		if errors.Is(got, store.ErrUnavailable) != tc.want {
			t.Errorf("wrap(%v) = %v; unavailable %v, want %v", tc.err, got, !tc.want, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("wrap(%v) = %v lost its cause", tc.err, got)
		}
	}
	// The caller's own cancellation is not an outage.
	if got := s.wrap("op", context.Canceled); errors.Is(got, store.ErrUnavailable) {
		t.Errorf("wrap(context.Canceled) = %v, want no ErrUnavailable", got)
	}
}
