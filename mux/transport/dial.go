package transport

import (
	"bufio"
	"context"
	"crypto/tls"
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

// Dialer opens the connection a client's session runs on. The zero
// Transport is TCP; Addr is required. Its fields are read, never written,
// by DialContext, so one Dialer serves every attempt.
type Dialer struct {
	Transport string // TCP (default), TLS, WS or WSS
	Addr      string // the server's host:port
	WSPath    string // the server's WebSocket path, for WS and WSS; default DefaultWSPath
	// Proxy, when set, is an http:// (HTTP CONNECT, basic auth from its
	// user) or socks5:// proxy every connection goes through.
	Proxy *url.URL
	// TLS runs TLS over the connection; required for TLS and WSS, and it
	// makes TCP TLS too. Its ServerName must be set (or verification off).
	TLS *tls.Config
	// DialTimeout bounds the TCP dial, HandshakeTimeout the proxy's
	// answer, TLS and the WebSocket upgrade; zero: no bound but ctx.
	DialTimeout, HandshakeTimeout time.Duration
	// Dial opens the TCP connection to addr; nil dials directly or through
	// Proxy (DialTCP).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Check reports a Dialer that cannot work: an unknown transport, or TLS
// missing or surplus.
func (d *Dialer) Check() error {
	switch t := d.transport(); {
	case t != TCP && t != TLS && t != WS && t != WSS:
		return fmt.Errorf("transport: unknown transport %q", t)
	case (t == TLS || t == WSS) && d.TLS == nil:
		return fmt.Errorf("transport: %s needs a TLS configuration", t)
	case t == WS && d.TLS != nil:
		return errors.New("transport: ws is plain; use wss for TLS")
	}
	return nil
}

func (d *Dialer) transport() string {
	if d.Transport == "" {
		return TCP
	}
	return d.Transport
}

// DialContext opens the session's connection: TCP to the server or
// through the proxy, then TLS and WebSocket as the transport says. offer
// records what the TLS handshake said about client certificates, to
// explain a login the server cuts off (CertOffer.Explain); it is nil
// without TLS. On error nothing is left open.
func (d *Dialer) DialContext(ctx context.Context) (conn net.Conn, offer *CertOffer, err error) {
	dial := d.Dial
	if dial == nil {
		dial = d.DialTCP
	}
	dctx, cancel := withTimeout(ctx, d.DialTimeout)
	conn, err = dial(dctx, d.Addr)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(d.HandshakeTimeout)
	if d.TLS != nil {
		offer = new(CertOffer)
		if conn, err = d.secure(ctx, conn, offer); err != nil {
			return nil, nil, err
		}
	}
	if t := d.transport(); t == WS || t == WSS {
		conn, err = d.upgrade(ctx, conn, deadline)
	}
	return conn, offer, err
}

// withTimeout is ctx bounded by d, or ctx itself when d is zero.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// secure runs the TLS handshake over conn. On failure conn is closed and
// the error explains (a *TLSError when it can).
func (d *Dialer) secure(ctx context.Context, conn net.Conn, offer *CertOffer) (net.Conn, error) {
	tc := tls.Client(conn, offer.config(d.TLS))
	hctx, cancel := withTimeout(ctx, d.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = conn.Close()
		if te := tlsFailure(err, d.TLS.ServerName); te != nil {
			return nil, te
		}
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

// DialTCP dials addr directly, or through the proxy when one is set.
func (d *Dialer) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: d.DialTimeout}
	p := d.Proxy
	switch {
	case p == nil:
		conn, err := nd.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		return conn, nil
	case p.Scheme == "socks5":
		return dialSOCKS5(ctx, nd, p, addr)
	}
	return d.dialCONNECT(ctx, nd, p, addr)
}

// dialCONNECT asks an HTTP proxy for a tunnel to addr (HTTP CONNECT, with
// basic authentication when the proxy URL has a user).
func (d *Dialer) dialCONNECT(ctx context.Context, nd *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	conn, err := nd.DialContext(ctx, "tcp", p.Host)
	if err != nil {
		return nil, &ProxyError{Unreachable: true, Reason: "cannot reach the proxy " + p.Host, Err: err}
	}
	if d.HandshakeTimeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(d.HandshakeTimeout))
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if u := p.User; u != nil {
		pass, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)) + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		_ = conn.Close()
		return nil, &ProxyError{Reason: "the proxy " + p.Host + " closed the connection", Err: err}
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = conn.Close()
		return nil, &ProxyError{Reason: "the proxy " + p.Host + " did not answer CONNECT", Err: err}
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		reason := fmt.Sprintf("the proxy %s answered %q to CONNECT %s", p.Host, resp.Status, addr)
		if resp.StatusCode == http.StatusProxyAuthRequired || resp.StatusCode == http.StatusUnauthorized {
			reason += "; put the right user:password in proxy_url" // some proxies (tinyproxy) answer 401
		}
		return nil, &ProxyError{Reason: reason}
	}
	_ = conn.SetDeadline(time.Time{})
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		return &prefixConn{Conn: conn, prefix: append([]byte(nil), b...)}, nil
	}
	return conn, nil
}

// dialSOCKS5 connects to addr through a SOCKS5 proxy.
func dialSOCKS5(ctx context.Context, nd *net.Dialer, p *url.URL, addr string) (net.Conn, error) {
	var auth *proxy.Auth
	if u := p.User; u != nil {
		pass, _ := u.Password()
		auth = &proxy.Auth{User: u.Username(), Password: pass}
	}
	sd, err := proxy.SOCKS5("tcp", p.Host, auth, nd)
	if err != nil {
		return nil, &ProxyError{Reason: "bad SOCKS5 proxy", Err: err}
	}
	conn, err := sd.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
	if err == nil {
		return conn, nil
	}
	if unreachable(err) {
		return nil, &ProxyError{Unreachable: true, Reason: "cannot reach the proxy " + p.Host, Err: err}
	}
	return nil, &ProxyError{Reason: "the SOCKS5 proxy " + p.Host + " refused to connect to " + addr, Err: err}
}

// unreachable reports whether err is a failure to reach a host at all.
func unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || (errors.As(err, &ne) && ne.Timeout())
}

// upgrade runs the WebSocket handshake over conn (already TLS for wss)
// and returns the session's connection: binary messages as a byte stream.
func (d *Dialer) upgrade(ctx context.Context, conn net.Conn, deadline time.Time) (net.Conn, error) {
	scheme := "http"
	if d.transport() == WSS {
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
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if d.HandshakeTimeout > 0 {
		hctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	path := d.WSPath
	if path == "" {
		path = DefaultWSPath
	}
	u := url.URL{Scheme: scheme, Host: d.Addr, Path: path}
	ws, resp, err := websocket.Dial(hctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		_ = conn.Close()
		return nil, upgradeFailure(resp, path, err)
	}
	if resp != nil && resp.Body != nil { // a success hands the body over; close what is left
		_ = resp.Body.Close()
	}
	return newWSConn(ws, conn.RemoteAddr()), nil
}

// upgradeFailure explains a refused WebSocket upgrade with the server's
// own words. A gotunnel-mux server that requires TLS says so in a header
// (refusalHeader), never only in words: that answer is ErrTLSRequired.
func upgradeFailure(resp *http.Response, path string, err error) error {
	if resp == nil {
		return &UpgradeError{Hint: "the WebSocket handshake failed", Err: err}
	}
	if resp.Header.Get(refusalHeader) == refusalTLSRequired {
		return ErrTLSRequired
	}
	var said string
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		_ = resp.Body.Close()
		said = strings.TrimSpace(string(b))
	}
	hint := fmt.Sprintf("the server answered %q to the WebSocket upgrade on %s", resp.Status, path)
	if said != "" {
		hint += " (" + said + ")"
	}
	if resp.StatusCode == http.StatusNotFound {
		hint += "; check the path in server_addr against the server's ws_path"
	}
	return &UpgradeError{Status: resp.StatusCode, Hint: hint, Err: err}
}
