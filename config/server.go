package config

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
	"time"
)

// ServerTLS is the server's [tls] table. When it is present, cert_file and
// key_file are required; client_ca_file, when set, makes the server require
// client certificates (mTLS). The files are not opened here.
type ServerTLS struct {
	CertFile     string `toml:"cert_file"`
	KeyFile      string `toml:"key_file"`
	ClientCAFile string `toml:"client_ca_file"`
}

// Server is the configuration of `gotunnel-mux server`: server.toml.
type Server struct {
	Path                   string      `toml:"-"`                         // file it came from ("" if none)
	BindAddr               string      `toml:"bind_addr"`                 // host:port clients dial; port 0 picks one
	Token                  string      `toml:"token"`                     // required (or GOTUNNEL_TOKEN)
	PublicAddr             string      `toml:"public_addr"`               // IP or host the mapping listeners bind, no port
	AllowPorts             []PortRange `toml:"allow_ports"`               // remote ports clients may ask for
	MaxMappingsPerClient   int         `toml:"max_mappings_per_client"`   // >= 1
	MaxConnsPerMapping     int         `toml:"max_conns_per_mapping"`     // 0: no limit
	MaxUDPFlowsPerMapping  int         `toml:"max_udp_flows_per_mapping"` // live flows of a UDP mapping, >= 1
	MaxBandwidthPerClient  Size        `toml:"max_bandwidth_per_client"`  // bytes a second per client, each direction; 0: no limit
	LoginTimeout           Duration    `toml:"login_timeout"`             // accept to valid login
	StreamOpenTimeout      Duration    `toml:"stream_open_timeout"`       // data stream open to its ack
	HeartbeatTimeout       Duration    `toml:"heartbeat_timeout"`         // nothing read this long: drop the session
	HeartbeatCheckInterval Duration    `toml:"heartbeat_check_interval"`  // sweep period, < HeartbeatTimeout
	ShutdownTimeout        Duration    `toml:"shutdown_timeout"`          // grace for visitors on SIGTERM; 0 closes at once
	WSPath                 string      `toml:"ws_path"`                   // where HTTP clients upgrade to a WebSocket session
	AllowPlain             bool        `toml:"allow_plain"`               // with TLS set, also accept plain sessions
	// TrustedProxies are the addresses whose X-Forwarded-For the server
	// believes. A file gives them as trusted_proxies, CIDRs or single IPs
	// (a single IP is a /32 or /128); they are stored masked, and an
	// IPv4-mapped one (::ffff:10.0.0.0/104) as IPv4 (10.0.0.0/8).
	TrustedProxies []netip.Prefix `toml:"-"`
	// AcceptProxyProtocol is where a connection from one of
	// TrustedProxies must start with a PROXY protocol header (v1 or v2)
	// that names the real peer: AcceptProxyBind (bind_addr),
	// AcceptProxyPublic (the mappings' ports), AcceptProxyAll (both), or
	// "" (nowhere: the default). It needs TrustedProxies.
	AcceptProxyProtocol string `toml:"accept_proxy_protocol"`
	// AllowIPs and DenyIPs are the server-wide visitor lists (allow_ips,
	// deny_ips), read as TrustedProxies are: a visitor of any mapping
	// gets in when it is in no DenyIPs prefix and, if AllowIPs is not
	// empty, in one of them, and then passes the mapping's own lists
	// (docs/security.md). At most MaxIPPrefixes each.
	AllowIPs []netip.Prefix `toml:"-"`
	DenyIPs  []netip.Prefix `toml:"-"`
	Limits
	TLS   *ServerTLS `toml:"tls"` // nil: plain TCP
	Log   Log        `toml:"log"`
	Mux   Mux        `toml:"mux"`
	Admin Admin      `toml:"admin"`
	// Cluster makes the server one of a fleet sharing a registry in
	// etcd; nil: a server alone.
	Cluster *Cluster `toml:"cluster"`
	// Clients are the clients with their own token ([[clients]]): such a
	// client may log in only under its name, and bind only its ports.
	Clients []ClientCredential `toml:"clients"`
}

// ClientCredential is one [[clients]] table of server.toml.
type ClientCredential struct {
	Name        string      `toml:"name"`         // the client's name; that name needs this token
	Token       string      `toml:"token"`        // the token, or:
	TokenSHA256 string      `toml:"token_sha256"` // its SHA-256, 64 hex digits, so that the file holds no secret
	AllowPorts  []PortRange `toml:"allow_ports"`  // within the server's allow_ports; empty: those
	MaxMappings int         `toml:"max_mappings"` // 0: max_mappings_per_client
}

// TokenSum is the SHA-256 of the credential's token.
func (c ClientCredential) TokenSum() [sha256.Size]byte {
	if c.Token != "" {
		return sha256.Sum256([]byte(c.Token))
	}
	var sum [sha256.Size]byte
	_, _ = hex.Decode(sum[:], []byte(c.TokenSHA256)) // checked by check
	return sum
}

// DefaultServer returns a Server with every default applied. It has no
// token: a token must come from the file or GOTUNNEL_TOKEN.
func DefaultServer() Server {
	return Server{
		BindAddr:               "0.0.0.0:7000",
		PublicAddr:             "0.0.0.0",
		AllowPorts:             []PortRange{{Lo: 1024, Hi: 65535}},
		MaxMappingsPerClient:   16,
		MaxConnsPerMapping:     0,
		MaxUDPFlowsPerMapping:  1024,
		LoginTimeout:           Duration(10 * time.Second),
		StreamOpenTimeout:      Duration(10 * time.Second),
		HeartbeatTimeout:       Duration(30 * time.Second),
		HeartbeatCheckInterval: Duration(5 * time.Second),
		ShutdownTimeout:        Duration(10 * time.Second),
		WSPath:                 DefaultWSPath,
		AllowPlain:             false,
		TrustedProxies:         nil,
		Limits:                 defaultLimits(),
		Log:                    Log{Level: "info", Format: "text", Access: true},
		Mux:                    defaultMux(),
	}
}

// LoadServer reads the server file at path; see ParseServer.
func LoadServer(path string, env Env) (*Server, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return ParseServer(path, data, env)
}

// ParseServer decodes a server file strictly over DefaultServer, lets
// GOTUNNEL_TOKEN from env override token, and validates the result. name is
// the file name used in messages and stored in Path. The error, if any, is
// an Errors holding every problem found.
func ParseServer(name string, data []byte, env Env) (*Server, error) {
	f := serverFile{Server: DefaultServer()}
	f.Path = name
	pos, errs, complete := decode(name, data, &f)
	if !complete {
		return nil, errs.err()
	}
	s := f.Server
	s.AllowIPs, s.DenyIPs = toPrefixes(f.AllowIPs), toPrefixes(f.DenyIPs)
	if f.TrustedProxies != nil {
		s.TrustedProxies = nil
		for _, p := range f.TrustedProxies {
			s.TrustedProxies = append(s.TrustedProxies, netip.Prefix(p))
		}
	}
	s.Token = tokenFromEnv(env, s.Token)
	s.Admin.Token = adminTokenFromEnv(env, s.Admin.Token)
	if s.Cluster != nil {
		s.Cluster.fill(&s, env)
	}
	errs = append(errs, s.check(pos)...)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &s, nil
}

// serverFile is what a server file decodes into: the Server, and
// trusted_proxies, allow_ips and deny_ips in types that read a single IP
// as well as a CIDR.
type serverFile struct {
	Server
	TrustedProxies []trustedProxy `toml:"trusted_proxies"`
	AllowIPs       []ipPrefix     `toml:"allow_ips"`
	DenyIPs        []ipPrefix     `toml:"deny_ips"`
}

// Validate checks a Server built or changed in code. Errors name s.Path,
// without lines.
func (s *Server) Validate() error {
	return s.check(nil).err()
}

// check returns every problem with s, at the lines pos gives.
func (s *Server) check(pos *positions) Errors {
	c := &checker{file: s.Path, pos: pos}
	c.hostPort("bind_addr", s.BindAddr, true, 0)
	if s.Token == "" && len(s.Clients) == 0 {
		c.missing("token", "", tokenHint+", or give each client its own in [[clients]]")
	}
	s.checkClients(c)
	s.checkPublicAddr(c)
	s.checkAllowPorts(c)
	c.atLeast("max_mappings_per_client", s.MaxMappingsPerClient, 1)
	c.atLeast("max_conns_per_mapping", s.MaxConnsPerMapping, 0)
	c.atLeast("max_udp_flows_per_mapping", s.MaxUDPFlowsPerMapping, 1)
	c.bandwidth("max_bandwidth_per_client", s.MaxBandwidthPerClient)
	c.positive("login_timeout", s.LoginTimeout)
	c.positive("stream_open_timeout", s.StreamOpenTimeout)
	c.positive("heartbeat_timeout", s.HeartbeatTimeout)
	c.positive("heartbeat_check_interval", s.HeartbeatCheckInterval)
	if s.HeartbeatCheckInterval > 0 && s.HeartbeatCheckInterval >= s.HeartbeatTimeout {
		c.add("heartbeat_check_interval", "must be less than heartbeat_timeout (%s), got %s",
			s.HeartbeatTimeout, s.HeartbeatCheckInterval)
	}
	if s.ShutdownTimeout < 0 {
		c.add("shutdown_timeout", "must be 0 or more, got %s", s.ShutdownTimeout)
	}
	if s.TLS != nil {
		if s.TLS.CertFile == "" {
			c.missing("tls.cert_file", "tls", "[tls] needs cert_file and key_file")
		}
		if s.TLS.KeyFile == "" {
			c.missing("tls.key_file", "tls", "[tls] needs cert_file and key_file")
		}
	}
	s.checkWSPath(c)
	for i, p := range s.TrustedProxies {
		if !p.IsValid() {
			c.add("trusted_proxies"+index(i), "not a valid IP prefix; want a CIDR such as \"10.0.0.0/8\" or a single IP")
		}
	}
	s.checkAcceptProxy(c)
	c.ipPrefixes("allow_ips", s.AllowIPs)
	c.ipPrefixes("deny_ips", s.DenyIPs)
	s.Limits.check(c)
	s.Log.check(c)
	s.Mux.check(c)
	s.Admin.check(c)
	if s.Cluster != nil {
		s.Cluster.check(c, s)
	}
	return c.errs
}

// The values of accept_proxy_protocol; leaving it out is off.
const (
	AcceptProxyBind   = "bind"   // bind_addr only
	AcceptProxyPublic = "public" // the mappings' ports only
	AcceptProxyAll    = "all"    // both
)

// AcceptsProxy reports whether accept_proxy_protocol covers bind_addr and
// the mappings' ports.
func (s *Server) AcceptsProxy() (bind, public bool) {
	v := s.AcceptProxyProtocol
	return v == AcceptProxyBind || v == AcceptProxyAll, v == AcceptProxyPublic || v == AcceptProxyAll
}

// checkAcceptProxy checks accept_proxy_protocol: one of its values, and
// trusted_proxies to read headers from, without which it would read none.
func (s *Server) checkAcceptProxy(c *checker) {
	switch v := s.AcceptProxyProtocol; {
	case v == "":
	case v != AcceptProxyBind && v != AcceptProxyPublic && v != AcceptProxyAll:
		c.add("accept_proxy_protocol", "bad accept_proxy_protocol %q: want %q, %q or %q, or \"\" (the default: no PROXY header is read)",
			v, AcceptProxyBind, AcceptProxyPublic, AcceptProxyAll)
	case len(s.TrustedProxies) == 0:
		c.add("accept_proxy_protocol", "is %q, but trusted_proxies is empty: a PROXY header is read only from a trusted proxy; list the load balancer's addresses in trusted_proxies", v)
	}
}

// checkPublicAddr checks that public_addr is an IP or a host, with no port.
func (s *Server) checkPublicAddr(c *checker) {
	switch {
	case s.PublicAddr == "":
		c.missing("public_addr", "", `use "0.0.0.0" for every interface`)
	case validHost(s.PublicAddr):
	case strings.Contains(s.PublicAddr, ":"):
		c.add("public_addr", "bad address %q: want an IP address or host name without a port", s.PublicAddr)
	default:
		c.add("public_addr", "bad address %q: not an IP address or host name", s.PublicAddr)
	}
}

// checkClients checks the [[clients]] tables: a valid name each, once;
// one token or token_sha256 each, no two alike, none the shared token.
func (s *Server) checkClients(c *checker) {
	names := map[string]bool{}
	sums := map[[sha256.Size]byte]bool{sha256.Sum256([]byte(s.Token)): s.Token != ""}
	for i, cl := range s.Clients {
		key := "clients" + index(i)
		c.name(key+".name", cl.Name)
		if names[cl.Name] {
			c.add(key+".name", "client %q is given twice", cl.Name)
		}
		names[cl.Name] = true
		switch {
		case cl.Token == "" && cl.TokenSHA256 == "":
			c.missing(key+".token", key, "give token or token_sha256, the client's own")
			continue
		case cl.Token != "" && cl.TokenSHA256 != "":
			c.add(key+".token_sha256", "give token or token_sha256, not both")
			continue
		case cl.TokenSHA256 != "":
			if b, err := hex.DecodeString(cl.TokenSHA256); err != nil || len(b) != sha256.Size {
				c.add(key+".token_sha256", "want 64 hex digits, the SHA-256 of the token ('gotunnel-mux token --hash' prints both)")
				continue
			}
		}
		if sum := cl.TokenSum(); sums[sum] {
			c.add(key+".token", "the same token as another client or the shared token: each [[clients]] entry needs its own")
		} else {
			sums[sum] = true
		}
		for j, r := range cl.AllowPorts {
			if r.Lo < 1 || r.Hi > 65535 || r.Lo > r.Hi {
				c.add(key+".allow_ports"+index(j), "bad port range %d-%d: want 1 <= low <= high <= 65535", r.Lo, r.Hi)
			}
		}
		c.atLeast(key+".max_mappings", cl.MaxMappings, 0)
	}
}

// checkWSPath checks that ws_path starts with "/", has no query or
// fragment and is at most maxWSPath bytes long.
func (s *Server) checkWSPath(c *checker) {
	switch p := s.WSPath; {
	case p == "":
		c.add("ws_path", "is empty; want a path starting with \"/\", such as %q", DefaultWSPath)
	case p[0] != '/':
		c.add("ws_path", "bad path %q: must start with \"/\"", p)
	case strings.ContainsAny(p, "?#"):
		c.add("ws_path", "bad path %q: a query (?) or fragment (#) is not allowed", p)
	case len(p) > maxWSPath:
		c.add("ws_path", "is %d bytes long; at most %d", len(p), maxWSPath)
	}
}

// checkAllowPorts checks allow_ports, which ParsePortRange has checked
// already when they came from a file.
func (s *Server) checkAllowPorts(c *checker) {
	if len(s.AllowPorts) == 0 {
		c.add("allow_ports", `is empty, so no mapping could bind a port; the default is ["1024-65535"]`)
	}
	for i, r := range s.AllowPorts {
		if r.Lo < 1 || r.Hi > 65535 || r.Lo > r.Hi {
			c.add("allow_ports"+index(i), "bad port range %d-%d: want 1 <= low <= high <= 65535", r.Lo, r.Hi)
		}
	}
}

// Limits are the server's guards against hostile or broken peers; every
// one has a safe default. They are top-level keys of server.toml.
type Limits struct {
	MaxUnauthenticated      int      `toml:"max_unauthenticated"`        // connections not logged in yet, at once; >= 1
	MaxUnauthenticatedPerIP int      `toml:"max_unauthenticated_per_ip"` // the same, from one address; >= 1
	MaxStrayStreams         int      `toml:"max_stray_streams"`          // client-opened streams besides control before 1007; >= 0
	MaxFrameSize            Size     `toml:"max_frame_size"`             // largest control frame accepted; 1 KiB..64 KiB
	BadLoginLimit           int      `toml:"bad_login_limit"`            // wrong tokens from one address before a pause; 0: never pause
	BadLoginPause           Duration `toml:"bad_login_pause"`            // how long such an address is turned away; > 0
}

// Bounds and defaults of the limits.
const (
	DefaultMaxFrameSize = 64 << 10 // the protocol's own maximum
	MinMaxFrameSize     = 1 << 10
)

func defaultLimits() Limits {
	return Limits{
		MaxUnauthenticated:      256,
		MaxUnauthenticatedPerIP: 32,
		MaxStrayStreams:         4,
		MaxFrameSize:            DefaultMaxFrameSize,
		BadLoginLimit:           5,
		BadLoginPause:           Duration(time.Minute),
	}
}

func (l Limits) check(c *checker) {
	c.atLeast("max_unauthenticated", l.MaxUnauthenticated, 1)
	c.atLeast("max_unauthenticated_per_ip", l.MaxUnauthenticatedPerIP, 1)
	c.atLeast("max_stray_streams", l.MaxStrayStreams, 0)
	if l.MaxFrameSize < MinMaxFrameSize || l.MaxFrameSize > DefaultMaxFrameSize {
		c.add("max_frame_size", "%s is out of range %s..%s", l.MaxFrameSize, Size(MinMaxFrameSize), Size(DefaultMaxFrameSize))
	}
	c.atLeast("bad_login_limit", l.BadLoginLimit, 0)
	c.positive("bad_login_pause", l.BadLoginPause)
}
