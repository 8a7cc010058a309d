package test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/mux"
)

// Loopback is 127.0.0.0/8 on Linux: a visitor dialling from 127.0.0.2 is
// another visitor than one from 127.0.0.1.
var (
	visitorOut     = netip.MustParseAddr("127.0.0.1") // in no allow list
	visitorIn      = netip.MustParseAddr("127.0.0.2") // in the mapping's allow list
	visitorBanned  = netip.MustParseAddr("127.0.0.3") // in the mapping's allow list and the server's deny list
	visitorAllowed = []netip.Prefix{netip.PrefixFrom(visitorIn, 32), netip.PrefixFrom(visitorBanned, 32)}
)

// dialFrom connects to port on loopback from the source address src.
func dialFrom(src netip.Addr, port int) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// echoFrom is echoRoundTrip from src: n bytes there and back, hashed.
func echoFrom(t *testing.T, src netip.Addr, port int, seed uint64, n int64) {
	t.Helper()
	v, err := dialFrom(src, port)
	if err != nil {
		t.Fatalf("visitor %s: %v", src, err)
	}
	defer v.Close()
	_ = v.SetDeadline(time.Now().Add(30 * time.Second))
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		r.n, r.sum, r.err = drain(v)
		got <- r
	}()
	sent, err := stream(v, seed, n)
	if err != nil {
		t.Fatalf("visitor %s: write: %v", src, err)
	}
	_ = v.CloseWrite()
	r := <-got
	if r.err != nil || r.n != n || r.sum != sent {
		t.Errorf("visitor %s: read %d bytes (err %v, sum match %v), want %d echoed intact", src, r.n, r.err, r.sum == sent, n)
	}
}

// resetFrom dials port from src, sends a greeting and expects a reset
// with no byte read. The reset may beat the dialer's connect check, or
// the write (which then reports it: Linux tells a socket's error once),
// and either counts.
func resetFrom(t *testing.T, src netip.Addr, port int) {
	t.Helper()
	c, err := dialFrom(src, port)
	var n int
	if err == nil {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err = c.Write([]byte("SSH-2.0-probe\r\n")); err == nil {
			n, err = c.Read(make([]byte, 1))
		}
	}
	if n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("visitor %s got %d bytes, %v; want a reset", src, n, err)
	}
}

// countingEcho is an echo backend that counts the connections it gets.
func countingEcho(t *testing.T) (*backend, *atomic.Int64) {
	var n atomic.Int64
	return startBackend(t, func(c net.Conn) { n.Add(1); echo(c) }), &n
}

// mappingStatus is the server's status of a client's mapping.
func mappingStatus(t *testing.T, srv *testServer, clientName, mapping string) server.MappingStatus {
	t.Helper()
	for _, c := range srv.Status().Clients {
		for _, m := range c.Mappings {
			if c.Name == clientName && m.Name == mapping {
				return m
			}
		}
	}
	t.Fatalf("no mapping %s of client %s in the server's status", mapping, clientName)
	return server.MappingStatus{}
}

// TestVisitorACL: a visitor outside a mapping's allow_ips is reset at the
// door before any data stream is opened (neither the client nor the local
// service sees it); one inside gets its bytes through intact; the
// server's deny_ips wins over the mapping's allow_ips; a mapping without
// lists is only under the server's; and a SetPolicy (a reload) that
// changes the server's lists applies to the very next visitor.
func TestVisitorACL(t *testing.T) {
	leakCheck(t)
	srvOpts := fastServer()
	srvOpts.DenyIPs = []netip.Prefix{netip.PrefixFrom(visitorBanned, 32)}
	srv := startServer(t, srvOpts)
	be, conns := countingEcho(t)
	cl := startClientOpts(t, fastClient(srv.addr, "acl",
		client.Mapping{Name: "ssh", LocalAddr: be.addr, AllowIPs: visitorAllowed},
		client.Mapping{Name: "open", LocalAddr: be.addr}))
	ports := cl.waitUp(t, "ssh", "open")
	ssh, open := ports["ssh"], ports["open"]

	resetFrom(t, visitorOut, ssh)    // outside the mapping's allow list
	resetFrom(t, visitorBanned, ssh) // in it, but the server denies it
	if n := conns.Load(); n != 0 {
		t.Fatalf("the local service got %d connections from denied visitors, want 0", n)
	}
	st := mappingStatus(t, srv, "acl", "ssh")
	if st.Denied != 2 || st.Visitors != 0 || st.Resets != 0 {
		t.Errorf("server status of ssh: denied %d, visitors %d, resets %d; want 2, 0, 0", st.Denied, st.Visitors, st.Resets)
	}
	if n := clientVisitors(t, cl, "ssh"); n != 0 {
		t.Errorf("the client served %d data streams of ssh, want 0", n)
	}

	echoFrom(t, visitorIn, ssh, 1, 1<<20)
	echoFrom(t, visitorOut, open, 2, 64<<10) // no lists of its own
	resetFrom(t, visitorBanned, open)        // the server's deny covers every mapping
	if n := conns.Load(); n != 2 {
		t.Errorf("the local service got %d connections, want 2 (the admitted visitors)", n)
	}

	// A reload denies 127.0.0.2 as well: the next visitor from it is reset,
	// while 127.0.0.3 is no longer denied by the server and is let in by
	// the mapping's allow list.
	srv.SetPolicy(server.Policy{Token: testToken, DenyIPs: []netip.Prefix{netip.PrefixFrom(visitorIn, 32)}})
	resetFrom(t, visitorIn, ssh)
	echoFrom(t, visitorBanned, ssh, 3, 64<<10)
	st = mappingStatus(t, srv, "acl", "ssh")
	if st.Denied != 3 || st.Visitors != 2 {
		t.Errorf("after the reload, ssh: denied %d, visitors %d; want 3, 2", st.Denied, st.Visitors)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("the local service got %d connections, want 3", n)
	}
}

// clientVisitors is how many data streams the client served for mapping.
func clientVisitors(t *testing.T, cl *testClient, mapping string) int64 {
	t.Helper()
	for _, m := range cl.Status().Mappings {
		if m.Name == mapping {
			return m.Visitors
		}
	}
	t.Fatalf("no mapping %s in the client's status", mapping)
	return 0
}

// TestVisitorACLServerAllowList: a server-wide allow_ips cannot be
// widened by a mapping: a visitor outside the server's list is reset even
// when the mapping allows every address.
func TestVisitorACLServerAllowList(t *testing.T) {
	leakCheck(t)
	srvOpts := fastServer()
	srvOpts.AllowIPs = []netip.Prefix{netip.PrefixFrom(visitorIn, 32)}
	srv := startServer(t, srvOpts)
	be, conns := countingEcho(t)
	cl := startClientOpts(t, fastClient(srv.addr, "wide",
		client.Mapping{Name: "web", LocalAddr: be.addr, AllowIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}))
	port := cl.waitUp(t, "web")["web"]
	resetFrom(t, visitorOut, port)
	echoFrom(t, visitorIn, port, 4, 256<<10)
	if n := conns.Load(); n != 1 {
		t.Errorf("the local service got %d connections, want 1", n)
	}
	if st := mappingStatus(t, srv, "wide", "web"); st.Denied != 1 || st.Visitors != 1 {
		t.Errorf("web: denied %d, visitors %d; want 1, 1", st.Denied, st.Visitors)
	}
}

// TestVisitorACLBadPrefixRefused: a register whose allow_ips does not
// parse is refused with 1007 naming the field; the session goes on and a
// good register after it binds.
func TestVisitorACLBadPrefixRefused(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, fastServer())
	r := dialRaw(t, srv.addr)
	r.send(t, &control.Login{Version: control.Version, Token: testToken, Name: "raw", ClientID: "raw"})
	lr, ok := r.recv(t).(*control.LoginResp)
	if !ok || lr.Status != control.StatusOK {
		t.Fatalf("login reply = %+v, want ok", lr)
	}
	hasACL := false
	for _, f := range lr.Features {
		hasACL = hasACL || f == control.FeatureVisitorACL
	}
	if !hasACL {
		t.Errorf("login_resp features = %q, want %q among them", lr.Features, control.FeatureVisitorACL)
	}
	r.send(t, &control.Register{Name: "bad", Protocol: control.ProtocolTCP, LocalAddr: "127.0.0.1:1",
		AllowIPs: []string{"10.0.0.0/8", "office.lan"}})
	resp, ok := r.recv(t).(*control.RegisterResp)
	if !ok || resp.Status != control.StatusFail || resp.Code != control.CodeMalformed || resp.Name != "bad" ||
		!strings.HasPrefix(resp.Reason, "allow_ips[1]: ") {
		t.Errorf("register with a bad allow_ips = %+v, want fail 1007 naming allow_ips[1]", resp)
	}
	r.send(t, &control.Register{Name: "good", Protocol: control.ProtocolTCP, LocalAddr: "127.0.0.1:1",
		DenyIPs: []string{"10.0.0.0/8"}})
	if resp, ok := r.recv(t).(*control.RegisterResp); !ok || resp.Status != control.StatusOK {
		t.Errorf("a good register after it = %+v, want ok", resp)
	}
}

// TestVisitorACLOldServer: a server that does not name visitor_acl in
// login_resp (one older than the lists) would ignore them and let every
// visitor in, so the client does not register a mapping that has lists:
// it reports it failed with 1013 and never sends it, and the mapping
// without lists is registered as usual.
func TestVisitorACLOldServer(t *testing.T) {
	leakCheck(t)
	ln, registers := startOldServer(t)
	cl := startClientOpts(t, fastClient(ln.Addr().String(), "newer",
		client.Mapping{Name: "guarded", LocalAddr: "127.0.0.1:1", AllowIPs: visitorAllowed},
		client.Mapping{Name: "plain", LocalAddr: "127.0.0.1:1"}))
	e := cl.waitEvent(t, client.EventMappingFailed, "guarded")
	var re *control.RejectError
	if !errors.As(e.Err, &re) || re.Code != control.CodeFeatureMissing {
		t.Errorf("guarded failed with %v, want code 1013", e.Err)
	}
	cl.waitUp(t, "plain")
	select {
	case r := <-registers:
		if r.Name != "plain" {
			t.Errorf("the old server got a register for %q, want only plain", r.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old server got no register")
	}
	select {
	case r := <-registers:
		t.Errorf("the old server got a second register, for %q (lists %v)", r.Name, r.AllowIPs)
	case <-time.After(300 * time.Millisecond):
	}
}

// oldServer is a server of the version before visitor lists, reduced to
// what the test needs: it logs one client in without the visitor_acl
// feature, answers each register ok and each ping, and passes the
// registers on.
// startOldServer runs oldServer on a fresh listener until the test ends;
// the registers it reads arrive on the channel.
func startOldServer(t *testing.T) (net.Listener, <-chan *control.Register) {
	t.Helper()
	ln := listen(t)
	registers := make(chan *control.Register, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		oldServer(ctx, ln, registers)
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		<-done
	})
	return ln, registers
}

func oldServer(ctx context.Context, ln net.Listener, registers chan<- *control.Register) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	s, err := mux.Server(c, mux.Options{})
	if err != nil {
		_ = c.Close()
		return
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	ctl, err := s.AcceptControl(ctx)
	if err != nil {
		return
	}
	if _, err := control.ReadFrame(ctl); err != nil {
		return
	}
	_ = control.WriteFrame(ctl, &control.LoginResp{Status: control.StatusOK, SessionID: control.NewID(),
		Features: []string{control.FeatureUnregister}})
	port := 30000
	for {
		m, err := control.ReadFrame(ctl)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *control.Register:
			registers <- m
			port++
			_ = control.WriteFrame(ctl, &control.RegisterResp{Status: control.StatusOK, Name: m.Name, RemotePort: port})
		case *control.Ping:
			_ = control.WriteFrame(ctl, &control.Pong{Time: m.Time})
		}
	}
}
