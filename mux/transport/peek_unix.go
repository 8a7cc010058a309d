//go:build linux || darwin

package transport

import (
	"io"
	"net"
	"syscall"
)

// peekFirst reads c's first byte without taking it from the socket
// (MSG_PEEK), under c's read deadline, so that the session can be handed
// the bare socket: yamux's frames then take mux's one-writev path and no
// byte is copied into a buffer. ok is false when c is not a TCP
// connection (a *net.TCPConn or a ProxiedConn); the caller then reads the
// byte and replays it.
func peekFirst(c net.Conn) (first byte, ok bool, err error) {
	tc := bareTCP(c)
	if tc == nil {
		return 0, false, nil
	}
	var b [1]byte
	_, ok, err = peek(tc, b[:])
	return b[0], ok, err
}

// peek waits, under c's read deadline, until c has something to read,
// and copies up to len(b) bytes of it into b without taking them from the
// socket. n is 0 only with an error: io.EOF when the peer has closed. ok
// is false when the socket cannot be reached; nothing was read then.
func peek(c *net.TCPConn, b []byte) (n int, ok bool, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var perr error
	rerr := raw.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return perr != syscall.EAGAIN
	})
	switch {
	case rerr != nil: // the deadline, or the connection closed here
		return 0, true, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case perr != nil:
		return 0, true, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: perr}
	case n <= 0:
		return 0, true, io.EOF
	}
	return n, true, nil
}
