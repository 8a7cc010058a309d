package test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

func TestWebSocketStraightToServer(t *testing.T) {
	leakCheck(t)
	logger, rec := recordingLogger(t)
	so := fastServer()
	so.Logger = logger
	srv := startServer(t, so)
	be := startBackend(t, echo)
	opts := fastClient(srv.addr, "ws", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.Transport = transport.WS
	cl := startClientOpts(t, opts)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 1, 4<<20); err != nil {
		t.Fatal(err)
	}
	if !rec.has("client logged in", "client", "ws") {
		t.Error("no login logged for the WebSocket client")
	}
	// Any other HTTP request on the port: a plain 404.
	for _, path := range []string{"/", "/gotunnel2", "/admin"} {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %s, want 404", path, resp.Status)
		}
	}
}

func TestWSSStraightToServer(t *testing.T) {
	leakCheck(t)
	ca := newCA(t, "wss CA")
	srv, _ := tlsServer(t, ca, nil)
	be := startBackend(t, echo)
	opts := fastClient(srv.addr, "wss", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.Transport = transport.WSS
	opts.TLS = &tls.Config{RootCAs: ca.pool()}
	cl := startClientOpts(t, opts)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 2, 4<<20); err != nil {
		t.Fatal(err)
	}
	// A plain WebSocket on the TLS server is refused in words.
	plain := fastClient(srv.addr, "plainws")
	plain.Transport = transport.WS
	rec := failingClient(t, plain)
	if err := lastFailure(t, rec, "1010"); !strings.Contains(err, "use a wss:// server_addr") {
		t.Errorf("plain ws on a TLS server failed with %q, want 1010 and the way out", err)
	}
}

// TestTCPAndWebSocketOnOnePort: a tcp client and a ws client use the same
// server port at the same time.
func TestTCPAndWebSocketOnOnePort(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, fastServer())
	be := startBackend(t, echo)
	tcp := startClientOpts(t, fastClient(srv.addr, "viatcp", client.Mapping{Name: "a", LocalAddr: be.addr}))
	wsOpts := fastClient(srv.addr, "viaws", client.Mapping{Name: "b", LocalAddr: be.addr})
	wsOpts.Transport = transport.WS
	ws := startClientOpts(t, wsOpts)
	pa, pb := tcp.waitUp(t, "a")["a"], ws.waitUp(t, "b")["b"]
	errs := make(chan error, 2)
	go func() { errs <- echoRoundTrip(pa, 3, 2<<20) }()
	go func() { errs <- echoRoundTrip(pb, 4, 2<<20) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestThroughProxies(t *testing.T) {
	cases := []struct {
		name, scheme, user, pass string
		transport                string
	}{
		{"http CONNECT", "http", "", "", transport.TCP},
		{"http CONNECT with basic auth", "http", "alice", "s3cret", transport.TCP},
		{"SOCKS5 with auth", "socks5", "bob", "pa55", transport.TCP},
		{"ws through http CONNECT", "http", "carol", "pw", transport.WS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			srv := startServer(t, fastServer())
			be := startBackend(t, echo)
			var addr string
			var tunnels func() int64
			if tc.scheme == "socks5" {
				p := startSOCKSProxy(t, tc.user, tc.pass)
				addr, tunnels = p.addr, p.tunnels.Load
			} else {
				p := startConnectProxy(t, tc.user, tc.pass, false)
				addr, tunnels = p.addr, p.tunnels.Load
			}
			u := &url.URL{Scheme: tc.scheme, Host: addr}
			if tc.user != "" {
				u.User = url.UserPassword(tc.user, tc.pass)
			}
			opts := fastClient(srv.addr, "proxied", client.Mapping{Name: "e", LocalAddr: be.addr})
			opts.Proxy, opts.Transport = u, tc.transport
			cl := startClientOpts(t, opts)
			if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 5, 1<<20); err != nil {
				t.Fatal(err)
			}
			if tunnels() < 1 {
				t.Error("the session did not go through the proxy")
			}
		})
	}
}

func TestProxyRefusedOrDownIsRetried(t *testing.T) {
	srv := startServer(t, fastServer())
	refusing := startConnectProxy(t, "alice", "right", false)
	down := listen(t)
	downAddr := down.Addr().String()
	down.Close()
	socks := startSOCKSProxy(t, "bob", "right")
	cases := []struct {
		name  string
		proxy *url.URL
		code  string
		want  string
	}{
		{"407", &url.URL{Scheme: "http", Host: refusing.addr, User: url.UserPassword("alice", "wrong")}, "1011", `"407 Proxy Authentication Required"`},
		{"socks auth", &url.URL{Scheme: "socks5", Host: socks.addr, User: url.UserPassword("bob", "wrong")}, "1011", "SOCKS5 proxy"},
		{"down", &url.URL{Scheme: "http", Host: downAddr}, "1001", "cannot reach the proxy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			opts := fastClient(srv.addr, "blocked")
			opts.Proxy = tc.proxy
			rec := failingClient(t, opts)
			err := lastFailure(t, rec, tc.code)
			if !strings.Contains(err, tc.want) {
				t.Errorf("failure %q does not say %q", err, tc.want)
			}
			if strings.Contains(err, "wrong") {
				t.Errorf("failure %q shows the proxy password", err)
			}
		})
	}
}

// TestWSSBehindTLSTerminatingProxy: nginx-style, a reverse proxy takes
// wss:// on its own port and passes plain WebSocket to the server, which
// believes its X-Forwarded-For because it is a trusted proxy.
func TestWSSBehindTLSTerminatingProxy(t *testing.T) {
	leakCheck(t)
	logger, rec := recordingLogger(t)
	so := fastServer()
	so.Logger = logger
	so.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	srv := startServer(t, so)
	target, _ := url.Parse("http://" + srv.addr)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Set("X-Forwarded-For", "203.0.113.9") // the client, as the internet-facing proxy saw it
	}}
	ca := newCA(t, "front CA")
	front := &http.Server{Handler: rp, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "front", false, time.Time{}).tls}}}
	fl := listen(t)
	served := make(chan error, 1)
	go func() { served <- front.ServeTLS(fl, "", "") }()
	t.Cleanup(func() {
		_ = front.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front proxy: %v", err)
		}
	})

	be := startBackend(t, echo)
	opts := fastClient(fl.Addr().String(), "behind", client.Mapping{Name: "e", LocalAddr: be.addr})
	opts.Transport, opts.TLS = transport.WSS, &tls.Config{RootCAs: ca.pool()}
	cl := startClientOpts(t, opts)
	if err := echoRoundTrip(cl.waitUp(t, "e")["e"], 6, 2<<20); err != nil {
		t.Fatal(err)
	}
	if !rec.has("client logged in", "remote", "203.0.113.9") {
		t.Error("the server did not log the client's address from X-Forwarded-For")
	}
	_ = cl.stop(t)
}

// TestBadTokensPausedBehindReverseProxy: wrong tokens from clients behind a
// trusted reverse proxy are counted and paused by their forwarded address,
// not by the proxy's (found by hand behind nginx: the pause never applied).
func TestBadTokensPausedBehindReverseProxy(t *testing.T) {
	leakCheck(t)
	so := fastServer()
	so.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	so.BadLoginLimit = 2
	srv := startServer(t, so)
	target, _ := url.Parse("http://" + srv.addr)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Header.Set("X-Forwarded-For", "203.0.113.66")
	}}
	front := &http.Server{Handler: rp}
	fl := listen(t)
	served := make(chan error, 1)
	go func() { served <- front.Serve(fl) }()
	t.Cleanup(func() {
		_ = front.Close()
		<-served
	})
	for i := range 2 {
		opts := fastClient(fl.Addr().String(), "guesser")
		opts.Transport, opts.Token = transport.WS, "wrong-guess"
		cl := startClientOpts(t, opts)
		var re *control.RejectError
		if err := <-cl.done; !errors.As(err, &re) || re.Code != control.CodeBadToken {
			t.Fatalf("guess %d: Run = %v, want 1002", i, err)
		}
		close(cl.done)
	}
	opts := fastClient(fl.Addr().String(), "guesser")
	opts.Transport, opts.Token = transport.WS, "wrong-guess"
	rec := failingClient(t, opts)
	if err := lastFailure(t, rec, "1001"); !strings.Contains(err, "429") {
		t.Errorf("third guess failed with %q, want the pause (429)", err)
	}
}
