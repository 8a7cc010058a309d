package client

import (
	"context"
	"net"

	"golang.org/x/time/rate"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/dataplane"
)

// flowSocketBuffer is the receive buffer each flow's socket asks for: a
// quarter of the server's shared one, since each flow has its own.
const flowSocketBuffer = dataplane.SocketBuffer / 4

// relayFlow relays one flow of a UDP mapping: the data stream ds carries
// the visitor's datagrams, framed (protocol.md 7.8), and local is this
// flow's own UDP socket, connected to the mapping's service, so that the
// service sees each visitor flow come from a port of its own. With
// proxy_protocol v2, each datagram to the service starts with the UDP
// form of the header. The server ends the flow when it idles; so do the
// end of the session and the client's Shutdown.
func (cs *clientSession) relayFlow(ctx context.Context, m *clientMapping, hdr *control.OpenDataChannel, ds *control.DataStream, local net.Conn) dataplane.Result {
	if uc, ok := local.(*net.UDPConn); ok {
		// The service's answers to this flow wait here while the relay
		// is not scheduled; the kernel caps the request at rmem_max.
		_ = uc.SetReadBuffer(flowSocketBuffer)
	}
	// A stopping client ends its flows at once: there is nothing in a
	// flow to finish, and a drain would wait out their idle timeouts.
	o := dataplane.DatagramOptions{Traffic: &m.counters.traffic, Reverse: true, Dropped: m.counters.dropDatagram,
		Stop: cs.c.stopping.Done()}
	if m.bandwidth != nil {
		o.Limits.AToB = []*rate.Limiter{m.bandwidth} // the datagrams read from the local service
	}
	if v := m.ProxyProtocol.version(); v == 2 {
		if p, err := proxyHeader(v, hdr, cs.link.host).Format(); err == nil {
			o.Prefix = p
		}
	}
	return dataplane.RelayDatagrams(ctx, local, ds, o)
}
