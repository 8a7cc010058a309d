package transport

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"testing"
)

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
