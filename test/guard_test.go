package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
)

// startFront runs a reverse proxy on a loopback port of its own in front
// of the server at upstream, as nginx would, and returns its address. It
// sets X-Forwarded-For to xff, or sends none when xff is "". Every front
// reaches the server from 127.0.0.1: to the server they are one proxy.
func startFront(t *testing.T, upstream, xff string) string {
	t.Helper()
	target, _ := url.Parse("http://" + upstream)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		if xff != "" {
			r.Out.Header.Set("X-Forwarded-For", xff)
		}
	}}
	rp.ErrorLog = slog.NewLogLogger(testLogger(t).Handler(), slog.LevelDebug)
	front := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	fl := listen(t)
	served := make(chan error, 1)
	go func() { served <- front.Serve(fl) }()
	t.Cleanup(func() {
		_ = front.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front proxy: %v", err)
		}
	})
	return fl.Addr().String()
}

// attempt runs a client with token over transport to addr until its
// session is up (nil) or it gives up after two attempts (Run's error).
func attempt(t *testing.T, addr, transport, token string) error {
	t.Helper()
	opts := fastClient(addr, "guarded")
	opts.Transport, opts.Token = transport, token
	opts.Reconnect.MaxRetries = 1
	cl := startClientOpts(t, opts)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-cl.events:
			if e.Kind == client.EventSessionUp {
				return cl.stop(t)
			}
		case err := <-cl.done:
			close(cl.done)
			return err
		case <-timeout:
			t.Fatalf("client to %s neither logged in nor gave up within 10s", addr)
		}
	}
}

// rawUpgrade sends a bare WebSocket upgrade on ws_path, with no
// X-Forwarded-For, and returns the status of the answer.
func rawUpgrade(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET " + transport.DefaultWSPath + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer to a raw upgrade: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestBadTokensWithoutForwardedForDoNotPauseTheProxy: behind a trusted
// proxy, a request without a usable X-Forwarded-For was charged to the
// proxy's own address, so a few wrong tokens paused every client behind
// it (and every plain client on the proxy's machine). Now such an upgrade
// is refused (400, one warning), wrong tokens are never counted against a
// trusted proxy's own address, and only the forwarded address that
// guessed is paused.
func TestBadTokensWithoutForwardedForDoNotPauseTheProxy(t *testing.T) {
	leakCheck(t)
	logger, rec := recordingLogger(t)
	so := fastServer()
	so.Logger = logger
	so.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	so.BadLoginLimit = 2
	srv := startServer(t, so)

	if code := rawUpgrade(t, srv.addr); code != http.StatusBadRequest {
		t.Errorf("upgrade from a trusted proxy without X-Forwarded-For answered %d, want 400", code)
	}

	// One forwarded address guesses: it alone is paused.
	guesser := startFront(t, srv.addr, "203.0.113.66")
	for i := range so.BadLoginLimit {
		if err := attempt(t, guesser, transport.WS, "wrong-guess"); control.CodeOf(err) != control.CodeBadToken {
			t.Fatalf("guess %d from a forwarded address: Run = %v, want 1002", i, err)
		}
	}
	if err := attempt(t, guesser, transport.WS, "wrong-guess"); err == nil || control.CodeOf(err) == control.CodeBadToken {
		t.Errorf("guess beyond bad_login_limit: Run = %v, want the pause (429) before any login", err)
	}

	// More than bad_login_limit wrong tokens with no X-Forwarded-For, and
	// with one that names only the proxy itself (a client on its machine).
	noXFF := startFront(t, srv.addr, "")
	onProxy := startFront(t, srv.addr, "127.0.0.1")
	for i := range so.BadLoginLimit + 1 {
		if err := attempt(t, noXFF, transport.WS, "wrong-guess"); err == nil || control.CodeOf(err) == control.CodeBadToken {
			t.Errorf("guess %d without X-Forwarded-For: Run = %v, want the upgrade refused before login", i, err)
		}
		if err := attempt(t, onProxy, transport.WS, "wrong-guess"); control.CodeOf(err) != control.CodeBadToken {
			t.Errorf("guess %d from the proxy's own address: Run = %v, want 1002 every time (never paused)", i, err)
		}
	}

	// Everyone else behind the proxy, and on its machine, still logs in.
	for name, addr := range map[string]string{
		"ws via the proxy, another forwarded address": startFront(t, srv.addr, "198.51.100.7"),
		"ws via the proxy, on the proxy's machine":    onProxy,
		"tcp from the proxy's machine":                srv.addr,
	} {
		tr := transport.WS
		if addr == srv.addr {
			tr = transport.TCP
		}
		if err := attempt(t, addr, tr, testToken); err != nil {
			t.Errorf("%s: Run = %v, want a session", name, err)
		}
	}
	if n := rec.count("trusted proxy sent no usable X-Forwarded-For", "proxy", "127.0.0.1"); n != 1 {
		t.Errorf("%d warnings about the proxy's missing X-Forwarded-For, want 1 (rate-limited)", n)
	}
}

// echoOnce sends msg over c, an echoed connection, and checks it comes back.
func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("visitor write: %v", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("visitor read = %q, %v; want %q", buf, err, msg)
	}
}

// ping sends a ping on r's control stream and waits for its pong.
func (r *rawClient) ping(n int64) error {
	if err := control.WriteFrame(r.ctl, &control.Ping{Time: n}); err != nil {
		return err
	}
	_ = r.ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := control.ReadFrame(r.ctl)
	if err != nil {
		return err
	}
	if p, ok := m.(*control.Pong); !ok || p.Time != n {
		return fmt.Errorf("ping %d answered with %#v", n, m)
	}
	return nil
}

// TestLoginDuringShutdownCannotBindOrTakeOver: a connection that was
// mid-handshake when Shutdown began could still log in, take over a
// name, and bind a port after "every port is freed". Now its login is
// answered with error 1012 and the connection closed; the name's session
// lives on until the drain ends, and the port stays free.
func TestLoginDuringShutdownCannotBindOrTakeOver(t *testing.T) {
	leakCheck(t)
	srv := startServer(t, server.Options{})
	be := startBackend(t, echo)
	carrier := startClient(t, srv.addr, "carrier", client.Mapping{Name: "e", LocalAddr: be.addr})
	port := carrier.waitUp(t, "e")["e"]
	visitor := dialPort(t, port)
	defer visitor.Close()
	echoOnce(t, visitor, "before") // a live visitor: Shutdown drains it
	victim := dialRaw(t, srv.addr)
	victim.login(t, "victim")

	// Mid-handshake: yamux up, the control stream open, no login yet. The
	// ping's answer shows the server accepted the connection.
	late, _ := rawYamux(t, srv.addr)
	ctl, err := late.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Ping(); err != nil {
		t.Fatalf("ping before login: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	shut := make(chan error, 1)
	go func() {
		shut <- srv.Shutdown(ctx)
		close(shut)
	}()
	t.Cleanup(func() {
		cancel()
		for range shut {
		}
	})
	waitRefused(t, port, 5*time.Second) // Shutdown has begun: ports unbound

	mapped := freePort(t)
	if err := control.WriteFrame(ctl, &control.Login{Version: control.Version, Token: testToken, Name: "victim", ClientID: "late"}); err != nil {
		t.Fatalf("send login: %v", err)
	}
	_ = ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, err := control.ReadFrame(ctl)
	if m, ok := reply.(*control.ErrorMsg); ok && m.Code == control.CodeShuttingDown {
		if _, err := control.ReadFrame(ctl); !errors.Is(err, io.EOF) {
			t.Errorf("after error 1012, read = %v, want EOF (the server closes)", err)
		}
	} else {
		t.Errorf("login during shutdown answered %#v (%v), want error 1012", reply, err)
		if r, ok := reply.(*control.LoginResp); ok && r.Status == control.StatusOK {
			_ = control.WriteFrame(ctl, &control.Register{Name: "p", Protocol: control.ProtocolTCP, RemotePort: mapped, LocalAddr: be.addr, Online: true})
			resp, err := control.ReadFrame(ctl)
			t.Logf("then register port %d: %#v (%v)", mapped, resp, err)
		}
	}
	_ = late.Close()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(mapped)))
	if err != nil {
		t.Errorf("port %d is bound during shutdown, after every port was freed: %v", mapped, err)
	} else {
		_ = ln.Close()
	}
	if err := victim.ping(7); err != nil {
		t.Errorf("the session named \"victim\" is gone (%v): the login during shutdown took it over", err)
	}

	echoOnce(t, visitor, "during the drain")
	_ = visitor.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil (the only visitor ended)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return 10s after the last visitor ended")
	}
}
