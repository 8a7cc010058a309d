package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/gotunnel-mux/gotunnel-mux/control"
)

// TestProxyProtocolHeader runs data streams through the client's own
// serveStream to a local service on a real loopback socket, and reads
// what that service receives with go-proxyproto's reader: the header,
// with the visitor as source and the server's public address as
// destination, then exactly the visitor's bytes.
func TestProxyProtocolHeader(t *testing.T) {
	const visitorBytes = "GET / HTTP/1.0\r\n\r\n"
	tests := []struct {
		name     string
		proto    ProxyProtocol
		server   string // server_addr
		hdr      control.OpenDataChannel
		src, dst string // want; "" with local: a header without addresses
		local    bool   // want PROXY UNKNOWN (v1), LOCAL (v2)
		v1Line   string // want, for v1: the header's exact text
	}{
		{name: "v1", proto: ProxyProtocolV1, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 18080, Visitor: "203.0.113.7:51234", Public: "198.51.100.1:18080"},
			src: "203.0.113.7:51234", dst: "198.51.100.1:18080", v1Line: "PROXY TCP4 203.0.113.7 198.51.100.1 51234 18080\r\n"},
		{name: "v2", proto: ProxyProtocolV2, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 18080, Visitor: "203.0.113.7:51234", Public: "198.51.100.1:18080"},
			src: "203.0.113.7:51234", dst: "198.51.100.1:18080"},
		{name: "v1 ipv6", proto: ProxyProtocolV1, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 443, Visitor: "[2001:db8::7]:40000", Public: "[2001:db8::1]:443"},
			src: "[2001:db8::7]:40000", dst: "[2001:db8::1]:443", v1Line: "PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"},
		{name: "v2 ipv6", proto: ProxyProtocolV2, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 443, Visitor: "[2001:db8::7]:40000", Public: "[2001:db8::1]:443"},
			src: "[2001:db8::7]:40000", dst: "[2001:db8::1]:443"},
		{name: "v2 ipv4-mapped visitor", proto: ProxyProtocolV2, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 80, Visitor: "[::ffff:203.0.113.7]:5000", Public: "198.51.100.1:80"},
			src: "203.0.113.7:5000", dst: "198.51.100.1:80"},
		{name: "v1 older server, server_addr an IP", proto: ProxyProtocolV1, server: "192.0.2.10:7000",
			hdr: control.OpenDataChannel{RemotePort: 18080, Visitor: "203.0.113.7:51234"},
			src: "203.0.113.7:51234", dst: "192.0.2.10:18080", v1Line: "PROXY TCP4 203.0.113.7 192.0.2.10 51234 18080\r\n"},
		{name: "v2 older server, server_addr a name", proto: ProxyProtocolV2, server: "tunnel.example.com:7000",
			hdr: control.OpenDataChannel{RemotePort: 18080, Visitor: "203.0.113.7:51234"},
			src: "203.0.113.7:51234", dst: "0.0.0.0:18080"},
		{name: "v1 visitor does not parse", proto: ProxyProtocolV1, server: "192.0.2.10:7000",
			hdr:   control.OpenDataChannel{RemotePort: 18080, Visitor: "pipe", Public: "198.51.100.1:18080"},
			local: true, v1Line: "PROXY UNKNOWN\r\n"},
		{name: "v2 visitor does not parse", proto: ProxyProtocolV2, server: "192.0.2.10:7000",
			hdr:   control.OpenDataChannel{RemotePort: 18080, Visitor: "", Public: "198.51.100.1:18080"},
			local: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := throughClient(t, tt.proto, tt.server, tt.hdr, visitorBytes)
			br := bufio.NewReader(bytes.NewReader(got))
			h, err := proxyproto.Read(br)
			if err != nil {
				t.Fatalf("the local service received %q: proxyproto.Read = %v, want a v%d header", got, err, tt.proto.version())
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != visitorBytes {
				t.Errorf("after the header the local service received %q, want the visitor's bytes %q", rest, visitorBytes)
			}
			if h.Version != tt.proto.version() {
				t.Errorf("header version = %d, want %d", h.Version, tt.proto.version())
			}
			if tt.v1Line != "" && !bytes.HasPrefix(got, []byte(tt.v1Line)) {
				t.Errorf("the local service received %q, want it to start with %q", got, tt.v1Line)
			}
			if tt.local {
				if !h.Command.IsLocal() || h.SourceAddr != nil || h.DestinationAddr != nil {
					t.Errorf("header = %+v, want one without addresses (command LOCAL)", h)
				}
				return
			}
			src, dst, ok := h.TCPAddrs()
			if !ok || !h.Command.IsProxy() {
				t.Fatalf("header = %+v, want a PROXY command with TCP addresses", h)
			}
			if src.String() != tt.src || dst.String() != tt.dst {
				t.Errorf("header source %s, destination %s; want %s, %s", src, dst, tt.src, tt.dst)
			}
		})
	}
}

// TestProxyProtocolOff: a mapping without proxy_protocol sends the
// visitor's bytes alone.
func TestProxyProtocolOff(t *testing.T) {
	const visitorBytes = "PRIVMSG #x :hi\r\n"
	hdr := control.OpenDataChannel{RemotePort: 1, Visitor: "203.0.113.7:51234", Public: "198.51.100.1:1"}
	if got := throughClient(t, ProxyProtocolOff, "192.0.2.10:7000", hdr, visitorBytes); string(got) != visitorBytes {
		t.Errorf("the local service received %q, want the visitor's bytes alone %q", got, visitorBytes)
	}
}

// throughClient serves one data stream with header hdr, followed by
// payload and the server's FIN, through a client session whose one
// mapping ("web", with proxy protocol p, server_addr server) points at a
// loopback listener; it returns what that listener's connection received
// up to the client's FIN, after checking the client's ok ack.
func throughClient(t *testing.T, p ProxyProtocol, server string, hdr control.OpenDataChannel, payload string) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := New(Options{ServerAddr: server, Token: "t", Name: "n",
		Mappings: []Mapping{{Name: "web", LocalAddr: ln.Addr().String(), ProxyProtocol: p}}})
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	tu := newWire(t)
	ctx, cancel := context.WithCancel(context.Background())
	cs := &clientSession{c: c, link: c.links[0], retiring: make(chan struct{}), log: c.log, mux: tu.cli, w: tu.w, streams: tu.table, relayCtx: ctx}
	served := make(chan struct{})
	go func() { // joined below
		defer close(served)
		if st, err := tu.cli.Accept(); err == nil {
			cs.serveStream(st)
		}
	}()
	defer func() {
		if t.Failed() {
			cancel()
			_ = tu.cli.Close() // wakes the Accept that may still wait
		}
		<-served
		cs.relays.Wait()
		cancel()
	}()
	st, err := tu.srv.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	hdr.Name = "web"
	if err := control.WriteFrame(st, &hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(st, payload); err != nil {
		t.Fatal(err)
	}
	_ = st.Close() // FIN: the client half-closes the local connection
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if m, err := control.ReadFrame(st); err != nil {
		t.Fatalf("reading the ack: %v", err)
	} else if ack, ok := m.(*control.DataChannelAck); !ok || ack.Status != control.StatusOK {
		t.Fatalf("the client answered %+v, want an ok data_channel_ack", m)
	}
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	local, err := ln.Accept()
	if err != nil {
		t.Fatalf("the local service got no connection: %v", err)
	}
	defer func() { _ = local.Close() }()
	_ = local.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(local)
	if err != nil {
		t.Fatalf("the local service read %q, then %v; want the client's FIN", got, err)
	}
	_ = local.Close() // the relay ends: the stream gets the client's FIN
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Errorf("draining the stream: %v", err)
	}
	return got
}

// TestProxyHeaderWriteDeadline: the header is written within the timeout
// (a local service that never reads its socket, here a pipe, does not
// hold the stream), and a write that fails is an error.
func TestProxyHeaderWriteDeadline(t *testing.T) {
	c, err := New(Options{ServerAddr: "192.0.2.10:7000", Token: "t", Name: "n"})
	if err != nil {
		t.Fatal(err)
	}
	cs := &clientSession{c: c, link: c.links[0]}
	m := &clientMapping{Mapping: Mapping{Name: "web", ProxyProtocol: ProxyProtocolV2}}
	hdr := &control.OpenDataChannel{Name: "web", RemotePort: 1, Visitor: "203.0.113.7:1"}
	a, b := net.Pipe()
	defer func() { _ = b.Close() }()
	start := time.Now()
	err = cs.writeProxyHeader(a, m, hdr, 50*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("writeProxyHeader to a pipe nobody reads = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writeProxyHeader took %s with a 50ms timeout", d)
	}
	_ = a.Close()
	if err := cs.writeProxyHeader(a, m, hdr, time.Second); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("writeProxyHeader to a closed pipe = %v, want io.ErrClosedPipe", err)
	}
	m.ProxyProtocol = ProxyProtocolOff
	if err := cs.writeProxyHeader(a, m, hdr, time.Second); err != nil {
		t.Errorf("writeProxyHeader without proxy_protocol = %v, want nil (nothing written)", err)
	}
}

// TestProxyProtocolValues: New takes off, v1 and v2 and refuses the rest.
func TestProxyProtocolValues(t *testing.T) {
	for _, tt := range []struct {
		p  ProxyProtocol
		ok bool
	}{{"", true}, {"v1", true}, {"v2", true}, {"V1", false}, {"1", false}, {"v3", false}, {"on", false}} {
		_, err := New(Options{ServerAddr: "h:1", Token: "t", Name: "n", Mappings: []Mapping{{Name: "m", LocalAddr: "h:2", ProxyProtocol: tt.p}}})
		if (err == nil) != tt.ok {
			t.Errorf("New with proxy protocol %q = %v, want ok = %v", tt.p, err, tt.ok)
		}
	}
}
