package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultServer(t *testing.T) {
	s := DefaultServer()
	tests := []struct {
		name      string
		got, want any
	}{
		{"path", s.Path, ""},
		{"bind_addr", s.BindAddr, "0.0.0.0:7000"},
		{"token", s.Token, ""},
		{"public_addr", s.PublicAddr, "0.0.0.0"},
		{"allow_ports", s.AllowPorts, []PortRange{{1024, 65535}}},
		{"max_mappings_per_client", s.MaxMappingsPerClient, 16},
		{"max_conns_per_mapping", s.MaxConnsPerMapping, 0},
		{"max_bandwidth_per_client", s.MaxBandwidthPerClient, Size(0)},
		{"login_timeout", s.LoginTimeout.D(), 10 * time.Second},
		{"stream_open_timeout", s.StreamOpenTimeout.D(), 10 * time.Second},
		{"heartbeat_timeout", s.HeartbeatTimeout.D(), 30 * time.Second},
		{"heartbeat_check_interval", s.HeartbeatCheckInterval.D(), 5 * time.Second},
		{"shutdown_timeout", s.ShutdownTimeout.D(), 10 * time.Second},
		{"ws_path", s.WSPath, "/gotunnel"},
		{"allow_plain", s.AllowPlain, false},
		{"trusted_proxies", len(s.TrustedProxies), 0},
		{"accept_proxy_protocol", s.AcceptProxyProtocol, ""},
		{"max_unauthenticated", s.MaxUnauthenticated, 256},
		{"max_unauthenticated_per_ip", s.MaxUnauthenticatedPerIP, 32},
		{"max_stray_streams", s.MaxStrayStreams, 4},
		{"max_frame_size", s.MaxFrameSize, Size(64 << 10)},
		{"bad_login_limit", s.BadLoginLimit, 5},
		{"bad_login_pause", s.BadLoginPause.D(), time.Minute},
		{"tls", s.TLS, (*ServerTLS)(nil)},
		{"log.level", s.Log.Level, "info"},
		{"log.format", s.Log.Format, "text"},
		{"log.access", s.Log.Access, true},
		{"admin.addr", s.Admin.Addr, ""},
		{"admin.token", s.Admin.Token, ""},
		{"mux.window_size", s.Mux.WindowSize, Size(1 << 20)},
		{"mux.buffer_size", s.Mux.BufferSize, Size(32 << 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("DefaultServer().%s = %v, want %v", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestParseServerDefaults(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		env  Env
	}{
		{"empty file, token from env", "", env(map[string]string{"GOTUNNEL_TOKEN": "t0k"})},
		{"only a token", "token = 't0k'\n", noEnv},
		{"only comments and a token", "# nothing\n\ntoken = \"t0k\" # secret\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServer("server.toml", []byte(tt.doc), tt.env)
			if err != nil {
				t.Fatalf("ParseServer(%q) = %v, want no error", tt.doc, err)
			}
			want := DefaultServer()
			want.Path, want.Token = "server.toml", "t0k"
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("ParseServer(%q) = %+v, want %+v", tt.doc, *got, want)
			}
		})
	}
}

func TestLoadServerExample(t *testing.T) {
	s, err := LoadServer("testdata/server.toml", nil)
	if err != nil {
		t.Fatalf("LoadServer(testdata/server.toml) = %v", err)
	}
	want := DefaultServer()
	want.Path = "testdata/server.toml"
	want.Token = "change-me-use-gotunnel-mux-token"
	want.AllowPorts = []PortRange{{10000, 20000}, {2222, 2222}}
	want.TLS = &ServerTLS{CertFile: "server.crt", KeyFile: "server.key"}
	if !reflect.DeepEqual(*s, want) {
		t.Errorf("LoadServer(testdata/server.toml) = %+v, want %+v", *s, want)
	}
}

func TestParseServerValues(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		get  func(*Server) any
		want any
	}{
		{"bind_addr port 0", `bind_addr = "127.0.0.1:0"`, func(s *Server) any { return s.BindAddr }, "127.0.0.1:0"},
		{"bind_addr no host", `bind_addr = ":7000"`, func(s *Server) any { return s.BindAddr }, ":7000"},
		{"bind_addr ipv6", `bind_addr = "[::]:7000"`, func(s *Server) any { return s.BindAddr }, "[::]:7000"},
		{"public_addr ipv6", `public_addr = "::1"`, func(s *Server) any { return s.PublicAddr }, "::1"},
		{"public_addr host", `public_addr = "edge.example.com"`, func(s *Server) any { return s.PublicAddr }, "edge.example.com"},
		{"allow_ports replace default", `allow_ports = ["2222"]`, func(s *Server) any { return s.AllowPorts }, []PortRange{{2222, 2222}}},
		{"allow_ports integer", `allow_ports = [2222, "3000-3001"]`, func(s *Server) any { return s.AllowPorts }, []PortRange{{2222, 2222}, {3000, 3001}}},
		{"window_size integer", "[mux]\nwindow_size = 262144", func(s *Server) any { return s.Mux.WindowSize }, Size(256 << 10)},
		{"window_size string", "[mux]\nwindow_size = \"4MiB\"", func(s *Server) any { return s.Mux.WindowSize }, Size(4 << 20)},
		{"window_size dotted", `mux.window_size = "64MiB"`, func(s *Server) any { return s.Mux.WindowSize }, Size(64 << 20)},
		{"shutdown 0", `shutdown_timeout = "0s"`, func(s *Server) any { return s.ShutdownTimeout.D() }, time.Duration(0)},
		{"tls empty ca", "[tls]\ncert_file = 'c'\nkey_file = 'k'", func(s *Server) any { return *s.TLS }, ServerTLS{CertFile: "c", KeyFile: "k"}},
		{"tls inline", "tls = {cert_file = 'c', key_file = 'k', client_ca_file = 'ca'}", func(s *Server) any { return *s.TLS }, ServerTLS{"c", "k", "ca"}},
		{"log json debug", "[log]\nlevel = 'debug'\nformat = 'json'", func(s *Server) any { return s.Log }, Log{"debug", "json", true}},
		{"clients without a shared token", "[[clients]]\nname = 'laptop'\ntoken = 'l4ptop-token'\nallow_ports = ['10000-10010', 2222]\nmax_mappings = 2\n[[clients]]\nname = 'nas'\ntoken_sha256 = '" + strings.Repeat("ab", 32) + "'\n",
			func(s *Server) any {
				return len(s.Clients) == 2 && s.Clients[0].MaxMappings == 2 && len(s.Clients[0].AllowPorts) == 2 && s.Clients[1].TokenSum()[0] == 0xab
			}, true},
		{"access log off", "[log]\naccess = false", func(s *Server) any { return s.Log.Access }, false},
		{"admin port only is loopback", "[admin]\naddr = ':9100'", func(s *Server) any { return s.Admin.Addr }, "127.0.0.1:9100"},
		{"admin public with token", "[admin]\naddr = '0.0.0.0:9100'\ntoken = 'adm1n-t0ken'", func(s *Server) any { return s.Admin }, Admin{Addr: "0.0.0.0:9100", Token: "adm1n-t0ken"}},
		{"admin https", "[admin]\naddr = 'localhost:9100'\ncert_file = 'c'\nkey_file = 'k'", func(s *Server) any { return s.Admin.CertFile }, "c"},
		{"ws_path", `ws_path = "/tunnel/v1"`, func(s *Server) any { return s.WSPath }, "/tunnel/v1"},
		{"ws_path root", `ws_path = "/"`, func(s *Server) any { return s.WSPath }, "/"},
		{"ws_path longest", `ws_path = "/` + strings.Repeat("a", 255) + `"`, func(s *Server) any { return len(s.WSPath) }, 256},
		{"allow_plain", "allow_plain = true\n[tls]\ncert_file = 'c'\nkey_file = 'k'", func(s *Server) any { return s.AllowPlain }, true},
		{"allow_plain without tls", "allow_plain = true", func(s *Server) any { return s.AllowPlain }, true},
		{"trusted_proxies", `trusted_proxies = ["10.0.0.0/8", "::1/128", "127.0.0.1", "fd00::1", "192.168.1.77/24", "0.0.0.0/0", "::ffff:10.9.0.0/112", "::ffff:1.2.3.4"]`,
			func(s *Server) any { return s.TrustedProxies }, []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"),
				netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("fd00::1/128"),
				netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("0.0.0.0/0"),
				netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("1.2.3.4/32"),
			}},
		{"allow_ips", `allow_ips = ["203.0.113.0/24", "198.51.100.7", "2001:db8::/32", "::ffff:192.0.2.0/120"]`,
			func(s *Server) any { return s.AllowIPs }, []netip.Prefix{
				netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32"),
				netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.0/24"),
			}},
		{"deny_ips", "deny_ips = [\n  '203.0.113.66',\n  '10.1.2.3/8',\n]", func(s *Server) any { return s.DenyIPs },
			[]netip.Prefix{netip.MustParsePrefix("203.0.113.66/32"), netip.MustParsePrefix("10.0.0.0/8")}},
		{"allow_ips default", ``, func(s *Server) any { return s.AllowIPs }, []netip.Prefix(nil)},
		{"deny_ips empty", `deny_ips = []`, func(s *Server) any { return s.DenyIPs }, []netip.Prefix{}},
		{"accept_proxy_protocol bind", "trusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = 'bind'", func(s *Server) any { return acceptsProxy(s) }, [2]bool{true, false}},
		{"accept_proxy_protocol public", "trusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = 'public'", func(s *Server) any { return acceptsProxy(s) }, [2]bool{false, true}},
		{"accept_proxy_protocol all", "trusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = 'all'", func(s *Server) any { return acceptsProxy(s) }, [2]bool{true, true}},
		{"accept_proxy_protocol off", "accept_proxy_protocol = ''", func(s *Server) any { return acceptsProxy(s) }, [2]bool{false, false}},
		{"trusted_proxies empty", `trusted_proxies = []`, func(s *Server) any { return s.TrustedProxies }, []netip.Prefix(nil)},
		{"trusted_proxies multi-line", "trusted_proxies = [\n  '10.1.0.0/16',\n]", func(s *Server) any { return s.TrustedProxies },
			[]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "token = 't'\n" + tt.doc + "\n"
			s, err := ParseServer("server.toml", []byte(doc), nil)
			if err != nil {
				t.Fatalf("ParseServer(%q) = %v, want no error", doc, err)
			}
			if got := tt.get(s); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseServer(%q) = %v, want %v", doc, got, tt.want)
			}
		})
	}
}

func acceptsProxy(s *Server) [2]bool {
	bind, public := s.AcceptsProxy()
	return [2]bool{bind, public}
}

func TestParseServerErrors(t *testing.T) {
	tests := []struct {
		name  string
		doc   string
		env   Env
		wants []want
	}{
		{"unknown key at top level", "token = 't'\nbind_adr = ':1'\n", nil,
			[]want{{2, "bind_adr", "unknown key"}}},
		{"unknown key in log", "token = 't'\n[log]\nlevel = 'info'\ncolour = true\n", nil,
			[]want{{4, "log.colour", "unknown key"}}},
		{"unknown table", "token = 't'\n[admn]\nport = 1\n", nil,
			[]want{{2, "admn", "unknown table"}}},
		{"unknown key in admin", "token = 't'\n[admin]\nport = 1\n", nil,
			[]want{{3, "admin.port", "unknown key"}}},
		{"admin public without token", "token = 't'\n[admin]\naddr = '0.0.0.0:9100'\n", noEnv,
			[]want{{2, "admin.token", "not loopback: the API needs a token"}}},
		{"admin bad addr", "token = 't'\n[admin]\naddr = '9100'\n", nil,
			[]want{{3, "admin.addr", "want host:port"}}},
		{"admin cert without key", "token = 't'\n[admin]\naddr = ':9100'\ncert_file = 'c'\n", nil,
			[]want{{4, "admin.cert_file", "both cert_file and key_file"}}},
		{"unknown key in inline table", "token = 't'\nlog = { level = 'info', colour = true }\n", nil,
			[]want{{2, "log.colour", "unknown key"}}},
		{"key in wrong case", "token = 't'\nBind_Addr = ':1'\n", nil,
			[]want{{2, "Bind_Addr", `did you mean "bind_addr"`}}},
		{"string for int", "token = 't'\nmax_mappings_per_client = \"16\"\n", nil,
			[]want{{2, "max_mappings_per_client", "want an integer, got a string"}}},
		{"string for a limit", "token = 't'\nmax_unauthenticated = \"ten\"\n", nil,
			[]want{{2, "max_unauthenticated", "want an integer, got a string"}}},
		{"limits out of range", "token = 't'\nmax_frame_size = \"1MiB\"\nbad_login_limit = -1\nmax_unauthenticated_per_ip = 0\nbad_login_pause = \"0s\"\n", nil,
			[]want{{2, "max_frame_size", "out of range"}, {3, "bad_login_limit", "0 or more"},
				{4, "max_unauthenticated_per_ip", "1 or more"}, {5, "bad_login_pause", "more than 0"}}},
		{"int for duration", "token = 't'\n\nlogin_timeout = 10\n", nil,
			[]want{{3, "login_timeout", `want a duration string such as "10s", got an integer`}}},
		{"bad duration", "token = 't'\nheartbeat_timeout = \"30 seconds\"\n", nil,
			[]want{{2, "heartbeat_timeout", `bad duration "30 seconds"`}}},
		{"bad size", "token = 't'\n[mux]\nwindow_size = \"1MB/s\"\n", nil,
			[]want{{3, "mux.window_size", `bad size "1MB/s"`}}},
		{"float size", "token = 't'\n[mux]\nwindow_size = 1.5\n", nil,
			[]want{{3, "mux.window_size", "got a float"}}},
		{"window too small", "token = 't'\n[mux]\nwindow_size = \"64KiB\"\n", nil,
			[]want{{3, "mux.window_size", "64KiB is out of range 256KiB..64MiB"}}},
		{"window too large", "token = 't'\nmux.window_size = \"1GiB\"\n", nil,
			[]want{{2, "mux.window_size", "out of range"}}},
		{"buffer out of range", "token = 't'\n[mux]\nbuffer_size = \"2KiB\"\n", nil,
			[]want{{3, "mux.buffer_size", "2KiB is out of range 4KiB..1MiB"}}},
		{"bad port range", "token = 't'\nallow_ports = [\n  \"2222\",\n  \"10-x\",\n]\n", nil,
			[]want{{4, "allow_ports[1]", `bad port range "10-x": "x" is not a port number`}}},
		{"port range backwards", "token = 't'\nallow_ports = [\"20-10\"]\n", nil,
			[]want{{2, "allow_ports[0]", "20 is above 10"}}},
		{"port out of range in range", "token = 't'\nallow_ports = [\"1-70000\"]\n", nil,
			[]want{{2, "allow_ports[0]", "port 70000 is out of range 1..65535"}}},
		{"allow_ports empty", "token = 't'\nallow_ports = []\n", nil,
			[]want{{2, "allow_ports", "is empty"}}},
		{"allow_ports not an array", "token = 't'\nallow_ports = \"1-2\"\n", nil,
			[]want{{2, "allow_ports", "want an array, got a string"}}},
		{"bind_addr port out of range", "token = 't'\nbind_addr = \"0.0.0.0:70000\"\n", nil,
			[]want{{2, "bind_addr", "want a port number 0..65535"}}},
		{"bind_addr without port", "token = 't'\nbind_addr = \"0.0.0.0\"\n", nil,
			[]want{{2, "bind_addr", "want host:port"}}},
		{"bind_addr bad host", "token = 't'\nbind_addr = \"a b:1\"\n", nil,
			[]want{{2, "bind_addr", `"a b" is not an IP address or host name`}}},
		{"public_addr with port", "token = 't'\npublic_addr = \"1.2.3.4:80\"\n", nil,
			[]want{{2, "public_addr", "without a port"}}},
		{"public_addr bad", "token = 't'\npublic_addr = \"a/b\"\n", nil,
			[]want{{2, "public_addr", "not an IP address or host name"}}},
		{"public_addr empty", "token = 't'\npublic_addr = \"\"\n", nil,
			[]want{{2, "public_addr", "empty (required)"}}},
		{"bad log level", "token = 't'\n[log]\nlevel = \"verbose\"\n", nil,
			[]want{{3, "log.level", `bad log level "verbose": want one of debug, info, warn, error`}}},
		{"bad log format", "token = 't'\nlog.format = \"xml\"\n", nil,
			[]want{{2, "log.format", "want one of text, json"}}},
		{"clients: no token of their own", "[[clients]]\nname = 'a'\n", noEnv,
			[]want{{1, "clients[0].token", "missing (required); give token or token_sha256"}}},
		{"clients: both token kinds", "[[clients]]\nname = 'a'\ntoken = 'x1'\ntoken_sha256 = '00'\n", noEnv,
			[]want{{4, "clients[0].token_sha256", "not both"}}},
		{"clients: bad hash", "[[clients]]\nname = 'a'\ntoken_sha256 = 'abc'\n", noEnv,
			[]want{{3, "clients[0].token_sha256", "64 hex digits"}}},
		{"clients: a token twice", "token = 'shared'\n[[clients]]\nname = 'a'\ntoken = 'shared'\n[[clients]]\nname = 'b'\ntoken = 'bb'\n[[clients]]\nname = 'b'\ntoken = 'cc'\n", noEnv,
			[]want{{4, "clients[0].token", "needs its own"}, {9, "clients[2].name", `client "b" is given twice`}}},
		{"clients: bad name and limit", "[[clients]]\nname = 'a b'\ntoken = 'x'\nmax_mappings = -1\n", noEnv,
			[]want{{2, "clients[0].name", "bad name"}, {4, "clients[0].max_mappings", "0 or more"}}},
		{"clients: bad ports", "[[clients]]\nname = 'a'\ntoken = 'x'\nallow_ports = ['30-20']\n", noEnv,
			[]want{{4, "clients[0].allow_ports[0]", "30 is above 20"}}},
		{"missing token", "bind_addr = ':7000'\n", noEnv,
			[]want{{0, "token", "missing (required); set it in the file or GOTUNNEL_TOKEN"}}},
		{"empty token", "token = ''\n", noEnv,
			[]want{{1, "token", "empty (required); set it in the file or GOTUNNEL_TOKEN"}}},
		{"empty GOTUNNEL_TOKEN does not help", "token = ''\n", env(map[string]string{"GOTUNNEL_TOKEN": ""}),
			[]want{{1, "token", "set it in the file or GOTUNNEL_TOKEN"}}},
		{"limits", "token = 't'\nmax_mappings_per_client = 0\nmax_conns_per_mapping = -1\n", nil,
			[]want{{2, "max_mappings_per_client", "must be 1 or more, got 0"}, {3, "max_conns_per_mapping", "must be 0 or more, got -1"}}},
		{"zero timeouts", "token = 't'\nlogin_timeout = '0s'\nstream_open_timeout = '-1s'\nshutdown_timeout = '-1s'\n", nil,
			[]want{{2, "login_timeout", "must be more than 0, got 0s"}, {3, "stream_open_timeout", "more than 0"}, {4, "shutdown_timeout", "0 or more"}}},
		{"check interval not below timeout", "token = 't'\nheartbeat_timeout = '5s'\nheartbeat_check_interval = '5s'\n", nil,
			[]want{{3, "heartbeat_check_interval", "must be less than heartbeat_timeout (5s), got 5s"}}},
		{"zero heartbeat", "token = 't'\nheartbeat_timeout = '0s'\nheartbeat_check_interval = '0s'\n", nil,
			[]want{{2, "heartbeat_timeout", "more than 0"}, {3, "heartbeat_check_interval", "more than 0"}}},
		{"tls without cert_file", "token = 't'\n\n[tls]\nkey_file = 'k'\n", nil,
			[]want{{3, "tls.cert_file", "missing (required); [tls] needs cert_file and key_file"}}},
		{"empty tls table", "token = 't'\n[tls]\n", nil,
			[]want{{2, "tls.cert_file", "missing"}, {2, "tls.key_file", "missing"}}},
		{"tls with empty key_file", "token = 't'\n[tls]\ncert_file = 'c'\nkey_file = ''\n", nil,
			[]want{{4, "tls.key_file", "empty (required)"}}},
		{"syntax error", "token = 't'\nbind_addr = \"0.0.0.0:7000\n", nil,
			[]want{{2, "bind_addr", "syntax error"}}},
		{"syntax error in a table", "token = 't'\n[log]\nlevel = info\n", nil,
			[]want{{3, "log.level", "syntax error"}}},
		{"syntax error without a key", "token = 't'\n[log\n", nil,
			[]want{{2, "", "syntax error"}}},
		{"duplicate key", "token = 't'\nbind_addr = ':1'\nbind_addr = ':2'\n", nil,
			[]want{{3, "bind_addr", "already"}}},
		{"max_bandwidth_per_client below the minimum", "token = 't'\nmax_bandwidth_per_client = '512B'\n", nil,
			[]want{{2, "max_bandwidth_per_client", "must be 0 (no limit) or at least 1KiB a second, got 512"}}},
		{"integer too large", "token = 't'\nmax_conns_per_mapping = 99999999999999999999\n", nil,
			[]want{{2, "max_conns_per_mapping", "too large"}}},
		{"several problems", "bind_adr = ':1'\n[log]\nlevel = 'loud'\n[tls]\ncert_file = 'c'\n", noEnv,
			[]want{
				{1, "bind_adr", "unknown key"},
				{3, "log.level", "bad log level"},
				{4, "tls.key_file", "missing"},
				{0, "token", "missing"},
			}},
		{"ws_path without slash", "token = 't'\nws_path = 'gotunnel'\n", nil,
			[]want{{2, "ws_path", `bad path "gotunnel": must start with "/"`}}},
		{"ws_path empty", "token = 't'\nws_path = ''\n", nil,
			[]want{{2, "ws_path", `is empty; want a path starting with "/", such as "/gotunnel"`}}},
		{"ws_path with query", "token = 't'\nws_path = '/x?a=1'\n", nil,
			[]want{{2, "ws_path", "a query (?) or fragment (#) is not allowed"}}},
		{"ws_path with fragment", "token = 't'\n\nws_path = '/x#y'\n", nil,
			[]want{{3, "ws_path", "a query (?) or fragment (#) is not allowed"}}},
		{"ws_path too long", "token = 't'\nws_path = '/" + strings.Repeat("a", 256) + "'\n", nil,
			[]want{{2, "ws_path", "is 257 bytes long; at most 256"}}},
		{"ws_path not a string", "token = 't'\nws_path = 1\n", nil,
			[]want{{2, "ws_path", "want a string, got an integer"}}},
		{"allow_plain not a bool", "token = 't'\nallow_plain = 'yes'\n", nil,
			[]want{{2, "allow_plain", "want true or false, got a string"}}},
		{"bad trusted proxy", "token = 't'\ntrusted_proxies = [\n  '10.0.0.0/8',\n  'proxy.lan',\n]\n", nil,
			[]want{{4, "trusted_proxies[1]", `bad trusted proxy "proxy.lan": want an IP address or a CIDR`}}},
		{"trusted proxy prefix too long", "token = 't'\ntrusted_proxies = ['10.0.0.0/8', '::1/129', '1.2.3.4/33']\n", nil,
			[]want{{2, "trusted_proxies[1]", `the prefix length "129" is not a number 0..128`},
				{2, "trusted_proxies[2]", `the prefix length "33" is not a number 0..32`}}},
		{"trusted proxy bad length", "token = 't'\ntrusted_proxies = ['10.0.0.0/']\n", nil,
			[]want{{2, "trusted_proxies[0]", `the prefix length "" is not a number`}}},
		{"trusted proxy short mapped prefix", "token = 't'\ntrusted_proxies = ['::ffff:0.0.0.0/95']\n", nil,
			[]want{{2, "trusted_proxies[0]", "needs a length of 96 or more"}}},
		{"trusted proxy with zone", "token = 't'\ntrusted_proxies = ['fe80::1%eth0']\n", nil,
			[]want{{2, "trusted_proxies[0]", "an IPv6 zone (%name) is not allowed"}}},
		{"bad allow_ips entry", "token = 't'\nallow_ips = [\n  '10.0.0.0/8',\n  'office.lan',\n]\n", nil,
			[]want{{4, "allow_ips[1]", `bad IP prefix "office.lan": want an IP address or a CIDR`}}},
		{"deny_ips prefix too long", "token = 't'\n\ndeny_ips = ['1.2.3.4/33']\n", nil,
			[]want{{3, "deny_ips[0]", `bad IP prefix "1.2.3.4/33": the prefix length "33" is not a number 0..32`}}},
		{"deny_ips an integer", "token = 't'\ndeny_ips = [10]\n", nil,
			[]want{{2, "deny_ips[0]", `want an IP address or CIDR string such as "10.0.0.0/8" or "127.0.0.1", got an integer`}}},
		{"allow_ips a string", "token = 't'\nallow_ips = '10.0.0.0/8'\n", nil,
			[]want{{2, "allow_ips", "want an array, got a string"}}},
		{"too many allow_ips", "token = 't'\nallow_ips = [" + strings.Repeat("'10.0.0.1',", 257) + "]\n", nil,
			[]want{{2, "allow_ips", "257 entries; at most 256"}}},
		{"trusted proxy an integer", "token = 't'\ntrusted_proxies = [10]\n", nil,
			[]want{{2, "trusted_proxies[0]", `want an IP address or CIDR string such as "10.0.0.0/8" or "127.0.0.1", got an integer`}}},
		{"trusted_proxies a string", "token = 't'\ntrusted_proxies = '10.0.0.0/8'\n", nil,
			[]want{{2, "trusted_proxies", "want an array, got a string"}}},
		{"accept_proxy_protocol unknown", "token = 't'\ntrusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = 'yes'\n", nil,
			[]want{{3, "accept_proxy_protocol", `bad accept_proxy_protocol "yes": want "bind", "public" or "all", or "" (the default: no PROXY header is read)`}}},
		{"accept_proxy_protocol upper case", "token = 't'\ntrusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = 'ALL'\n", nil,
			[]want{{3, "accept_proxy_protocol", `bad accept_proxy_protocol "ALL"`}}},
		{"accept_proxy_protocol as a boolean", "token = 't'\ntrusted_proxies = ['10.0.0.5']\naccept_proxy_protocol = true\n", nil,
			[]want{{3, "accept_proxy_protocol", "want a string, got a boolean"}}},
		{"accept_proxy_protocol without trusted_proxies", "token = 't'\n\naccept_proxy_protocol = 'public'\n", nil,
			[]want{{3, "accept_proxy_protocol", `is "public", but trusted_proxies is empty: a PROXY header is read only from a trusted proxy`}}},
		{"trusted_proxies wrong case", "token = 't'\nTrusted_Proxies = []\n", nil,
			[]want{{2, "Trusted_Proxies", `did you mean "trusted_proxies"`}}},
		{"several type errors", "token = 't'\nlogin_timeout = 1\nallow_ports = ['x', 'y']\nlog = 'debug'\n", nil,
			[]want{
				{2, "login_timeout", "want a duration"},
				{3, "allow_ports[0]", "bad port range"},
				{3, "allow_ports[1]", "bad port range"},
				{4, "log", "want a table, got a string"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseServer("server.toml", []byte(tt.doc), tt.env)
			if s != nil {
				t.Errorf("ParseServer(%q) = %+v, want nil with errors", tt.doc, s)
			}
			checkErrors(t, fmt.Sprintf("ParseServer(%q)", tt.doc), err, "server.toml", tt.wants)
		})
	}
}

func TestServerTokenFromEnv(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		env  Env
		want string
	}{
		{"env overrides file", "token = 'file'\n", env(map[string]string{"GOTUNNEL_TOKEN": "env"}), "env"},
		{"env fills missing", "", env(map[string]string{"GOTUNNEL_TOKEN": "env"}), "env"},
		{"env fills empty", "token = ''\n", env(map[string]string{"GOTUNNEL_TOKEN": "env"}), "env"},
		{"empty env ignored", "token = 'file'\n", env(map[string]string{"GOTUNNEL_TOKEN": ""}), "file"},
		{"other vars ignored", "token = 'file'\n", env(map[string]string{"TOKEN": "x"}), "file"},
		{"nil env", "token = 'file'\n", nil, "file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseServer("server.toml", []byte(tt.doc), tt.env)
			if err != nil {
				t.Fatalf("ParseServer(%q) = %v, want no error", tt.doc, err)
			}
			if s.Token != tt.want {
				t.Errorf("ParseServer(%q).Token = %q, want %q", tt.doc, s.Token, tt.want)
			}
		})
	}
}

func TestServerValidate(t *testing.T) {
	s := DefaultServer()
	if err := s.Validate(); err == nil {
		t.Fatalf("DefaultServer().Validate() = nil, want a missing token")
	}
	s.Token = "t"
	if err := s.Validate(); err != nil {
		t.Fatalf("DefaultServer()+token .Validate() = %v, want nil", err)
	}
	s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() with trusted_proxies = %v, want nil", err)
	}
	s.AllowPorts = []PortRange{{0, 10}, {5, 4}, {1, 70000}}
	s.TLS = &ServerTLS{CertFile: "c"}
	s.WSPath = ""
	s.TrustedProxies = append(s.TrustedProxies, netip.Prefix{})
	err := s.Validate()
	checkErrors(t, "Validate()", err, "", []want{
		{0, "allow_ports[0]", "bad port range 0-10"},
		{0, "allow_ports[1]", "bad port range 5-4"},
		{0, "allow_ports[2]", "bad port range 1-70000"},
		{0, "tls.key_file", "missing (required)"},
		{0, "ws_path", "is empty"},
		{0, "trusted_proxies[1]", "not a valid IP prefix"},
	})
}

func TestLoadServerMissingFile(t *testing.T) {
	_, err := LoadServer("testdata/nope.toml", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadServer(nope) = %v, want fs.ErrNotExist", err)
	}
	checkErrors(t, "LoadServer(nope)", err, "testdata/nope.toml", []want{{0, "", "cannot read: no such file or directory"}})
}
