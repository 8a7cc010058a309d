package client

import (
	"net/netip"
	"testing"
)

// TestSameMapping: a reload that changes only a mapping's visitor lists
// changes the mapping (it is registered again with the new lists).
func TestSameMapping(t *testing.T) {
	office := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	base := Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, AllowIPs: office}
	cases := []struct {
		name string
		b    Mapping
		want bool
	}{
		{"same", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022,
			AllowIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, true},
		{"allow_ips gone", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022}, false},
		{"allow_ips other", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022,
			AllowIPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, false},
		{"deny_ips added", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, AllowIPs: office,
			DenyIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.66/32")}}, false},
		{"health_check", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, AllowIPs: office, HealthCheck: true}, false},
	}
	for _, tc := range cases {
		if got := sameMapping(base, tc.b); got != tc.want {
			t.Errorf("%s: sameMapping(%+v, %+v) = %v, want %v", tc.name, base, tc.b, got, tc.want)
		}
	}
}
