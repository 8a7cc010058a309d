package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// lbPair returns the two ends of a real loopback TCP connection: the
// balancer's (which writes the header) and the server's accepted one.
func lbPair(t *testing.T) (lb, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// header is go-proxyproto's rendering of a header from src to dst.
func header(t *testing.T, version byte, cmd proxyproto.ProtocolVersionAndCommand, src, dst string) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: version, Command: cmd, TransportProtocol: proxyproto.UNSPEC}
	if src != "" {
		h = proxyproto.HeaderProxyFromAddrs(version, tcp(src), tcp(dst))
		h.Command = cmd
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v2With(length uint16, family byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, 0x21, family) // version 2, PROXY
	return binary.BigEndian.AppendUint16(b, length)
}

// TestReadProxyHeader: each header, written in one piece together with
// the visitor's first bytes, gives the addresses it names (the socket's
// for LOCAL and UNKNOWN), and the bytes behind it stay on the socket,
// intact, to be read from the returned connection.
func TestReadProxyHeader(t *testing.T) {
	payload := []byte("SSH-2.0-OpenSSH_9.2p1\r\n")
	tlvs := &proxyproto.Header{}
	*tlvs = *proxyproto.HeaderProxyFromAddrs(2, tcp("203.0.113.9:4711"), tcp("198.51.100.1:443"))
	if err := tlvs.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("tunnel.example.com")}}); err != nil {
		t.Fatal(err)
	}
	withTLVs, err := tlvs.Format()
	if err != nil {
		t.Fatal(err)
	}
	unix := v2With(216, 0x31) // AF_UNIX, STREAM
	unix = append(unix, make([]byte, 216)...)
	copy(unix[16:], "/run/client.sock")
	copy(unix[16+108:], "/run/lb.sock")
	for _, tc := range []struct {
		name     string
		hdr      []byte
		src, dst string // "": the socket's own
	}{
		{"v1 TCP4", header(t, 1, proxyproto.PROXY, "203.0.113.9:4711", "198.51.100.1:443"), "203.0.113.9:4711", "198.51.100.1:443"},
		{"v1 TCP6", header(t, 1, proxyproto.PROXY, "[2001:db8::9]:4711", "[2001:db8::1]:443"), "[2001:db8::9]:4711", "[2001:db8::1]:443"},
		{"v1 TCP6 longest", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65534\r\n"),
			"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65534"},
		{"v1 UNKNOWN, 15 bytes", []byte("PROXY UNKNOWN\r\n"), "", ""},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ::1 ::1 1 2\r\n"), "", ""},
		{"v2 TCP4", header(t, 2, proxyproto.PROXY, "203.0.113.9:4711", "198.51.100.1:443"), "203.0.113.9:4711", "198.51.100.1:443"},
		{"v2 TCP6", header(t, 2, proxyproto.PROXY, "[2001:db8::9]:4711", "[2001:db8::1]:443"), "[2001:db8::9]:4711", "[2001:db8::1]:443"},
		{"v2 TCP4 with a TLV", withTLVs, "203.0.113.9:4711", "198.51.100.1:443"},
		{"v2 LOCAL (a health check)", header(t, 2, proxyproto.LOCAL, "", ""), "", ""},
		{"v2 LOCAL with addresses", header(t, 2, proxyproto.LOCAL, "203.0.113.9:4711", "198.51.100.1:443"), "", ""},
		{"v2 UNIX: the socket's addresses", unix, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, c := lbPair(t)
			if _, err := lb.Write(append(append([]byte{}, tc.hdr...), payload...)); err != nil {
				t.Fatal(err)
			}
			_ = lb.CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			pc, err := ReadProxyHeader(c)
			if err != nil {
				t.Fatalf("ReadProxyHeader(%q) = %v", tc.hdr, err)
			}
			wantSrc, wantDst := c.RemoteAddr().String(), c.LocalAddr().String()
			if tc.src != "" {
				wantSrc, wantDst = tc.src, tc.dst
			}
			if pc.RemoteAddr().String() != wantSrc || pc.LocalAddr().String() != wantDst {
				t.Errorf("addresses %s -> %s, want %s -> %s", pc.RemoteAddr(), pc.LocalAddr(), wantSrc, wantDst)
			}
			if local := strings.Contains(tc.name, "LOCAL") || strings.Contains(tc.name, "UNKNOWN"); pc.Local() != local {
				t.Errorf("Local() = %v, want %v", pc.Local(), local)
			}
			if pc.Proxy().String() != c.RemoteAddr().String() || pc.BareTCP() != c {
				t.Errorf("Proxy %s, BareTCP %p; want the socket's peer %s and the socket %p", pc.Proxy(), pc.BareTCP(), c.RemoteAddr(), c)
			}
			rest, err := io.ReadAll(pc)
			if err != nil || !bytes.Equal(rest, payload) {
				t.Errorf("after the header read %q, %v; want %q intact", rest, err, payload)
			}
		})
	}
}

// TestReadProxyHeaderInPieces: a header that comes in several writes (a
// balancer is not supposed to, but a path may split it) is read to its
// end, and not a byte past it. The first piece is on the socket before
// the read starts, the rest come while it waits.
func TestReadProxyHeaderInPieces(t *testing.T) {
	for _, hdr := range [][]byte{
		header(t, 1, proxyproto.PROXY, "203.0.113.9:4711", "198.51.100.1:443"),
		header(t, 2, proxyproto.PROXY, "[2001:db8::9]:4711", "[2001:db8::1]:443"),
	} {
		lb, c := lbPair(t)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := lb.Write(hdr[:20]); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for _, piece := range [][]byte{hdr[20:23], hdr[23:], []byte("after")} {
				if _, err := lb.Write(piece); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		pc, err := ReadProxyHeader(c)
		if err != nil {
			t.Fatalf("ReadProxyHeader of %q in pieces = %v", hdr, err)
		}
		if pc.RemoteAddr().(*net.TCPAddr).Port != 4711 {
			t.Errorf("source %s, want port 4711", pc.RemoteAddr())
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(pc, got); err != nil || string(got) != "after" {
			t.Errorf("after the header read %q, %v; want \"after\"", got, err)
		}
	}
}

// TestReadProxyHeaderRefuses: no header, garbage, and headers that do
// not parse or are too long fail at once with ErrProxyHeader, without
// waiting for the deadline; a v2 header that says more bytes follow than
// go-proxyproto accepts is refused before they are read.
func TestReadProxyHeaderRefuses(t *testing.T) {
	long := append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 100)...)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"SSH instead", []byte("SSH-2.0-OpenSSH_9.2p1\r\n")},
		{"HTTP instead", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"yamux instead", append([]byte{0, 1, 0, 1}, make([]byte, 20)...)},
		{"v1 in lower case", []byte("proxy TCP4 203.0.113.9 198.51.100.1 4711 443\r\n")},
		{"v1 bad address", []byte("PROXY TCP4 203.0.113.999 198.51.100.1 4711 443\r\n")},
		{"v1 bad protocol", []byte("PROXY UDP4 203.0.113.9 198.51.100.1 4711 443\r\n")},
		{"v1 LF without CR", []byte("PROXY TCP4 203.0.113.9 198.51.100.1 4711 443\n")},
		{"v1 line shorter than 15 bytes", []byte("PROXY TCP4\r\nabcdefgh")},
		{"v1 without an end in 107 bytes", long},
		{"v2 PROXY with no family", append(v2With(0, 0x00), make([]byte, 8)...)},
		{"v2 TCP4 too short for its addresses", append(v2With(4, 0x11), 1, 2, 3, 4)},
		{"v2 bad version", append(append(append([]byte{}, proxyproto.SIGV2...), 0x31, 0x11, 0, 12), make([]byte, 12)...)},
		{"v2 length 65535", v2With(0xffff, 0x11)},
		{"v2 length over 4 KiB", v2With(proxyproto.MaxV2HeaderSize+1, 0x11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, c := lbPair(t)
			if _, err := lb.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = c.SetReadDeadline(start.Add(10 * time.Second))
			pc, err := ReadProxyHeader(c)
			if !errors.Is(err, ErrProxyHeader) || pc != nil {
				t.Fatalf("ReadProxyHeader(%q) = %v, %v; want ErrProxyHeader", tc.send, pc, err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
				t.Errorf("refused after %v (%v); want at once, not at the deadline", time.Since(start), err)
			}
		})
	}
}

// TestReadProxyHeaderStalls: a trusted peer that sends nothing, half a
// header (v1 or v2), or a v2 header short of its length, then stalls,
// fails at the read deadline; one that closes mid-header fails at once.
func TestReadProxyHeaderStalls(t *testing.T) {
	v2 := header(t, 2, proxyproto.PROXY, "203.0.113.9:4711", "198.51.100.1:443")
	for _, tc := range []struct {
		name  string
		send  []byte
		close bool // the peer closes after send
	}{
		{"nothing", nil, false},
		{"half a v1 line", []byte("PROXY TCP4 203.0.113.9 198."), false},
		{"a v1 line without its LF", []byte("PROXY TCP4 203.0.113.9 198.51.100.1 4711 443\r"), false},
		{"half the v2 signature", v2[:6], false},
		{"the v2 fixed part only", v2[:16], false},
		{"a v2 header short of its length", v2[:len(v2)-1], false},
		{"nothing, then close", nil, true},
		{"half a v1 line, then close", []byte("PROXY TCP4 203.0.113.9 198."), true},
		{"half a v2 header, then close", v2[:20], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb, c := lbPair(t)
			if len(tc.send) > 0 {
				if _, err := lb.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				_ = lb.Close()
			}
			const bound = 300 * time.Millisecond
			start := time.Now()
			_ = c.SetReadDeadline(start.Add(bound))
			_, err := ReadProxyHeader(c)
			took := time.Since(start)
			if !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("ReadProxyHeader = %v, want ErrProxyHeader", err)
			}
			switch {
			case tc.close && (!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) || took > bound):
				t.Errorf("peer closed mid-header: %v after %v; want EOF at once", err, took)
			case !tc.close && (!errors.Is(err, os.ErrDeadlineExceeded) || took < bound || took > bound+3*time.Second):
				t.Errorf("stalled peer: %v after %v; want the deadline, at %v", err, took, bound)
			}
		})
	}
}

// TestHandleAfterProxyHeader: on bind_addr the header comes first, then
// the client's own first byte, which the entry still peeks: the session
// gets the ProxiedConn itself, whose Remote is the header's source.
func TestHandleAfterProxyHeader(t *testing.T) {
	e := NewEntry(EntryOptions{Session: func(a *Arrival) { _ = a.Conn.Close() }})
	defer e.Close()
	lb, c := lbPair(t)
	hdr := header(t, 2, proxyproto.PROXY, "203.0.113.9:4711", "198.51.100.1:7000")
	if _, err := lb.Write(append(hdr, 0x00, 'y')); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pc, err := ReadProxyHeader(c)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.Handle(context.Background(), pc, time.Now().Add(5*time.Second), func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Conn.Close()
	if a.Conn != net.Conn(pc) || a.Remote.String() != "203.0.113.9:4711" {
		t.Errorf("Arrival conn %T, remote %s; want the ProxiedConn itself and the header's source", a.Conn, a.Remote)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(a.Conn, got); err != nil || got[0] != 0x00 || got[1] != 'y' {
		t.Errorf("read %q, %v after the sniff; want the first byte and the next", got, err)
	}
}

// TestProxiedConnAddrs: the addresses are those of the header, parsed
// as netip would, for the visitor lists.
func TestProxiedConnAddrs(t *testing.T) {
	lb, c := lbPair(t)
	if _, err := lb.Write([]byte("PROXY TCP6 ::ffff:203.0.113.9 2001:db8::1 4711 443\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pc, err := ReadProxyHeader(c)
	if err != nil {
		t.Fatal(err)
	}
	if ip := PeerIP(pc.RemoteAddr()); ip != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("PeerIP = %s, want 203.0.113.9 (unmapped)", ip)
	}
}
