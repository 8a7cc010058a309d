package dataplane

import (
	"context"
	"errors"
	"net"
	"time"
)

// Accept returns ln's next connection. A failure that is not the end of
// ln (out of file descriptors, say) is told to failed and retried after a
// wait that doubles from 5 ms up to 1 s, as net/http's Serve does. It
// returns an error only once ln is closed or ctx has ended.
func Accept(ctx context.Context, ln net.Listener, failed func(err error, retryIn time.Duration)) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		failed(err, delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}
