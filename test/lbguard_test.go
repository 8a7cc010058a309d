package test

import (
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
)

// dialRawVia connects to b from src and opens the control stream.
func dialRawVia(t *testing.T, src netip.Addr, b *lb) *rawClient {
	t.Helper()
	return rawOn(t, dialVia(t, src, b))
}

// loginCode logs r in with token and returns the refusal's code, 0 for
// ok; -1 when the connection was closed before any answer.
func (r *rawClient) loginCode(t *testing.T, token string) control.Code {
	t.Helper()
	if control.WriteFrame(r.ctl, &control.Login{Version: control.Version, Token: token, Name: "guess", ClientID: "raw"}) != nil {
		return -1
	}
	_ = r.ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := control.ReadFrame(r.ctl)
	if err != nil {
		return -1
	}
	if lr, ok := m.(*control.LoginResp); ok && lr.Status != control.StatusOK {
		return lr.Code
	}
	return 0
}

// lbServer is a server whose bind_addr takes PROXY headers from
// 127.0.0.1, with an lb there in front of it.
func lbServer(t *testing.T, tune func(*server.Options)) (*testServer, *lb, *logStore) {
	t.Helper()
	logger, rec := recordingLogger(t)
	so := fastServer()
	so.Logger = logger
	so.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	so.AcceptProxyBind = true
	tune(&so)
	srv := startServer(t, so)
	return srv, startLB(t, "127.0.0.1:0", srv.addr, 2), rec
}

// TestProxyHeaderPerIPOnBind: behind a load balancer (a trusted proxy
// that sends PROXY headers to bind_addr), max_unauthenticated_per_ip
// applies to the address each header names, never to the balancer's
// own: of two silent connections from 127.0.0.2 (the limit is 1) one is
// held until login_timeout and the other closed at once, and one from
// 127.0.0.3 is held.
func TestProxyHeaderPerIPOnBind(t *testing.T) {
	leakCheck(t)
	_, front, rec := lbServer(t, func(o *server.Options) { o.MaxUnauthenticatedPerIP = 1 })

	// Two silent connections from 127.0.0.2 and one from 127.0.0.3.
	var wg sync.WaitGroup
	took := make([]time.Duration, 3)
	for i, src := range []netip.Addr{visitorIn, visitorIn, visitorBanned} {
		c := dialVia(t, src, front)
		wg.Go(func() { took[i] = closedWithin(t, "a silent connection", c, 10*time.Second) })
	}
	wg.Wait()
	early, late := 0, 0
	for _, d := range took[:2] {
		switch {
		case d < time.Second:
			early++
		case d >= 1500*time.Millisecond:
			late++
		}
	}
	if early != 1 || late != 1 || took[2] < 1500*time.Millisecond {
		t.Errorf("silent connections closed after %v (two from 127.0.0.2, one from 127.0.0.3); want one of the first two at once, the others at login_timeout (2s)", took)
	}
	if !rec.has("connection refused before login", "remote", "127.0.0.2", "reason", "max_unauthenticated_per_ip reached") {
		t.Error("no log line refusing 127.0.0.2 for max_unauthenticated_per_ip")
	}
}

// TestProxyHeaderPauseOnBind: wrong tokens through a load balancer pause
// the address the PROXY header named, while another address behind the
// same balancer, and a client on the balancer's own machine, still log
// in. The status counts no bad header.
func TestProxyHeaderPauseOnBind(t *testing.T) {
	leakCheck(t)
	srv, front, _ := lbServer(t, func(o *server.Options) { o.BadLoginLimit = 2 })

	for i := range 2 {
		if code := dialRawVia(t, visitorBanned, front).loginCode(t, "wrong-guess"); code != control.CodeBadToken {
			t.Fatalf("guess %d from 127.0.0.3 through the balancer: code %d, want 1002", i, code)
		}
	}
	if code := dialRawVia(t, visitorBanned, front).loginCode(t, testToken); code != -1 {
		t.Errorf("127.0.0.3 after 2 wrong tokens: code %d, want the connection closed before login", code)
	}
	if code := dialRawVia(t, visitorIn, front).loginCode(t, testToken); code != 0 {
		t.Errorf("127.0.0.2 through the same balancer: code %d, want a login", code)
	}
	// A client on the balancer's own machine, through it: the header
	// names 127.0.0.1, a trusted address, which is never paused.
	startClientOpts(t, fastClient(front.addr(), "on-the-balancer")).waitEvent(t, client.EventSessionUp, "")
	if n := srv.Status().BadProxyHeaders; n != 0 {
		t.Errorf("status bad_proxy_headers = %d, want 0", n)
	}
}

// TestProxyHeaderBadOnBind: a trusted proxy that sends no header to
// bind_addr, or garbage, is reset and counted in the status; the warning
// is written once for the burst (at most every 10 s); a client that
// comes through the balancer logs in all the same.
func TestProxyHeaderBadOnBind(t *testing.T) {
	leakCheck(t)
	srv, front, rec := lbServer(t, func(*server.Options) {})
	port, _ := strconv.Atoi(srv.addr[len("127.0.0.1:"):])
	for _, send := range []string{"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "GET /gotunnel HTTP/1.1\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03aaaaaaaa"} {
		c, err := dialFrom(visitorOut, port)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(send))
		expectNothing(t, "a trusted proxy without a header", c)
		c.Close()
	}
	poll(t, 5*time.Second, "3 bad headers in the status", func() bool { return srv.Status().BadProxyHeaders == 3 })
	if n := rec.count("connection reset: no valid PROXY protocol header from a trusted proxy"); n != 1 {
		t.Errorf("%d warnings for 3 bad headers in a burst, want 1", n)
	}
	// An untrusted peer is not asked for one.
	d, err := dialFrom(visitorIn, port)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if code := rawOn(t, d).loginCode(t, testToken); code != 0 {
		t.Errorf("a direct login from an untrusted address: code %d, want a login", code)
	}
	startClientOpts(t, fastClient(front.addr(), "via-lb")).waitEvent(t, client.EventSessionUp, "")
}
