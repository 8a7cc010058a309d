package main

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gotunnel-mux/gotunnel-mux/config"
	"github.com/gotunnel-mux/gotunnel-mux/control"
	"github.com/gotunnel-mux/gotunnel-mux/control/client"
	"github.com/gotunnel-mux/gotunnel-mux/control/server"
	"github.com/gotunnel-mux/gotunnel-mux/control/server/fleet"
)

// Each default lives in the engine package's Options (WithDefaults); config
// writes the same values down for its checks and for `gotunnel-mux check`.
// These tests hold the two together: a default changed in one place only,
// a key whose 0 means something else in the file than in the Options, or a
// new key that never reaches the Options fails here.

// defaultServer is config's default server file, with what a file must
// add.
func defaultServer() *config.Server {
	s := config.DefaultServer()
	s.Token = "secret"
	return &s
}

// defaultClient is config's default client file, with what a file must
// add.
func defaultClient() *config.Client {
	c := config.DefaultClient()
	c.ServerAddr, c.Token = "127.0.0.1:7000", "secret"
	return &c
}

// TestServerDefaultsAgree: config's defaults, turned into options, are the
// engine's own defaults.
func TestServerDefaultsAgree(t *testing.T) {
	got := serverOptions(defaultServer(), nil).WithDefaults()
	want := server.Options{Token: "secret"}.WithDefaults()
	compareOptions(t, "server", got, want)
}

// TestClientDefaultsAgree is TestServerDefaultsAgree for the client.
func TestClientDefaultsAgree(t *testing.T) {
	cfg := defaultClient()
	got := clientOptions(cfg, nil).WithDefaults()
	want := client.Options{ServerAddr: "127.0.0.1:7000", Token: "secret", Name: cfg.Name, Mappings: []client.Mapping{}}.WithDefaults()
	compareOptions(t, "client", got, want)
}

// compareOptions reports every field of got and want (two Options structs)
// that differs, by its path; loggers are left out.
func compareOptions(t *testing.T, side string, got, want any) {
	t.Helper()
	for _, d := range diff("", reflect.ValueOf(got), reflect.ValueOf(want)) {
		t.Errorf("%s: %s", side, d)
	}
}

func diff(path string, a, b reflect.Value) []string {
	if a.Kind() == reflect.Struct {
		var out []string
		for i := range a.NumField() {
			f := a.Type().Field(i)
			if f.Type.String() == "*slog.Logger" || !f.IsExported() {
				continue
			}
			out = append(out, diff(strings.TrimPrefix(path+"."+f.Name, "."), a.Field(i), b.Field(i))...)
		}
		return out
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return []string{fmt.Sprintf("%s: the config default gives %v, the engine's default is %v", path, a.Interface(), b.Interface())}
	}
	return nil
}

// TestFileZeroIsNone: where a file's 0 means none, the engine gets none,
// not its default.
func TestFileZeroIsNone(t *testing.T) {
	for _, tc := range []struct {
		key  string
		set  func(*config.Server, *config.Client)
		none func(server.Options, client.Options) bool
	}{
		{"server shutdown_timeout", func(s *config.Server, _ *config.Client) { s.ShutdownTimeout = 0 },
			func(s server.Options, _ client.Options) bool { return s.ShutdownTimeout < 0 }},
		{"client shutdown_timeout", func(_ *config.Server, c *config.Client) { c.ShutdownTimeout = 0 },
			func(_ server.Options, c client.Options) bool { return c.ShutdownTimeout < 0 }},
		{"bad_login_limit", func(s *config.Server, _ *config.Client) { s.BadLoginLimit = 0 },
			func(s server.Options, _ client.Options) bool { return s.BadLoginLimit < 0 }},
		{"max_stray_streams", func(s *config.Server, _ *config.Client) { s.MaxStrayStreams = 0 },
			func(s server.Options, _ client.Options) bool { return s.Mux.MaxStrayStreams < 0 }},
		{"max_conns_per_mapping", func(s *config.Server, _ *config.Client) { s.MaxConnsPerMapping = 0 },
			func(s server.Options, _ client.Options) bool { return s.MaxConnsPerMapping == 0 }},
		{"max_bandwidth_per_client", func(s *config.Server, _ *config.Client) { s.MaxBandwidthPerClient = 0 },
			func(s server.Options, _ client.Options) bool { return s.MaxBandwidthPerClient == 0 }},
		{"reconnect.max_retries", func(_ *config.Server, c *config.Client) { c.Reconnect.MaxRetries = 0 },
			func(_ server.Options, c client.Options) bool { return c.Reconnect.MaxRetries == 0 }},
		{"reconnect.jitter", func(_ *config.Server, c *config.Client) { c.Reconnect.Jitter = false },
			func(_ server.Options, c client.Options) bool { return c.Reconnect.NoJitter }},
	} {
		s, c := defaultServer(), defaultClient()
		tc.set(s, c)
		so := serverOptions(s, nil).WithDefaults()
		co := clientOptions(c, nil).WithDefaults()
		if !tc.none(so, co) {
			t.Errorf("%s = 0 in the file: the engine does not get none", tc.key)
		}
	}
}

// fileOnly are the keys that never reach an engine's Options, and why.
var fileOnly = map[string]string{
	"Path":       "the file's name, for messages",
	"BindAddr":   "package main listens on it",
	"TLS":        "serverTLS and clientTLS build the *tls.Config",
	"Log":        "package main builds the logger",
	"ProxyURL":   "clientProxy resolves it with the environment",
	"ServerAddr": "checked by TestEveryKeyReachesOptions' own case",
	"Mappings":   "checked by TestMappingReachesOptions",
	"Admin":      "package main serves the admin API (adminapi.go)",
	"Clients":    "checked by TestClientsReachOptions",
	// an enum that bump's "x" would make invalid
	"AcceptProxyProtocol": "checked by TestAcceptProxyReachesOptions",
	"Cluster":             "checked by TestClusterReachesOptions",
}

// TestAcceptProxyReachesOptions: each value of accept_proxy_protocol
// reaches the server's two switches.
func TestAcceptProxyReachesOptions(t *testing.T) {
	for v, want := range map[string][2]bool{"": {false, false}, "bind": {true, false}, "public": {false, true}, "all": {true, true}} {
		s := defaultServer()
		s.AcceptProxyProtocol = v
		if o := serverOptions(s, nil); o.AcceptProxyBind != want[0] || o.AcceptProxyPublic != want[1] {
			t.Errorf("accept_proxy_protocol %q gave bind %v, public %v; want %v", v, o.AcceptProxyBind, o.AcceptProxyPublic, want)
		}
	}
}

// TestClusterReachesOptions: [cluster]'s defaults are the fleet's own
// (the lease's is heartbeat_timeout, 30s, as the fleet's), and each of
// its keys reaches fleet.Options (the TLS files through etcdTLS).
func TestClusterReachesOptions(t *testing.T) {
	parse := func(table string) *config.Cluster {
		t.Helper()
		s, err := config.ParseServer("server.toml", []byte("bind_addr = \"127.0.0.1:7000\"\ntoken = \"secret\"\n[cluster]\n"+table), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s.Cluster
	}
	cl := parse("etcd_endpoints = [\"http://127.0.0.1:2379\"]\nname = \"a\"\npublic_host = \"a.example.com\"\n")
	got := fleetOptions(cl, nil).WithDefaults()
	want := fleet.Options{Endpoints: cl.EtcdEndpoints, Name: "a", PublicHost: "a.example.com"}.WithDefaults()
	compareOptions(t, "cluster", got, want)
	base := fleetOptions(cl, nil)
	for _, path := range leaves(reflect.TypeFor[config.Cluster](), "") {
		if strings.HasSuffix(path, "File") {
			continue // read by etcdTLS
		}
		c := *cl
		c.EtcdEndpoints = slices.Clone(cl.EtcdEndpoints)
		bump(t, reflect.ValueOf(&c).Elem(), path)
		if reflect.DeepEqual(fleetOptions(&c, nil), base) {
			t.Errorf("cluster key %s changed, the options did not", path)
		}
	}
}

// TestClientsReachOptions: each [[clients]] key reaches its Credential,
// the token as its hash either way.
func TestClientsReachOptions(t *testing.T) {
	s := defaultServer()
	s.Clients = []config.ClientCredential{
		{Name: "a", Token: "tok-a", AllowPorts: []config.PortRange{{Lo: 10, Hi: 20}}, MaxMappings: 3},
		{Name: "b", TokenSHA256: "c8ac4f1ba9d6e1e3f5c9c80d1a5b5e8a0c3d6f2e9b7a4c1d8e5f2a3b6c9d0e1f"},
	}
	got := serverOptions(s, nil).Clients
	want := []server.Credential{
		{Name: "a", TokenSHA256: sha256.Sum256([]byte("tok-a")), AllowPorts: []server.PortRange{{Lo: 10, Hi: 20}}, MaxMappings: 3},
		{Name: "b", TokenSHA256: [32]byte{0xc8, 0xac, 0x4f, 0x1b, 0xa9, 0xd6, 0xe1, 0xe3, 0xf5, 0xc9, 0xc8, 0x0d, 0x1a, 0x5b, 0x5e, 0x8a,
			0x0c, 0x3d, 0x6f, 0x2e, 0x9b, 0x7a, 0x4c, 0x1d, 0x8e, 0x5f, 0x2a, 0x3b, 0x6c, 0x9d, 0x0e, 0x1f}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Clients = %+v, want %+v", got, want)
	}
}

// TestEveryKeyReachesOptions changes each key of the default files in turn
// and checks that the options change: a key that package main forgets to
// pass on fails here.
func TestEveryKeyReachesOptions(t *testing.T) {
	base := serverOptions(defaultServer(), nil)
	for _, path := range leaves(reflect.TypeFor[config.Server](), "") {
		s := defaultServer()
		bump(t, reflect.ValueOf(s).Elem(), path)
		if reflect.DeepEqual(serverOptions(s, nil), base) {
			t.Errorf("server key %s changed, the options did not", path)
		}
	}
	cbase := clientOptions(defaultClient(), nil)
	for _, path := range leaves(reflect.TypeFor[config.Client](), "") {
		c := defaultClient()
		bump(t, reflect.ValueOf(c).Elem(), path)
		if reflect.DeepEqual(clientOptions(c, nil), cbase) {
			t.Errorf("client key %s changed, the options did not", path)
		}
	}
	c := defaultClient()
	c.ServerAddr = "wss://tunnel.example.com:443/x"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if o := clientOptions(c, nil); o.ServerAddr != "tunnel.example.com:443" || o.Transport != "wss" || o.WSPath != "/x" {
		t.Errorf("server_addr %s gave %s %s %s", c.ServerAddr, o.Transport, o.ServerAddr, o.WSPath)
	}
}

// TestMappingReachesOptions: every key of a mapping reaches its Mapping.
func TestMappingReachesOptions(t *testing.T) {
	on := false
	c := defaultClient()
	allow, deny := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, []netip.Prefix{netip.MustParsePrefix("203.0.113.66/32")}
	c.Mappings = []config.Mapping{{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, HealthCheck: &on, ProxyProtocol: "v2", AllowIPs: allow, DenyIPs: deny,
		BandwidthLimit: 10 << 20}, {Name: "dns", LocalAddr: "127.0.0.1:53", RemotePort: 5353, HealthCheck: &on, Protocol: config.ProtocolUDP, UDPIdleTimeout: config.Duration(time.Minute)}}
	got := clientOptions(c, nil).Mappings
	want := []client.Mapping{{Name: "ssh", LocalAddr: "127.0.0.1:22", RemotePort: 10022, HealthCheck: false, ProxyProtocol: client.ProxyProtocolV2, AllowIPs: allow, DenyIPs: deny,
		BandwidthLimit: 10 << 20}, {Name: "dns", LocalAddr: "127.0.0.1:53", RemotePort: 5353, UDP: true, UDPIdleTimeout: time.Minute}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mapping %+v gave %+v, want %+v", c.Mappings[0], got, want)
	}
	if n := reflect.TypeFor[config.Mapping]().NumField(); n != 10 {
		t.Errorf("config.Mapping has %d fields; pass the new one on in clientOptions and add it here", n)
	}
}

// leaves lists the dotted paths of t's settable leaf fields, embedded
// structs flattened, fileOnly left out.
func leaves(t reflect.Type, prefix string) []string {
	var out []string
	for _, f := range reflect.VisibleFields(t) {
		_, skip := fileOnly[f.Name]
		switch {
		case f.Anonymous, skip && prefix == "":
		case f.Type.Kind() == reflect.Struct:
			out = append(out, leaves(f.Type, prefix+f.Name+".")...)
		default:
			out = append(out, prefix+f.Name)
		}
	}
	return out
}

// bump changes the field at path in v to another valid value.
func bump(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	for _, name := range strings.Split(path, ".") {
		v = v.FieldByName(name)
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 0.5)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Slice:
		switch v.Type().Elem() {
		case reflect.TypeFor[config.PortRange]():
			v.Set(reflect.Append(v, reflect.ValueOf(config.PortRange{Lo: 2000, Hi: 2001})))
		case reflect.TypeFor[netip.Prefix]():
			v.Set(reflect.Append(v, reflect.ValueOf(netip.MustParsePrefix("10.0.0.0/8"))))
		case reflect.TypeFor[string](): // server_addrs
			v.Set(reflect.Append(v, reflect.ValueOf("127.0.0.9:7000")))
		default:
			t.Fatalf("key %s: a slice of %s; teach bump to change it", path, v.Type().Elem())
		}
	default:
		t.Fatalf("key %s: a %s; teach bump to change it", path, v.Kind())
	}
}

// TestNameRuleAgrees: config accepts exactly the client and mapping names
// that the wire format does (control.ValidName); the rule is written in
// both, since config imports neither control nor the engines.
func TestNameRuleAgrees(t *testing.T) {
	for _, name := range []string{
		"a", "web-1", "db_2.prod", "A.Z", strings.Repeat("n", 64), strings.Repeat("n", 65),
		"", "two words", "ünï", "tab\t", "semi;colon", "slash/x", "colon:x", "at@x", "plus+x", "bang!",
	} {
		c := defaultClient()
		c.Name = name
		c.Mappings = []config.Mapping{{Name: name, LocalAddr: "127.0.0.1:22"}}
		if ok := c.Validate() == nil; ok != control.ValidName(name) {
			t.Errorf("name %q: config accepts it = %v, control.ValidName = %v", name, ok, !ok)
		}
	}
}

// TestProxyProtocolRuleAgrees: config accepts exactly the proxy_protocol
// values that the client engine does (config imports no engine, so the
// values are written in both).
func TestProxyProtocolRuleAgrees(t *testing.T) {
	for _, v := range []string{"", config.ProxyProtocolV1, config.ProxyProtocolV2, "V1", "v3", "1", "2", " v1", "on", "off"} {
		c := defaultClient()
		c.Mappings = []config.Mapping{{Name: "web", LocalAddr: "127.0.0.1:80", ProxyProtocol: v}}
		fileOK := c.Validate() == nil
		_, err := client.New(client.Options{ServerAddr: "127.0.0.1:7000", Token: "t", Name: "n",
			Mappings: []client.Mapping{{Name: "web", LocalAddr: "127.0.0.1:80", ProxyProtocol: client.ProxyProtocol(v)}}})
		engineOK := err == nil
		if fileOK != engineOK {
			t.Errorf("proxy_protocol %q: config accepts it = %v, the client engine = %v", v, fileOK, engineOK)
		}
	}
}
