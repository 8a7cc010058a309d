package mux

import (
	"math"
	"net"
	"syscall"
	"time"
)

// Sizing constants; see linkSizer.
const (
	frameTime   = 2 * time.Millisecond
	unsentTime  = 4 * time.Millisecond
	minFrame    = 2 << 10
	minUnsent   = 4 << 10
	sampleEvery = 100 * time.Millisecond
)

// linkSizes is the rule of linkSizer for a drain rate in bytes per
// second: the bulk frame size and the kernel's unsent budget (at most
// maxUnsent).
func linkSizes(rate uint64, maxUnsent int) (frame, unsent int) {
	r := float64(min(rate, math.MaxInt64/2))
	frame = clamp(int(r*frameTime.Seconds()), minFrame, maxFrame)
	unsent = clamp(int(r*unsentTime.Seconds()), min(minUnsent, maxUnsent), maxUnsent)
	return frame, unsent
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// rawTCP is the raw socket under c (TLS and similar wrappers are looked
// through), or nil when c is not TCP.
func rawTCP(c net.Conn) syscall.RawConn {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	tc := bareTCP(c)
	if tc == nil {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// bareTCP is the TCP socket that writing c writes: c itself, or the socket
// of a connection that says it adds nothing above it (one seen under the
// addresses of a load balancer's PROXY header: transport.ProxiedConn);
// nil for any other connection.
func bareTCP(c net.Conn) *net.TCPConn {
	switch c := c.(type) {
	case *net.TCPConn:
		return c
	case interface{ BareTCP() *net.TCPConn }:
		return c.BareTCP()
	}
	return nil
}
