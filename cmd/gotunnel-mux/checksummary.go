package main

import (
	"cmp"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/gotunnel-mux/gotunnel-mux/config"
)

// The summary `gotunnel-mux check` prints under "ok": what a good file
// sets up, in the words of its keys, with the defaults that apply, so
// that a user sees a list or a limit in force (or not) before starting.
// It never shows a token.

// clientSummary is the server (or servers) a client dials, then one line per mapping,
// aligned like the client's own "mapping up" line:
//
//	server_addr tunnel.example.com:7000 (tls), name office-pc
//	ssh  tcp  10022  -> 127.0.0.1:22  allow_ips 203.0.113.0/24; bandwidth_limit 10MiB/s
//	dns  udp  5353   -> 127.0.0.1:53  udp_idle_timeout 1m0s
func clientSummary(cfg *config.Client) []string {
	lines := []string{serversLine(cfg)}
	if len(cfg.Mappings) == 0 {
		return append(lines, "no mappings: the client will connect but expose nothing")
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, m := range cfg.Mappings {
		port := "any"
		if m.RemotePort != 0 {
			port = strconv.Itoa(m.RemotePort)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t-> %s\t%s\n", m.Name, m.Protocol, port, m.LocalAddr, strings.Join(mappingPolicy(m), "; "))
	}
	_ = tw.Flush()
	for line := range strings.Lines(b.String()) {
		lines = append(lines, strings.TrimRight(line, " \n"))
	}
	return lines
}

// serversLine is the server a client dials, or the servers and how it
// uses them, each with its transport.
func serversLine(cfg *config.Client) string {
	eps := cfg.Servers()
	addrs := cfg.ServerAddrs
	if len(addrs) == 0 {
		addrs = []string{cfg.ServerAddr}
	}
	dials := make([]string, len(eps))
	for i, ep := range eps {
		transport := ep.Scheme
		if transport == "tcp" && cfg.TLSEnabled() {
			transport = "tls"
		}
		dials[i] = fmt.Sprintf("%s (%s)", addrs[i], transport)
	}
	if len(cfg.ServerAddrs) == 0 {
		return fmt.Sprintf("server_addr %s, name %s", dials[0], cfg.Name)
	}
	return fmt.Sprintf("server_addrs %s, ha %s, name %s", strings.Join(dials, ", "), cmp.Or(cfg.HA, config.HAFailover), cfg.Name)
}

// mappingPolicy is what a mapping sets beyond where it goes, each as
// "key value": only what differs from nothing at all, and a UDP
// mapping's idle timeout, which always applies.
func mappingPolicy(m config.Mapping) []string {
	var out []string
	if m.Protocol == config.ProtocolTCP && !*m.HealthCheck {
		out = append(out, "health_check false")
	}
	if m.Protocol == config.ProtocolUDP {
		out = append(out, "udp_idle_timeout "+m.UDPIdleTimeout.String())
	}
	if m.ProxyProtocol != "" {
		out = append(out, "proxy_protocol "+m.ProxyProtocol)
	}
	if len(m.AllowIPs) > 0 {
		out = append(out, "allow_ips "+prefixes(m.AllowIPs))
	}
	if len(m.DenyIPs) > 0 {
		out = append(out, "deny_ips "+prefixes(m.DenyIPs))
	}
	if m.BandwidthLimit > 0 {
		out = append(out, "bandwidth_limit "+perSecond(m.BandwidthLimit))
	}
	return out
}

// serverSummary is where a server listens and binds, its limits, its
// server-wide visitor lists, the load balancers whose PROXY headers it
// reads, and who may log in:
//
//	bind_addr 0.0.0.0:7000 (tls), public_addr 0.0.0.0, allow_ports 10000-20000
//	max_mappings_per_client 16; max_conns_per_mapping none; max_udp_flows_per_mapping 1024; max_bandwidth_per_client none
//	visitors: allow_ips any; deny_ips 198.51.100.0/24
//	accept_proxy_protocol all, from trusted_proxies 10.0.0.0/8
//	token: shared, for any name without a [[clients]] entry
//	client laptop: own token; allow_ports 10000-10100; max_mappings 4
func serverSummary(cfg *config.Server) []string {
	transport := "plain"
	if t := cfg.TLS; t != nil {
		transport = "tls"
		if t.ClientCAFile != "" {
			transport += " with client certificates"
		}
		if cfg.AllowPlain {
			transport += ", plain too"
		}
	}
	lines := []string{
		fmt.Sprintf("bind_addr %s (%s), public_addr %s, allow_ports %s", cfg.BindAddr, transport, cfg.PublicAddr, portList(cfg.AllowPorts)),
		fmt.Sprintf("max_mappings_per_client %d; max_conns_per_mapping %s; max_udp_flows_per_mapping %d; max_bandwidth_per_client %s",
			cfg.MaxMappingsPerClient, orNoneInt(cfg.MaxConnsPerMapping), cfg.MaxUDPFlowsPerMapping, perSecond(cfg.MaxBandwidthPerClient)),
		fmt.Sprintf("visitors: allow_ips %s; deny_ips %s", orAny(cfg.AllowIPs), orNoneList(cfg.DenyIPs)),
	}
	if cfg.AcceptProxyProtocol != "" {
		lines = append(lines, fmt.Sprintf("accept_proxy_protocol %s, from trusted_proxies %s", cfg.AcceptProxyProtocol, prefixes(cfg.TrustedProxies)))
	}
	if cfg.Token != "" {
		lines = append(lines, "token: shared, for any name without a [[clients]] entry")
	} else {
		lines = append(lines, "token: none; only the [[clients]] log in")
	}
	for _, c := range cfg.Clients {
		line := "client " + c.Name + ": own token"
		if len(c.AllowPorts) > 0 {
			line += "; allow_ports " + portList(c.AllowPorts)
		}
		if c.MaxMappings > 0 {
			line += "; max_mappings " + strconv.Itoa(c.MaxMappings)
		}
		lines = append(lines, line)
	}
	return lines
}

// maxShown is how many entries of a list a summary shows.
const maxShown = 4

// prefixes is a visitor list, its first maxShown entries and a count of
// the rest.
func prefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps[:min(len(ps), maxShown)] {
		s = append(s, p.String())
	}
	out := strings.Join(s, ", ")
	if len(ps) > maxShown {
		out += fmt.Sprintf(" (and %d more)", len(ps)-maxShown)
	}
	return out
}

func orAny(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "any"
	}
	return prefixes(ps)
}

func orNoneList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	return prefixes(ps)
}

func orNoneInt(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// perSecond is a bandwidth limit: "10MiB/s", or "none" for 0.
func perSecond(s config.Size) string {
	if s == 0 {
		return "none"
	}
	return s.String() + "/s"
}

func portList(rs []config.PortRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}
