package config

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParseMap(t *testing.T) {
	on, off := true, false
	pfx := netip.MustParsePrefix
	tests := []struct {
		name string
		spec string
		want Mapping
	}{
		{"port and address", "10022:127.0.0.1:22", Mapping{LocalAddr: "127.0.0.1:22", RemotePort: 10022}},
		{"named", "ssh=10022:127.0.0.1:22", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022}},
		{"any port", "0:localhost:8080", Mapping{LocalAddr: "localhost:8080"}},
		{"IPv6 local address", "web=0:[::1]:8080", Mapping{Name: "web", LocalAddr: "[::1]:8080"}},
		{"every name character", "a.b_c-1=65535:db.internal:5432", Mapping{Name: "a.b_c-1", LocalAddr: "db.internal:5432", RemotePort: 65535}},
		{"udp", "5353:127.0.0.1:53/udp", Mapping{LocalAddr: "127.0.0.1:53", RemotePort: 5353, Protocol: ProtocolUDP}},
		{"tcp said", "ssh=10022:127.0.0.1:22/tcp", Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, Protocol: ProtocolTCP}},
		{"udp to IPv6", "dns=53:[::1]:53/udp", Mapping{Name: "dns", LocalAddr: "[::1]:53", RemotePort: 53, Protocol: ProtocolUDP}},
		{"udp idle", "dns=5353:127.0.0.1:53/udp,idle=30s",
			Mapping{Name: "dns", LocalAddr: "127.0.0.1:53", RemotePort: 5353, Protocol: ProtocolUDP, UDPIdleTimeout: Duration(30 * time.Second)}},
		{"udp idle by its key", "5353:127.0.0.1:53/udp,udp_idle_timeout=1m",
			Mapping{LocalAddr: "127.0.0.1:53", RemotePort: 5353, Protocol: ProtocolUDP, UDPIdleTimeout: Duration(time.Minute)}},
		{"lists, repeated, IPv6 and single IPs", "ssh=10022:127.0.0.1:22,allow=203.0.113.0/24,allow=2001:db8::/32,deny=203.0.113.9,deny_ips=::1",
			Mapping{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022,
				AllowIPs: []netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8::/32")},
				DenyIPs:  []netip.Prefix{pfx("203.0.113.9/32"), pfx("::1/128")}}},
		{"a prefix is masked", "10022:127.0.0.1:22,allow_ips=10.1.2.3/8", Mapping{LocalAddr: "127.0.0.1:22", RemotePort: 10022, AllowIPs: []netip.Prefix{pfx("10.0.0.0/8")}}},
		{"IPv6, udp and an IPv6 prefix", "0:[::1]:53/udp,allow=::1/128",
			Mapping{LocalAddr: "[::1]:53", Protocol: ProtocolUDP, AllowIPs: []netip.Prefix{pfx("::1/128")}}},
		{"IPv6 local address and lists", "0:[::1]:22,allow=::ffff:10.0.0.0/104",
			Mapping{LocalAddr: "[::1]:22", AllowIPs: []netip.Prefix{pfx("10.0.0.0/8")}}},
		{"bandwidth, proxy, health", "web=18080:127.0.0.1:8080,bandwidth=10MiB,proxy=v2,health=false",
			Mapping{Name: "web", LocalAddr: "127.0.0.1:8080", RemotePort: 18080, BandwidthLimit: 10 << 20, ProxyProtocol: ProxyProtocolV2, HealthCheck: &off}},
		{"by their keys", "18080:127.0.0.1:8080,bandwidth_limit=1048576,proxy_protocol=v1,health_check=true",
			Mapping{LocalAddr: "127.0.0.1:8080", RemotePort: 18080, BandwidthLimit: 1 << 20, ProxyProtocol: ProxyProtocolV1, HealthCheck: &on}},
		{"bandwidth 0 is none", "1:h:1,bandwidth=0", Mapping{LocalAddr: "h:1", RemotePort: 1}},
		{"udp with PROXY v2", "5353:127.0.0.1:53/udp,proxy=v2,health=false",
			Mapping{LocalAddr: "127.0.0.1:53", RemotePort: 5353, Protocol: ProtocolUDP, ProxyProtocol: ProxyProtocolV2, HealthCheck: &off}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMap(tt.spec)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseMap(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
}

// TestParseMapErrors: each error quotes the value and says, in words,
// which part is wrong.
func TestParseMapErrors(t *testing.T) {
	tests := []struct{ spec, msg string }{
		{"", `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`},
		{"10022", `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`},
		{"ssh=10022", `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`},
		{"ssh,allow=10.0.0.0/8", `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`},
		{"x:127.0.0.1:22", `bad remote port "x": want 0..65535 (0: the server picks)`},
		{"-1:127.0.0.1:22", `bad remote port "-1": want 0..65535 (0: the server picks)`},
		{"65536:127.0.0.1:22", `bad remote port "65536": want 0..65535 (0: the server picks)`},
		{"10022:127.0.0.1", `bad address "127.0.0.1": want host:port, such as "127.0.0.1:22" or "[::1]:22"`},
		{"10022:127.0.0.1:0", `bad address "127.0.0.1:0": want a port number 1..65535`},
		{"10022::22", `bad address ":22": the host is missing`},
		{"10022:::1:22", `bad address "::1:22": want host:port, such as "127.0.0.1:22" or "[::1]:22"`},
		{"10022:h~st:22", `bad address "h~st:22": "h~st" is not an IP address or host name`},
		{"my ssh=10022:127.0.0.1:22", `bad name "my ssh": want 1 to 64 of A-Z a-z 0-9 . _ -`},
		{"=10022:127.0.0.1:22", `bad name "": want 1 to 64 of A-Z a-z 0-9 . _ -`},
		{"5353:127.0.0.1:53/sctp", `bad protocol "/sctp": want /tcp or /udp`},
		{"5353:127.0.0.1:53/UDP", `bad protocol "/UDP": want /tcp or /udp`},
		{"5353:127.0.0.1:53/", `bad protocol "/": want /tcp or /udp`},
		{"5353/udp:127.0.0.1:53", `the protocol goes last, after the local address, such as "5353:127.0.0.1:53/udp"`},
		{"10022:127.0.0.1:22,", `an empty option: one "," too many`},
		{"10022:127.0.0.1:22,,allow=10.0.0.0/8", `an empty option: one "," too many`},
		{"10022:127.0.0.1:22,allow", `bad option "allow": want OPTION=VALUE, such as "allow=203.0.113.0/24"`},
		{"10022:127.0.0.1:22,colour=red", `unknown option "colour": want allow, deny, bandwidth, proxy, idle, health (or their keys in client.toml)`},
		{"10022:127.0.0.1:22,Allow=10.0.0.0/8", `unknown option "Allow": want allow, deny, bandwidth, proxy, idle, health (or their keys in client.toml)`},
		{"10022:127.0.0.1:22,protocol=udp", `protocol=udp: write the protocol after the local address, such as "5353:127.0.0.1:53/udp"`},
		{"10022:127.0.0.1:22,name=ssh", `name=ssh: write the name first, such as "ssh=10022:127.0.0.1:22"`},
		{"10022:127.0.0.1:22,allow=office", `allow=office: bad IP prefix "office": want an IP address or a CIDR, such as "10.0.0.0/8", "::1/128" or "127.0.0.1"`},
		{"10022:127.0.0.1:22,allow=", `allow=: bad IP prefix "": want an IP address or a CIDR, such as "10.0.0.0/8", "::1/128" or "127.0.0.1"`},
		{"10022:127.0.0.1:22,deny=10.0.0.0/33", `deny=10.0.0.0/33: bad IP prefix "10.0.0.0/33": the prefix length "33" is not a number 0..32`},
		{"10022:127.0.0.1:22,deny_ips=fe80::1%eth0", `deny_ips=fe80::1%eth0: bad IP prefix "fe80::1%eth0": an IPv6 zone (%name) is not allowed`},
		{"10022:127.0.0.1:22,bandwidth=fast", `bandwidth=fast: bad size "fast": want a whole number of bytes, optionally followed by B, KB, MB, GB, KiB, MiB or GiB`},
		{"10022:127.0.0.1:22,bandwidth=10mib", `bandwidth=10mib: bad size "10mib": unknown unit "mib": want B, KB, MB, GB, KiB, MiB or GiB`},
		{"10022:127.0.0.1:22,bandwidth=100", `bandwidth=100: must be 0 (no limit) or at least 1KiB a second, got 100`},
		{"10022:127.0.0.1:22,bandwidth=1MiB,bandwidth_limit=2MiB", `bandwidth_limit=2MiB: bandwidth_limit is given twice (also bandwidth=1MiB)`},
		{"10022:127.0.0.1:22,proxy=v3", `proxy=v3: bad PROXY protocol version "v3": want v1 or v2`},
		{"10022:127.0.0.1:22,proxy=", `proxy=: bad PROXY protocol version "": want v1 or v2`},
		{"10022:127.0.0.1:22,proxy=v1,proxy=v2", `proxy=v2: proxy_protocol is given twice (also proxy=v1)`},
		{"10022:127.0.0.1:22,health=yes", `health=yes: bad value "yes": want true or false`},
		{"10022:127.0.0.1:22,health=false,health=true", `health=true: health_check is given twice (also health=false)`},
		{"10022:127.0.0.1:22,idle=30", `idle=30: bad duration "30": want a number and a unit, such as "10s", "500ms" or "1m30s"`},
		{"10022:127.0.0.1:22,idle=30s", `idle=30s: only for protocol = "udp"; this mapping is "tcp"`},
		{"5353:127.0.0.1:53/udp,idle=500ms", `idle=500ms: want 1s to 24h0m0s, got 500ms`},
		{"5353:127.0.0.1:53/udp,idle=1s,idle=2s", `idle=2s: udp_idle_timeout is given twice (also idle=1s)`},
		{"5353:127.0.0.1:53/udp,health=true", `health=true: a UDP service cannot be probed: set false or leave it out for protocol = "udp"`},
		{"5353:127.0.0.1:53/udp,proxy=v1", `proxy=v1: version 1 has no UDP form: want "v2" for protocol = "udp"`},
		{"5353:127.0.0.1:53/udp,proxy_protocol=v1,health_check=true",
			`health_check=true: a UDP service cannot be probed: set false or leave it out for protocol = "udp"; proxy_protocol=v1: version 1 has no UDP form: want "v2" for protocol = "udp"`},
	}
	for _, tt := range tests {
		got, err := ParseMap(tt.spec)
		var e *Error
		if !errors.As(err, &e) || e.Key != "--map" || e.File != "" || e.Line != 0 {
			t.Errorf("ParseMap(%q) = %+v, %v; want an *Error with Key --map", tt.spec, got, err)
			continue
		}
		if want := `--map: "` + tt.spec + `": ` + tt.msg; err.Error() != want {
			t.Errorf("ParseMap(%q) = %v\n want %s", tt.spec, err, want)
		}
		if !reflect.DeepEqual(got, Mapping{}) {
			t.Errorf("ParseMap(%q) = %+v with its error, want the zero Mapping", tt.spec, got)
		}
	}
}

// TestParseMapValidates: a quick-mode mapping passes Client.Validate
// with the defaults of its protocol: a UDP one gets no health check and
// udp_idle_timeout's default.
func TestParseMapValidates(t *testing.T) {
	c := quickClient(t, "dns=5353:127.0.0.1:53/udp", "ssh=10022:127.0.0.1:22,allow=10.0.0.0/8,bandwidth=1MiB")
	dns, ssh := c.Mappings[0], c.Mappings[1]
	if dns.Protocol != ProtocolUDP || *dns.HealthCheck || dns.UDPIdleTimeout != DefaultUDPIdleTimeout {
		t.Errorf("dns after Validate = %+v, want udp, no health check, udp_idle_timeout %s", dns, DefaultUDPIdleTimeout)
	}
	if ssh.Protocol != ProtocolTCP || !*ssh.HealthCheck || ssh.BandwidthLimit != 1<<20 || len(ssh.AllowIPs) != 1 {
		t.Errorf("ssh after Validate = %+v, want tcp, health check on, 1MiB, one allow entry", ssh)
	}
}

// quickClient is quick mode's client with a mapping per --map spec,
// validated.
func quickClient(t *testing.T, specs ...string) Client {
	t.Helper()
	c := DefaultClient()
	c.ServerAddr, c.Token = "tunnel.example.com:7000", "t"
	for _, spec := range specs {
		m, err := ParseMap(spec)
		if err != nil {
			t.Fatalf("ParseMap(%q) = %v", spec, err)
		}
		c.Mappings = append(c.Mappings, m)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	return c
}
