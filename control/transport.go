package control

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/proxy"
)

// Transports the client can carry its session over.
const (
	TransportTCP = "tcp" // plain TCP
	TransportTLS = "tls" // TLS over TCP
	TransportWS  = "ws"  // WebSocket over plain HTTP
	TransportWSS = "wss" // WebSocket over HTTPS
)

// DefaultWSPath is the WebSocket path of a server that does not set one.
const DefaultWSPath = "/gotunnel"

// ProxyError is a proxy that could not be reached or refused to connect
// the client to the server; Code is CodeProxyRefused or, for an
// unreachable proxy, CodeCannotReachServer. Reason carries the proxy's own
// answer.
type ProxyError struct {
	Code   Code
	Reason string
	Err    error
}

// Error implements error.
func (e *ProxyError) Error() string {
	if e.Err == nil {
		return "proxy: " + e.Reason
	}
	return "proxy: " + e.Reason + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ProxyError) Unwrap() error { return e.Err }

// transportError is a WebSocket handshake the server (or a reverse proxy
// in front of it) answered with something else than an upgrade.
type transportError struct {
	hint string
	err  error
}

func (e *transportError) Error() string { return e.hint + ": " + e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// dialServer opens the connection the session runs on: TCP to the server
// or through the proxy, then TLS and WebSocket as the transport says, all
// within deadline after the TCP dial. On error nothing is left open.
func (c *Client) dialServer(ctx context.Context, offer *certOffer) (net.Conn, error) {
	o := &c.opts
	dctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	conn, err := o.Dial(dctx, o.ServerAddr)
	cancel()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(o.HandshakeTimeout)
	if conn, err = c.secure(ctx, conn, offer); err != nil {
		return nil, err
	}
	if o.Transport == TransportWS || o.Transport == TransportWSS {
		return c.upgrade(ctx, conn, deadline)
	}
	return conn, nil
}

// dialTCP dials addr directly, or through the proxy when one is set.
func (c *Client) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: c.opts.DialTimeout}
	p := c.opts.Proxy
	switch {
	case p == nil:
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return conn, nil
	case p.Scheme == "socks5":
		return dialSOCKS5(ctx, d, p, addr)
	}
	return c.dialCONNECT(ctx, d, p, addr)
}

// dialCONNECT asks an HTTP proxy for a tunnel to addr (HTTP CONNECT, with
// basic authentication when the proxy URL has a user).
func (c *Client) dialCONNECT(ctx context.Context, d *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	conn, err := d.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, &ProxyError{Code: CodeCannotReachServer, Reason: "cannot reach the proxy " + p.Host, Err: err}
	}
	_ = conn.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := p.User; u != nil {
		pass, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)) + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		_ = conn.Close()
		return nil, &ProxyError{Code: CodeProxyRefused, Reason: "the proxy " + p.Host + " closed the connection", Err: err}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = conn.Close()
		return nil, &ProxyError{Code: CodeProxyRefused, Reason: "the proxy " + p.Host + " did not answer CONNECT", Err: err}
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		reason := fmt.Sprintf("the proxy %s answered %q to CONNECT %s", p.Host, resp.Status, addr)
		if resp.StatusCode == http.StatusProxyAuthRequired || resp.StatusCode == http.StatusUnauthorized {
			reason += "; put the right user:password in proxy_url" // some proxies (tinyproxy) answer 401
		}
		return nil, &ProxyError{Code: CodeProxyRefused, Reason: reason}
	}
	_ = conn.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &prefixConn{Conn: conn, prefix: append([]byte(nil), b...)}, nil
	}
	return conn, nil
}

// dialSOCKS5 connects to addr through a SOCKS5 proxy.
func dialSOCKS5(ctx context.Context, d *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	var auth *proxy.Auth
	if u := p.User; u != nil {
		pass, _ := u.Password()
		auth = &proxy.Auth{User: u.Username(), Password: pass}
	}
	sd, err := proxy.SOCKS5("tcp", p.Host, auth, d)
	if err != nil {
		return nil, &ProxyError{Code: CodeProxyRefused, Reason: "bad SOCKS5 proxy", Err: err}
	}
	conn, err := sd.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
	if err == nil {
		return conn, nil
	}
	if unreachable(err) {
		return nil, &ProxyError{Code: CodeCannotReachServer, Reason: "cannot reach the proxy " + p.Host, Err: err}
	}
	return nil, &ProxyError{Code: CodeProxyRefused, Reason: "the SOCKS5 proxy " + p.Host + " refused to connect to " + addr, Err: err}
}

// unreachable reports whether err is a failure to reach a host at all.
func unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || (errors.As(err, &ne) && ne.Timeout())
}

// upgrade runs the WebSocket handshake over conn (already TLS for wss)
// and returns the session's connection: binary messages as a byte stream.
func (c *Client) upgrade(ctx context.Context, conn net.Conn, deadline time.Time) (net.Conn, error) {
	o := &c.opts
	scheme := "http"
	if o.Transport == TransportWSS {
		scheme = "https"
	}
	var once sync.Once
	handOut := func(context.Context, string, string) (net.Conn, error) {
		var given net.Conn
		once.Do(func() { given = conn })
		if given == nil {
			return nil, errors.New("websocket: one connection only")
		}
		return given, nil
	}
	// The connection is dialled (and TLS is done) already: the HTTP
	// client only writes the upgrade request on it.
	tr := &http.Transport{DialContext: handOut, DialTLSContext: handOut, Proxy: nil, DisableKeepAlives: true}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	u := url.URL{Scheme: scheme, Host: o.ServerAddr, Path: o.WSPath}
	ws, resp, err := websocket.Dial(hctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		_ = conn.Close()
		return nil, upgradeFailure(resp, o.WSPath, err)
	}
	if resp != nil && resp.Body != nil { // a success hands the body over; close what is left
		_ = resp.Body.Close()
	}
	return newWSConn(ws, conn.RemoteAddr()), nil
}

// upgradeFailure explains a refused WebSocket upgrade with the server's
// own words: a TLS server refusing plain WebSocket is 1010, like any other
// TLS refusal.
func upgradeFailure(resp *http.Response, path string, err error) error {
	if resp == nil {
		return &transportError{hint: "the WebSocket handshake failed", err: err}
	}
	var said string
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		_ = resp.Body.Close()
		said = strings.TrimSpace(string(b))
	}
	if resp.StatusCode == http.StatusForbidden && strings.Contains(said, "requires TLS") {
		return &RejectError{Code: CodeTLS, Reason: "the server requires TLS for WebSocket; use a wss:// server_addr"}
	}
	hint := fmt.Sprintf("the server answered %q to the WebSocket upgrade on %s", resp.Status, path)
	if said != "" {
		hint += " (" + said + ")"
	}
	if resp.StatusCode == http.StatusNotFound {
		hint += "; check the path in server_addr against the server's ws_path"
	}
	return &transportError{hint: hint, err: err}
}

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

// forwardedAddr is a peer address taken from X-Forwarded-For: an IP
// address without a port.
type forwardedAddr string

func (a forwardedAddr) Network() string { return "tcp" }
func (a forwardedAddr) String() string  { return string(a) }
