package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultClient(t *testing.T) {
	c := DefaultClient()
	tests := []struct {
		name      string
		got, want any
	}{
		{"path", c.Path, ""},
		{"server_addr", c.ServerAddr, ""},
		{"token", c.Token, ""},
		{"proxy_url", c.ProxyURL, ""},
		{"name", c.Name, defaultClientName()},
		{"heartbeat_interval", c.HeartbeatInterval.D(), 10 * time.Second},
		{"heartbeat_timeout", c.HeartbeatTimeout.D(), 30 * time.Second},
		{"dial_timeout", c.DialTimeout.D(), 5 * time.Second},
		{"handshake_timeout", c.HandshakeTimeout.D(), 10 * time.Second},
		{"reconnect.min", c.Reconnect.Min.D(), time.Second},
		{"reconnect.max", c.Reconnect.Max.D(), 16 * time.Second},
		{"reconnect.factor", c.Reconnect.Factor, 2.0},
		{"reconnect.jitter", c.Reconnect.Jitter, true},
		{"reconnect.max_retries", c.Reconnect.MaxRetries, 0},
		{"health.interval", c.Health.Interval.D(), 30 * time.Second},
		{"health.timeout", c.Health.Timeout.D(), 3 * time.Second},
		{"health.failures", c.Health.Failures, 3},
		{"tls", c.TLS, (*ClientTLS)(nil)},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
		{"mux.window_size", c.Mux.WindowSize, Size(DefaultWindowSize)},
		{"mux.buffer_size", c.Mux.BufferSize, Size(32 << 10)},
		{"mappings", len(c.Mappings), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("DefaultClient().%s = %v, want %v", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestDefaultClientName(t *testing.T) {
	name := defaultClientName()
	if !validName(name) {
		t.Errorf("defaultClientName() = %q, want 1 to 64 of [A-Za-z0-9._-]", name)
	}
	if h, err := os.Hostname(); err == nil && validName(h) && name != h {
		t.Errorf("defaultClientName() = %q, want the host name %q", name, h)
	}
}

func TestParseClientDefaults(t *testing.T) {
	doc := "server_addr = \"tunnel.example.com:7000\"\n"
	c, err := ParseClient("client.toml", []byte(doc), env(map[string]string{"GOTUNNEL_TOKEN": "t0k"}))
	if err != nil {
		t.Fatalf("ParseClient(%q) = %v, want no error", doc, err)
	}
	want := DefaultClient()
	want.Path, want.ServerAddr, want.Token = "client.toml", "tunnel.example.com:7000", "t0k"
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("ParseClient(%q) = %+v, want %+v", doc, *c, want)
	}
}

func TestLoadClientExample(t *testing.T) {
	c, err := LoadClient("testdata/client.toml", nil)
	if err != nil {
		t.Fatalf("LoadClient(testdata/client.toml) = %v", err)
	}
	on := true
	want := DefaultClient()
	want.Path = "testdata/client.toml"
	want.ServerAddr = "tunnel.example.com:7000"
	want.Token = "change-me-use-gotunnel-mux-token"
	want.Name = "laptop"
	want.TLS = &ClientTLS{Enabled: true}
	want.Mappings = []Mapping{
		{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, HealthCheck: &on, Protocol: ProtocolTCP},
		{Name: "tcp-8080", LocalAddr: "localhost:8080", RemotePort: 0, HealthCheck: &on, Protocol: ProtocolTCP},
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("LoadClient(testdata/client.toml) = %+v, want %+v", *c, want)
	}
}

func TestParseClientValues(t *testing.T) {
	off, on := false, true
	tests := []struct {
		name string
		doc  string
		get  func(*Client) any
		want any
	}{
		{"tls enabled by default", "[tls]\nca_file = 'ca.pem'", func(c *Client) any { return *c.TLS }, ClientTLS{Enabled: true, CAFile: "ca.pem"}},
		{"empty tls table", "[tls]", func(c *Client) any { return *c.TLS }, ClientTLS{Enabled: true}},
		{"tls disabled", "[tls]\nenabled = false", func(c *Client) any { return c.TLS.Enabled }, false},
		{"tls client cert", "tls = {cert_file = 'c', key_file = 'k', server_name = 's', insecure_skip_verify = true}",
			func(c *Client) any { return *c.TLS }, ClientTLS{true, "", "s", true, "c", "k"}},
		{"reconnect", "[reconnect]\nmin = '500ms'\nmax = '1m'\nfactor = 1\njitter = false\nmax_retries = 5",
			func(c *Client) any { return c.Reconnect }, Reconnect{Duration(500 * time.Millisecond), Duration(time.Minute), 1, false, 5}},
		{"health", "health.interval = '1s'\nhealth.timeout = '1s'\nhealth.failures = 1",
			func(c *Client) any { return c.Health }, Health{Duration(time.Second), Duration(time.Second), 1}},
		{"health_check false", "[[mappings]]\nlocal_addr = '127.0.0.1:22'\nhealth_check = false",
			func(c *Client) any { return c.Mappings[0].HealthCheck }, &off},
		{"health_check default", "[[mappings]]\nlocal_addr = '127.0.0.1:22'",
			func(c *Client) any { return c.Mappings[0].HealthCheck }, &on},
		{"default mapping name", "[[mappings]]\nlocal_addr = '[::1]:8080'",
			func(c *Client) any { return c.Mappings[0].Name }, "tcp-8080"},
		{"inline mappings", "mappings = [{name = 'a', local_addr = 'h:1', remote_port = 2}]",
			func(c *Client) any { return c.Mappings[0] }, Mapping{Name: "a", LocalAddr: "h:1", RemotePort: 2, HealthCheck: &on, Protocol: ProtocolTCP}},
		{"proxy_protocol v1", "[[mappings]]\nlocal_addr = '127.0.0.1:80'\nproxy_protocol = 'v1'",
			func(c *Client) any { return c.Mappings[0].ProxyProtocol }, "v1"},
		{"proxy_protocol v2 inline", "mappings = [{local_addr = 'h:1', proxy_protocol = 'v2'}]",
			func(c *Client) any { return c.Mappings[0].ProxyProtocol }, "v2"},
		{"proxy_protocol empty is off", "[[mappings]]\nlocal_addr = '127.0.0.1:80'\nproxy_protocol = ''",
			func(c *Client) any { return c.Mappings[0].ProxyProtocol }, ""},
		{"bandwidth_limit with a unit", "[[mappings]]\nlocal_addr = 'h:1'\nbandwidth_limit = '10MiB'",
			func(c *Client) any { return c.Mappings[0].BandwidthLimit }, Size(10 << 20)},
		{"bandwidth_limit in bytes", "mappings = [{local_addr = 'h:1', bandwidth_limit = 1024}]",
			func(c *Client) any { return c.Mappings[0].BandwidthLimit }, Size(1024)},
		{"bandwidth_limit default none", "[[mappings]]\nlocal_addr = 'h:1'",
			func(c *Client) any { return c.Mappings[0].BandwidthLimit }, Size(0)},
		{"proxy_protocol default off", "[[mappings]]\nlocal_addr = '127.0.0.1:80'",
			func(c *Client) any { return c.Mappings[0].ProxyProtocol }, ""},
		{"mapping allow_ips", "[[mappings]]\nlocal_addr = 'h:22'\nallow_ips = ['203.0.113.0/24', '198.51.100.7', '::ffff:192.0.2.1']",
			func(c *Client) any { return c.Mappings[0].AllowIPs }, []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"),
				netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("192.0.2.1/32")}},
		{"mapping deny_ips", "[[mappings]]\nlocal_addr = 'h:22'\ndeny_ips = ['2001:db8::1']\n[[mappings]]\nlocal_addr = 'h:23'",
			func(c *Client) any { return [][]netip.Prefix{c.Mappings[0].DenyIPs, c.Mappings[1].DenyIPs} },
			[][]netip.Prefix{{netip.MustParsePrefix("2001:db8::1/128")}, nil}},
		{"inline mapping with lists", "mappings = [{local_addr = 'h:1', allow_ips = ['10.0.0.0/8'], deny_ips = ['10.9.9.9']}]",
			func(c *Client) any { return c.Mappings[0] }, Mapping{Name: "tcp-1", LocalAddr: "h:1", HealthCheck: &on, Protocol: ProtocolTCP,
				AllowIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, DenyIPs: []netip.Prefix{netip.MustParsePrefix("10.9.9.9/32")}}},
		{"udp mapping defaults", "[[mappings]]\nlocal_addr = '127.0.0.1:53'\nremote_port = 5353\nprotocol = 'udp'",
			func(c *Client) any { return c.Mappings[0] }, Mapping{Name: "udp-53", LocalAddr: "127.0.0.1:53", RemotePort: 5353, HealthCheck: &off,
				Protocol: ProtocolUDP, UDPIdleTimeout: DefaultUDPIdleTimeout}},
		{"udp mapping idle timeout and v2", "mappings = [{local_addr = 'h:51820', protocol = 'udp', udp_idle_timeout = '3m', proxy_protocol = 'v2'}]",
			func(c *Client) any { return []any{c.Mappings[0].UDPIdleTimeout, c.Mappings[0].ProxyProtocol} }, []any{Duration(3 * time.Minute), "v2"}},
		{"tcp and udp share a port", "[[mappings]]\nlocal_addr = 'h:53'\nremote_port = 53\n[[mappings]]\nlocal_addr = 'h:53'\nremote_port = 53\nprotocol = 'udp'",
			func(c *Client) any { return []string{c.Mappings[0].Name, c.Mappings[1].Name} }, []string{"tcp-53", "udp-53"}},
		{"client name", "name = 'edge-01.lab_2'", func(c *Client) any { return c.Name }, "edge-01.lab_2"},
		{"proxy_url http", "proxy_url = 'http://user:p%40ss@proxy.lan:3128'", func(c *Client) any { return c.ProxyURL }, "http://user:p%40ss@proxy.lan:3128"},
		{"proxy_url none", "proxy_url = 'none'", func(c *Client) any { return c.ProxyURL }, "none"},
		{"proxy_url empty", "proxy_url = ''", func(c *Client) any { return c.ProxyURL }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "server_addr = 'h:7000'\ntoken = 't'\n" + tt.doc + "\n"
			c, err := ParseClient("client.toml", []byte(doc), nil)
			if err != nil {
				t.Fatalf("ParseClient(%q) = %v, want no error", doc, err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseClient(%q) = %v, want %v", doc, got, tt.want)
			}
		})
	}
}

func TestParseClientErrors(t *testing.T) {
	const head = "server_addr = 'h:7000'\ntoken = 't'\n" // lines 1 and 2
	tests := []struct {
		name  string
		doc   string
		env   Env
		wants []want
	}{
		{"unknown key in second mapping",
			head + "[[mappings]]\nlocal_addr = 'h:1'\n[[mappings]]\nlocal_addr = 'h:2'\nremote = 10022\n", nil,
			[]want{{7, "mappings[1].remote", "unknown key"}}},
		{"server_addr and server_addrs", head + "server_addrs = ['a:1', 'b:1']\n", nil,
			[]want{{3, "server_addrs", "set server_addr or server_addrs, not both"}}},
		{"server_addrs empty", "token = 't'\nserver_addrs = []\n", nil,
			[]want{{2, "server_addrs", "is empty; list one server or more"}}},
		{"server_addrs twice the same", "token = 't'\nserver_addrs = ['a:1', 'tcp://a:1']\n", nil,
			[]want{{2, "server_addrs[1]", "server a:1 is also server_addrs[0]"}}},
		{"server_addrs bad entry", "token = 't'\nserver_addrs = ['a:1', 'b']\n", nil,
			[]want{{2, "server_addrs[1]", "want host:port"}}},
		{"server_addrs mixing TLS and plain", "token = 't'\nserver_addrs = ['tls://a:443', 'b:7000']\n", nil,
			[]want{{2, "server_addrs[1]", "one is TLS and the other plain; they share [tls]"}}},
		{"bad ha", "token = 't'\nserver_addrs = ['a:1', 'b:1']\nha = 'both'\n", nil,
			[]want{{3, "ha", `bad ha "both": want one of failover, all`}}},
		{"a key twice, another between", head + "name = 'x'\ndial_timeout = '1s'\nname = 'y'\n", nil,
			[]want{{5, "name", "key name is already defined"}}},
		{"a mapping key twice, another between", head + "[[mappings]]\nlocal_addr = 'h:1'\nname = 'a'\nlocal_addr = 'h:2'\n", nil,
			[]want{{6, "mappings[0].local_addr", "key local_addr is already defined"}}},
		{"bad protocol", head + "[[mappings]]\nlocal_addr = 'h:1'\nprotocol = 'sctp'\n", nil,
			[]want{{5, "mappings[0].protocol", `bad protocol "sctp": want "tcp" (the default) or "udp"`}}},
		{"udp with health_check", head + "[[mappings]]\nlocal_addr = 'h:53'\nprotocol = 'udp'\nhealth_check = true\n", nil,
			[]want{{6, "mappings[0].health_check", "a UDP service cannot be probed"}}},
		{"udp with proxy_protocol v1", head + "[[mappings]]\nlocal_addr = 'h:53'\nprotocol = 'udp'\nproxy_protocol = 'v1'\n", nil,
			[]want{{6, "mappings[0].proxy_protocol", `version 1 has no UDP form: want "v2"`}}},
		{"udp idle timeout too short", head + "[[mappings]]\nlocal_addr = 'h:53'\nprotocol = 'udp'\nudp_idle_timeout = '10ms'\n", nil,
			[]want{{6, "mappings[0].udp_idle_timeout", "want 1s to 24h0m0s, got 10ms"}}},
		{"udp idle timeout on tcp", head + "[[mappings]]\nlocal_addr = 'h:22'\nudp_idle_timeout = '10s'\n", nil,
			[]want{{5, "mappings[0].udp_idle_timeout", `only for protocol = "udp"`}}},
		{"same udp port twice", head + "[[mappings]]\nlocal_addr = 'h:53'\nprotocol = 'udp'\nremote_port = 5353\n[[mappings]]\nname = 'b'\nlocal_addr = 'h:54'\nprotocol = 'udp'\nremote_port = 5353\n", nil,
			[]want{{11, "mappings[1].remote_port", "udp port 5353 is also the remote_port of mappings[0]"}}},
		{"unknown key in reconnect", head + "[reconnect]\nmax_delay = '1s'\n", nil,
			[]want{{4, "reconnect.max_delay", "unknown key"}}},
		{"missing server_addr", "token = 't'\n", nil,
			[]want{{0, "server_addr", "missing (required)"}}},
		{"server_addr without port", "server_addr = 'tunnel.example.com'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "want host:port"}}},
		{"server_addr without host", "server_addr = ':7000'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "the host is missing"}}},
		{"server_addr port 0", "server_addr = 'h:0'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "want a port number 1..65535"}}},
		{"server_addr url without port", "token = 't'\nserver_addr = 'wss://tunnel.example.com/x'\n", nil,
			[]want{{2, "server_addr", `bad address "wss://tunnel.example.com/x": the port is missing (there is no default port)`}}},
		{"server_addr unknown scheme", "server_addr = 'udp://h:1'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "the scheme must be tcp://, tls://, ws:// or wss://"}}},
		{"server_addr tcp with tls", "server_addr = 'tcp://h:1'\ntoken = 't'\n[tls]\nca_file = 'ca.pem'\n", nil,
			[]want{{1, "server_addr", "tcp:// and ws:// are plain; use tls:// or wss://, or set [tls] enabled = false"}}},
		{"server_addr ws with tls", "server_addr = 'ws://h:80/t'\ntoken = 't'\n[tls]\nenabled = true\n", nil,
			[]want{{1, "server_addr", "[tls] enabled = true, but tcp:// and ws:// are plain"}}},
		{"server_addr tls with path", "server_addr = 'tls://h:443/x'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "tls:// takes no path; only ws:// and wss:// do"}}},
		{"server_addr with query", "server_addr = 'wss://h:443/x?a=b'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "a query (?) or fragment (#) is not allowed"}}},
		{"server_addr with user info", "server_addr = 'wss://bob:hunter2@h:443/x'\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", `bad address "wss://bob:xxxxx@h:443/x": user info (user@ or user:password@) is not allowed`}}},
		{"server_addr not a string", "server_addr = 7000\ntoken = 't'\n", nil,
			[]want{{1, "server_addr", "want a string, got an integer"}}},
		{"proxy_url https", head + "proxy_url = 'https://proxy.lan:3128'\n", nil,
			[]want{{3, "proxy_url", "https:// proxies are not supported; use http:// (the tunnel inside is TLS when you set it)"}}},
		{"proxy_url unknown scheme", head + "proxy_url = 'socks4://proxy.lan:1080'\n", nil,
			[]want{{3, "proxy_url", "the scheme must be http:// (HTTP CONNECT) or socks5://"}}},
		{"proxy_url without scheme", head + "\nproxy_url = 'proxy.lan:3128'\n", nil,
			[]want{{4, "proxy_url", `want http://[user:password@]host:port or socks5://[user:password@]host:port, or "none"`}}},
		{"proxy_url without port", head + "proxy_url = 'http://proxy.lan'\n", nil,
			[]want{{3, "proxy_url", `bad proxy URL "http://proxy.lan": the port is missing`}}},
		{"proxy_url port 0", head + "proxy_url = 'socks5://proxy.lan:0'\n", nil,
			[]want{{3, "proxy_url", "want a port number 1..65535"}}},
		{"proxy_url with path", head + "proxy_url = 'http://proxy.lan:3128/x'\n", nil,
			[]want{{3, "proxy_url", "a proxy URL takes no path, query or fragment"}}},
		{"proxy_url bad host", head + "proxy_url = 'http://bob:pw@pro xy:3128'\n", nil,
			[]want{{3, "proxy_url", `bad proxy URL "http://bob:xxxxx@pro xy:3128": "pro xy" is not an IP address or host name`}}},
		{"proxy_url not a string", head + "proxy_url = false\n", nil,
			[]want{{3, "proxy_url", "want a string, got a boolean"}}},
		{"proxy_url wrong case", head + "PROXY_URL = 'none'\n", nil,
			[]want{{3, "PROXY_URL", `did you mean "proxy_url"`}}},
		{"missing token", "server_addr = 'h:1'\n", noEnv,
			[]want{{0, "token", "missing (required); set it in the file or GOTUNNEL_TOKEN"}}},
		{"bad name", head + "name = 'my laptop'\n", nil,
			[]want{{3, "name", `bad name "my laptop"`}}},
		{"name too long", head + "name = '" + strings.Repeat("a", 65) + "'\n", nil,
			[]want{{3, "name", "bad name"}}},
		{"heartbeat interval not below timeout", head + "heartbeat_interval = '30s'\n", nil,
			[]want{{3, "heartbeat_interval", "must be less than heartbeat_timeout (30s), got 30s"}}},
		{"zero durations", head + "heartbeat_interval = '0s'\nheartbeat_timeout = '0s'\ndial_timeout = '0s'\nhandshake_timeout = '0s'\n", nil,
			[]want{{3, "heartbeat_interval", "more than 0"}, {4, "heartbeat_timeout", "more than 0"},
				{5, "dial_timeout", "more than 0"}, {6, "handshake_timeout", "more than 0"}}},
		{"reconnect bounds", head + "[reconnect]\nmin = '0s'\nmax = '-1s'\nfactor = 0.5\nmax_retries = -1\n", nil,
			[]want{{4, "reconnect.min", "more than 0"}, {5, "reconnect.max", "at least reconnect.min"},
				{6, "reconnect.factor", "1 or more, got 0.5"}, {7, "reconnect.max_retries", "0 or more"}}},
		{"reconnect factor as string", head + "[reconnect]\nfactor = '2'\n", nil,
			[]want{{4, "reconnect.factor", "want a number, got a string"}}},
		{"jitter as string", head + "[reconnect]\njitter = 'yes'\n", nil,
			[]want{{4, "reconnect.jitter", "want true or false, got a string"}}},
		{"health bounds", head + "[health]\ninterval = '0s'\ntimeout = '0s'\nfailures = 0\n", nil,
			[]want{{4, "health.interval", "more than 0"}, {5, "health.timeout", "more than 0"}, {6, "health.failures", "1 or more"}}},
		{"cert_file without key_file", head + "[tls]\ncert_file = 'c.pem'\n", nil,
			[]want{{3, "tls.key_file", "missing (required); cert_file needs key_file"}}},
		{"key_file without cert_file", head + "[tls]\nkey_file = 'k.pem'\n", nil,
			[]want{{3, "tls.cert_file", "missing (required); key_file needs cert_file"}}},
		{"duplicate mapping name",
			head + "[[mappings]]\nname = 'ssh'\nlocal_addr = 'h:22'\n\n[[mappings]]\nname = 'ssh'\nlocal_addr = 'h:23'\n", nil,
			[]want{{8, "mappings[1].name", `duplicate name "ssh" (also mappings[0])`}}},
		{"duplicate default mapping name",
			head + "[[mappings]]\nlocal_addr = 'a:22'\n[[mappings]]\nlocal_addr = 'b:22'\n", nil,
			[]want{{5, "mappings[1].name", `duplicate name "tcp-22", the default from local_addr`}}},
		{"duplicate remote port",
			head + "[[mappings]]\nlocal_addr = 'a:22'\nremote_port = 2222\n[[mappings]]\nlocal_addr = 'a:23'\nremote_port = 2222\n", nil,
			[]want{{8, "mappings[1].remote_port", "port 2222 is also the remote_port of mappings[0]"}}},
		{"local_addr without port", head + "[[mappings]]\nlocal_addr = '127.0.0.1'\n", nil,
			[]want{{4, "mappings[0].local_addr", `bad address "127.0.0.1": want host:port`}}},
		{"local_addr port 0", head + "[[mappings]]\nlocal_addr = '127.0.0.1:0'\n", nil,
			[]want{{4, "mappings[0].local_addr", "want a port number 1..65535"}}},
		{"missing local_addr", head + "\n[[mappings]]\nname = 'x'\n", nil,
			[]want{{4, "mappings[0].local_addr", "missing (required)"}}},
		{"bad mapping name", head + "[[mappings]]\nname = 'a/b'\nlocal_addr = 'h:1'\n", nil,
			[]want{{4, "mappings[0].name", `bad name "a/b"`}}},
		{"remote_port out of range", head + "[[mappings]]\nlocal_addr = 'h:1'\nremote_port = 65536\n", nil,
			[]want{{5, "mappings[0].remote_port", "port 65536 is out of range 0..65535"}}},
		{"remote_port as string", head + "[[mappings]]\nlocal_addr = 'h:1'\nremote_port = '22'\n", nil,
			[]want{{5, "mappings[0].remote_port", "want an integer, got a string"}}},
		{"proxy_protocol unknown version", head + "[[mappings]]\nlocal_addr = 'h:1'\n\nproxy_protocol = 'v3'\n", nil,
			[]want{{6, "mappings[0].proxy_protocol", `bad proxy_protocol "v3": want "v1" or "v2", or "" (the default: no PROXY header)`}}},
		{"bandwidth_limit below the minimum", head + "[[mappings]]\nlocal_addr = 'h:1'\n[[mappings]]\nlocal_addr = 'h:2'\nbandwidth_limit = '1000B'\n", nil,
			[]want{{7, "mappings[1].bandwidth_limit", "must be 0 (no limit) or at least 1KiB a second, got 1000"}}},
		{"bandwidth_limit negative", head + "[[mappings]]\nlocal_addr = 'h:1'\nbandwidth_limit = -1\n", nil,
			[]want{{5, "mappings[0].bandwidth_limit", "must be 0 (no limit) or at least 1KiB a second, got -1"}}},
		{"bandwidth_limit bad unit", head + "[[mappings]]\nlocal_addr = 'h:1'\nbandwidth_limit = '10Mbps'\n", nil,
			[]want{{5, "mappings[0].bandwidth_limit", `unknown unit "Mbps"`}}},
		{"proxy_protocol upper case", head + "[[mappings]]\nlocal_addr = 'h:1'\n[[mappings]]\nlocal_addr = 'h:2'\nproxy_protocol = 'V2'\n", nil,
			[]want{{7, "mappings[1].proxy_protocol", `bad proxy_protocol "V2"`}}},
		{"proxy_protocol as a number", head + "[[mappings]]\nlocal_addr = 'h:1'\nproxy_protocol = 2\n", nil,
			[]want{{5, "mappings[0].proxy_protocol", "want a string, got an integer"}}},
		{"proxy_protocol as a boolean", head + "[[mappings]]\nlocal_addr = 'h:1'\nproxy_protocol = true\n", nil,
			[]want{{5, "mappings[0].proxy_protocol", "want a string, got a boolean"}}},
		{"bad mapping allow_ips", head + "[[mappings]]\nlocal_addr = 'h:1'\n[[mappings]]\nlocal_addr = 'h:2'\nallow_ips = [\n  '10.0.0.0/8',\n  'home',\n]\n", nil,
			[]want{{9, "mappings[1].allow_ips[1]", `bad IP prefix "home": want an IP address or a CIDR`}}},
		{"bad mapping deny_ips", head + "[[mappings]]\nlocal_addr = 'h:1'\ndeny_ips = ['::/129']\n", nil,
			[]want{{5, "mappings[0].deny_ips[0]", `bad IP prefix "::/129": the prefix length "129" is not a number 0..128`}}},
		{"mapping deny_ips a string", head + "[[mappings]]\nlocal_addr = 'h:1'\ndeny_ips = '10.0.0.1'\n", nil,
			[]want{{5, "mappings[0].deny_ips", "want an array, got a string"}}},
		{"too many mapping allow_ips", head + "[[mappings]]\nlocal_addr = 'h:1'\nallow_ips = [" + strings.Repeat("'10.0.0.1',", 257) + "]\n", nil,
			[]want{{5, "mappings[0].allow_ips", "257 entries; at most 256"}}},
		{"mapping allow_ips wrong case", head + "[[mappings]]\nlocal_addr = 'h:1'\nAllow_IPs = []\n", nil,
			[]want{{5, "mappings[0].Allow_IPs", `did you mean "allow_ips"`}}},
		{"mappings as a table", head + "[mappings]\nlocal_addr = 'h:1'\n", nil,
			[]want{{3, "mappings", "want an array of tables, got a table"}}},
		{"inline mapping problems", head + "mappings = [{local_addr = 'h:1'}, {local_addr = 'h', extra = 1}]\n", nil,
			[]want{{3, "mappings[1].local_addr", "want host:port"}, {3, "mappings[1].extra", "unknown key"}}},
		{"several problems in mappings",
			"token = ''\n[[mappings]]\nlocal_addr = 'h:1'\nport = 1\n[[mappings]]\nremote_port = -1\n[log]\nformat = 'yaml'\n", noEnv,
			[]want{
				{0, "server_addr", "missing"},
				{1, "token", "empty (required)"},
				{4, "mappings[0].port", "unknown key"},
				{5, "mappings[1].local_addr", "missing"},
				{6, "mappings[1].remote_port", "out of range"},
				{8, "log.format", `bad log format "yaml"`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseClient("client.toml", []byte(tt.doc), tt.env)
			if c != nil {
				t.Errorf("ParseClient(%q) = %+v, want nil with errors", tt.doc, c)
			}
			checkErrors(t, fmt.Sprintf("ParseClient(%q)", tt.doc), err, "client.toml", tt.wants)
		})
	}
}

func TestClientTokenFromEnv(t *testing.T) {
	doc := "server_addr = 'h:1'\ntoken = 'from-file'\n"
	c, err := ParseClient("client.toml", []byte(doc), env(map[string]string{"GOTUNNEL_TOKEN": "from-env"}))
	if err != nil {
		t.Fatalf("ParseClient(%q) = %v, want no error", doc, err)
	}
	if c.Token != "from-env" {
		t.Errorf("ParseClient(%q).Token = %q, want %q", doc, c.Token, "from-env")
	}
}

func TestClientValidateQuickMode(t *testing.T) {
	c := quickClient(t, "10022:127.0.0.1:22", "web=0:[::1]:8080")
	on := true
	want := []Mapping{
		{Name: "tcp-22", LocalAddr: "127.0.0.1:22", RemotePort: 10022, HealthCheck: &on, Protocol: ProtocolTCP},
		{Name: "web", LocalAddr: "[::1]:8080", RemotePort: 0, HealthCheck: &on, Protocol: ProtocolTCP},
	}
	if !reflect.DeepEqual(c.Mappings, want) {
		t.Errorf("Validate() left mappings %+v, want %+v", c.Mappings, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("second Validate() = %v, want nil", err)
	}
}

func TestClientValidateErrors(t *testing.T) {
	c := DefaultClient()
	c.Mappings = []Mapping{{LocalAddr: "h:1"}, {LocalAddr: "h:1"}, {}, {LocalAddr: "h:2", ProxyProtocol: "2"}}
	err := c.Validate()
	checkErrors(t, "Validate()", err, "", []want{
		{0, "server_addr", "missing (required)"},
		{0, "token", "missing (required); set it in the file or GOTUNNEL_TOKEN"},
		{0, "mappings[1].name", "duplicate name"},
		{0, "mappings[2].local_addr", "missing (required)"},
		{0, "mappings[3].proxy_protocol", `bad proxy_protocol "2"`},
	})
	if strings.Contains(err.Error(), ".toml") || strings.Contains(err.Error(), ":0:") {
		t.Errorf("Validate() = %v, want no file and no line", err)
	}
}

func TestLoadClientMissingFile(t *testing.T) {
	_, err := LoadClient("testdata/nope.toml", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadClient(nope) = %v, want fs.ErrNotExist", err)
	}
	checkErrors(t, "LoadClient(nope)", err, "testdata/nope.toml", []want{{0, "", "cannot read: no such file or directory"}})
}

// TestParseClientServers: server_addrs gives every server in order, each
// parsed as server_addr is; ha is kept.
func TestParseClientServers(t *testing.T) {
	doc := "token = 't'\nserver_addrs = ['wss://a.example:443/t', 'wss://b.example:443/t']\nha = 'all'\n"
	c, err := ParseClient("client.toml", []byte(doc), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{{Scheme: "wss", Host: "a.example:443", Path: "/t"}, {Scheme: "wss", Host: "b.example:443", Path: "/t"}}
	if got := c.Servers(); !reflect.DeepEqual(got, want) || c.HA != HAAll || !c.TLSEnabled() || c.Endpoint() != want[0] {
		t.Errorf("servers %+v, ha %q, TLS %v; want %+v, all, TLS", got, c.HA, c.TLSEnabled(), want)
	}
}
