package control

import (
	"net"
	"testing"
	"time"
)

// testGuard is a guard with small limits that trusts the addresses in
// trusted.
func testGuard(t *testing.T, trusted ...string) *guard {
	t.Helper()
	o := &ServerOptions{MaxUnauthenticated: 100, MaxUnauthenticatedPerIP: 2, BadLoginLimit: 2, BadLoginPause: time.Minute}
	o.setDefaults()
	return newGuard(o, func(host string) bool {
		for _, h := range trusted {
			if h == host {
				return true
			}
		}
		return false
	})
}

// connFrom is a connection from addr (host:port), closed when the test ends.
func connFrom(t *testing.T, addr string) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return peerConn{Conn: a, addr: tcpAddr(addr)}
}

// TestGuardNeverChargesTrustedProxy: wrong tokens that arrive with a
// trusted proxy's own address (a client on its machine, or an upgrade
// with no usable X-Forwarded-For) must not pause the proxy, or every
// client behind it is turned away.
func TestGuardNeverChargesTrustedProxy(t *testing.T) {
	g := testGuard(t, "127.0.0.1")
	proxy := tcpAddr("127.0.0.1:4000")
	for range 3 * g.badLimit {
		g.badToken(proxy)
	}
	if g.isPaused(proxy) || !g.admit(connFrom(t, "127.0.0.1:4001")) {
		t.Error("a trusted proxy's address was paused by wrong tokens")
	}
	if len(g.bad) != 0 {
		t.Errorf("%d bad-login records for a trusted proxy, want none", len(g.bad))
	}
}
