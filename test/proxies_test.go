package test

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// pipe copies both ways between a and b until both are done, then closes
// both.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	wg.Go(func() { half(a, b) })
	half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// connectProxy is an HTTP CONNECT proxy for tests. With user set it asks
// for basic authentication; refuse makes it answer every CONNECT with 407.
type connectProxy struct {
	addr       string
	user, pass string
	refuse     bool
	tunnels    atomic.Int64
	ln         net.Listener
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      []net.Conn
}

func startConnectProxy(t testing.TB, user, pass string, refuse bool) *connectProxy {
	t.Helper()
	p := &connectProxy{user: user, pass: pass, refuse: refuse}
	p.start(t, p.serve)
	return p
}

// start listens and serves each connection with serve until the test ends.
func (p *connectProxy) start(t testing.TB, serve func(net.Conn)) {
	p.ln = listen(t)
	p.addr = p.ln.Addr().String()
	p.wg.Go(func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			p.track(c)
			p.wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(p.close)
}

func (p *connectProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *connectProxy) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		c.Close()
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	switch {
	case req.Method != http.MethodConnect:
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		c.Close()
		return
	case p.refuse || (p.user != "" && req.Header.Get("Proxy-Authorization") != want):
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
		c.Close()
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		c.Close()
		return
	}
	p.track(up)
	p.tunnels.Add(1)
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	pipe(&bufferedConn{Conn: c, r: br}, up)
}

func (p *connectProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// bufferedConn reads through a bufio.Reader that may hold bytes already.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufferedConn) CloseWrite() error { return b.Conn.(*net.TCPConn).CloseWrite() }

// socksProxy is a SOCKS5 proxy (RFC 1928, CONNECT only) with
// username/password authentication (RFC 1929) when user is set.
type socksProxy struct {
	connectProxy
}

func startSOCKSProxy(t testing.TB, user, pass string) *socksProxy {
	t.Helper()
	p := &socksProxy{connectProxy{user: user, pass: pass}}
	p.start(t, p.serveSOCKS)
	return p
}

func (p *socksProxy) serveSOCKS(c net.Conn) {
	fail := func() { c.Close() }
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
		fail()
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		fail()
		return
	}
	method := byte(0)
	if p.user != "" {
		method = 2
	}
	_, _ = c.Write([]byte{5, method})
	if method == 2 && !p.auth(c) {
		fail()
		return
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil || req[1] != 1 {
		fail()
		return
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		_, _ = io.ReadFull(c, ip)
		host = net.IP(ip).String()
	case 3:
		var n [1]byte
		_, _ = io.ReadFull(c, n[:])
		name := make([]byte, n[0])
		_, _ = io.ReadFull(c, name)
		host = string(name)
	default:
		fail()
		return
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		fail()
		return
	}
	up, err := net.Dial("tcp", net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))))
	if err != nil {
		_, _ = c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0}) // connection refused
		fail()
		return
	}
	p.track(up)
	p.tunnels.Add(1)
	_, _ = c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	pipe(c, up)
}

// auth runs RFC 1929 and reports success.
func (p *socksProxy) auth(c net.Conn) bool {
	var v [2]byte
	if _, err := io.ReadFull(c, v[:]); err != nil || v[0] != 1 {
		return false
	}
	user := make([]byte, v[1])
	_, _ = io.ReadFull(c, user)
	var n [1]byte
	_, _ = io.ReadFull(c, n[:])
	pass := make([]byte, n[0])
	_, _ = io.ReadFull(c, pass)
	ok := string(user) == p.user && string(pass) == p.pass
	status := byte(1)
	if ok {
		status = 0
	}
	_, _ = c.Write([]byte{1, status})
	return ok
}
