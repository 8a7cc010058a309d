//go:build linux || darwin

package transport

import (
	"io"
	"net"
	"syscall"
)

// peekFirst reads c's first byte without taking it from the socket
// (MSG_PEEK), under c's read deadline, so that the session can be handed
// the bare *net.TCPConn: yamux's frames then take mux's one-writev path
// and no byte is copied into a buffer. ok is false when c is not a TCP
// connection; the caller then reads the byte and replays it.
func peekFirst(c net.Conn) (first byte, ok bool, err error) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return 0, false, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var b [1]byte
	var n int
	var perr error
	rerr := raw.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return perr != syscall.EAGAIN
	})
	switch {
	case rerr != nil: // the deadline, or the connection closed here
		return 0, true, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case perr != nil:
		return 0, true, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: perr}
	case n == 0:
		return 0, true, io.EOF
	}
	return b[0], true, nil
}
