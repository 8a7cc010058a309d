package server

import (
	"errors"
	"net"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// A load balancer in front of the server passes on connections from its
// own address; with accept_proxy_protocol it starts each with a PROXY
// protocol header naming the peer it accepted. The header is believed
// only from trusted_proxies, and required from them: from any other
// address nothing is read and the connection is taken as direct. A
// missing or bad header resets the connection (docs/security.md).

// proxyHeader reads the PROXY header of c when its peer is a trusted
// proxy, under c's read deadline, and returns c as the header names it;
// from any other peer it returns c as it is. On an error c is left to the
// caller.
func (s *Server) proxyHeader(c net.Conn) (net.Conn, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok || !s.entry.TrustedIP(transport.PeerIP(c.RemoteAddr())) {
		return c, nil
	}
	pc, err := transport.ReadProxyHeader(tc)
	if err != nil {
		return nil, err
	}
	return pc, nil
}

// clientHeader reads the PROXY header of a connection on bind_addr, under
// its login deadline, and holds the address it names to the per-address
// limits, as admit held the proxy's. False: c is reset or closed, its
// admission released, and a bad header counted and logged.
func (s *Server) clientHeader(c net.Conn) (net.Conn, bool) {
	pc, err := s.proxyHeader(c)
	switch {
	case err != nil:
		if s.ctx.Err() == nil {
			s.guard.badHeader(c.RemoteAddr(), err)
		}
		dataplane.Reset(c)
	case pc == c || s.guard.rekey(c, pc.RemoteAddr()):
		return pc, true
	default:
		_ = c.Close()
	}
	s.guard.release(c)
	return nil, false
}

// visitorHeader is the Header of m's public listener with
// accept_proxy_protocol, or nil without it or for a UDP mapping: a trusted proxy's header must
// come within login_timeout of the accept. A bad one is counted in m's
// counters (not one cut short by the listener's Close); the listener
// resets and logs it.
func (ss *serverSession) visitorHeader(m *mapping) func(net.Conn) (net.Conn, error) {
	s := ss.srv
	if !s.opts.AcceptProxyPublic || m.udp { // a datagram carries no header here
		return nil
	}
	return func(c net.Conn) (net.Conn, error) {
		_ = c.SetReadDeadline(time.Now().Add(s.opts.LoginTimeout))
		v, err := s.proxyHeader(c)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil && !errors.Is(err, net.ErrClosed) { // closed: the listener's Close
			m.counters.badHeaders.Add(1)
		}
		return v, err
	}
}
