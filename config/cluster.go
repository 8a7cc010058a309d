package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// EtcdPasswordEnv names the environment variable that overrides
// cluster.password.
const EtcdPasswordEnv = "GOTUNNEL_ETCD_PASSWORD"

// Cluster is the [cluster] table of server.toml: the servers that name
// the same etcd endpoints and prefix form one fleet, which holds each
// client name and each public port once. Absent: a server alone, and
// nothing of etcd runs.
type Cluster struct {
	// EtcdEndpoints are etcd's client URLs, "https://10.0.0.5:2379"
	// (http:// or https://; a bare host:port is http). Required.
	EtcdEndpoints []string `toml:"etcd_endpoints"`
	// Name is this server's name in the fleet, unique in it. Default:
	// the host name.
	Name string `toml:"name"`
	// PublicHost is the host name visitors use to reach this server's
	// ports; clients log it with each mapping. Required.
	PublicHost string `toml:"public_host"`
	// Prefix is where the fleet's keys live in etcd. Default
	// "/gotunnel-mux/".
	Prefix string `toml:"prefix"`
	// LeaseTTL is how long a server that stopped renewing its lease (it
	// died, or lost etcd) keeps its names and ports. Whole seconds, at
	// least 2s. Default: heartbeat_timeout.
	LeaseTTL Duration `toml:"lease_ttl"`
	// RegistryTimeout bounds how long a login or a registration waits
	// for etcd before it is refused with 1014; less than login_timeout.
	// Default "5s".
	RegistryTimeout Duration `toml:"registry_timeout"`
	// CAFile verifies etcd's certificate (default: the system's roots);
	// CertFile and KeyFile, both or neither, are this server's client
	// certificate. Any of them needs https:// endpoints.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Username and Password are etcd's own authentication, both or
	// neither; GOTUNNEL_ETCD_PASSWORD overrides the password.
	Username string `toml:"username"`
	Password string `toml:"password"`
}

// DefaultPrefix and DefaultRegistryTimeout are [cluster]'s defaults; the
// lease's is the server's heartbeat_timeout.
const (
	DefaultPrefix          = "/gotunnel-mux/"
	DefaultRegistryTimeout = Duration(5 * time.Second)
	MinLeaseTTL            = Duration(2 * time.Second)
)

// fill puts the defaults in the keys a file left out, and the
// environment's password; s.Cluster is not nil.
func (cl *Cluster) fill(s *Server, env Env) {
	if cl.Name == "" {
		cl.Name = defaultClientName()
	}
	if cl.Prefix == "" {
		cl.Prefix = DefaultPrefix
	}
	if cl.LeaseTTL == 0 {
		cl.LeaseTTL = s.HeartbeatTimeout
	}
	if cl.RegistryTimeout == 0 {
		cl.RegistryTimeout = DefaultRegistryTimeout
	}
	cl.Password = fromEnv(env, EtcdPasswordEnv, cl.Password)
}

// check checks the [cluster] table.
func (cl *Cluster) check(c *checker, s *Server) {
	if len(cl.EtcdEndpoints) == 0 {
		c.missing("cluster.etcd_endpoints", "cluster", `give etcd's client URLs, such as ["https://10.0.0.5:2379"]`)
	}
	tls := cl.CAFile != "" || cl.CertFile != ""
	for i, e := range cl.EtcdEndpoints {
		key := "cluster.etcd_endpoints" + index(i)
		scheme, msg := endpointProblem(e)
		switch {
		case msg != "":
			c.add(key, "bad etcd endpoint %q: %s", e, msg)
		case tls && scheme != "https":
			c.add(key, "etcd endpoint %q is not https://, but [cluster] has TLS files", e)
		}
	}
	c.name("cluster.name", cl.Name)
	switch {
	case cl.PublicHost == "":
		c.missing("cluster.public_host", "cluster", "the host name visitors use for this server, such as \"tunnel-a.example.com\"")
	case !validHost(cl.PublicHost):
		c.add("cluster.public_host", "bad host %q: want a host name or an IP address, without a port", cl.PublicHost)
	}
	if !strings.HasPrefix(cl.Prefix, "/") || strings.ContainsAny(cl.Prefix, " \t\n") {
		c.add("cluster.prefix", "bad prefix %q: want a key prefix starting with \"/\", such as %q", cl.Prefix, DefaultPrefix)
	}
	switch ttl := cl.LeaseTTL; {
	case ttl < MinLeaseTTL:
		c.add("cluster.lease_ttl", "must be at least %s (etcd's shortest lease), got %s", MinLeaseTTL, ttl)
	case ttl.D()%time.Second != 0:
		c.add("cluster.lease_ttl", "must be whole seconds (an etcd lease is), got %s", ttl)
	}
	c.positive("cluster.registry_timeout", cl.RegistryTimeout)
	if cl.RegistryTimeout > 0 && cl.RegistryTimeout >= s.LoginTimeout {
		c.add("cluster.registry_timeout", "must be less than login_timeout (%s), so that a client waiting on etcd is answered 1014 in time, got %s",
			s.LoginTimeout, cl.RegistryTimeout)
	}
	if (cl.CertFile == "") != (cl.KeyFile == "") {
		c.add("cluster.cert_file", "[cluster] needs both cert_file and key_file for a client certificate, or neither")
	}
	if (cl.Username == "") != (cl.Password == "") {
		c.add("cluster.username", "[cluster] needs both username and password (or %s), or neither", EtcdPasswordEnv)
	}
}

// endpointProblem checks an etcd endpoint and returns its scheme.
func endpointProblem(e string) (scheme, msg string) {
	hostPort := e
	scheme = "http"
	if strings.Contains(e, "://") {
		u, err := url.Parse(e)
		if err != nil {
			return "", "not a URL"
		}
		scheme = strings.ToLower(u.Scheme)
		if scheme != "http" && scheme != "https" {
			return "", "want http:// or https://"
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			return "", "want only a scheme, a host and a port"
		}
		hostPort = u.Host
	}
	if host, port, err := net.SplitHostPort(hostPort); err != nil || host == "" || port == "" {
		return "", "want a host and a port, such as https://10.0.0.5:2379"
	}
	return scheme, ""
}
