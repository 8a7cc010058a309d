package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Reconnect is the client's [reconnect] table: exponential backoff between
// attempts to reach the server.
type Reconnect struct {
	Min        Duration `toml:"min"`         // first wait, > 0
	Max        Duration `toml:"max"`         // longest wait, >= Min
	Factor     float64  `toml:"factor"`      // growth per attempt, >= 1
	Jitter     bool     `toml:"jitter"`      // randomise each wait
	MaxRetries int      `toml:"max_retries"` // 0: retry forever
}

// Health is the client's [health] table: the probe of each local_addr.
type Health struct {
	Interval Duration `toml:"interval"` // time between probes, > 0
	Timeout  Duration `toml:"timeout"`  // dial timeout of one probe, > 0
	Failures int      `toml:"failures"` // consecutive failures before offline, >= 1
}

// ClientTLS is the client's [tls] table. When the table is present, Enabled
// defaults to true.
type ClientTLS struct {
	Enabled            bool   `toml:"enabled"`              // dial the server with TLS
	CAFile             string `toml:"ca_file"`              // "": system roots
	ServerName         string `toml:"server_name"`          // "": host of server_addr
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"` // trust any certificate
	CertFile           string `toml:"cert_file"`            // client certificate for mTLS; with KeyFile
	KeyFile            string `toml:"key_file"`             // its key; with CertFile
}

// Mapping is one [[mappings]] entry: visitors of the server's RemotePort
// reach LocalAddr on the client's side.
type Mapping struct {
	Name        string `toml:"name"`         // default "tcp-<port of local_addr>"; unique
	LocalAddr   string `toml:"local_addr"`   // host:port the client dials
	RemotePort  int    `toml:"remote_port"`  // 0: the server picks a port
	HealthCheck *bool  `toml:"health_check"` // default true; never nil after Load or Validate
	// ProxyProtocol is "v1" or "v2": each connection to LocalAddr starts
	// with a PROXY protocol header naming the visitor. "" (default): none.
	ProxyProtocol string `toml:"proxy_protocol"`
	// AllowIPs and DenyIPs are the mapping's visitor lists (allow_ips,
	// deny_ips), read as the server's trusted_proxies are: CIDRs or
	// single IPs. The server lets a visitor through when it passes its
	// own lists and these; a server too old to enforce them is not sent
	// the mapping (docs/security.md). At most MaxIPPrefixes each.
	AllowIPs []netip.Prefix `toml:"-"`
	DenyIPs  []netip.Prefix `toml:"-"`
	// BandwidthLimit is the mapping's limit in bytes a second, each
	// direction, shared by all its visitors (bandwidth_limit, e.g.
	// "10MiB"): 0 (default) none, else at least MinBandwidth.
	BandwidthLimit Size `toml:"bandwidth_limit"`
	// Protocol is "tcp" (the default) or "udp": a UDP mapping serves
	// datagrams on the server's UDP remote_port, one flow per visitor
	// address, and relays them to LocalAddr over UDP.
	Protocol string `toml:"protocol"`
	// UDPIdleTimeout ends a UDP mapping's flow after this long without a
	// datagram either way (udp_idle_timeout); default 60s, UDP only.
	UDPIdleTimeout Duration `toml:"udp_idle_timeout"`
}

// The values of a mapping's protocol.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// DefaultUDPIdleTimeout is a UDP mapping's udp_idle_timeout when it sets
// none.
const DefaultUDPIdleTimeout = Duration(60 * time.Second)

// MaxUDPIdleTimeout is the largest udp_idle_timeout: a day.
const MaxUDPIdleTimeout = Duration(24 * time.Hour)

// clientFile is what a client file decodes into: the Client, with each
// mapping's allow_ips and deny_ips in a type that reads a single IP as
// well as a CIDR.
type clientFile struct {
	Client
	Mappings []mappingFile `toml:"mappings"`
}

type mappingFile struct {
	Mapping
	AllowIPs []ipPrefix `toml:"allow_ips"`
	DenyIPs  []ipPrefix `toml:"deny_ips"`
}

// Client is the configuration of `gotunnel-mux client`: client.toml, or
// quick-mode flags.
type Client struct {
	Path              string     `toml:"-"`                  // file it came from ("" if none)
	ServerAddr        string     `toml:"server_addr"`        // host:port or a tcp, tls, ws or wss URL, required unless ServerAddrs; see ParseEndpoint
	ServerAddrs       []string   `toml:"server_addrs"`       // several servers, each as server_addr; see HA
	HA                string     `toml:"ha"`                 // with ServerAddrs: HAFailover (default) or HAAll
	Token             string     `toml:"token"`              // required (or GOTUNNEL_TOKEN)
	ProxyURL          string     `toml:"proxy_url"`          // http:// or socks5:// proxy; "": from the environment; "none": never; see Proxy
	Name              string     `toml:"name"`               // the client's identity on the server
	HeartbeatInterval Duration   `toml:"heartbeat_interval"` // ping period, < HeartbeatTimeout
	HeartbeatTimeout  Duration   `toml:"heartbeat_timeout"`  // nothing read this long: reconnect
	DialTimeout       Duration   `toml:"dial_timeout"`       // TCP dial, to the server and to local services
	HandshakeTimeout  Duration   `toml:"handshake_timeout"`  // TLS + login_resp, and each register_resp
	ShutdownTimeout   Duration   `toml:"shutdown_timeout"`   // grace for live visitors on SIGTERM; 0 stops at once
	Reconnect         Reconnect  `toml:"reconnect"`
	Health            Health     `toml:"health"`
	TLS               *ClientTLS `toml:"tls"` // nil: plain TCP, unless server_addr is tls:// or wss://
	Log               Log        `toml:"log"`
	Mux               Mux        `toml:"mux"`
	Admin             Admin      `toml:"admin"`
	Mappings          []Mapping  `toml:"mappings"`
}

// DefaultClient returns a Client with every default applied and no
// mappings, server address or token.
func DefaultClient() Client {
	return Client{
		Name:              defaultClientName(),
		HeartbeatInterval: Duration(10 * time.Second),
		HeartbeatTimeout:  Duration(30 * time.Second),
		DialTimeout:       Duration(5 * time.Second),
		HandshakeTimeout:  Duration(10 * time.Second),
		ShutdownTimeout:   Duration(10 * time.Second),
		Reconnect: Reconnect{
			Min:    Duration(time.Second),
			Max:    Duration(16 * time.Second),
			Factor: 2,
			Jitter: true,
		},
		Health: Health{
			Interval: Duration(30 * time.Second),
			Timeout:  Duration(3 * time.Second),
			Failures: 3,
		},
		Log: defaultLog(),
		Mux: defaultMux(),
	}
}

// defaultClientName is the host name, with characters a name may not hold
// replaced by '-' and cut to 64 bytes; "client" when there is none.
func defaultClientName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "client"
	}
	h = strings.Map(func(r rune) rune {
		if r < 128 && allOf(string(r), "._-") {
			return r
		}
		return '-'
	}, h)
	return h[:min(len(h), 64)]
}

// LoadClient reads the client file at path; see ParseClient.
func LoadClient(path string, env Env) (*Client, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseClient(path, data, env)
}

// ParseClient decodes a client file strictly over DefaultClient, lets
// GOTUNNEL_TOKEN from env override token, applies the per-mapping
// defaults and validates the result. name is the file name used in
// messages and stored in Path. The error, if any, is an Errors holding
// every problem found.
func ParseClient(name string, data []byte, env Env) (*Client, error) {
	f := clientFile{Client: DefaultClient()}
	f.Path = name
	pos, errs, complete := decode(name, data, &f)
	if !complete {
		return nil, errs.err()
	}
	c := f.Client
	if f.Mappings != nil {
		c.Mappings = make([]Mapping, 0, len(f.Mappings))
	}
	for _, m := range f.Mappings {
		m.Mapping.AllowIPs, m.Mapping.DenyIPs = toPrefixes(m.AllowIPs), toPrefixes(m.DenyIPs)
		c.Mappings = append(c.Mappings, m.Mapping)
	}
	if c.TLS != nil && !pos.has("tls.enabled") {
		c.TLS.Enabled = true
	}
	c.Token = tokenFromEnv(env, c.Token)
	c.Admin.Token = adminTokenFromEnv(env, c.Admin.Token)
	errs = append(errs, c.check(pos)...)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks a Client built or changed in code, such as quick mode's
// DefaultClient plus flags, and applies the per-mapping defaults (name,
// health_check). Errors name c.Path, without lines.
func (c *Client) Validate() error {
	return c.check(nil).err()
}

// check applies the per-mapping defaults and returns every problem with c,
// at the lines pos gives.
func (c *Client) check(pos *positions) Errors {
	ck := &checker{file: c.Path, pos: pos}
	c.checkServers(ck)
	if c.Token == "" {
		ck.missing("token", "", tokenHint)
	}
	c.checkProxy(ck)
	ck.name("name", c.Name)
	ck.positive("heartbeat_interval", c.HeartbeatInterval)
	ck.positive("heartbeat_timeout", c.HeartbeatTimeout)
	if c.HeartbeatInterval > 0 && c.HeartbeatInterval >= c.HeartbeatTimeout {
		ck.add("heartbeat_interval", "must be less than heartbeat_timeout (%s), got %s",
			c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	ck.positive("dial_timeout", c.DialTimeout)
	ck.positive("handshake_timeout", c.HandshakeTimeout)
	if c.ShutdownTimeout < 0 {
		ck.add("shutdown_timeout", "must be 0 or more, got %s", c.ShutdownTimeout)
	}
	c.Reconnect.check(ck)
	c.Health.check(ck)
	if c.TLS != nil {
		c.TLS.check(ck)
	}
	c.Log.check(ck)
	c.Mux.check(ck)
	c.Admin.check(ck)
	c.checkMappings(ck)
	return ck.errs
}

// The values of ha: how a client uses several servers.
const (
	HAFailover = "failover" // one session at a time, in order (the default)
	HAAll      = "all"      // a session with each server at once
)

// checkServers checks server_addr, or server_addrs and ha: each address
// as ParseEndpoint wants it, none twice, and all TLS or all plain (they
// share [tls]).
func (c *Client) checkServers(ck *checker) {
	switch {
	case c.ServerAddr != "" && len(c.ServerAddrs) > 0:
		ck.add("server_addrs", "set server_addr or server_addrs, not both")
		return
	case c.ServerAddr == "" && len(c.ServerAddrs) == 0:
		if ck.pos.has("server_addrs") {
			ck.add("server_addrs", `is empty; list one server or more, e.g. ["tunnel-a.example.com:7000", "tunnel-b.example.com:7000"]`)
		} else {
			ck.missing("server_addr", "", `set it, e.g. "tunnel.example.com:7000"`)
		}
		return
	case c.ServerAddr != "":
		if _, err := ParseEndpoint(c.ServerAddr, c.TLS != nil && c.TLS.Enabled); err != nil {
			ck.add("server_addr", "%s", err)
		}
	}
	seen := map[string]int{}
	tlsAt := -1 // the first server that is TLS, or -2 once one is plain
	for i, a := range c.ServerAddrs {
		key := "server_addrs" + index(i)
		e, err := ParseEndpoint(a, c.TLS != nil && c.TLS.Enabled)
		if err != nil {
			ck.add(key, "%s", err)
			continue
		}
		if j, dup := seen[e.Host]; dup {
			ck.add(key, "server %s is also server_addrs%s", e.Host, index(j))
		}
		seen[e.Host] = i
		switch tls := e.Scheme == "tls" || e.Scheme == "wss"; {
		case i == 0 && tls:
			tlsAt = 0
		case i == 0:
			tlsAt = -2
		case tls != (tlsAt == 0):
			ck.add(key, "%s and server_addrs[0] (%s): one is TLS and the other plain; they share [tls], so make them all TLS or all plain", a, c.ServerAddrs[0])
		}
	}
	if c.HA != "" {
		ck.oneOf("ha", "ha", c.HA, HAFailover, HAAll)
	}
}

// Servers are the client's validated endpoints: server_addr, or each of
// server_addrs in order (call after Load/Validate succeeded).
func (c *Client) Servers() []Endpoint {
	addrs := c.ServerAddrs
	if len(addrs) == 0 {
		addrs = []string{c.ServerAddr}
	}
	out := make([]Endpoint, 0, len(addrs))
	for _, a := range addrs {
		e, _ := ParseEndpoint(a, c.TLS != nil && c.TLS.Enabled)
		out = append(out, e)
	}
	return out
}

// check checks the [reconnect] table.
func (r Reconnect) check(c *checker) {
	c.positive("reconnect.min", r.Min)
	if r.Max < r.Min {
		c.add("reconnect.max", "must be at least reconnect.min (%s), got %s", r.Min, r.Max)
	}
	if r.Factor < 1 {
		c.add("reconnect.factor", "must be 1 or more, got %g", r.Factor)
	}
	c.atLeast("reconnect.max_retries", r.MaxRetries, 0)
}

// check checks the [health] table.
func (h Health) check(c *checker) {
	c.positive("health.interval", h.Interval)
	c.positive("health.timeout", h.Timeout)
	c.atLeast("health.failures", h.Failures, 1)
}

// check checks the client's [tls] table.
func (t *ClientTLS) check(c *checker) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		c.missing("tls.key_file", "tls", "cert_file needs key_file")
	case t.CertFile == "" && t.KeyFile != "":
		c.missing("tls.cert_file", "tls", "key_file needs cert_file")
	}
}

// checkMappings applies each mapping's defaults and checks it, and that no
// two mappings share a name or a remote port.
func (c *Client) checkMappings(ck *checker) {
	names := map[string]int{}
	type protoPort struct {
		proto string
		port  int
	}
	ports := map[protoPort]int{}
	for i := range c.Mappings {
		m := &c.Mappings[i]
		key := "mappings" + index(i)
		named := m.Name != ""
		m.applyDefaults()
		m.check(ck, key)
		if j, dup := names[m.Name]; dup && m.Name != "" {
			ck.addAt(ck.lineIn(key+".name", key), key+".name", duplicateName(m.Name, j, named))
		} else {
			names[m.Name] = i
		}
		pp := protoPort{m.Protocol, m.RemotePort}
		if j, dup := ports[pp]; dup && m.RemotePort != 0 {
			ck.add(key+".remote_port", "%s port %d is also the remote_port of mappings%s", m.Protocol, m.RemotePort, index(j))
		} else {
			ports[pp] = i
		}
	}
}

// duplicateName says that a mapping's name is also mappings[j]'s; named
// tells a name set in the file from a default one.
func duplicateName(name string, j int, named bool) string {
	if named {
		return fmt.Sprintf("duplicate name %q (also mappings%s); names must be unique", name, index(j))
	}
	return fmt.Sprintf("duplicate name %q, the default from local_addr (also mappings%s); set name to tell them apart", name, index(j))
}

// applyDefaults fills in the protocol ("tcp"), the name (the protocol, a
// '-' and the port of local_addr: "tcp-22", "udp-53"), health_check (true
// for TCP; a UDP service cannot be probed, so false) and a UDP mapping's
// udp_idle_timeout (60s).
func (m *Mapping) applyDefaults() {
	if m.Protocol == "" {
		m.Protocol = ProtocolTCP
	}
	if m.Name == "" {
		if _, port, err := net.SplitHostPort(m.LocalAddr); err == nil && port != "" && validName(m.Protocol) {
			m.Name = m.Protocol + "-" + port
		}
	}
	if m.HealthCheck == nil {
		on := m.Protocol != ProtocolUDP
		m.HealthCheck = &on
	}
	if m.Protocol == ProtocolUDP && m.UDPIdleTimeout == 0 {
		m.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
}

// check checks one mapping; key is its path, "mappings[1]".
func (m *Mapping) check(ck *checker, key string) {
	if m.LocalAddr == "" {
		ck.missing(key+".local_addr", key, `set it, e.g. "127.0.0.1:22"`)
	} else {
		ck.hostPort(key+".local_addr", m.LocalAddr, false, 1)
	}
	if m.Name != "" || ck.pos.has(key+".name") {
		ck.name(key+".name", m.Name)
	}
	ck.port(key+".remote_port", m.RemotePort, 0)
	if p := m.ProxyProtocol; p != "" && p != ProxyProtocolV1 && p != ProxyProtocolV2 {
		ck.add(key+".proxy_protocol", "bad proxy_protocol %q: want %q or %q, or \"\" (the default: no PROXY header)", p, ProxyProtocolV1, ProxyProtocolV2)
	}
	ck.ipPrefixes(key+".allow_ips", m.AllowIPs)
	ck.ipPrefixes(key+".deny_ips", m.DenyIPs)
	ck.bandwidth(key+".bandwidth_limit", m.BandwidthLimit)
	m.checkUDP(ck, key)
}

// checkUDP checks protocol and the keys that depend on it: a UDP
// service cannot be health-checked, and the PROXY header of a UDP flow
// exists in version 2 only.
func (m *Mapping) checkUDP(ck *checker, key string) {
	switch m.Protocol {
	case ProtocolTCP:
		if m.UDPIdleTimeout != 0 {
			ck.add(key+".udp_idle_timeout", "only for protocol = %q; this mapping is %q", ProtocolUDP, ProtocolTCP)
		}
	case ProtocolUDP:
		if *m.HealthCheck {
			ck.add(key+".health_check", "a UDP service cannot be probed: set false or leave it out for protocol = %q", ProtocolUDP)
		}
		if m.ProxyProtocol == ProxyProtocolV1 {
			ck.add(key+".proxy_protocol", "version 1 has no UDP form: want %q for protocol = %q", ProxyProtocolV2, ProtocolUDP)
		}
		if m.UDPIdleTimeout < Duration(time.Second) || m.UDPIdleTimeout > MaxUDPIdleTimeout {
			ck.add(key+".udp_idle_timeout", "want 1s to %s, got %s", MaxUDPIdleTimeout, m.UDPIdleTimeout)
		}
	default:
		ck.add(key+".protocol", "bad protocol %q: want %q (the default) or %q", m.Protocol, ProtocolTCP, ProtocolUDP)
	}
}

// The values of a mapping's proxy_protocol; leaving it out is off.
const (
	ProxyProtocolV1 = "v1"
	ProxyProtocolV2 = "v2"
)
