//go:build linux || darwin

package dataplane

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
)

// TestWaiterThroughBareTCP: a visitor seen under a PROXY header's address
// (a connection that says with BareTCP that it buffers nothing) still
// gets the wait without a buffer, as a bare *net.TCPConn does, and a relay
// through it moves its bytes intact; a connection that only wraps one
// gets none.
func TestWaiterThroughBareTCP(t *testing.T) {
	visitor, a := tcpPair(t)
	wrapped := &named{TCPConn: a, remote: headerAddr("203.0.113.9:4711")}
	if _, ok := waiterOf(wrapped).(*tcpWaiter); !ok {
		t.Fatalf("waiterOf(%T) = %T, want a *tcpWaiter", wrapped, waiterOf(wrapped))
	}
	if w := waiterOf(readerOnlyConn{wrapped}); w != nil {
		t.Errorf("waiterOf a conn that does not say it is bare = %T, want nil", w)
	}
	b, backend := tcpPair(t)
	done := make(chan Result, 1)
	go func() { done <- Relay(context.Background(), wrapped, b) }()
	in := bytes.Repeat([]byte("proxied "), 64<<10)
	go func() {
		_, _ = visitor.Write(in)
		_ = visitor.CloseWrite()
	}()
	got, err := io.ReadAll(backend)
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("backend read %d bytes, %v; want the %d sent", len(got), err, len(in))
	}
	_ = backend.CloseWrite()
	if r := wait(t, done); r.Err != nil || r.AToB != int64(len(in)) {
		t.Errorf("relay = %+v, want AToB %d and no error", r, len(in))
	}
}

// readerOnlyConn hides every method but net.Conn's.
type readerOnlyConn struct{ net.Conn }
