package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// A load balancer in front of the server (accept_proxy_protocol): a small
// TCP proxy here, HAProxy in lbhaproxy_test.go. Loopback is 127.0.0.0/8:
// the balancer dials the server from 127.0.0.1, the one trusted address;
// visitors come from 127.0.0.2 and 127.0.0.3, the client from ::1.

// lb is a load balancer in front of one upstream: for each connection it
// accepts it dials upstream from 127.0.0.1, writes a PROXY header of its
// version naming the peer it accepted and the address that peer
// connected to, then copies both ways, half-closing at EOF and passing a
// reset on as a reset.
type lb struct {
	ln       net.Listener
	upstream string
	version  byte
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startLB runs an lb on addr (host:0) until the test ends.
func startLB(t *testing.T, addr, upstream string, version byte) *lb {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &lb{ln: ln, upstream: upstream, version: version, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.acceptLoop)
	t.Cleanup(b.close)
	return b
}

func (b *lb) addr() string { return b.ln.Addr().String() }

func (b *lb) acceptLoop() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Go(func() { b.serve(c.(*net.TCPConn)) })
	}
}

func (b *lb) track(cs ...net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	for _, c := range cs {
		b.conns[c] = struct{}{}
	}
	return true
}

func (b *lb) serve(in *net.TCPConn) {
	defer in.Close()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	uc, err := d.Dial("tcp", b.upstream)
	if err != nil {
		return
	}
	up := uc.(*net.TCPConn)
	defer up.Close()
	if !b.track(in, up) {
		return
	}
	if _, err := proxyproto.HeaderProxyFromAddrs(b.version, in.RemoteAddr(), in.LocalAddr()).WriteTo(up); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { pipeHalf(in, up) })
	pipeHalf(up, in)
	wg.Wait()
}

// pipeHalf copies src to dst; at EOF it half-closes dst, on an error it
// resets both.
func pipeHalf(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		_ = dst.SetLinger(0)
		_ = src.SetLinger(0)
		_ = dst.Close()
		_ = src.Close()
		return
	}
	_ = dst.CloseWrite()
}

func (b *lb) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
	b.wg.Wait()
}

// ppService is a local service behind a mapping with proxy_protocol = "v2":
// it reads the client's header, then one request line; "get N" is
// answered with N deterministic bytes (seed 91), anything else is kept
// and the connection closed. It records each header's source and each
// request line.
type ppService struct {
	*backend
	mu      sync.Mutex
	sources []string
	lines   []string
}

func startPPService(t *testing.T) *ppService {
	t.Helper()
	s := &ppService{}
	s.backend = startBackend(t, s.serve)
	return s
}

func (s *ppService) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		return
	}
	line, _ := br.ReadString('\n')
	s.mu.Lock()
	s.sources = append(s.sources, h.SourceAddr.String())
	s.lines = append(s.lines, strings.TrimSpace(line))
	s.mu.Unlock()
	if n, ok := strings.CutPrefix(strings.TrimSpace(line), "get "); ok {
		size, _ := strconv.ParseInt(n, 10, 64)
		_, _ = stream(c, 91, size)
	}
}

// seen is the header source and request line of the i-th connection,
// waiting for it.
func (s *ppService) seen(t *testing.T, i int) (source, line string) {
	t.Helper()
	poll(t, 10*time.Second, fmt.Sprintf("connection %d at the local service", i), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.sources) > i
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sources[i], s.lines[i]
}

func (s *ppService) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sources)
}

// getThrough asks for n bytes over c (a visitor, possibly through an lb)
// and checks they arrive intact.
func getThrough(t *testing.T, c net.Conn, n int64) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "get %d\n", n); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, sum, err := drain(c)
	if want := sumOf(91, n); err != nil || got != n || sum != want {
		t.Fatalf("download through %s: %d bytes, err %v, intact %v; want %d intact", c.RemoteAddr(), got, err, sum == want, n)
	}
}

// logged returns the JSON log lines of p whose msg is msg and whose
// fields hold kv (pairs of key and value, compared as text).
func logged(p *proc, msg string, kv ...string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, line := range p.all {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			match = match && fmt.Sprint(m[kv[i]]) == kv[i+1]
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// waitLogged waits until p has logged a line logged would return.
func waitLogged(t *testing.T, p *proc, msg string, kv ...string) map[string]any {
	t.Helper()
	var got []map[string]any
	poll(t, 15*time.Second, fmt.Sprintf("log line %q %v", msg, kv), func() bool {
		got = logged(p, msg, kv...)
		return len(got) > 0
	})
	return got[0]
}

// expectNothing reads from c, which the server should reset (through an lb,
// the reset comes back as a reset) or close without a byte.
func expectNothing(t *testing.T, what string, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: read %d bytes, %v; want the connection reset or closed at once", what, n, err)
	}
}

const lbServerToml = `
bind_addr = "127.0.0.1:0"
token = %q
public_addr = "127.0.0.1"
login_timeout = "2s"
trusted_proxies = ["127.0.0.1"]
accept_proxy_protocol = %q

[log]
format = "json"
`

const lbClientToml = `
server_addr = %q
token = %q
name = "lb"

[log]
format = "json"

[[mappings]]
name = "web"
local_addr = %q
remote_port = 0
health_check = false
proxy_protocol = "v2"

[[mappings]]
name = "guarded"
local_addr = %q
remote_port = 0
health_check = false
proxy_protocol = "v2"
allow_ips = ["127.0.0.2"]
`

// lbSetup is the real server with accept_proxy_protocol = "all" behind an
// lb on ::1 for bind_addr, the real client through it, a ppService behind
// both mappings (web, and guarded: allow_ips 127.0.0.2) and an lb in
// front of each mapping's port (v1 for web, v2 for guarded).
type lbSetup struct {
	srv, cli     *proc
	bind         string // the server's own bind_addr
	svc          *ppService
	web, guarded int // the mappings' ports
	webLB, grdLB *lb
}

func startLBSetup(t *testing.T) *lbSetup {
	t.Helper()
	s := &lbSetup{}
	s.srv = startProc(t, []string{"GOTUNNEL_TOKEN="}, "server", "--config",
		writeFile(t, "server.toml", fmt.Sprintf(lbServerToml, testToken, "all")))
	s.bind = s.srv.waitLog(t, "server listening", msgIs("server listening"))["addr"].(string)
	front := startLB(t, "[::1]:0", s.bind, 2)
	s.svc = startPPService(t)
	s.cli = startProc(t, []string{"GOTUNNEL_TOKEN="}, "client", "--config",
		writeFile(t, "client.toml", fmt.Sprintf(lbClientToml, front.addr(), testToken, s.svc.addr, s.svc.addr)))
	s.web, s.guarded = upPort(t, s.cli, "web"), upPort(t, s.cli, "guarded")
	s.webLB = startLB(t, "127.0.0.1:0", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.web)), 1)
	s.grdLB = startLB(t, "127.0.0.1:0", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.guarded)), 2)
	return s
}

// dialVia connects to b from src.
func dialVia(t *testing.T, src netip.Addr, b *lb) *net.TCPConn {
	t.Helper()
	port, _ := strconv.Atoi(b.addr()[strings.LastIndex(b.addr(), ":")+1:])
	c, err := dialFrom(src, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBinaryLoadBalancer: with accept_proxy_protocol = "all", the real
// binaries behind load balancers that send PROXY headers: the server
// logs the client's own address (::1, though the balancer dials from
// 127.0.0.1); a visitor's download arrives intact, the local service's v2
// header names the visitor's own address, as does the access log; a
// mapping's allow_ips acts on the header's address (127.0.0.2 passes
// through a balancer at 127.0.0.1, which the list does not hold;
// 127.0.0.3 is reset).
func TestBinaryLoadBalancer(t *testing.T) {
	leakCheck(t)
	s := startLBSetup(t)
	in := waitLogged(t, s.srv, "client logged in", "client", "lb")
	if remote := in["remote"].(string); !strings.HasPrefix(remote, "[::1]:") {
		t.Errorf("client logged in remote=%s, want the client's own [::1]:port from the header, not the balancer's", remote)
	}

	v := dialVia(t, visitorIn, s.webLB)
	getThrough(t, v, 4<<20)
	src, line := s.svc.seen(t, 0)
	if src != v.LocalAddr().String() || line != "get 4194304" {
		t.Errorf("the local service saw source %s, request %q; want the visitor's own %s", src, line, v.LocalAddr())
	}
	access := waitLogged(t, s.srv, "visitor closed", "mapping", "web")
	if access["visitor"] != v.LocalAddr().String() || access["bytes_out"] != float64(4<<20) {
		t.Errorf("access log visitor=%v bytes_out=%v; want %s and 4 MiB", access["visitor"], access["bytes_out"], v.LocalAddr())
	}

	g := dialVia(t, visitorIn, s.grdLB)
	getThrough(t, g, 64<<10)
	if src, _ := s.svc.seen(t, 1); src != g.LocalAddr().String() {
		t.Errorf("guarded: the local service saw %s, want %s", src, g.LocalAddr())
	}
	out := dialVia(t, visitorBanned, s.grdLB)
	_, _ = out.Write([]byte("get 1\n"))
	expectNothing(t, "a visitor outside allow_ips, through the balancer", out)
	waitLogged(t, s.srv, "visitor reset: not allowed by allow_ips or deny_ips", "visitor", out.LocalAddr().String())
	if n := s.svc.count(); n != 2 {
		t.Errorf("the local service got %d connections, want 2", n)
	}
}

// TestBinaryLoadBalancerUntrusted: a connection from an address that is
// not a trusted proxy is taken as direct even when it starts with a
// PROXY header: its lists go by its own address (reset on guarded), and
// on web the header reaches the local service as the visitor's bytes,
// behind the client's own header naming the real peer. From the trusted
// address, garbage or silence instead of a header resets the connection
// (at login_timeout, 2 s here) without a data stream, on a mapping port
// and on bind_addr, and the server says why.
func TestBinaryLoadBalancerUntrusted(t *testing.T) {
	leakCheck(t)
	s := startLBSetup(t)
	fake := "PROXY TCP4 127.0.0.2 127.0.0.1 4711 80\r\n"

	// Denied at accept: on loopback the reset can beat the dial.
	if g, err := dialFrom(visitorBanned, s.guarded); !errors.Is(err, syscall.ECONNRESET) {
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		_, _ = g.Write([]byte(fake + "get 1\n"))
		expectNothing(t, "an untrusted visitor claiming an allowed address", g)
	}

	w, err := dialFrom(visitorBanned, s.web)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, _ = w.Write([]byte(fake))
	_ = w.CloseWrite()
	src, line := s.svc.seen(t, 0)
	if src != w.LocalAddr().String() || line != strings.TrimSpace(fake) {
		t.Errorf("the local service saw source %s, first line %q; want %s and the fake header as data", src, line, w.LocalAddr())
	}

	garbage, err := dialFrom(visitorOut, s.web) // 127.0.0.1: trusted
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	_, _ = garbage.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectNothing(t, "garbage from a trusted proxy", garbage)
	bad := waitLogged(t, s.srv, "visitor reset: no valid PROXY protocol header from a trusted proxy", "mapping", "web")
	if !strings.Contains(fmt.Sprint(bad["err"]), `"GET / HTTP/1.1`) || bad["proxy"] != garbage.LocalAddr().String() {
		t.Errorf("bad header line = %v; want the proxy's address and what it sent", bad)
	}

	silent, err := dialFrom(visitorOut, s.guarded)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if took := closedWithin(t, "a silent trusted proxy", silent, 10*time.Second); took < 1500*time.Millisecond || took > 6*time.Second {
		t.Errorf("a silent trusted proxy was cut after %v, want at login_timeout (2s)", took)
	}
	if n := s.svc.count(); n != 1 {
		t.Errorf("the local service got %d connections, want 1 (the untrusted one on web)", n)
	}

	c, err := net.DialTimeout("tcp", s.bind, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00})
	expectNothing(t, "a yamux session without a header from a trusted proxy on bind_addr", c)
	waitLogged(t, s.srv, "connection reset: no valid PROXY protocol header from a trusted proxy", "proxy", c.LocalAddr().String())
}
