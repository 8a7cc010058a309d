package test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// TestVisitorResetStopsLocalStream: a visitor resets its connection in the
// middle of an endless download. The local service's connection must end
// promptly (the reset crosses the tunnel as data_channel_reset), not go on
// streaming into a stream nobody reads.
func TestVisitorResetStopsLocalStream(t *testing.T) {
	leakCheck(t)
	localEnded := make(chan error, 1)
	be := startBackend(t, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				localEnded <- err
				return
			}
		}
	})
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "rst", client.Mapping{Name: "inf", LocalAddr: be.addr})
	v := dialPort(t, cl.waitUp(t, "inf")["inf"])
	if _, err := io.ReadFull(v, make([]byte, 4<<20)); err != nil {
		t.Fatal(err)
	}
	_ = v.SetLinger(0)
	v.Close()
	select {
	case err := <-localEnded:
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Errorf("local service's write ended with %v, want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("local service still streaming 5s after the visitor reset")
	}
}

// TestLocalResetReachesVisitor: the local service resets its connection
// mid-transfer; the visitor must see a reset, never a clean EOF after a
// truncated transfer.
func TestLocalResetReachesVisitor(t *testing.T) {
	leakCheck(t)
	be := startBackend(t, func(c net.Conn) {
		_, _ = c.Write(make([]byte, 1<<20))
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	})
	srv := startServer(t, server.Options{})
	cl := startClient(t, srv.addr, "rst2", client.Mapping{Name: "cut", LocalAddr: be.addr})
	v := dialPort(t, cl.waitUp(t, "cut")["cut"])
	defer v.Close()
	_ = v.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, v)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("visitor read %d bytes then %v, want a connection reset", n, err)
	}
}
