//go:build linux || darwin

package mux

import (
	"net"

	"golang.org/x/sys/unix"
)

// setNotSentLowat limits the bytes that may wait unsent in the kernel's
// send buffer of the session's TCP connection. Without it the kernel queues
// megabytes on a slow uplink, and a ping or a new stream's ack waits behind
// all of them; with it the queue stays in yamux, where frames of different
// streams take turns.
func setNotSentLowat(c net.Conn, n int) {
	raw := rawTCP(c)
	if raw == nil || n <= 0 {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	})
}
