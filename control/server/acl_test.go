package server

import (
	"net"
	"net/netip"
	"testing"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// TestAdmitted pins the visitor rule of docs/security.md.
func TestAdmitted(t *testing.T) {
	none := ipLists{}
	office := ipLists{allow: prefixes("203.0.113.0/24")}
	noScanner := ipLists{deny: prefixes("198.51.100.0/24")}
	officeButOne := ipLists{allow: prefixes("203.0.113.0/24"), deny: prefixes("203.0.113.66/32")}
	v6 := ipLists{allow: prefixes("2001:db8::/32")}
	cases := []struct {
		name    string
		srv, m  ipLists
		visitor string
		want    bool
	}{
		{"no lists", none, none, "192.0.2.1", true},
		{"mapping allow only: inside", none, office, "203.0.113.7", true},
		{"mapping allow only: outside", none, office, "192.0.2.1", false},
		{"mapping deny only: denied", none, noScanner, "198.51.100.9", false},
		{"mapping deny only: others", none, noScanner, "192.0.2.1", true},
		{"both: allowed", none, officeButOne, "203.0.113.7", true},
		{"both: deny beats allow", none, officeButOne, "203.0.113.66", false},
		{"both: outside the allow list", none, officeButOne, "192.0.2.1", false},
		{"server allow only: outside", office, none, "192.0.2.1", false},
		{"server deny beats client allow", ipLists{deny: prefixes("203.0.113.66/32")}, office, "203.0.113.66", false},
		{"server deny, client allow: others allowed", ipLists{deny: prefixes("203.0.113.66/32")}, office, "203.0.113.7", true},
		{"client allow cannot widen the server's allow", office, ipLists{allow: prefixes("0.0.0.0/0")}, "192.0.2.1", false},
		{"client deny narrows the server's allow", office, ipLists{deny: prefixes("203.0.113.0/25")}, "203.0.113.7", false},
		{"IPv4-mapped matches an IPv4 allow", none, office, "::ffff:203.0.113.7", true},
		{"IPv4-mapped matches an IPv4 deny", noScanner, none, "::ffff:198.51.100.9", false},
		{"IPv4-mapped outside the allow list", none, office, "::ffff:192.0.2.1", false},
		{"IPv6 allow", none, v6, "2001:db8::7", true},
		{"IPv4 is not in an IPv6 allow list", none, v6, "203.0.113.7", false},
		{"loopback ::1 outside an IPv4 allow list", none, ipLists{allow: prefixes("127.0.0.0/8")}, "::1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			visitor := &net.TCPAddr{IP: net.ParseIP(tc.visitor), Port: 40000}
			if got := visitorAdmitted(tc.srv, tc.m, visitor); got != tc.want {
				t.Errorf("visitorAdmitted(server %v, mapping %v, %s) = %v, want %v", tc.srv, tc.m, tc.visitor, got, tc.want)
			}
		})
	}
}

func TestAdmittedOtherAddrs(t *testing.T) {
	office := ipLists{allow: prefixes("203.0.113.0/24")}
	cases := []struct {
		name    string
		visitor net.Addr
		lists   ipLists
		want    bool
	}{
		{"a string address inside", fakeAddr("[::ffff:203.0.113.7]:1"), office, true},
		{"a string address outside", fakeAddr("192.0.2.1:1"), office, false},
		{"unreadable, with lists", fakeAddr("pipe"), office, false},
		{"unreadable, no lists", fakeAddr("pipe"), ipLists{}, true},
		{"nil, with lists", nil, office, false},
	}
	for _, tc := range cases {
		if got := visitorAdmitted(ipLists{}, tc.lists, tc.visitor); got != tc.want {
			t.Errorf("%s: visitorAdmitted(%v) = %v, want %v", tc.name, tc.visitor, got, tc.want)
		}
	}
}

type fakeAddr string

func (fakeAddr) Network() string  { return "test" }
func (a fakeAddr) String() string { return string(a) }
