package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in a file as a string that
// time.ParseDuration accepts: "10s", "500ms", "1m30s". A bare integer is
// refused, so that "10" cannot silently mean ten nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration does ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText encodes d as its String form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a duration such as "10s".
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("bad duration %q: want a number and a unit, such as \"10s\", \"500ms\" or \"1m30s\"", text)
	}
	*d = Duration(v)
	return nil
}

// Size is a number of bytes. A file gives it as an integer of bytes
// (1048576) or as a string with a unit: "512KB", "4MiB", "1GiB". KB, MB and
// GB count in thousands; KiB, MiB and GiB in 1024s; "B" or no unit is bytes.
type Size int64

// sizeUnits lists the units Size understands.
var sizeUnits = []struct {
	name string
	mult int64
}{
	{"B", 1},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
}

// String formats s with the largest unit that divides it exactly, so with
// the smallest number: 1048576 is "1MiB", 2000000000 is "2GB", 1500 is
// "1500B".
func (s Size) String() string {
	best := sizeUnits[0]
	for _, u := range sizeUnits[1:] {
		if s != 0 && int64(s)%u.mult == 0 && u.mult > best.mult {
			best = u
		}
	}
	return strconv.FormatInt(int64(s)/best.mult, 10) + best.name
}

// MarshalText encodes s as its String form.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size string such as "4MiB" or "65536". The TOML
// decoder stores an integer value directly, without calling this method.
func (s *Size) UnmarshalText(text []byte) error {
	v, err := parseSize(string(text))
	if err != nil {
		return fmt.Errorf("bad size %q: %w", text, err)
	}
	*s = v
	return nil
}

// parseSize parses digits followed by an optional unit, with optional
// blanks between them.
func parseSize(str string) (Size, error) {
	digits := strings.TrimLeft(str, " \t")
	end := 0
	for end < len(digits) && digits[end] >= '0' && digits[end] <= '9' {
		end++
	}
	unit := strings.TrimSpace(digits[end:])
	if end == 0 {
		return 0, errors.New("want a whole number of bytes, optionally followed by B, KB, MB, GB, KiB, MiB or GiB")
	}
	n, err := strconv.ParseInt(digits[:end], 10, 64)
	if err != nil {
		return 0, errors.New("too large")
	}
	mult := int64(1)
	if unit != "" {
		mult = 0
		for _, u := range sizeUnits {
			if u.name == unit {
				mult = u.mult
			}
		}
	}
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q: want B, KB, MB, GB, KiB, MiB or GiB", unit)
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("too large")
	}
	return Size(n * mult), nil
}

// PortRange is an inclusive range of TCP ports, written "2222" (one port) or
// "10000-20000". Both ends are within 1..65535 and Lo <= Hi.
type PortRange struct{ Lo, Hi int }

// ParsePortRange parses "PORT" or "LO-HI".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	var r PortRange
	var err error
	if r.Lo, err = parseRangePort(lo); err != nil {
		return PortRange{}, fmt.Errorf("bad port range %q: %w", s, err)
	}
	r.Hi = r.Lo
	if isRange {
		if r.Hi, err = parseRangePort(hi); err != nil {
			return PortRange{}, fmt.Errorf("bad port range %q: %w", s, err)
		}
	}
	if r.Lo > r.Hi {
		return PortRange{}, fmt.Errorf("bad port range %q: %d is above %d", s, r.Lo, r.Hi)
	}
	return r, nil
}

// parseRangePort parses one end of a port range.
func parseRangePort(s string) (int, error) {
	s = strings.TrimSpace(s)
	p, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %d is out of range 1..65535", p)
	}
	return p, nil
}

// Contains reports whether port p is within r.
func (r PortRange) Contains(p int) bool { return r.Lo <= p && p <= r.Hi }

// String formats r as ParsePortRange reads it: "2222" or "10000-20000".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return strconv.Itoa(r.Lo) + "-" + strconv.Itoa(r.Hi)
}

// MarshalText encodes r as its String form.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a port range such as "10000-20000".
func (r *PortRange) UnmarshalText(text []byte) error {
	v, err := ParsePortRange(string(text))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// trustedProxy is one entry of trusted_proxies: a CIDR ("10.0.0.0/8",
// "::1/128") or a single IP ("127.0.0.1", taken as /32; "::1", as /128),
// stored masked, an IPv4-mapped IPv6 one as IPv4. Server.TrustedProxies
// holds them as netip.Prefix.
type trustedProxy netip.Prefix

// UnmarshalText parses a CIDR or a single IP.
func (t *trustedProxy) UnmarshalText(text []byte) error {
	p, err := parseTrustedProxy(string(text))
	if err != nil {
		return fmt.Errorf("bad trusted proxy %q: %w", text, err)
	}
	*t = trustedProxy(p)
	return nil
}

// ipPrefix is one entry of allow_ips or deny_ips (the server's and a
// mapping's), read as a trusted proxy is: a CIDR or a single IP, masked,
// an IPv4-mapped one as IPv4. Server.AllowIPs and Mapping.AllowIPs hold
// them as netip.Prefix.
type ipPrefix netip.Prefix

// UnmarshalText parses a CIDR or a single IP.
func (t *ipPrefix) UnmarshalText(text []byte) error {
	p, err := parseTrustedProxy(string(text))
	if err != nil {
		return fmt.Errorf("bad IP prefix %q: %w", text, err)
	}
	*t = ipPrefix(p)
	return nil
}

// toPrefixes converts a file's entries; nil stays nil.
func toPrefixes(ps []ipPrefix) []netip.Prefix {
	if ps == nil {
		return nil
	}
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.Prefix(p)
	}
	return out
}

// parseTrustedProxy parses "ADDR/BITS" or "ADDR" into a masked prefix.
func parseTrustedProxy(s string) (netip.Prefix, error) {
	addrPart, bitsPart, isCIDR := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, errors.New(`want an IP address or a CIDR, such as "10.0.0.0/8", "::1/128" or "127.0.0.1"`)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, errors.New("an IPv6 zone (%name) is not allowed")
	}
	bits := addr.BitLen()
	if isCIDR {
		n, err := strconv.Atoi(bitsPart)
		if err != nil || n < 0 || n > bits || bitsPart != strconv.Itoa(n) {
			return netip.Prefix{}, fmt.Errorf("the prefix length %q is not a number 0..%d", bitsPart, bits)
		}
		bits = n
	}
	if addr.Is4In6() { // the server compares unmapped addresses
		if bits < 96 {
			return netip.Prefix{}, errors.New("an IPv4-mapped prefix (::ffff:a.b.c.d) needs a length of 96 or more")
		}
		addr, bits = addr.Unmap(), bits-96
	}
	return addr.Prefix(bits)
}
