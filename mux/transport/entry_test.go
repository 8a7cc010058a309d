package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fromAddr is a connection whose peer is addr.
type fromAddr struct {
	net.Conn
	addr net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.addr }

func tcp(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func TestRealRemote(t *testing.T) {
	e := NewEntry(EntryOptions{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8"),
	}})
	proxy, client := tcp("127.0.0.1:4000"), tcp("198.51.100.1:5000")
	for _, tc := range []struct {
		name string
		peer *net.TCPAddr
		xff  []string // header lines; nil: none
		want string   // the address, or "" with err
		err  error
	}{
		{"untrusted peer, header ignored", client, []string{"203.0.113.9"}, "198.51.100.1:5000", nil},
		{"untrusted peer, no header", client, nil, "198.51.100.1:5000", nil},
		{"trusted, one client", proxy, []string{"203.0.113.9"}, "203.0.113.9", nil},
		{"trusted, last untrusted hop", proxy, []string{"198.51.100.7, 203.0.113.9, 10.1.2.3"}, "203.0.113.9", nil},
		{"trusted, two header lines", proxy, []string{"203.0.113.9", "10.1.2.3"}, "203.0.113.9", nil},
		{"trusted, spoofed garbage left of the client", proxy, []string{"not-an-ip, 203.0.113.9"}, "203.0.113.9", nil},
		{"trusted, hop with a port", proxy, []string{"203.0.113.9:4711"}, "203.0.113.9", nil},
		{"trusted, IPv6 hop with a port", proxy, []string{"[2001:db8::1]:443"}, "2001:db8::1", nil},
		{"trusted, IPv4-mapped hop", proxy, []string{"::ffff:203.0.113.9"}, "203.0.113.9", nil},
		{"trusted, only trusted hops: the proxy's machine", proxy, []string{"127.0.0.1, 10.9.9.9"}, "127.0.0.1:4000", nil},
		{"trusted, no header", proxy, nil, "", ErrNoForwardedFor},
		{"trusted, empty header", proxy, []string{""}, "", ErrBadForwardedFor},
		{"trusted, garbage", proxy, []string{"unknown"}, "", ErrBadForwardedFor},
		{"trusted, garbage right of the client", proxy, []string{"203.0.113.9, bogus"}, "", ErrBadForwardedFor},
		{"trusted, empty hop", proxy, []string{"203.0.113.9, "}, "", ErrBadForwardedFor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://x/gotunnel", nil)
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got, err := e.realRemote(r, fromAddr{addr: tc.peer})
			if !errors.Is(err, tc.err) || (err == nil && got.String() != tc.want) {
				t.Errorf("realRemote(%q from %s) = %v, %v; want %q, %v", tc.xff, tc.peer, got, err, tc.want, tc.err)
			}
		})
	}
}

// TestHandleTellsByFirstByte: each first byte gets its way in, and every
// refusal is a type the server can log without reading words; the
// admission slot is released exactly when the entry lets the connection go.
func TestHandleTellsByFirstByte(t *testing.T) {
	cert, _ := selfSigned(t)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, tc := range []struct {
		name     string
		tls      *tls.Config
		first    byte
		want     error // nil: an Arrival
		required bool  // Arrival.TLSRequired
	}{
		{"yamux on a plain server", nil, 0x00, nil, false},
		{"yamux on a TLS server", tlsCfg, 0x00, nil, true},
		{"TLS on a plain server", nil, 0x16, ErrTLSOnPlain, false},
		{"garbage", nil, 0x7f, ErrNotProtocol, false},
		{"HTTP", nil, 'G', ErrHandedOff, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEntry(EntryOptions{TLS: tc.tls, HTTPTimeout: time.Second, Session: func(a *Arrival) { _ = a.Conn.Close() }})
			defer e.Close()
			a, b := net.Pipe()
			defer b.Close()
			go func() { _, _ = b.Write([]byte{tc.first}) }()
			released := 0
			got, err := e.Handle(context.Background(), a, time.Now().Add(time.Second), func() { released++ })
			if !errors.Is(err, tc.want) {
				t.Fatalf("Handle = %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				if got.Transport != TCP || got.TLSRequired != tc.required || got.Deadline.IsZero() {
					t.Errorf("Arrival = %+v; want TCP, TLSRequired %v, the deadline", got, tc.required)
				}
				if released != 0 {
					t.Error("the slot was released before the login")
				}
				got.Release()
				got.Release()
				_ = got.Conn.Close()
			} else if tc.want != ErrHandedOff && released != 1 {
				t.Errorf("released %d times, want once", released)
			}
			var fb *FirstByteError
			if errors.As(err, &fb) && fb.Byte != tc.first {
				t.Errorf("FirstByteError.Byte = %#x, want %#x", fb.Byte, tc.first)
			}
		})
	}
}

// TestDrainLetsAnUpgradeUnderWayArrive: at Drain (the server's Shutdown)
// an upgrade already on the HTTP side still reaches Session, where the
// server refuses it in words (1012); an HTTP connection that comes after
// Drain is closed at once, its admission slot released.
func TestDrainLetsAnUpgradeUnderWayArrive(t *testing.T) {
	arrived := make(chan *Arrival, 1)
	e := NewEntry(EntryOptions{HTTPTimeout: 5 * time.Second, Session: func(a *Arrival) {
		arrived <- a
		_ = a.Conn.Close()
	}})
	defer e.Close()
	srv, cli := net.Pipe()
	defer cli.Close()
	req := "GET /gotunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	go func() { _, _ = cli.Write([]byte(req[:20])) }()
	if _, err := e.Handle(context.Background(), srv, time.Now().Add(5*time.Second), func() {}); !errors.Is(err, ErrHandedOff) {
		t.Fatalf("Handle = %v, want ErrHandedOff", err)
	}
	e.Drain() // the request is half written
	go func() {
		_, _ = cli.Write([]byte(req[20:] + "\r\n"))
		_, _ = io.Copy(io.Discard, cli)
	}()
	select {
	case a := <-arrived:
		if a.Transport != WS {
			t.Errorf("arrived over %s, want ws", a.Transport)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upgrade under way at Drain never reached Session")
	}

	late, lateCli := net.Pipe()
	defer lateCli.Close()
	go func() { _, _ = lateCli.Write([]byte("GET / HTTP/1.1\r\n")) }()
	released := make(chan struct{})
	if _, err := e.Handle(context.Background(), late, time.Now().Add(5*time.Second), func() { close(released) }); !errors.Is(err, ErrHandedOff) {
		t.Fatalf("Handle after Drain = %v, want ErrHandedOff", err)
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("an HTTP connection after Drain kept its admission slot")
	}
}

// TestHandleHandsOverTheBareTCPConn: on TCP the first byte is peeked, not
// read, so the session gets the *net.TCPConn itself (mux's writev path)
// with the byte still to read; a peer that closes or stays silent fails
// the sniff.
func TestHandleHandsOverTheBareTCPConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := NewEntry(EntryOptions{Session: func(a *Arrival) { _ = a.Conn.Close() }})
	defer e.Close()
	accept := func(send []byte, closeAfter bool) (*Arrival, error) {
		t.Helper()
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		_, _ = peer.Write(send)
		if closeAfter {
			_ = peer.Close()
		}
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		return e.Handle(context.Background(), c, time.Now().Add(time.Second), func() {})
	}

	a, err := accept([]byte{0x00, 'y'}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, bare := a.Conn.(*net.TCPConn); !bare {
		t.Errorf("the session got a %T, want the *net.TCPConn", a.Conn)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(a.Conn, got); err != nil || got[0] != 0x00 || got[1] != 'y' {
		t.Errorf("read %q, %v after the sniff; want the first byte and the next", got, err)
	}
	_ = a.Conn.Close()

	if _, err := accept(nil, true); !errors.Is(err, io.EOF) {
		t.Errorf("a peer that closed at once: Handle = %v, want io.EOF", err)
	}
	var ne net.Error
	if _, err := accept(nil, false); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("a silent peer: Handle = %v, want the read deadline", err)
	}
}
