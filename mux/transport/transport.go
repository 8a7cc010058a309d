// Package transport carries a gotunnel-mux session's connection: the
// client's dialers (TCP, TLS, WebSocket over HTTP or HTTPS, through an
// HTTP CONNECT or SOCKS5 proxy) and the server's one-port entry, which
// tells yamux, TLS and HTTP apart by the first byte, runs TLS and the
// WebSocket upgrade, and believes X-Forwarded-For from trusted proxies.
//
// Either side ends with a net.Conn that carries yamux's bytes and nothing
// else. A client:
//
//	d := &transport.Dialer{Transport: transport.WSS, Addr: "tunnel.example.com:443", TLS: cfg}
//	conn, offer, err := d.DialContext(ctx)
//
// A server, for each accepted connection:
//
//	a, err := entry.Handle(c, deadline, release) // a WebSocket arrives at Options.Session instead
//
// Failures are typed (*TLSError, *ProxyError, *UpgradeError,
// ErrTLSRequired, ErrNotProtocol...); mapping them to wire codes and log
// lines is the caller's business. It knows nothing of the control
// protocol, and it reads no configuration and no environment.
package transport

import (
	"context"
	"net"

	"github.com/coder/websocket"
)

// Transports a session can be carried over.
const (
	TCP = "tcp" // plain TCP
	TLS = "tls" // TLS over TCP
	WS  = "ws"  // WebSocket over plain HTTP
	WSS = "wss" // WebSocket over HTTPS
)

// DefaultWSPath is the WebSocket path of a server that does not set one.
const DefaultWSPath = "/gotunnel"

// First bytes that tell the transports apart on the server's one port
// (protocol.md 1.2).
const (
	firstTLS   = 0x16 // a TLS handshake record
	firstYamux = 0x00 // yamux protocol version 0
)

// prefixConn replays bytes already read from a connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

var _ net.Conn = (*prefixConn)(nil)

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// NetConn returns the wrapped connection (for socket options).
func (p *prefixConn) NetConn() net.Conn { return p.Conn }

// wsConn is a WebSocket connection as a byte stream. Close drops the TCP
// connection at once: the session is over, and waiting for the peer's
// close frame (as websocket's own Close does, up to 5 s) would stall a
// teardown on a dead peer.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	cancel context.CancelFunc
	remote net.Addr
}

var _ net.Conn = (*wsConn)(nil)

func newWSConn(ws *websocket.Conn, remote net.Addr) *wsConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &wsConn{Conn: websocket.NetConn(ctx, ws, websocket.MessageBinary), ws: ws, cancel: cancel, remote: remote}
}

// Close implements net.Conn.
func (w *wsConn) Close() error {
	w.cancel()
	return w.ws.CloseNow()
}

// RemoteAddr is the peer's address (on a server behind a trusted reverse
// proxy: the address the proxy reports).
func (w *wsConn) RemoteAddr() net.Addr { return w.remote }
