package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// checker collects the problems of one configuration after decoding, each
// at the line of its key when the key came from a file.
type checker struct {
	file string
	pos  *positions // nil for a configuration built in code
	errs Errors
}

// add records a problem with key, at the key's line.
func (c *checker) add(key, format string, args ...any) {
	c.addAt(c.pos.line(key), key, fmt.Sprintf(format, args...))
}

// addAt records a problem with key at a given line.
func (c *checker) addAt(line int, key, msg string) {
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Key: key, Msg: msg})
}

// missing records that a required key is absent, or present but empty. A
// key missing from a table of an array is placed at the table's header.
func (c *checker) missing(key, table, hint string) {
	msg := "missing (required)"
	if c.pos.has(key) {
		msg = "empty (required)"
	}
	if hint != "" {
		msg += "; " + hint
	}
	c.addAt(c.lineIn(key, table), key, msg)
}

// lineIn returns the line of key, or else of the table that should hold
// it ("" for the top level, which has no line).
func (c *checker) lineIn(key, table string) int {
	if l := c.pos.line(key); l > 0 {
		return l
	}
	return c.pos.line(table)
}

// positive checks that a duration is more than zero.
func (c *checker) positive(key string, d Duration) {
	if d <= 0 {
		c.add(key, "must be more than 0, got %s", d)
	}
}

// MinBandwidth is the smallest bandwidth limit other than 0 (none), in
// bytes a second: control.MinBandwidth.
const MinBandwidth Size = 1 << 10

// bandwidth checks a bandwidth limit: 0 (none) or at least MinBandwidth.
func (c *checker) bandwidth(key string, v Size) {
	if v < 0 || (v > 0 && v < MinBandwidth) {
		c.add(key, "must be 0 (no limit) or at least %s a second, got %d", MinBandwidth, int64(v))
	}
}

// atLeast checks that an integer is at least lo.
func (c *checker) atLeast(key string, v, lo int) {
	if v < lo {
		c.add(key, "must be %d or more, got %d", lo, v)
	}
}

// port checks a port number against lo..65535.
func (c *checker) port(key string, p, lo int) {
	if p < lo || p > 65535 {
		c.add(key, "port %d is out of range %d..65535", p, lo)
	}
}

// hostPort checks a "host:port" address without resolving the host. An
// empty host is allowed only when hostOptional (a listen address); lo is the
// lowest port allowed (0 lets the system pick a listening port).
func (c *checker) hostPort(key, addr string, hostOptional bool, lo int) {
	if msg := hostPortProblem(addr, hostOptional, lo); msg != "" {
		c.add(key, "%s", msg)
	}
}

// hostPortProblem returns what is wrong with addr as "host:port", or "".
func hostPortProblem(addr string, hostOptional bool, lo int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("bad address %q: want host:port, such as \"127.0.0.1:22\" or \"[::1]:22\"", addr)
	}
	if host == "" && !hostOptional {
		return fmt.Sprintf("bad address %q: the host is missing", addr)
	}
	if host != "" && !validHost(host) {
		return fmt.Sprintf("bad address %q: %q is not an IP address or host name", addr, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < lo || p > 65535 {
		return fmt.Sprintf("bad address %q: want a port number %d..65535", addr, lo)
	}
	return ""
}

// validHost reports whether h is an IP address or looks like a host name:
// a DNS name, or a name people give hosts on a LAN (1 to 253 of
// A-Z a-z 0-9 _ . -, not starting with . or -).
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return len(h) >= 1 && len(h) <= 253 && h[0] != '.' && h[0] != '-' && allOf(h, "._-")
}

// allOf reports whether every byte of s is an ASCII letter, a digit or one
// of extra.
func allOf(s, extra string) bool {
	for i := range len(s) {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// validName reports whether v is a good client or mapping name: 1 to 64 of
// A-Z a-z 0-9 . _ -.
func validName(v string) bool { return len(v) >= 1 && len(v) <= 64 && allOf(v, "._-") }

// name checks a client or mapping name.
func (c *checker) name(key, v string) {
	if !validName(v) {
		c.add(key, "bad name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", v)
	}
}

// oneOf checks that v is one of the allowed values.
func (c *checker) oneOf(key, what, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.add(key, "bad %s %q: want one of %s", what, v, strings.Join(allowed, ", "))
}

// MaxIPPrefixes is how many entries allow_ips and deny_ips may hold, each
// (the wire's bound, control.MaxPrefixes).
const MaxIPPrefixes = 256

// ipPrefixes checks a visitor list: valid prefixes (a file's are, when
// they parsed; one built in code may not be), at most MaxIPPrefixes.
func (c *checker) ipPrefixes(key string, ps []netip.Prefix) {
	if len(ps) > MaxIPPrefixes {
		c.add(key, "%d entries; at most %d", len(ps), MaxIPPrefixes)
	}
	for i, p := range ps {
		if !p.IsValid() {
			c.add(key+index(i), "not a valid IP prefix; want a CIDR such as \"10.0.0.0/8\" or a single IP")
		}
	}
}
