//go:build linux || darwin

package mux

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setNotSentLowat limits the bytes that may wait unsent in the kernel's
// send buffer of the session's TCP connection. Without it the kernel queues
// megabytes on a slow uplink, and a ping or a new stream's ack waits behind
// all of them; with it the queue stays in yamux, where frames of different
// streams take turns.
func setNotSentLowat(c net.Conn, n int) {
	for { // TLS and similar wrappers
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok || n <= 0 {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	})
}
