package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseMap parses the value of a quick-mode --map flag:
//
//	[NAME=]REMOTE_PORT:LOCAL_ADDR[/PROTOCOL][,OPTION=VALUE ...]
//
// such as
//
//	10022:127.0.0.1:22
//	ssh=10022:127.0.0.1:22
//	0:localhost:8080                        (the server picks the remote port)
//	web=0:[::1]:8080
//	dns=5353:127.0.0.1:53/udp,idle=30s
//	ssh=10022:127.0.0.1:22,allow=203.0.113.0/24,allow=2001:db8::/32,deny=203.0.113.9
//	web=18080:127.0.0.1:8080,bandwidth=10MiB,proxy=v2
//
// PROTOCOL is "tcp" (the default) or "udp". Each OPTION sets one key of
// a [[mappings]] table, named short or by the key itself (quickOptions);
// its value is written as in a file, without quotes. allow and deny may
// be repeated, each adding one entry; the others may be given once.
//
// The mapping is checked as a file's would be (Mapping.check), but Name,
// Protocol and HealthCheck are left for Client.Validate to default when
// not given. The error is an *Error with Key "--map" that quotes the
// value and names the part that is wrong.
func ParseMap(spec string) (Mapping, error) {
	head, opts, hasOpts := strings.Cut(spec, ",") // no name, port, host or protocol holds a ','
	m, err := parseMapHead(spec, head)
	if err != nil {
		return Mapping{}, err
	}
	given := map[string]string{} // the key each option set -> the option as written
	if hasOpts {
		for opt := range strings.SplitSeq(opts, ",") {
			if msg := setOption(&m, opt, given); msg != "" {
				return Mapping{}, mapError(spec, msg)
			}
		}
	}
	if msg := checkQuick(m, given); msg != "" {
		return Mapping{}, mapError(spec, msg)
	}
	return m, nil
}

// parseMapHead parses "[NAME=]REMOTE_PORT:LOCAL_ADDR[/PROTOCOL]".
func parseMapHead(spec, head string) (Mapping, error) {
	var m Mapping
	rest := head
	if name, after, ok := strings.Cut(head, "="); ok && !strings.Contains(name, ":") {
		if !validName(name) {
			return Mapping{}, mapError(spec, fmt.Sprintf("bad name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", name))
		}
		m.Name, rest = name, after
	}
	// A host:port holds no '/' (an IPv6 address is in brackets), so a
	// '/' starts the protocol.
	if addr, proto, ok := strings.Cut(rest, "/"); ok {
		switch {
		case strings.Contains(proto, ":"):
			return Mapping{}, mapError(spec, `the protocol goes last, after the local address, such as "5353:127.0.0.1:53/udp"`)
		case proto != ProtocolTCP && proto != ProtocolUDP:
			return Mapping{}, mapError(spec, fmt.Sprintf("bad protocol \"/%s\": want /%s or /%s", proto, ProtocolTCP, ProtocolUDP))
		}
		m.Protocol, rest = proto, addr
	}
	port, local, ok := strings.Cut(rest, ":")
	if !ok {
		return Mapping{}, mapError(spec, `want [NAME=]REMOTE_PORT:LOCAL_ADDR, such as "ssh=10022:127.0.0.1:22"`)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return Mapping{}, mapError(spec, fmt.Sprintf("bad remote port %q: want 0..65535 (0: the server picks)", port))
	}
	if msg := hostPortProblem(local, false, 1); msg != "" {
		return Mapping{}, mapError(spec, msg)
	}
	m.RemotePort, m.LocalAddr = p, local
	return m, nil
}

// quickOption is one OPTION of --map: a short name, the key of a
// [[mappings]] table it sets (also accepted as its name), and how to set
// it from a value; set returns what is wrong with the value, or "".
type quickOption struct {
	short, key string
	repeat     bool
	set        func(m *Mapping, v string) string
}

// quickOptions are the OPTIONs of --map, in the order of docs/config.md.
var quickOptions = []quickOption{
	{"allow", "allow_ips", true, func(m *Mapping, v string) string { return addPrefix(&m.AllowIPs, v) }},
	{"deny", "deny_ips", true, func(m *Mapping, v string) string { return addPrefix(&m.DenyIPs, v) }},
	{"bandwidth", "bandwidth_limit", false, func(m *Mapping, v string) string {
		s, err := parseSize(v)
		if err != nil {
			return fmt.Sprintf("bad size %q: %v", v, err)
		}
		m.BandwidthLimit = s
		return ""
	}},
	{"proxy", "proxy_protocol", false, func(m *Mapping, v string) string {
		if v != ProxyProtocolV1 && v != ProxyProtocolV2 {
			return fmt.Sprintf("bad PROXY protocol version %q: want %s or %s", v, ProxyProtocolV1, ProxyProtocolV2)
		}
		m.ProxyProtocol = v
		return ""
	}},
	{"idle", "udp_idle_timeout", false, func(m *Mapping, v string) string {
		if err := m.UDPIdleTimeout.UnmarshalText([]byte(v)); err != nil {
			return err.Error()
		}
		return ""
	}},
	{"health", "health_check", false, func(m *Mapping, v string) string {
		if v != "true" && v != "false" {
			return fmt.Sprintf("bad value %q: want true or false", v)
		}
		on := v == "true"
		m.HealthCheck = &on
		return ""
	}},
}

// addPrefix appends the IP prefix v to ps.
func addPrefix(ps *[]netip.Prefix, v string) string {
	p, err := parseTrustedProxy(v)
	if err != nil {
		return fmt.Sprintf("bad IP prefix %q: %v", v, err)
	}
	*ps = append(*ps, p)
	return ""
}

// setOption applies one "OPTION=VALUE" to m and records in given the key
// it set; it returns what is wrong, or "".
func setOption(m *Mapping, opt string, given map[string]string) string {
	if opt == "" {
		return `an empty option: one "," too many`
	}
	name, value, ok := strings.Cut(opt, "=")
	if !ok {
		return fmt.Sprintf("bad option %q: want OPTION=VALUE, such as \"allow=203.0.113.0/24\"", opt)
	}
	for _, o := range quickOptions {
		if name != o.short && name != o.key {
			continue
		}
		if before, dup := given[o.key]; dup && !o.repeat {
			return fmt.Sprintf("%s: %s is given twice (also %s)", opt, o.key, before)
		}
		if msg := o.set(m, value); msg != "" {
			return opt + ": " + msg
		}
		if _, dup := given[o.key]; !dup {
			given[o.key] = opt
		}
		return ""
	}
	switch name {
	case "protocol":
		return fmt.Sprintf("%s: write the protocol after the local address, such as \"5353:127.0.0.1:53/udp\"", opt)
	case "name":
		return fmt.Sprintf("%s: write the name first, such as \"ssh=10022:127.0.0.1:22\"", opt)
	}
	names := make([]string, len(quickOptions))
	for i, o := range quickOptions {
		names[i] = o.short
	}
	return fmt.Sprintf("unknown option %q: want %s (or their keys in client.toml)", name, strings.Join(names, ", "))
}

// checkQuick checks m as a file's mapping is checked, on a copy with the
// defaults applied, and returns its problems in one line, each after the
// option that set the key (or the key, when no option did), or "".
func checkQuick(m Mapping, given map[string]string) string {
	m.applyDefaults()
	ck := &checker{}
	m.check(ck, "")
	var msgs []string
	for _, e := range ck.errs {
		key := strings.TrimPrefix(e.Key, ".")
		key, _, _ = strings.Cut(key, "[")
		label := key
		if opt, ok := given[key]; ok {
			label = opt
		}
		msgs = append(msgs, label+": "+e.Msg)
	}
	return strings.Join(msgs, "; ")
}

// mapError reports a bad --map value.
func mapError(spec, msg string) *Error {
	return &Error{Key: "--map", Msg: fmt.Sprintf("%q: %s", spec, msg)}
}
