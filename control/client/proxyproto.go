package client

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// ProxyProtocol is whether, and in which version, the client starts each
// connection to a mapping's local service with a PROXY protocol header
// (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) that names
// the visitor: its source is the visitor's address, its destination the
// server's public address and port that the visitor connected to. The
// local service must expect the header (nginx: `listen ... proxy_protocol`);
// one that does not takes it for the visitor's first bytes. The health
// probe sends no header: it connects and closes.
type ProxyProtocol string

// The values of ProxyProtocol.
const (
	ProxyProtocolOff ProxyProtocol = ""   // no header (the default)
	ProxyProtocolV1  ProxyProtocol = "v1" // the text header, "PROXY TCP4 ..."
	ProxyProtocolV2  ProxyProtocol = "v2" // the binary header
)

// version is p's PROXY protocol version; 0 when p is off or unknown.
func (p ProxyProtocol) version() byte {
	switch p {
	case ProxyProtocolV1:
		return 1
	case ProxyProtocolV2:
		return 2
	}
	return 0
}

// check refuses a value that is neither off, v1 nor v2.
func (p ProxyProtocol) check() error {
	if p != ProxyProtocolOff && p.version() == 0 {
		return fmt.Errorf("proxy protocol %q: want %q, %q or %q (off)", string(p), ProxyProtocolV1, ProxyProtocolV2, ProxyProtocolOff)
	}
	return nil
}

// proxyHeader is the PROXY header of version v for the data stream whose
// header is hdr. The source is hdr.Visitor. The destination is
// hdr.Public; a server older than that field leaves it out, and then the
// destination is serverHost (the host of server_addr) with hdr.RemotePort
// when serverHost is an IP address, else 0.0.0.0 with hdr.RemotePort. A
// visitor address that does not parse (a server's bug) gives a header
// without addresses: "PROXY UNKNOWN" (v1), the LOCAL command (v2). A
// flow of a UDP mapping (hdr.Protocol "udp") gets the UDP form, which
// only v2 has.
func proxyHeader(v byte, hdr *control.OpenDataChannel, serverHost string) *proxyproto.Header {
	src, err := netip.ParseAddrPort(hdr.Visitor)
	if err != nil {
		return proxyproto.HeaderProxyFromAddrs(v, nil, nil)
	}
	dst, err := netip.ParseAddrPort(hdr.Public)
	if err != nil {
		ip, err := netip.ParseAddr(serverHost)
		if err != nil {
			ip = netip.IPv4Unspecified()
		}
		dst = netip.AddrPortFrom(ip, uint16(hdr.RemotePort))
	}
	src, dst = unmapped(src), unmapped(dst)
	if hdr.Protocol == control.ProtocolUDP {
		return proxyproto.HeaderProxyFromAddrs(v, net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	}
	return proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
}

// unmapped is a with an IPv4-mapped IPv6 address as IPv4.
func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// writeProxyHeader writes m's PROXY header for hdr to local, within
// timeout; a mapping without one writes nothing.
func (cs *clientSession) writeProxyHeader(local net.Conn, m *clientMapping, hdr *control.OpenDataChannel, timeout time.Duration) error {
	v := m.ProxyProtocol.version()
	if v == 0 {
		return nil
	}
	_ = local.SetWriteDeadline(time.Now().Add(timeout))
	_, err := proxyHeader(v, hdr, cs.link.host).WriteTo(local)
	_ = local.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("write proxy protocol v%d header: %w", v, err)
	}
	return nil
}
