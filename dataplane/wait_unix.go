//go:build linux || darwin

package dataplane

import (
	"net"
	"syscall"
)

// tcpWaiter waits until a TCP connection (or a connected UDP socket) has
// something to read (data, EOF, a datagram or an error) without holding a
// buffer: an idle connection then costs no copy buffer, only its goroutine.
type tcpWaiter struct {
	raw   syscall.RawConn
	peek  func(fd uintptr) bool
	woken bool
	err   error // what the peek found: a pending socket error is reported once
	one   [1]byte
}

func newTCPWaiter(c net.Conn) waiter {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UDPConn:
		sc = c
	case interface{ BareTCP() *net.TCPConn }:
		// A connection that says it buffers nothing above its socket: one
		// seen under the addresses of a load balancer's PROXY header, whose
		// header was read off the socket (transport.ProxiedConn). Peeking
		// under one that buffers (TLS) would wait while bytes are ready.
		sc = c.BareTCP()
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &tcpWaiter{raw: raw}
	w.peek = w.ready
	return w
}

// ready is called by RawConn.Read: first to check, then after each wake-up
// of the poller. The first call peeks (a read that finds nothing costs the
// same one syscall as the EAGAIN of a plain read); after a wake-up it
// trusts the poller, so that waiting adds no syscall.
func (w *tcpWaiter) ready(fd uintptr) bool {
	if w.woken {
		return true
	}
	w.woken = true
	_, _, err := syscall.Recvfrom(int(fd), w.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err == syscall.EAGAIN {
		return false
	}
	// The kernel reports a socket error (a reset) to one call only: keep it,
	// or the read that follows would see a clean EOF.
	w.err = err
	return true
}

// WaitRead returns the connection's error if waiting found one.
func (w *tcpWaiter) WaitRead() error {
	w.woken, w.err = false, nil
	if err := w.raw.Read(w.peek); err != nil {
		return err
	}
	if w.err != nil {
		return &net.OpError{Op: "read", Net: "tcp", Err: w.err}
	}
	return nil
}
