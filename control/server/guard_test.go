package server

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/mux/transport"
	"go.uber.org/goleak"
)

// testGuard is a guard with small limits that trusts the addresses in
// trusted.
func testGuard(t *testing.T, trusted ...string) *guard {
	t.Helper()
	o := &Options{MaxUnauthenticated: 100, MaxUnauthenticatedPerIP: 2, BadLoginLimit: 2, BadLoginPause: time.Minute}
	o.setDefaults()
	return newGuard(o, func(ip netip.Addr) bool {
		for _, h := range trusted {
			if h == ip.String() {
				return true
			}
		}
		return false
	})
}

// connFrom is a connection from addr (host:port), closed when the test ends.
func connFrom(t *testing.T, addr string) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return peerConn{Conn: a, addr: tcpAddr(addr)}
}

// TestGuardNeverChargesTrustedProxy: wrong tokens that arrive with a
// trusted proxy's own address (a client on its machine, or an upgrade
// with no usable X-Forwarded-For) must not pause the proxy, or every
// client behind it is turned away.
func TestGuardNeverChargesTrustedProxy(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := testGuard(t, "127.0.0.1")
	proxy := tcpAddr("127.0.0.1:4000")
	for range 3 * g.badLimit {
		g.badToken(proxy)
	}
	if g.isPaused(proxy) || !g.admit(connFrom(t, "127.0.0.1:4001")) {
		t.Error("a trusted proxy's address was paused by wrong tokens")
	}
	if len(g.bad) != 0 {
		t.Errorf("%d bad-login records for a trusted proxy, want none", len(g.bad))
	}
}

// TestGuardIPv6HostCannotEscapeLimitsInItsSlash64: the per-address limits
// keyed IPv6 on the full address, so one host, handed a whole /64, escaped
// max_unauthenticated_per_ip and the bad-login pause by using a new
// address for each connection. The unit is now the /64.
func TestGuardIPv6HostCannotEscapeLimitsInItsSlash64(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := testGuard(t) // at most 2 per address, paused after 2 wrong tokens
	for _, tc := range []struct {
		from string
		want bool
	}{
		{"[2001:db8:1:2::1]:1000", true},
		{"[2001:db8:1:2::2]:1000", true},
		{"[2001:db8:1:2:ffff:ffff:ffff:ffff]:1000", false}, // the same /64
		{"[2001:db8:1:3::1]:1000", true},                   // the next /64
		{"192.0.2.1:1", true},
		{"[::ffff:192.0.2.1]:2", true},
		{"192.0.2.1:3", false}, // an IPv4-mapped address is its IPv4 address
		{"192.0.2.2:1", true},
	} {
		if got := g.admit(connFrom(t, tc.from)); got != tc.want {
			t.Errorf("admit(from %s) = %v, want %v", tc.from, got, tc.want)
		}
	}

	g = testGuard(t)
	g.badToken(tcpAddr("[2001:db8:1:2::a]:1"))
	g.badToken(ipOnly("2001:db8:1:2::b"))
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{tcpAddr("[2001:db8:1:2::c]:1"), true},
		{tcpAddr("[2001:db8:1:2:8000::1]:1"), true},
		{ipOnly("2001:db8:1:2::d"), true},
		{tcpAddr("[2001:db8:1:3::a]:1"), false},
		{tcpAddr("[2001:db8:1:1:ffff:ffff:ffff:ffff]:1"), false},
	} {
		if got := g.isPaused(tc.addr); got != tc.want {
			t.Errorf("after 2 wrong tokens from 2001:db8:1:2::/64, isPaused(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if g.admit(connFrom(t, "[2001:db8:1:2::e]:1")) {
		t.Error("a new address in a paused /64 was admitted")
	}
}

func TestLimitKey(t *testing.T) {
	pipe, _ := net.Pipe()
	defer pipe.Close()
	for _, tc := range []struct {
		addr net.Addr
		want string // "" : the zero Prefix
	}{
		{tcpAddr("192.0.2.1:80"), "192.0.2.1/32"},
		{tcpAddr("[::ffff:192.0.2.1]:80"), "192.0.2.1/32"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1").To16(), Port: 80}, "192.0.2.1/32"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1").To4(), Port: 80}, "192.0.2.1/32"},
		{tcpAddr("[2001:db8:1:2:3:4:5:6]:80"), "2001:db8:1:2::/64"},
		{tcpAddr("[2001:db8:1:2::]:1"), "2001:db8:1:2::/64"},
		{tcpAddr("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1"), "2001:db8:1:2::/64"},
		{tcpAddr("[2001:db8:1:3::]:1"), "2001:db8:1:3::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 22, Zone: "eth0"}, "fe80::/64"},
		{tcpAddr("[::1]:1"), "::/64"},
		{ipOnly("203.0.113.9"), "203.0.113.9/32"},
		{ipOnly("::ffff:203.0.113.9"), "203.0.113.9/32"},
		{ipOnly("2001:db8::1"), "2001:db8::/64"},
		{ipOnly("fe80::1%eth0"), "fe80::/64"},
		{pipe.RemoteAddr(), ""},
		{&net.TCPAddr{}, ""},
	} {
		var want netip.Prefix
		if tc.want != "" {
			want = netip.MustParsePrefix(tc.want)
		}
		if got := limitKey(transport.PeerIP(tc.addr)); got != want {
			t.Errorf("limitKey(peerIP(%s)) = %v, want %v", tc.addr, got, want)
		}
	}
	for k, want := range map[netip.Prefix]string{
		netip.MustParsePrefix("192.0.2.1/32"): "192.0.2.1", netip.MustParsePrefix("2001:db8::/64"): "2001:db8::/64", {}: "non-IP peers",
	} {
		if got := keyText(k); got != want {
			t.Errorf("keyText(%v) = %q, want %q", k, got, want)
		}
	}
}

// TestGuardTrustedIPv6ProxyInAPausedSlash64: a trusted proxy shares its
// /64 with hosts that are not trusted; their wrong tokens pause the /64
// and their connections fill its cap, but neither reaches the proxy.
func TestGuardTrustedIPv6ProxyInAPausedSlash64(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := testGuard(t, "2001:db8:1:2::99")
	for range 3 {
		if !g.admit(connFrom(t, "[2001:db8:1:2::99]:1")) {
			t.Fatal("a trusted proxy's connection was capped per address")
		}
	}
	if !g.admit(connFrom(t, "[2001:db8:1:2::1]:1")) {
		t.Error("the trusted proxy's connections counted against its /64's cap")
	}
	g.badToken(tcpAddr("[2001:db8:1:2::1]:1"))
	g.badToken(tcpAddr("[2001:db8:1:2::2]:1"))
	if !g.isPaused(tcpAddr("[2001:db8:1:2::3]:1")) {
		t.Fatal("the /64 is not paused after bad_login_limit wrong tokens")
	}
	if !g.admit(connFrom(t, "[2001:db8:1:2::99]:2")) {
		t.Error("a trusted proxy was turned away because its /64 is paused")
	}
}

// peerConn is a connection whose peer is addr.
type peerConn struct {
	net.Conn
	addr net.Addr
}

func (c peerConn) RemoteAddr() net.Addr { return c.addr }

func tcpAddr(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// ipOnly is an address without a port, as a trusted proxy forwards it.
type ipOnly string

func (a ipOnly) Network() string { return "tcp" }
func (a ipOnly) String() string  { return string(a) }
func TestGuardTrustedProxyNotCappedPerAddress(t *testing.T) {
	o := &Options{MaxUnauthenticated: 100, MaxUnauthenticatedPerIP: 2, BadLoginLimit: 2, BadLoginPause: time.Minute}
	o.setDefaults()
	for _, trusted := range []bool{false, true} {
		g := newGuard(o, func(netip.Addr) bool { return trusted })
		admitted := 0
		for range 5 {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			if g.admit(tcpAddrConn{a}) {
				admitted++
			}
		}
		if want := map[bool]int{false: 2, true: 5}[trusted]; admitted != want {
			t.Errorf("trusted=%v: %d of 5 admitted from one address, want %d", trusted, admitted, want)
		}
	}
	g := newGuard(o, func(netip.Addr) bool { return false })
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 1}
	for range 2 {
		g.badToken(client)
	}
	if !g.isPaused(client) || g.isPaused(&net.TCPAddr{IP: net.ParseIP("203.0.113.10")}) {
		t.Error("after bad_login_limit wrong tokens the address is not paused, or another one is")
	}
}

// tcpAddrConn gives a pipe a TCP peer address.
type tcpAddrConn struct{ net.Conn }

func (tcpAddrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9} }
